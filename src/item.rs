//! What a plan hands an ingest run: one [`Item`] per file, in the order
//! the run treats them.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::meta::Meta;
use crate::name::Name;
use crate::outcome::Reason;

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on disk, read once.
    Path(PathBuf),
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A file on disk whose size and mtime the caller has just read (a
    /// walk gets them cheaply from the directory): the quick check uses
    /// them instead of a stat of its own.
    Listed {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Its mtime, in nanoseconds since the epoch.
        mtime_ns: i64,
    },
    /// A file written for this ingest alone, which its owner removes
    /// afterwards (an upload staged by `intake serve`): read like
    /// [`Source::Path`], but nothing is remembered of it for the quick
    /// check, and reports name no source.
    Upload(PathBuf),
}

impl Source {
    /// The path, for a source on disk.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Path(p) | Source::Listed { path: p, .. } => Some(p),
            Source::Bytes(_) | Source::Upload(_) => None,
        }
    }

    /// The path, for a source on disk.
    pub fn into_path(self) -> Option<PathBuf> {
        match self {
            Source::Path(p) | Source::Listed { path: p, .. } => Some(p),
            Source::Bytes(_) | Source::Upload(_) => None,
        }
    }
}

/// One thing to ingest, in the order the run should treat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A file to ingest under `name`.
    File {
        /// Its workspace name.
        name: Name,
        /// Its content.
        source: Source,
        /// Its metadata.
        meta: Option<Meta>,
    },
    /// Something already known to fail (an invalid name or sidecar, an
    /// unreadable directory entry): it is reported and counted in order.
    Failed {
        /// The name, or its printable form.
        name: String,
        /// Where it came from.
        source: Option<PathBuf>,
        /// Why it failed.
        reason: Reason,
        /// For the user.
        message: String,
    },
}

impl Item {
    /// A file on disk.
    pub fn path(name: Name, path: impl Into<PathBuf>) -> Item {
        Item::File {
            name,
            source: Source::Path(path.into()),
            meta: None,
        }
    }

    /// Bytes in memory.
    pub fn bytes(name: Name, data: impl Into<Vec<u8>>) -> Item {
        Item::File {
            name,
            source: Source::Bytes(data.into()),
            meta: None,
        }
    }

    /// Attaches metadata (to a file; a failed item is left as it is).
    pub fn with_meta(mut self, m: Option<Meta>) -> Item {
        if let Item::File { meta, .. } = &mut self {
            *meta = m;
        }
        self
    }
}

/// A file's mtime in nanoseconds since the epoch, as [`Source::Listed`]
/// and the quick check's records carry it.
pub fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}
