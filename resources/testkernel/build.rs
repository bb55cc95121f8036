//! Compiles the freestanding test guest in `guest/` with the system C
//! compiler (GCC; `CC` overrides it) and links two images into `OUT_DIR`:
//! `testkernel.elf` (Linux 64-bit boot protocol) and `testkernel-pvh.elf`
//! (the same program plus a PVH ELF note). A separate 32-bit program in
//! `guest/multiboot/` becomes `testkernel-mb.elf` (multiboot, i386 ELF) and
//! `testkernel-mb.bin` (multiboot flat binary with the a.out kludge).

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{self, Command};

#[path = "src/elf_check.rs"]
mod elf_check;

const C_SOURCES: &[&str] = &[
    "main.c",
    "acpi.c",
    "pci.c",
    "io.c",
    "irq.c",
    "nic.c",
    "hostile.c",
    "qemu_devices.c",
    "virtio_net.c",
    "e1000.c",
    "rtl8139.c",
];
const COMMON_ASM: &[&str] = &["head.S"];
const PVH_NOTE_ASM: &str = "pvh_note.S";
const HEADERS: &[&str] = &["kernel.h", "nic.h"];
const LINKER_SCRIPT: &str = "kernel.ld.S";

/// Flags for every C and assembler source.
const CFLAGS: &[&str] = &[
    "-m64",
    "-std=gnu11",
    "-O2",
    "-ffreestanding",
    "-nostdlib",
    "-fno-pic",
    "-fno-pie",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-mcmodel=small",
    "-fno-stack-protector",
    "-fno-stack-clash-protection",
    "-fcf-protection=none",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fno-common",
    // keep GCC from turning the memset/memcpy loops into calls to themselves
    "-fno-tree-loop-distribute-patterns",
    "-Wall",
    "-Wextra",
];

/// Sources of the 32-bit multiboot guest (in `guest/multiboot/`).
const MB_SOURCES: &[&str] = &["head.S", "main.c", "kernel.ld"];

/// Flags for the 32-bit multiboot guest's sources.
const MB_CFLAGS: &[&str] = &[
    "-m32",
    "-std=gnu11",
    "-O2",
    "-ffreestanding",
    "-nostdlib",
    "-fno-pic",
    "-fno-pie",
    "-mgeneral-regs-only",
    "-fno-stack-protector",
    "-fcf-protection=none",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fno-common",
    "-fno-tree-loop-distribute-patterns",
    "-Wall",
    "-Wextra",
];

/// Flags for the link step.
const LDFLAGS: &[&str] = &[
    "-m64",
    "-nostdlib",
    "-static",
    "-no-pie",
    "-Wl,--build-id=none",
    "-Wl,-z,max-page-size=0x1000",
    "-Wl,-z,noexecstack",
    "-Wl,--orphan-handling=error",
];

fn die(msg: &str) -> ! {
    eprintln!("error: tapir-testkernel: {msg}");
    process::exit(1);
}

/// The compiler command: `CC` split on whitespace (so `ccache gcc` works),
/// or `gcc`.
fn compiler() -> (OsString, Vec<OsString>) {
    if let Ok(cc) = env::var("CC") {
        let mut words = cc.split_whitespace().map(OsString::from);
        if let Some(prog) = words.next() {
            return (prog, words.collect());
        }
    }
    ("gcc".into(), Vec::new())
}

/// Runs `cmd`, forwarding compiler diagnostics as cargo warnings and
/// aborting the build on failure.
fn run(cmd: &mut Command, what: &str) -> String {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => die(&format!(
            "C compiler `{prog}` not found while {what}. The test guest is built \
             from C and assembly with GCC: install gcc and binutils (e.g. \
             `apt-get install gcc`), or point CC at a GCC-compatible x86-64 compiler."
        )),
        Err(e) => die(&format!("failed to run `{prog}` while {what}: {e}")),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        die(&format!(
            "{what} failed ({}): {cmd:?}\n{}{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={line}");
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cc_command(cc: &(OsString, Vec<OsString>)) -> Command {
    let mut cmd = Command::new(&cc.0);
    cmd.args(&cc.1);
    cmd
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = manifest.join("guest");

    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-env-changed=OBJCOPY");
    println!("cargo:rerun-if-changed=src/elf_check.rs");
    let all_files = C_SOURCES
        .iter()
        .chain(COMMON_ASM)
        .chain(HEADERS)
        .chain([&PVH_NOTE_ASM, &LINKER_SCRIPT]);
    for f in all_files {
        println!("cargo:rerun-if-changed=guest/{f}");
    }
    for f in MB_SOURCES {
        println!("cargo:rerun-if-changed=guest/multiboot/{f}");
    }

    let cc = compiler();
    let machine = run(
        cc_command(&cc).arg("-dumpmachine"),
        "querying the C compiler's target",
    );
    if !machine.trim_start().starts_with("x86_64") {
        die(&format!(
            "`{}` targets `{}`, but the test guest must be built for x86-64; \
             set CC to an x86-64 GCC (e.g. x86_64-linux-gnu-gcc)",
            cc.0.to_string_lossy(),
            machine.trim()
        ));
    }

    let obj_dir = out.join("testkernel-obj");
    fs::create_dir_all(&obj_dir).unwrap_or_else(|e| die(&format!("creating {obj_dir:?}: {e}")));

    let compile = |name: &str| -> PathBuf {
        let obj = obj_dir.join(format!("{name}.o"));
        run(
            cc_command(&cc)
                .args(CFLAGS)
                .arg("-I")
                .arg(&src)
                .arg("-c")
                .arg(src.join(name))
                .arg("-o")
                .arg(&obj),
            &format!("compiling guest/{name}"),
        );
        obj
    };
    let common: Vec<PathBuf> = COMMON_ASM
        .iter()
        .chain(C_SOURCES)
        .map(|f| compile(f))
        .collect();
    let note = compile(PVH_NOTE_ASM);

    for (image, pvh) in [("testkernel.elf", false), ("testkernel-pvh.elf", true)] {
        // The linker script goes through the C preprocessor (-DPVH adds the note).
        let lds = obj_dir.join(if pvh { "pvh.ld" } else { "linux64.ld" });
        let mut cpp = cc_command(&cc);
        cpp.args(["-E", "-P", "-undef", "-x", "c"]);
        if pvh {
            cpp.arg("-DPVH");
        }
        cpp.arg(src.join(LINKER_SCRIPT)).arg("-o").arg(&lds);
        run(&mut cpp, "preprocessing guest/kernel.ld.S");

        let elf = out.join(image);
        let mut link = cc_command(&cc);
        link.args(LDFLAGS)
            .arg(format!("-Wl,-T,{}", lds.display()))
            .arg("-o")
            .arg(&elf)
            .args(&common);
        if pvh {
            link.arg(&note);
        }
        run(&mut link, &format!("linking {image}"));
        verify(&elf, pvh);
    }

    build_multiboot(&cc, &src.join("multiboot"), &obj_dir, &out);
}

/// Builds the 32-bit multiboot guest twice: an i386 ELF, and a flat binary
/// whose header carries the a.out-kludge address fields.
fn build_multiboot(cc: &(OsString, Vec<OsString>), src: &Path, obj_dir: &Path, out: &Path) {
    let compile = |name: &str, obj: &str, defines: &[&str]| -> PathBuf {
        let obj = obj_dir.join(obj);
        run(
            cc_command(cc)
                .args(MB_CFLAGS)
                .args(defines)
                .arg("-c")
                .arg(src.join(name))
                .arg("-o")
                .arg(&obj),
            &format!("compiling guest/multiboot/{name}"),
        );
        obj
    };
    let main = compile("main.c", "mb-main.o", &[]);
    for (image, kludge) in [
        ("testkernel-mb.elf", false),
        ("testkernel-mb-aout.elf", true),
    ] {
        let head = if kludge {
            compile("head.S", "mb-head-aout.o", &["-DAOUT_KLUDGE"])
        } else {
            compile("head.S", "mb-head.o", &[])
        };
        let elf = out.join(image);
        run(
            cc_command(cc)
                .args(["-m32", "-nostdlib", "-static", "-no-pie"])
                .args(["-Wl,--build-id=none", "-Wl,-z,max-page-size=0x1000"])
                .args(["-Wl,-z,noexecstack", "-Wl,--orphan-handling=error"])
                .arg(format!("-Wl,-T,{}", src.join("kernel.ld").display()))
                .arg("-o")
                .arg(&elf)
                .arg(&head)
                .arg(&main),
            &format!("linking {image}"),
        );
        if kludge {
            let bin = out.join("testkernel-mb.bin");
            let objcopy = env::var_os("OBJCOPY").unwrap_or_else(|| "objcopy".into());
            run(
                Command::new(objcopy)
                    .args(["-O", "binary"])
                    .arg(&elf)
                    .arg(&bin),
                "making testkernel-mb.bin with objcopy",
            );
        }
    }
}

/// Checks the linked image and writes a one-line-per-fact layout summary
/// next to it (`<image>.layout`) for whoever debugs a boot.
fn verify(elf: &Path, pvh: bool) {
    let bytes = fs::read(elf).unwrap_or_else(|e| die(&format!("reading {elf:?}: {e}")));
    let info = elf_check::check_image(&bytes, pvh)
        .unwrap_or_else(|e| die(&format!("{} is malformed: {e}", elf.display())));
    let mut summary = format!("entry64 {:#x}\n", info.entry);
    if let Some(e) = info.pvh_entry {
        summary += &format!("pvh_entry32 {e:#x}\n");
    }
    for s in &info.loads {
        summary += &format!(
            "load paddr={:#x} filesz={:#x} memsz={:#x} flags={:#x}\n",
            s.paddr, s.filesz, s.memsz, s.flags
        );
    }
    let path = elf.with_extension("layout");
    fs::write(&path, summary).unwrap_or_else(|e| die(&format!("writing {path:?}: {e}")));
}
