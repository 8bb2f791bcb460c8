//! The local-disk blob store: one file per blob under `blobs/xx/<hex>`.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{BlobStore, BlobWriter, StoreError};
use crate::hash::Hash;

/// Blobs as files: `blobs/<first two hex digits>/<64 hex digits>`, written to
/// `blobs/tmp/` first, fsynced, then renamed into place.
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    tmp: PathBuf,
    /// Directories whose entries changed since the last [`BlobStore::sync`].
    dirty: Arc<Mutex<HashSet<PathBuf>>>,
}

impl FsBlobStore {
    /// A store rooted at `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore, StoreError> {
        let root = root.into();
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp)
            .map_err(|e| StoreError::io(format!("creating {}", tmp.display()), e))?;
        Ok(FsBlobStore {
            root,
            tmp,
            dirty: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    fn path_of(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    fn mark_dirty(&self, dir: PathBuf) {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir);
    }
}

/// A blob being written to `blobs/tmp/`.
struct FsWriter {
    file: Option<File>,
    tmp: PathBuf,
    root: PathBuf,
    dirty: Arc<Mutex<HashSet<PathBuf>>>,
}

impl BlobStore for FsBlobStore {
    fn writer(&self, size_hint: u64) -> Result<Box<dyn BlobWriter>, StoreError> {
        let tmp = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| StoreError::io(format!("creating {}", tmp.display()), e))?;
        let _ = size_hint;
        Ok(Box::new(FsWriter {
            file: Some(file),
            tmp,
            root: self.root.clone(),
            dirty: Arc::clone(&self.dirty),
        }))
    }

    fn sync(&self) -> Result<(), StoreError> {
        let dirs: Vec<PathBuf> = self
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for dir in &dirs {
            if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
                // Put them back so a later sync retries.
                self.dirty
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(dirs.iter().cloned());
                return Err(StoreError::io(format!("syncing {}", dir.display()), e));
            }
        }
        Ok(())
    }

    fn reuse(&self, hash: &Hash) -> Result<bool, StoreError> {
        let p = self.path_of(hash);
        // A file in place was synced before it was renamed there; its
        // directory entry is made durable by the next sync.
        let file = match OpenOptions::new().write(true).open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io(format!("checking blob {}", p.display()), e)),
        };
        if !file
            .metadata()
            .map_err(|e| StoreError::io(format!("checking blob {}", p.display()), e))?
            .is_file()
        {
            return Ok(false);
        }
        file.set_modified(SystemTime::now())
            .map_err(|e| StoreError::io(format!("renewing blob {}", p.display()), e))?;
        if let Some(d) = p.parent() {
            self.mark_dirty(d.to_path_buf());
        }
        Ok(true)
    }

    fn open(&self, hash: &Hash) -> Result<Box<dyn Read + Send>, StoreError> {
        let p = self.path_of(hash);
        File::open(&p)
            .map(|f| Box::new(f) as Box<dyn Read + Send>)
            .map_err(|e| StoreError::io(format!("opening blob {}", p.display()), e))
    }

    fn local_path(&self, hash: &Hash) -> Option<PathBuf> {
        Some(self.path_of(hash))
    }

    fn remove(&self, hash: &Hash, cutoff: SystemTime) -> Result<bool, StoreError> {
        let p = self.path_of(hash);
        let old = match fs::symlink_metadata(&p).and_then(|m| m.modified()) {
            Ok(t) => t < cutoff,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io(format!("checking {}", p.display()), e)),
        };
        if !old {
            return Ok(false);
        }
        match fs::remove_file(&p) {
            Ok(()) => {
                if let Some(d) = p.parent() {
                    self.mark_dirty(d.to_path_buf());
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(format!("removing {}", p.display()), e)),
        }
    }

    fn list(&self, visit: &mut dyn FnMut(Hash, SystemTime)) -> Result<(), StoreError> {
        let rd = |p: &Path| {
            fs::read_dir(p).map_err(|e| StoreError::io(format!("listing {}", p.display()), e))
        };
        for sub in rd(&self.root)? {
            let sub = sub.map_err(|e| StoreError::io("listing blobs", e))?;
            let sub_name = sub.file_name();
            let Some(prefix) = sub_name.to_str() else {
                continue;
            };
            if prefix.len() != 2 || !sub.path().is_dir() {
                continue;
            }
            for f in rd(&sub.path())? {
                let f = f.map_err(|e| StoreError::io("listing blobs", e))?;
                let Some(hash) = f.file_name().to_str().and_then(|s| s.parse::<Hash>().ok()) else {
                    continue;
                };
                let mtime = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                visit(hash, mtime);
            }
        }
        Ok(())
    }

    fn remove_stale(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        let mut n = 0;
        let rd = fs::read_dir(&self.tmp)
            .map_err(|e| StoreError::io(format!("listing {}", self.tmp.display()), e))?;
        for f in rd.flatten() {
            let old = f
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old && fs::remove_file(f.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Write for FsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("blob writer already finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter for FsWriter {
    fn finish(mut self: Box<Self>, hash: &Hash) -> Result<(), StoreError> {
        let file = self
            .file
            .take()
            .ok_or_else(|| StoreError::corrupt("blob writer finished twice"))?;
        file.sync_all()
            .map_err(|e| StoreError::io(format!("syncing {}", self.tmp.display()), e))?;
        drop(file);
        let hex = hash.to_hex();
        let dir = self.root.join(&hex[..2]);
        if !dir.is_dir() {
            fs::create_dir_all(&dir)
                .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
            self.note_dirty(self.root.clone());
        }
        let dest = dir.join(&hex);
        fs::rename(&self.tmp, &dest).map_err(|e| {
            StoreError::io(
                format!("moving {} to {}", self.tmp.display(), dest.display()),
                e,
            )
        })?;
        self.note_dirty(dir);
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl FsWriter {
    fn note_dirty(&self, dir: PathBuf) {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir);
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
