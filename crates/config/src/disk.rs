//! `--disk` specifications: `PATH[,ro][,id=NAME]`.
//!
//! - `PATH` a raw disk image (its size whole 512-byte sectors); a path
//!   with a comma cannot be given
//! - `ro` the guest gets the disk read-only (VIRTIO_BLK_F_RO)
//! - `id=` the disk's name and the serial number the guest sees
//!   (`/dev/disk/by-id/virtio-NAME`): letters, digits, `-`, `_`, `.`, at
//!   most 20 (the virtio-blk serial's size)
//!
//! `--disk help` lists this.

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The longest `id=`: virtio-blk's serial number field.
pub const DISK_ID_MAX: usize = 20;

/// Errors in one `--disk` value; each is one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiskSpecError {
    /// No path.
    #[error("--disk: no image path (expected PATH[,ro][,id=NAME]; see --disk help)")]
    NoPath,
    /// An option tapir does not know.
    #[error("--disk: unknown option '{}' (expected ro or id=NAME; see --disk help)", .0.escape_debug())]
    UnknownOption(String),
    /// An option given twice.
    #[error("--disk: '{}' given more than once", .0.escape_debug())]
    Duplicate(String),
    /// A bad `id=`.
    #[error("--disk: invalid id '{}': letters, digits, '-', '_' and '.', 1 to 20 of them", .0.escape_debug())]
    BadId(String),
    /// Two disks with one id.
    #[error("--disk: two disks are named '{0}' (id= must differ)")]
    DuplicateId(String),
}

/// A validated `--disk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The raw image.
    pub path: PathBuf,
    /// Offered read-only.
    pub read_only: bool,
    /// `id=`, if given.
    pub id: Option<String>,
}

impl DiskSpec {
    /// The disk's name: its `id=`, or `disk<index>`.
    pub fn name(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("disk{index}"))
    }

    /// The serial number the guest reads: `id=`, or the image's file name
    /// (its first 20 bytes, characters outside `id=`'s set as `_`).
    pub fn serial(&self) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tapir-disk".into());
        name.chars()
            .map(|c| if id_char(c) { c } else { '_' })
            .take(DISK_ID_MAX)
            .collect()
    }
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// One `--disk` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskArg {
    /// `--disk help`.
    Help,
    /// A disk.
    Disk(DiskSpec),
}

impl FromStr for DiskArg {
    type Err = DiskSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tokens = s.split(',');
        let path = tokens.next().unwrap_or("");
        if path == "help" {
            return Ok(DiskArg::Help);
        }
        if path.is_empty() {
            return Err(DiskSpecError::NoPath);
        }
        let mut read_only = false;
        let mut id = None;
        for tok in tokens {
            if tok == "ro" {
                if read_only {
                    return Err(DiskSpecError::Duplicate("ro".into()));
                }
                read_only = true;
            } else if let Some(v) = tok.strip_prefix("id=") {
                if id.is_some() {
                    return Err(DiskSpecError::Duplicate("id".into()));
                }
                if v.is_empty() || v.len() > DISK_ID_MAX || !v.chars().all(id_char) {
                    return Err(DiskSpecError::BadId(v.into()));
                }
                id = Some(v.to_string());
            } else {
                return Err(DiskSpecError::UnknownOption(tok.into()));
            }
        }
        Ok(DiskArg::Disk(DiskSpec {
            path: Path::new(path).to_path_buf(),
            read_only,
            id,
        }))
    }
}

/// Checks what only the whole list shows: names are unique.
pub fn check_disks(disks: &[DiskSpec]) -> Result<(), DiskSpecError> {
    for (i, d) in disks.iter().enumerate() {
        let name = d.name(i);
        if disks
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.name(j) == name)
        {
            return Err(DiskSpecError::DuplicateId(name));
        }
    }
    Ok(())
}

/// The `--disk help` listing.
pub const DISK_HELP: &str = "\
--disk PATH[,ro][,id=NAME]   a virtio-blk disk (PCI 1af4:1042, Linux driver virtio_blk), repeatable
  PATH      a raw image; its size must be whole 512-byte sectors
  ro        read-only for the guest (VIRTIO_BLK_F_RO); the file is opened read-only
  id=NAME   the disk's name and serial number (/dev/disk/by-id/virtio-NAME):
            letters, digits, '-', '_', '.', at most 20; default: disk0, disk1, ...
            and the image's file name as the serial
Features: flush (fdatasync), discard (punches holes in the image), GET_ID. See docs/disk.md.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> DiskSpec {
        match s.parse::<DiskArg>().unwrap() {
            DiskArg::Disk(d) => d,
            DiskArg::Help => panic!("help"),
        }
    }

    #[test]
    fn parses_path_ro_and_id() {
        let d = spec("/img/root.img");
        assert_eq!(d.path, PathBuf::from("/img/root.img"));
        assert!(!d.read_only);
        assert_eq!(d.name(2), "disk2");
        assert_eq!(d.serial(), "root.img");
        let d = spec("a.img,ro,id=boot-1");
        assert!(d.read_only);
        assert_eq!(d.name(0), "boot-1");
        assert_eq!(d.serial(), "boot-1");
        assert_eq!("help".parse(), Ok(DiskArg::Help));
        assert_eq!(
            spec("/x/a very long image name+1.img").serial(),
            "a_very_long_image_na"
        );
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        let err = |s: &str| s.parse::<DiskArg>().unwrap_err().to_string();
        assert!(err("").contains("no image path"));
        assert!(err(",ro").contains("no image path"));
        assert!(err("a.img,rw").contains("unknown option 'rw'"));
        assert!(err("a.img,ro,ro").contains("'ro' given more than once"));
        assert!(err("a.img,id=x,id=y").contains("'id' given more than once"));
        assert!(err("a.img,id=").contains("invalid id ''"));
        assert!(err("a.img,id=a/b").contains("invalid id 'a/b'"));
        assert!(err(&format!("a.img,id={}", "x".repeat(21))).contains("invalid id"));
        assert!(!err("a.img,id=\n").contains('\n'));
    }

    #[test]
    fn names_must_differ() {
        let a = spec("a.img,id=disk1");
        let b = spec("b.img");
        assert_eq!(
            check_disks(&[a, b.clone()]).unwrap_err(),
            DiskSpecError::DuplicateId("disk1".into())
        );
        assert_eq!(check_disks(&[b.clone(), b]), Ok(()));
    }
}
