//! Export (SPEC §10): the workspace, or its state at an instant, written as
//! a plain folder tree.
//!
//! Every file is written to a temporary name inside the export folder,
//! synced, and renamed into place, so that a reader (or a crash) never
//! sees a torn file. A manifest in the folder (`.intake-export.json`)
//! records what was exported: a later export rewrites only what changed
//! (in the workspace, or on disk since), and `delete` removes only files
//! the manifest lists whose names left the workspace and that nobody has
//! changed since. The manifest is written last, after everything it lists
//! is durable. One export at a time per folder (a lock file).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::meta::sidecar_name;
use crate::name::Name;
use crate::store::Entry;
use crate::workspace::Workspace;

/// The manifest's file name inside the export folder.
pub const MANIFEST: &str = ".intake-export.json";
/// Where files are written before they are renamed into place.
const TMP_DIR: &str = ".intake-export.tmp";
/// The lock that keeps two exports out of one folder.
const LOCK: &str = ".intake-export.lock";

/// What to export, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// The workspace as it was at this instant (default: now).
    pub at: Option<DateTime<Utc>>,
    /// Write each name's metadata as an `X.meta.json` sidecar beside it.
    pub with_meta: bool,
    /// Remove files an earlier export wrote whose names are no longer in
    /// the workspace (under `prefix`).
    pub delete: bool,
}

/// What happened to one file of the export folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportAction {
    /// Written (new, or changed in the workspace or on disk).
    Written,
    /// Already there as exported.
    Unchanged,
    /// Removed: its name left the workspace (`delete`).
    Removed,
    /// Left in place though its name left the workspace: it was changed
    /// on disk after it was exported.
    Kept,
    /// Could not be written or removed; see the message.
    Failed,
}

impl ExportAction {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportAction::Written => "written",
            ExportAction::Unchanged => "unchanged",
            ExportAction::Removed => "removed",
            ExportAction::Kept => "kept",
            ExportAction::Failed => "failed",
        }
    }
}

/// One file of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEvent {
    /// Its path inside the export folder (`/`-separated).
    pub path: String,
    /// What happened.
    pub action: ExportAction,
    /// Why, for `failed` and `kept`.
    pub message: Option<String>,
    /// Its size, for a file written or unchanged.
    pub size: Option<u64>,
}

/// The totals of an export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Files written.
    pub written: u64,
    /// Files already there.
    pub unchanged: u64,
    /// Files removed.
    pub removed: u64,
    /// Files kept because they changed on disk.
    pub kept: u64,
    /// Files that failed.
    pub failed: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: std::time::Duration,
}

/// What the manifest remembers of one exported file: its content's hash,
/// and its size and mtime as written, to tell whether it changed on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Exported {
    #[serde(with = "hex_hash")]
    blake3: Hash,
    size: u64,
    mtime_ns: i64,
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::hash::Hash;

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    files: BTreeMap<String, Exported>,
}

/// One file the export should leave in the folder.
struct Wanted<'a> {
    path: String,
    hash: Hash,
    size: u64,
    content: Content<'a>,
}

enum Content<'a> {
    /// A name's blob.
    Blob(&'a Entry),
    /// A sidecar's bytes.
    Bytes(Vec<u8>),
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::Export { what, source: e }
}

fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec()
}

/// Whether the file at `p` is still exactly as the manifest says it was
/// written.
fn still_as_exported(p: &Path, was: &Exported) -> bool {
    fs::symlink_metadata(p)
        .is_ok_and(|m| m.is_file() && m.len() == was.size && mtime_ns(&m) == was.mtime_ns)
}

impl Workspace {
    /// Exports the workspace (or its state at `opts.at`) into the folder
    /// `dir` (created if missing), calling `visit` for each file of it.
    pub fn export(
        &self,
        dir: &Path,
        opts: &ExportOptions,
        mut visit: impl FnMut(&ExportEvent),
    ) -> Result<ExportSummary> {
        let started = Instant::now();
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(io_err(format!("opening {}", dir.join(LOCK).display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::ExportBusy(dir.to_path_buf()));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_err(format!("locking {}", dir.join(LOCK).display()))(e));
            }
        }
        // What an interrupted export left half-written.
        let tmp = dir.join(TMP_DIR);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(format!("clearing {}", tmp.display())))?;
        }
        fs::create_dir(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;

        let manifest_path = dir.join(MANIFEST);
        let mut manifest: Manifest = match fs::read(&manifest_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Export {
                what: format!(
                    "reading {} (remove it to export everything again)",
                    manifest_path.display()
                ),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Manifest {
                format: 1,
                ..Manifest::default()
            },
            Err(e) => return Err(io_err(format!("reading {}", manifest_path.display()))(e)),
        };

        let mut entries = Vec::new();
        let prefix = opts.prefix.as_deref();
        match opts.at {
            Some(at) => self.as_of(at)?.list(prefix, |e| {
                entries.push(e);
                true
            })?,
            None => self.list(prefix, |e| {
                entries.push(e);
                true
            })?,
        }
        let mut wanted = Vec::with_capacity(entries.len());
        for e in &entries {
            if opts.with_meta
                && let Some(m) = &e.meta
            {
                // The canonical JSON: ingesting the folder again gives
                // the same metadata.
                let bytes = m.clone().into_bytes();
                wanted.push(Wanted {
                    path: sidecar_name(std::ffi::OsStr::new(&e.name))
                        .to_string_lossy()
                        .into_owned(),
                    hash: Hash::of(&bytes),
                    size: bytes.len() as u64,
                    content: Content::Bytes(bytes),
                });
            }
            wanted.push(Wanted {
                path: e.name.clone(),
                hash: e.hash,
                size: e.size,
                content: Content::Blob(e),
            });
        }
        wanted.sort_by(|a, b| a.path.cmp(&b.path));

        let mut sum = ExportSummary::default();
        let mut dirs = Dirs::new(dir);
        // Removals first, so that a name that replaced a folder's worth of
        // names (or the other way round) finds its place free.
        let wanted_paths: HashSet<&str> = wanted.iter().map(|w| w.path.as_str()).collect();
        if opts.delete {
            let gone: Vec<String> = manifest
                .files
                .keys()
                .filter(|p| {
                    prefix.is_none_or(|pre| p.starts_with(pre))
                        && !wanted_paths.contains(p.as_str())
                })
                .cloned()
                .collect();
            for path in gone {
                let dest = dir.join(&path);
                let Some(was) = manifest.files.get(&path) else {
                    continue;
                };
                let (action, message) = if !still_as_exported(&dest, was) {
                    if fs::symlink_metadata(&dest).is_err() {
                        // Removed by someone else already.
                        manifest.files.remove(&path);
                        continue;
                    }
                    (
                        ExportAction::Kept,
                        Some("changed since it was exported; left in place".to_owned()),
                    )
                } else {
                    match fs::remove_file(&dest) {
                        Ok(()) => {
                            manifest.files.remove(&path);
                            if let Some(parent) = dest.parent() {
                                dirs.touched(parent);
                                dirs.prune(parent);
                            }
                            (ExportAction::Removed, None)
                        }
                        Err(e) => (ExportAction::Failed, Some(format!("removing it: {e}"))),
                    }
                };
                count(&mut sum, action);
                visit(&ExportEvent {
                    path,
                    action,
                    message,
                    size: None,
                });
            }
        }

        let mut seen: HashSet<String> = HashSet::with_capacity(wanted.len());
        // In chunks: each chunk's new files are written, then synced
        // together (so that the filesystem commits them as a group, not one
        // journal commit per file), then renamed into place, in path order.
        for (c, chunk) in wanted.chunks(CHUNK).enumerate() {
            let mut events = Vec::with_capacity(chunk.len());
            let mut staged: Vec<(usize, Staged)> = Vec::new();
            for (k, w) in chunk.iter().enumerate() {
                let mut event = ExportEvent {
                    path: w.path.clone(),
                    action: ExportAction::Unchanged,
                    message: None,
                    size: Some(w.size),
                };
                if !seen.insert(w.path.clone()) {
                    event.action = ExportAction::Failed;
                    event.message = Some(format!(
                        "{} is both a name and a name's sidecar; exported once",
                        w.path
                    ));
                } else {
                    let dest = dir.join(&w.path);
                    let same = manifest
                        .files
                        .get(&w.path)
                        .is_some_and(|was| was.blake3 == w.hash && still_as_exported(&dest, was));
                    if !same {
                        match self.stage(dir, &tmp, c * CHUNK + k, w, &mut dirs) {
                            Ok(st) => staged.push((k, st)),
                            Err(message) => {
                                event.action = ExportAction::Failed;
                                event.message = Some(message);
                            }
                        }
                    }
                }
                events.push(event);
            }
            for (k, st, synced) in sync_all(staged) {
                let w = &chunk[k];
                match synced.and_then(|()| place(&st, &mut dirs)) {
                    Ok(done) => {
                        events[k].action = ExportAction::Written;
                        sum.bytes += w.size;
                        manifest.files.insert(w.path.clone(), done);
                    }
                    Err(message) => {
                        let _ = fs::remove_file(&st.tmp);
                        events[k].action = ExportAction::Failed;
                        events[k].message = Some(message);
                    }
                }
            }
            for event in &events {
                count(&mut sum, event.action);
                visit(event);
            }
        }

        // Everything the manifest lists is durable before the manifest.
        dirs.sync_touched()
            .map_err(io_err(format!("syncing folders under {}", dir.display())))?;
        let text = serde_json::to_vec(&manifest).map_err(|e| Error::Export {
            what: "serializing the manifest".into(),
            source: io::Error::other(e),
        })?;
        let staged = tmp.join("manifest");
        write_synced(&staged, &text).map_err(io_err(format!("writing {}", staged.display())))?;
        fs::rename(&staged, &manifest_path)
            .map_err(io_err(format!("writing {}", manifest_path.display())))?;
        let _ = fs::remove_dir(&tmp);
        sync_dir(dir).map_err(io_err(format!("syncing {}", dir.display())))?;
        sum.elapsed = started.elapsed();
        Ok(sum)
    }

    /// Writes one file's content to a temporary name (not synced yet),
    /// after making sure its folder is a real one.
    fn stage(
        &self,
        dir: &Path,
        tmp: &Path,
        i: usize,
        w: &Wanted<'_>,
        dirs: &mut Dirs,
    ) -> std::result::Result<Staged, String> {
        // Only names that are valid names become paths (a name never
        // holds `..` or an absolute path, but the index is not trusted
        // with the disk).
        if Name::new(&w.path).is_err()
            || w.path == MANIFEST
            || w.path == LOCK
            || w.path.split('/').next() == Some(TMP_DIR)
        {
            return Err(format!("{} cannot be a path in the folder", w.path));
        }
        let dest = dir.join(&w.path);
        dirs.ensure(dest.parent().unwrap_or(dir))?;
        let staged = tmp.join(i.to_string());
        let file = match &w.content {
            Content::Bytes(b) => File::create(&staged)
                .and_then(|mut f| f.write_all(b).map(|()| f))
                .map_err(|e| e.to_string()),
            Content::Blob(e) => self.copy_blob(&e.hash, &staged),
        };
        match file {
            Ok(file) => Ok(Staged {
                file,
                tmp: staged,
                dest,
                hash: w.hash,
            }),
            Err(e) => {
                let _ = fs::remove_file(&staged);
                Err(format!("writing it: {e}"))
            }
        }
    }

    /// Copies a blob into the new file `to` (not synced): by the kernel
    /// from a local blob file where it can (`copy_file_range`), else
    /// through a buffer.
    fn copy_blob(&self, hash: &Hash, to: &Path) -> std::result::Result<File, String> {
        let mut out = File::create(to).map_err(|e| e.to_string())?;
        let local = self
            .blob_file(hash)
            .map(|p| File::open(p).map_err(|e| e.to_string()));
        match local {
            // `io::copy` between two files is the kernel's copy on Linux.
            Some(Ok(mut f)) => {
                io::copy(&mut f, &mut out).map_err(|e| e.to_string())?;
            }
            _ => {
                let mut r: Box<dyn Read + Send> =
                    self.open_blob(hash).map_err(|e| e.to_string())?;
                io::copy(&mut r, &mut out).map_err(|e| e.to_string())?;
            }
        }
        Ok(out)
    }
}

/// How many files an export writes, syncs and renames together.
const CHUNK: usize = 512;
/// Threads that sync a chunk's files.
const SYNCERS: usize = 16;

/// A file written to its temporary name, waiting to be synced and put in
/// place.
struct Staged {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    hash: Hash,
}

/// Syncs every staged file, several at once (the filesystem then commits
/// them together), keeping their order: each with its key and result.
fn sync_all(staged: Vec<(usize, Staged)>) -> Vec<(usize, Staged, std::result::Result<(), String>)> {
    if staged.is_empty() {
        return Vec::new();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<std::result::Result<(), String>>>> =
        staged.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..SYNCERS.min(staged.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((_, st)) = staged.get(i) else { break };
                    let r = st.file.sync_all().map_err(|e| format!("syncing it: {e}"));
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
    staged
        .into_iter()
        .zip(results)
        .map(|((k, st), r)| {
            let r = r
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(|| Err("not synced".into()));
            (k, st, r)
        })
        .collect()
}

/// Renames a synced file into place; what the manifest records of it.
fn place(st: &Staged, dirs: &mut Dirs) -> std::result::Result<Exported, String> {
    fs::rename(&st.tmp, &st.dest).map_err(|e| format!("putting it in place: {e}"))?;
    if let Some(parent) = st.dest.parent() {
        dirs.touched(parent);
    }
    let m = fs::symlink_metadata(&st.dest).map_err(|e| format!("reading it back: {e}"))?;
    Ok(Exported {
        blake3: st.hash,
        size: m.len(),
        mtime_ns: mtime_ns(&m),
    })
}

fn count(sum: &mut ExportSummary, action: ExportAction) {
    match action {
        ExportAction::Written => sum.written += 1,
        ExportAction::Unchanged => sum.unchanged += 1,
        ExportAction::Removed => sum.removed += 1,
        ExportAction::Kept => sum.kept += 1,
        ExportAction::Failed => sum.failed += 1,
    }
}

fn write_synced(p: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(p)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(p: &Path) -> io::Result<()> {
    File::open(p)?.sync_all()
}

/// The folders of the export: which are known to be real folders (never
/// a link that would lead the export out of the folder), and which had
/// entries added or removed and must be synced.
struct Dirs {
    root: PathBuf,
    real: HashSet<PathBuf>,
    touched: HashSet<PathBuf>,
}

impl Dirs {
    fn new(root: &Path) -> Dirs {
        Dirs {
            root: root.to_path_buf(),
            real: HashSet::from([root.to_path_buf()]),
            touched: HashSet::new(),
        }
    }

    /// Makes sure `d` (under the root) is a real folder, creating what is
    /// missing; a link or a file on the way fails.
    fn ensure(&mut self, d: &Path) -> std::result::Result<(), String> {
        if self.real.contains(d) {
            return Ok(());
        }
        let parent = d.parent().unwrap_or(&self.root).to_path_buf();
        if d != self.root {
            self.ensure(&parent)?;
        }
        let shown = d
            .strip_prefix(&self.root)
            .unwrap_or(d)
            .display()
            .to_string();
        match fs::symlink_metadata(d) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{shown} is a symbolic link; not followed"));
            }
            Ok(_) => return Err(format!("{shown} is a file, not a folder")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(d).map_err(|e| format!("creating {shown}: {e}"))?;
                self.touched.insert(parent);
            }
            Err(e) => return Err(format!("{shown}: {e}")),
        }
        self.real.insert(d.to_path_buf());
        Ok(())
    }

    fn touched(&mut self, d: &Path) {
        self.touched.insert(d.to_path_buf());
    }

    /// Removes `d` and its parents up to the root while they are empty.
    fn prune(&mut self, d: &Path) {
        let mut d = d.to_path_buf();
        while d != self.root && d.starts_with(&self.root) && fs::remove_dir(&d).is_ok() {
            self.real.remove(&d);
            match d.parent() {
                Some(p) => {
                    self.touched.insert(p.to_path_buf());
                    d = p.to_path_buf();
                }
                None => break,
            }
        }
    }

    fn sync_touched(&mut self) -> io::Result<()> {
        for d in self.touched.drain() {
            match sync_dir(&d) {
                Ok(()) => {}
                // Pruned since.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
