//! Structural checks of the linked guest images, shared by `build.rs` (which
//! rejects a bad link) and the crate's unit tests.

/// Guest-physical address both images are linked and loaded at (1 MiB).
pub const LOAD_ADDR: u64 = 0x10_0000;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// One `PT_LOAD` program header.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    /// Physical load address.
    pub paddr: u64,
    /// Bytes present in the file.
    pub filesz: u64,
    /// Bytes occupied in memory (the excess is .bss).
    pub memsz: u64,
    /// `p_flags` (1 = X, 2 = W, 4 = R).
    pub flags: u32,
}

/// What the checks learned about an image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// ELF entry point (the 64-bit Linux-protocol entry).
    pub entry: u64,
    /// Entry from the PVH note, when present.
    pub pvh_entry: Option<u32>,
    /// The `PT_LOAD` segments in program-header order.
    pub loads: Vec<Segment>,
}

fn rd(b: &[u8], off: usize, len: usize) -> Result<u64, String> {
    let s = b
        .get(off..off + len)
        .ok_or_else(|| format!("truncated ELF: need {len} bytes at offset {off:#x}"))?;
    Ok(s.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

fn rd_usize(b: &[u8], off: usize, len: usize) -> Result<usize, String> {
    usize::try_from(rd(b, off, len)?).map_err(|_| format!("ELF field at {off:#x} too large"))
}

/// Finds a `Xen`/`XEN_ELFNOTE_PHYS32_ENTRY` note in a note segment.
fn find_pvh_note(notes: &[u8]) -> Result<Option<u32>, String> {
    let align4 = |n: usize| (n + 3) & !3;
    let mut off = 0;
    while off + 12 <= notes.len() {
        let namesz = rd_usize(notes, off, 4)?;
        let descsz = rd_usize(notes, off + 4, 4)?;
        let ntype = rd(notes, off + 8, 4)?;
        let name_off = off + 12;
        let desc_off = name_off + align4(namesz);
        if notes.get(name_off..name_off + namesz) == Some(b"Xen\0".as_slice())
            && ntype == u64::from(XEN_ELFNOTE_PHYS32_ENTRY)
        {
            if descsz < 4 {
                return Err(format!("PVH note descriptor is only {descsz} bytes"));
            }
            return Ok(Some(rd(notes, desc_off, 4)? as u32));
        }
        off = desc_off + align4(descsz);
    }
    Ok(None)
}

/// Checks that `image` is an x86-64 `ET_EXEC` ELF whose entry point is
/// [`LOAD_ADDR`], whose lowest `PT_LOAD` starts there, whose `PT_LOAD`s all
/// have file contents (loaders such as linux-loader skip empty ones) and,
/// when `pvh` is set, that it carries a PVH note pointing into executable
/// code (and, when it is not, that it carries none).
pub fn check_image(image: &[u8], pvh: bool) -> Result<ImageInfo, String> {
    if image.get(0..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".into());
    }
    if rd(image, 4, 1)? != 2 || rd(image, 5, 1)? != 1 {
        return Err("not a little-endian ELF64 file".into());
    }
    if rd(image, 16, 2)? != 2 {
        return Err("not an ET_EXEC executable".into());
    }
    if rd(image, 18, 2)? != 62 {
        return Err("not an x86-64 (EM_X86_64) image".into());
    }
    let entry = rd(image, 24, 8)?;
    let phoff = rd_usize(image, 32, 8)?;
    let phentsize = rd_usize(image, 54, 2)?;
    let phnum = rd_usize(image, 56, 2)?;
    if phentsize != 56 {
        return Err(format!("unexpected program header size {phentsize}"));
    }

    let mut loads = Vec::new();
    let mut pvh_entry = None;
    let mut notes = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = rd(image, ph, 4)? as u32;
        let flags = rd(image, ph + 4, 4)? as u32;
        let offset = rd_usize(image, ph + 8, 8)?;
        let vaddr = rd(image, ph + 16, 8)?;
        let paddr = rd(image, ph + 24, 8)?;
        let filesz = rd(image, ph + 32, 8)?;
        let memsz = rd(image, ph + 40, 8)?;
        match p_type {
            PT_LOAD => {
                if filesz == 0 || memsz < filesz {
                    return Err(format!(
                        "PT_LOAD at {paddr:#x}: filesz {filesz:#x}, memsz {memsz:#x}"
                    ));
                }
                if vaddr != paddr {
                    return Err(format!("PT_LOAD vaddr {vaddr:#x} != paddr {paddr:#x}"));
                }
                loads.push(Segment {
                    paddr,
                    filesz,
                    memsz,
                    flags,
                });
            }
            PT_NOTE => {
                notes += 1;
                let len = usize::try_from(filesz).map_err(|_| "huge PT_NOTE".to_string())?;
                let data = image
                    .get(offset..offset + len)
                    .ok_or("PT_NOTE outside the file")?;
                if let Some(e) = find_pvh_note(data)? {
                    pvh_entry = Some(e);
                }
            }
            _ => {}
        }
    }

    let lowest = loads.iter().map(|s| s.paddr).min().ok_or("no PT_LOAD")?;
    if lowest != LOAD_ADDR {
        return Err(format!(
            "lowest PT_LOAD at {lowest:#x}, expected {LOAD_ADDR:#x}"
        ));
    }
    if entry != LOAD_ADDR {
        return Err(format!("entry point {entry:#x}, expected {LOAD_ADDR:#x}"));
    }
    let in_code = |a: u64| {
        loads
            .iter()
            .any(|s| s.flags & PF_X != 0 && a >= s.paddr && a < s.paddr + s.filesz)
    };
    if !in_code(entry) {
        return Err(format!("entry {entry:#x} is not in an executable PT_LOAD"));
    }
    match (pvh, pvh_entry) {
        (true, None) => return Err(format!("no PVH note ({notes} PT_NOTE segment(s))")),
        (true, Some(e)) if !in_code(u64::from(e)) => {
            return Err(format!("PVH entry {e:#x} is not in an executable PT_LOAD"))
        }
        (false, Some(e)) => return Err(format!("unexpected PVH note (entry {e:#x})")),
        _ => {}
    }
    Ok(ImageInfo {
        entry,
        pvh_entry,
        loads,
    })
}
