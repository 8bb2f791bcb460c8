//! A folder's listing, sorted, with each regular file's size and mtime, and
//! what the walk reads beside a file (its sidecar).

use std::ffi::{OsStr, OsString};
use std::fs::{self, FileType};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::options::{PlanEvent, SkipReason};
use crate::item::mtime_ns;
use crate::meta::{MAX_SIDECAR_BYTES, Meta, MetaError, SIDECAR_SUFFIX};

/// One entry of a listing.
#[derive(Debug)]
pub(crate) struct Ent {
    pub(crate) name: OsString,
    pub(crate) ty: FileType,
    /// Size and mtime of a regular file, read with the listing.
    pub(crate) stat: Option<(u64, i64)>,
    /// Device and inode of a folder, read with the listing.
    pub(crate) id: Option<(u64, u64)>,
}

/// A folder on the walk's current path, with its listing and how far the
/// walk has come through it.
pub(crate) struct Frame {
    pub(crate) dir: PathBuf,
    /// The folder relative to its root.
    pub(crate) rel: PathBuf,
    pub(crate) depth: usize,
    pub(crate) entries: Vec<Ent>,
    pub(crate) pos: usize,
    /// Entries from here on were not yet looked at for folders to list
    /// ahead.
    pub(crate) asked: usize,
}

impl Frame {
    /// Whether an entry other than a folder is named `name`.
    pub(crate) fn has_file(&self, name: &OsStr) -> bool {
        self.has_non_dir(name.as_bytes(), b"")
    }

    /// Whether the sidecar of `name` (`name` + `.meta.json`) is listed.
    pub(crate) fn has_sidecar(&self, name: &OsStr) -> bool {
        self.has_non_dir(name.as_bytes(), SIDECAR_SUFFIX.as_bytes())
    }

    /// Whether an entry other than a folder is named `a` + `b`, found
    /// without building the name.
    fn has_non_dir(&self, a: &[u8], b: &[u8]) -> bool {
        let cmp = |e: &Ent| {
            let n = e.name.as_bytes();
            let k = n.len().min(a.len());
            n[..k].cmp(&a[..k]).then_with(|| {
                if n.len() < a.len() {
                    std::cmp::Ordering::Less
                } else {
                    n[a.len()..].cmp(b)
                }
            })
        };
        self.entries
            .binary_search_by(cmp)
            .is_ok_and(|i| !self.entries[i].ty.is_dir())
    }
}

/// The entries of `dir`, sorted by name (bytewise).
pub(crate) fn read_sorted(dir: &Path) -> io::Result<Vec<Ent>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let ty = e.file_type()?;
        // A stat relative to the open directory costs no path lookup; the
        // quick check then needs no stat of its own, nor the walk one to
        // know a folder.
        let (mut stat, mut id) = (None, None);
        if (ty.is_file() || ty.is_dir())
            && let Ok(m) = e.metadata()
        {
            if ty.is_file() {
                stat = Some((m.len(), mtime_ns(&m)));
            } else {
                id = Some((m.dev(), m.ino()));
            }
        }
        v.push(Ent {
            name: e.file_name(),
            ty,
            stat,
            id,
        });
    }
    v.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(v)
}

/// The metadata in the sidecar at `path`, or why it is invalid.
pub(crate) fn read_sidecar(path: &Path) -> Result<Option<Meta>, String> {
    let f = fs::File::open(path).map_err(|e| format!("cannot read the sidecar: {e}"))?;
    let mut data = Vec::new();
    f.take(MAX_SIDECAR_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read the sidecar: {e}"))?;
    if data.len() as u64 > MAX_SIDECAR_BYTES {
        let size = fs::metadata(path).map_or(data.len() as u64, |m| m.len());
        return Err(MetaError::TooLarge(size).to_string());
    }
    Meta::parse(&data).map_err(|e| e.to_string())
}

/// What a path that is neither a file nor a folder is.
pub(crate) fn special_kind(ty: &FileType) -> &'static str {
    if ty.is_fifo() {
        "a FIFO"
    } else if ty.is_socket() {
        "a socket"
    } else if ty.is_block_device() {
        "a block device"
    } else if ty.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// The event of a symbolic link left unfollowed.
pub(crate) fn skipped_link(path: PathBuf) -> PlanEvent {
    PlanEvent::Skipped {
        path,
        reason: SkipReason::Symlink,
        why: "symbolic link not followed (use --follow-links)".into(),
    }
}

/// The event of a path in a folder that is neither a file nor a folder.
pub(crate) fn skipped_special(path: PathBuf, ty: &FileType) -> PlanEvent {
    PlanEvent::Skipped {
        path,
        reason: SkipReason::SpecialFile,
        why: format!("{}; only regular files are ingested", special_kind(ty)),
    }
}

/// Why the symbolic link at `path` could not be followed.
pub(crate) fn follow_error(path: &Path, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        format!("{} is a dangling symbolic link", path.display())
    } else if e.raw_os_error() == Some(libc::ELOOP) {
        format!("{} is a symbolic link loop", path.display())
    } else {
        format!("cannot follow {}: {e}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::sidecar_name;

    /// The sidecar lookup that builds no string agrees with the one that
    /// does, on names that sort around each other's sidecars (prefixes of
    /// each other, with and without sidecars), whatever entry a binary
    /// search lands on first.
    #[test]
    fn has_sidecar_agrees_with_looking_up_the_sidecar_name() {
        let dir = tempfile::tempdir().unwrap();
        // Every word of 1 to 4 letters over {a, b}, and a sidecar for every
        // third one; some names that sort between a word and its sidecar.
        let mut words = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..4 {
            words = words
                .iter()
                .flat_map(|w| [format!("{w}a"), format!("{w}b")])
                .collect();
            all.extend(words.iter().cloned());
        }
        for (i, w) in all.iter().enumerate() {
            fs::write(dir.path().join(w), b"x").unwrap();
            if i % 3 == 0 {
                fs::write(dir.path().join(format!("{w}.meta.json")), b"{}").unwrap();
            }
        }
        for odd in ["a.", "a.meta.jso", "a.meta.jsonx", "ab.meta.json.meta.json"] {
            fs::write(dir.path().join(odd), b"x").unwrap();
        }
        fs::create_dir(dir.path().join("bbbbb")).unwrap();
        fs::create_dir(dir.path().join("bbbbb.meta.json")).unwrap();
        let frame = Frame {
            dir: dir.path().to_path_buf(),
            rel: PathBuf::new(),
            depth: 0,
            entries: read_sorted(dir.path()).unwrap(),
            pos: 0,
            asked: 0,
        };
        let probes =
            all.iter()
                .map(String::as_str)
                .chain(["", "c", "bbbbb", "ab.meta.json", "a.meta.json"]);
        let mut found = 0;
        for name in probes {
            let name = OsStr::new(name);
            let expected = frame.has_file(&sidecar_name(name));
            assert_eq!(frame.has_sidecar(name), expected, "{name:?}");
            found += usize::from(expected);
        }
        // A third of the 30 words, and `ab.meta.json`; not the folder's.
        assert_eq!(found, 11);
    }
}
