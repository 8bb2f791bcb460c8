//! The readers: each file is read once, hashed on the way, and its content
//! stored when the decision may need it (inline bytes for a small file, a
//! blob in the store for a large one). A file that changes while it is
//! read fails; it is never stored torn.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::prepared::{Blob, Prepared, State, store_failed};
use crate::decide::needs_content;
use crate::engine::Engine;
use crate::hash::Hash;
use crate::item::{Item, Source, mtime_ns};
use crate::meta::Meta;
use crate::name::Name;
use crate::outcome::Reason;
use crate::session::WriteMode;
use crate::store::{SourceRecord, StoreError};

/// A reader thread's settings.
pub(crate) struct Reader<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) mode: WriteMode,
    /// Decide only: store nothing.
    pub(crate) dry_run: bool,
}

/// Why copying into a blob failed.
enum CopyError {
    /// Reading the source.
    Read(io::Error),
    /// Writing the blob.
    Write(io::Error),
}

/// Why storing a source as a blob failed.
enum StoreReadError {
    /// The source could not be read.
    Read(io::Error),
    /// The store failed.
    Store(StoreError),
}

impl Reader<'_> {
    /// Reads, hashes and (when it may be needed) stores one file.
    pub(crate) fn prepare(&self, seq: u64, item: Item) -> Prepared {
        let (name, source, meta) = match item {
            Item::File { name, source, meta } => (name, source, meta),
            // Admission sends failed items straight to the committer; this
            // arm only keeps the function total.
            Item::Failed {
                name,
                source,
                reason,
                message,
            } => return Prepared::failed(seq, name, source, reason, message),
        };
        let mut p = Prepared {
            seq,
            name: name.as_str().to_owned(),
            source: source.path().map(|p| p.to_path_buf()),
            state: State::Failed {
                reason: Reason::ReadError,
                message: String::new(),
            },
        };
        p.state = match source {
            Source::Bytes(data) => self.prepare_bytes(data, meta),
            Source::Path(path) | Source::Listed { path, .. } => {
                self.prepare_path(&name, path, meta)
            }
            Source::Upload(path) => match self.prepare_path(&name, path, meta) {
                State::Read {
                    hash,
                    size,
                    meta,
                    blob,
                    source: _,
                } => State::Read {
                    hash,
                    size,
                    meta,
                    blob,
                    source: None,
                },
                other => other,
            },
        };
        p
    }

    fn prepare_bytes(&self, data: Vec<u8>, meta: Option<Meta>) -> State {
        let hash = Hash::of(&data);
        let size = data.len() as u64;
        let blob = if size <= self.engine.inline_threshold || self.dry_run {
            Blob::Inline(data)
        } else {
            match self.store_known(&hash, || {
                self.store_reader(&mut io::Cursor::new(&data), size)
            }) {
                Ok(()) => Blob::Stored,
                Err(StoreReadError::Store(e)) => return store_failed(e),
                // Reading memory does not fail.
                Err(StoreReadError::Read(e)) => return store_failed(StoreError::io("reading", e)),
            }
        };
        State::Read {
            hash,
            size,
            meta,
            blob,
            source: None,
        }
    }

    fn prepare_path(&self, name: &Name, path: PathBuf, meta: Option<Meta>) -> State {
        let read_err = |what: &str, e: io::Error| State::Failed {
            reason: Reason::ReadError,
            message: format!("{what} {}: {e}", path.display()),
        };
        // O_NONBLOCK: opening a FIFO must never wait for a writer.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => return read_err("cannot open", e),
        };
        let before = match file.metadata() {
            Ok(m) => m,
            Err(e) => return read_err("cannot stat", e),
        };
        if !before.is_file() {
            return State::Failed {
                reason: Reason::ReadError,
                message: format!("{} is not a regular file", path.display()),
            };
        }
        let size = before.len();
        let mtime = mtime_ns(&before);
        // Whether the content may be needed: if not even when the name
        // exists, whether it exists now. Of a remote index, a file small
        // enough to be kept inline is read whole instead: that costs less
        // than a round trip.
        let need_blob = needs_content(self.mode, true)
            || (size <= self.engine.inline_threshold && self.engine.index.is_remote())
            || match self
                .engine
                .retry
                .run(|| self.engine.index.current(name.as_str()))
            {
                Ok(e) => needs_content(self.mode, e.is_some_and(|e| !e.deleted)),
                Err(e) => return store_failed(e),
            };
        let mut file = file;
        let threshold = self.engine.inline_threshold;
        let (hash, read, blob) = if !need_blob || self.dry_run {
            let mut hasher = blake3::Hasher::new();
            match copy_hashing(&mut file, &mut io::sink(), &mut hasher) {
                Ok(n) => (hasher.finalize().into(), n, Blob::NotStored),
                Err(CopyError::Read(e) | CopyError::Write(e)) => return read_err("cannot read", e),
            }
        } else if size <= threshold {
            let mut data = Vec::with_capacity(size as usize);
            match (&mut file).take(threshold + 1).read_to_end(&mut data) {
                // More than the threshold means it grew: the check below
                // reports it as changed while reading.
                Ok(n) => (Hash::of(&data), n as u64, Blob::Inline(data)),
                Err(e) => return read_err("cannot read", e),
            }
        } else {
            match self.store_reader(&mut file, size) {
                Ok((h, n)) => (h, n, Blob::Stored),
                Err(StoreReadError::Read(e)) => return read_err("cannot read", e),
                Err(StoreReadError::Store(e)) => return store_failed(e),
            }
        };
        let after = match file.metadata() {
            Ok(m) => m,
            Err(e) => return read_err("cannot stat", e),
        };
        if read != size || after.len() != size || mtime_ns(&after) != mtime {
            return State::Failed {
                reason: Reason::ChangedWhileReading,
                message: format!(
                    "{} changed while it was read ({size} bytes at open, {read} read, {} at the end)",
                    path.display(),
                    after.len()
                ),
            };
        }
        let blob = if self.dry_run { Blob::NotStored } else { blob };
        let recorded_meta = meta.as_ref().map(|m| m.as_str().to_owned());
        State::Read {
            hash,
            size,
            meta,
            blob,
            source: Some(Box::new(SourceRecord {
                path,
                size,
                mtime_ns: mtime,
                name: name.as_str().to_owned(),
                hash,
                meta: recorded_meta,
            })),
        }
    }

    /// Stores the blob `hash` with `store` unless the store already holds
    /// it (see [`crate::store::BlobStore::reuse`]).
    fn store_known(
        &self,
        hash: &Hash,
        store: impl FnOnce() -> Result<(Hash, u64), StoreReadError>,
    ) -> Result<(), StoreReadError> {
        if self
            .engine
            .blobs
            .reuse(hash)
            .map_err(StoreReadError::Store)?
        {
            return Ok(());
        }
        store().map(|_| ())
    }

    /// Copies `r` into a new external blob, hashing on the way. A blob the
    /// store already holds is not finished a second time: its new copy is
    /// dropped (discarded) instead.
    fn store_reader(&self, r: &mut dyn Read, size: u64) -> Result<(Hash, u64), StoreReadError> {
        let store = |e| StoreReadError::Store(e);
        let mut w = self.engine.blobs.writer(size).map_err(store)?;
        let mut hasher = blake3::Hasher::new();
        let n = match copy_hashing(r, &mut *w, &mut hasher) {
            Ok(n) => n,
            Err(CopyError::Read(e)) => return Err(StoreReadError::Read(e)),
            Err(CopyError::Write(e)) => return Err(store(StoreError::io("writing a blob", e))),
        };
        let hash: Hash = hasher.finalize().into();
        if !self.engine.blobs.reuse(&hash).map_err(store)? {
            w.finish(&hash).map_err(store)?;
        }
        Ok((hash, n))
    }
}

fn copy_hashing(
    r: &mut dyn Read,
    w: &mut dyn Write,
    hasher: &mut blake3::Hasher,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 1024 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..k]);
        w.write_all(&buf[..k]).map_err(CopyError::Write)?;
        n += k as u64;
    }
}
