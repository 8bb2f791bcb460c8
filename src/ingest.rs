//! An ingest run: admission, reading and hashing on worker threads, and the
//! committer that decides and commits in the order files were given.
//!
//! ```text
//! items ──admission──▶ work queue ──N workers──▶ results ──committer──▶ reports
//!          (clock,        (read once, hash,        (reorders by sequence,
//!           closed?)       store large blobs)       decides per name inside
//!                                                   one write transaction
//!                                                   per batch, then reports)
//! ```
//!
//! Every decision is taken by the committer, one file at a time in sequence
//! order, inside the index's write transaction: two files with the same name
//! are never decided concurrently, and a run gives the same result at any
//! parallelism. No report leaves the committer before its batch is durable.

use std::collections::{BTreeMap, HashMap};
use std::fs::{Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, bounded};
use uuid::Uuid;

use crate::decide::{Decision, Identity, decide};
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::meta::Meta;
use crate::name::Name;
use crate::outcome::{Counts, FileReport, Outcome, Reason};
use crate::session::Session;
use crate::store::{
    Entry, KnownSource, OutcomeRecord, ReadTxn, SourceRecord, StoreError, WriteTxn,
};
use crate::workspace::Workspace;

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
}

impl Source {
    /// The path, for a source on disk.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Source::Path(p) | Source::Listed { path: p, .. } => Some(p),
            Source::Bytes(_) => None,
        }
    }

    fn into_path(self) -> Option<PathBuf> {
        match self {
            Source::Path(p) | Source::Listed { path: p, .. } => Some(p),
            Source::Bytes(_) => None,
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

/// The totals of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// The session.
    pub session_id: Uuid,
    /// Counts per outcome.
    pub counts: Counts,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// A configured ingest run; see [`Workspace::ingest`].
#[must_use]
pub struct IngestRun {
    ws: Workspace,
    session: Session,
    parallelism: usize,
    quick_check: bool,
    dry_run: bool,
    batch_files: usize,
    batch_bytes: u64,
    linger: Duration,
    max_delay: Duration,
    closed_poll: Duration,
    stop: Option<Arc<AtomicBool>>,
    record_retryable: bool,
    quick_cache: QuickCache,
    written: Mutex<WrittenNames>,
}

/// The names this run has written, as a fixed-size Bloom filter: a file
/// the quick check vouched for needs its name re-checked inside the commit
/// transaction only if an earlier file of this run may have written that
/// name. (Other processes' writes need no re-check: an `unchanged` that
/// writes nothing is decided when the check looked, which is a valid place
/// for it in a serial order.) A false positive only costs a lookup.
struct WrittenNames {
    bits: Vec<u64>,
    /// Whether anything was inserted: a run that writes nothing (an
    /// unchanged re-run) then never touches the bits, whose random reads
    /// miss the cache.
    any: bool,
}

impl WrittenNames {
    const BITS: usize = 1 << 23; // 1 MiB

    fn new() -> WrittenNames {
        WrittenNames {
            bits: vec![0; Self::BITS / 64],
            any: false,
        }
    }

    fn slots(name: &str) -> [usize; 2] {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(name);
        [(h as usize) % Self::BITS, ((h >> 32) as usize) % Self::BITS]
    }

    fn insert(&mut self, name: &str) {
        self.any = true;
        for i in Self::slots(name) {
            self.bits[i / 64] |= 1 << (i % 64);
        }
    }

    fn may_contain(&self, name: &str) -> bool {
        self.any
            && Self::slots(name)
                .iter()
                .all(|&i| self.bits[i / 64] & (1 << (i % 64)) != 0)
    }
}

/// The quick-check records of recently seen directories, shared by the
/// workers; a directory's records are loaded with one query, and kept up to
/// date by the committer, so that a run that lasts (a watcher's) never
/// trusts a record older than its own last commit of that file.
#[derive(Default)]
struct QuickCache {
    dirs: Mutex<KnownDirs>,
}

type KnownDir = Mutex<HashMap<std::ffi::OsString, KnownSource>>;

/// Loaded directories, and their order of loading for eviction.
#[derive(Default)]
struct KnownDirs {
    by_dir: HashMap<PathBuf, (Arc<KnownDir>, Instant)>,
    order: std::collections::VecDeque<PathBuf>,
    /// Bumped by every update: a load that started before one is used once
    /// but not kept, since it may predate the commit behind the update.
    generation: u64,
}

/// The admission thread's hold on the folder its files come from, so
/// that consecutive files of one folder skip the shared cache.
#[derive(Default)]
struct DirCursor {
    dir: PathBuf,
    /// The folder's records (kept up to date by the committer) and when
    /// they were loaded.
    held: Option<(Arc<KnownDir>, Instant)>,
    /// Files checked, to space out the age checks.
    uses: u32,
}

impl QuickCache {
    const MAX_DIRS: usize = 64;
    /// A folder's records are reloaded after this long, so that a decision
    /// taken from them is never older (a watcher runs for weeks).
    const MAX_AGE: Duration = Duration::from_secs(10);

    /// The records of `dir`, loaded if need be, and when they were loaded
    /// if they are kept (and so kept up to date by the committer).
    fn get(
        &self,
        dir: &std::path::Path,
        load: impl FnOnce(&std::path::Path) -> std::result::Result<Vec<KnownSource>, StoreError>,
    ) -> std::result::Result<(Arc<KnownDir>, Option<Instant>), StoreError> {
        let generation = {
            let g = self.lock();
            if let Some((k, at)) = g.by_dir.get(dir)
                && at.elapsed() < Self::MAX_AGE
            {
                return Ok((Arc::clone(k), Some(*at)));
            }
            g.generation
        };
        let known: Arc<KnownDir> = Arc::new(Mutex::new(
            load(dir)?
                .into_iter()
                .map(|mut k| (std::mem::take(&mut k.file), k))
                .collect(),
        ));
        let mut g = self.lock();
        if g.generation != generation {
            return Ok((known, None));
        }
        if g.by_dir.len() >= Self::MAX_DIRS
            && let Some(old) = g.order.pop_front()
        {
            g.by_dir.remove(&old);
        }
        let now = Instant::now();
        if g.by_dir
            .insert(dir.to_path_buf(), (Arc::clone(&known), now))
            .is_none()
        {
            g.order.push_back(dir.to_path_buf());
        }
        Ok((known, Some(now)))
    }

    /// Records a committed source file in its directory's entry, if loaded.
    fn update(&self, rec: &SourceRecord) {
        let (Some(dir), Some(file)) = (rec.path.parent(), rec.path.file_name()) else {
            return;
        };
        let known = {
            let mut g = self.lock();
            g.generation += 1;
            g.by_dir.get(dir).map(|(k, _)| Arc::clone(k))
        };
        if let Some(known) = known {
            known.lock().unwrap_or_else(|e| e.into_inner()).insert(
                file.to_owned(),
                KnownSource {
                    file: std::ffi::OsString::new(),
                    size: rec.size,
                    mtime_ns: rec.mtime_ns,
                    name: rec.name.clone(),
                    hash: rec.hash,
                    meta: rec.meta.clone(),
                },
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KnownDirs> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl IngestRun {
    pub(crate) fn new(ws: Workspace, session: Session) -> IngestRun {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        IngestRun {
            ws,
            session,
            parallelism: (cores * 2).clamp(2, 16),
            quick_check: true,
            dry_run: false,
            batch_files: 1024,
            batch_bytes: 16 * 1024 * 1024,
            linger: Duration::from_millis(5),
            max_delay: Duration::from_millis(200),
            closed_poll: Duration::from_millis(250),
            stop: None,
            record_retryable: true,
            quick_cache: QuickCache::default(),
            written: Mutex::new(WrittenNames::new()),
        }
    }

    /// Worker threads that read and hash (default: twice the cores, 2..=16).
    /// The outcome does not depend on it.
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// Whether a source file already ingested from the same path with the
    /// same size and mtime, whose name still holds the same content, comes
    /// out `unchanged` without being read (default: true; `--checksum`
    /// turns it off).
    pub fn quick_check(mut self, on: bool) -> Self {
        self.quick_check = on;
        self
    }

    /// Decide every file but change nothing (default: false).
    pub fn dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// Largest group commit, in files and in inline bytes (default 1024
    /// files, 16 MiB).
    pub fn batch(mut self, files: usize, bytes: u64) -> Self {
        self.batch_files = files.max(1);
        self.batch_bytes = bytes.max(1);
        self
    }

    /// Longest a finished file waits for its group commit (default 200 ms).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Whether a failure worth retrying (`changed_while_reading`,
    /// `store_error`) is recorded in the session (default: true). A caller
    /// that retries such files (the watcher) turns this off and records the
    /// final outcome itself with [`Workspace::record_outcome`], so that the
    /// session counts each file once.
    pub fn record_retryable(mut self, on: bool) -> Self {
        self.record_retryable = on;
        self
    }

    /// A flag that, once set, stops admitting files; admitted files finish.
    pub fn stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Runs over `items`, calling `report` once per file in item order, each
    /// only after the file's outcome is durable.
    ///
    /// Errors only if the session does not exist; everything that goes wrong
    /// with a file is that file's outcome.
    pub fn run<I>(self, items: I, mut report: impl FnMut(&FileReport)) -> Result<Summary>
    where
        I: IntoIterator<Item = Item>,
        I::IntoIter: Send,
    {
        let started = Instant::now();
        if !self.dry_run
            && self
                .ws
                .index()
                .session(self.session.session_id)
                .map_err(|e| self.ws.err(e))?
                .is_none()
        {
            return Err(Error::SessionNotFound(self.session.session_id));
        }
        let window = (self.batch_files * 2).max(64) as u64;
        let (work_tx, work_rx) = bounded::<(u64, Item)>(self.parallelism * 4);
        let (done_tx, done_rx) = bounded::<Prepared>(window as usize);
        let progress = Progress::default();
        let mut counts = Counts::default();
        let mut sink = |r: &FileReport| {
            counts.add(r);
            report(r);
        };
        std::thread::scope(|s| {
            let me = &self;
            let progress = &progress;
            {
                let done_tx = done_tx.clone();
                let items = items.into_iter();
                s.spawn(move || me.admit(items, work_tx, done_tx, progress, window));
            }
            for _ in 0..self.parallelism {
                let work_rx = work_rx.clone();
                let done_tx = done_tx.clone();
                s.spawn(move || me.work(work_rx, done_tx));
            }
            drop(done_tx);
            drop(work_rx);
            let result = self.commit_loop(done_rx, progress, &mut sink);
            // Whatever happened, let the admission thread finish.
            progress.abort();
            result
        })?;
        Ok(Summary {
            session_id: self.session.session_id,
            counts,
            elapsed: started.elapsed(),
        })
    }

    /// Assigns sequence numbers, refuses files once the session is over,
    /// and keeps at most `window` files between admission and report.
    fn admit(
        &self,
        items: impl Iterator<Item = Item>,
        work: Sender<(u64, Item)>,
        done: Sender<Prepared>,
        progress: &Progress,
        window: u64,
    ) {
        let mut refused: Option<(Reason, String)> = None;
        let mut last_poll: Option<Instant> = None;
        let mut cursor = DirCursor::default();
        for (seq, item) in items.enumerate() {
            let seq = seq as u64;
            if self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
                break;
            }
            if !progress.wait_below(seq, window) {
                return;
            }
            if refused.is_none() {
                refused = self.refusal(&mut last_poll);
            }
            progress.admitted.store(seq + 1, Ordering::SeqCst);
            let sent = match (&refused, item) {
                (Some((reason, msg)), item) => done
                    .send(Prepared::refused(seq, &item, *reason, msg.clone()))
                    .is_ok(),
                (
                    None,
                    Item::Failed {
                        name,
                        source,
                        reason,
                        message,
                    },
                ) => done
                    .send(Prepared {
                        seq,
                        name,
                        source,
                        state: State::Failed { reason, message },
                    })
                    .is_ok(),
                (
                    None,
                    Item::File {
                        name,
                        source: source @ (Source::Path(_) | Source::Listed { .. }),
                        meta,
                    },
                ) if self.quick_check => match self.quick_state(&mut cursor, &name, &source, &meta)
                {
                    Some(state) => done
                        .send(Prepared {
                            seq,
                            name: name.into_string(),
                            source: source.into_path(),
                            state,
                        })
                        .is_ok(),
                    None => {
                        let item = Item::File { name, source, meta };
                        work.send((seq, item)).is_ok()
                    }
                },
                (None, item) => work.send((seq, item)).is_ok(),
            };
            if !sent {
                return;
            }
        }
    }

    /// Why the session refuses files now, if it does.
    fn refusal(&self, last_poll: &mut Option<Instant>) -> Option<(Reason, String)> {
        let s = &self.session;
        if let Some(at) = s.expires_at.filter(|at| self.ws.reached(*at)) {
            let e = Error::SessionExpired {
                id: s.session_id,
                at,
            };
            return Some((Reason::SessionExpired, e.to_string()));
        }
        if last_poll.is_none_or(|t| t.elapsed() >= self.closed_poll) {
            *last_poll = Some(Instant::now());
            if let Ok(true) = self.ws.index().is_closed(s.session_id) {
                let at = self
                    .ws
                    .index()
                    .session(s.session_id)
                    .ok()
                    .flatten()
                    .and_then(|r| r.closed_at)
                    .unwrap_or_else(|| self.ws.now());
                let e = Error::SessionClosed {
                    id: s.session_id,
                    at,
                };
                return Some((Reason::SessionClosed, e.to_string()));
            }
        }
        None
    }

    fn work(&self, work: Receiver<(u64, Item)>, done: Sender<Prepared>) {
        for (seq, item) in work {
            let p = self.prepare(seq, item);
            if done.send(p).is_err() {
                return;
            }
        }
    }

    /// Reads, hashes and (when it may be needed) stores one file.
    fn prepare(&self, seq: u64, item: Item) -> Prepared {
        let (name, source, meta) = match item {
            Item::File { name, source, meta } => (name, source, meta),
            // Admission sends failed items straight to the committer; this
            // arm only keeps the function total.
            Item::Failed {
                name,
                source,
                reason,
                message,
            } => {
                return Prepared {
                    seq,
                    name,
                    source,
                    state: State::Failed { reason, message },
                };
            }
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
            Source::Bytes(data) => self.prepare_bytes(&name, data, meta),
            Source::Path(path) | Source::Listed { path, .. } => {
                self.prepare_path(&name, path, meta)
            }
        };
        p
    }

    fn prepare_bytes(&self, name: &Name, data: Vec<u8>, meta: Option<Meta>) -> State {
        let hash = Hash::of(&data);
        let size = data.len() as u64;
        let blob = if size <= self.ws.inner.inline_threshold || self.dry_run {
            Blob::Inline(data)
        } else {
            match self.store_reader(&mut io::Cursor::new(data), size, &mut None) {
                Ok((_, _)) => Blob::Stored,
                Err(e) => return store_failed(e),
            }
        };
        let _ = name;
        State::Read {
            hash,
            size,
            meta,
            blob,
            source: None,
        }
    }

    /// The quick check, done at admission so that a file it vouches for
    /// never travels to a worker: `Some` with the file's final state
    /// (unchanged, or failed to stat), `None` if the file must be read.
    fn quick_state(
        &self,
        cursor: &mut DirCursor,
        name: &Name,
        source: &Source,
        meta: &Option<Meta>,
    ) -> Option<State> {
        let path = match source {
            Source::Bytes(_) => return None,
            Source::Listed {
                path,
                size,
                mtime_ns,
            } => {
                return match self.quick(cursor, name, path, *size, *mtime_ns, meta.as_ref()) {
                    Ok(Some(hash)) => Some(State::Quick {
                        hash,
                        size: *size,
                        meta: meta.clone(),
                    }),
                    Ok(None) => None,
                    Err(e) => Some(store_failed(e)),
                };
            }
            Source::Path(p) => p,
        };
        // stat only: a file the quick check vouches for is never opened.
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {
                let (size, mtime) = (m.len(), mtime_ns(&m));
                match self.quick(cursor, name, path, size, mtime, meta.as_ref()) {
                    Ok(Some(hash)) => Some(State::Quick {
                        hash,
                        size,
                        meta: meta.clone(),
                    }),
                    Ok(None) => None,
                    Err(e) => Some(store_failed(e)),
                }
            }
            Ok(_) => Some(State::Failed {
                reason: Reason::ReadError,
                message: format!("{} is not a regular file", path.display()),
            }),
            Err(e) => Some(State::Failed {
                reason: Reason::ReadError,
                message: format!("cannot stat {}: {e}", path.display()),
            }),
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
        // KEEP and FAIL never need the content of a name that exists: names
        // are never removed, so at commit it still exists and the outcome is
        // unchanged, kept or conflict. Hash only.
        let need_blob = self.session.write_mode == crate::WriteMode::Overwrite
            || match self.ws.index().current(name.as_str()) {
                Ok(e) => e.is_none(),
                Err(e) => return store_failed(e),
            };
        let mut file = file;
        let threshold = self.ws.inner.inline_threshold;
        let (hash, read, blob) = if !need_blob || self.dry_run {
            let mut hasher = blake3::Hasher::new();
            match copy_hashing(&mut file, &mut io::sink(), &mut hasher) {
                Ok(n) => (hasher.finalize().into(), n, Blob::NotStored),
                Err(e) => return read_err("cannot read", e.into()),
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
            let mut err = None;
            match self.store_reader(&mut file, size, &mut err) {
                Ok((h, n)) => (h, n, Blob::Stored),
                Err(e) => {
                    return match err {
                        Some(io) => read_err("cannot read", io),
                        None => store_failed(e),
                    };
                }
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

    /// The quick check: the hash, if the source is known unchanged (same
    /// size and mtime as when it was ingested under this name, and the name
    /// still holds that content and this metadata).
    fn quick(
        &self,
        cursor: &mut DirCursor,
        name: &Name,
        path: &std::path::Path,
        size: u64,
        mtime_ns: i64,
        meta: Option<&Meta>,
    ) -> std::result::Result<Option<Hash>, StoreError> {
        let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
            return Ok(None);
        };
        cursor.uses = cursor.uses.wrapping_add(1);
        let known = match &cursor.held {
            // The age is checked every so many files: a clock read costs
            // as much as the rest of the check.
            Some((known, at))
                if cursor.dir == dir
                    && (!cursor.uses.is_multiple_of(64) || at.elapsed() < QuickCache::MAX_AGE) =>
            {
                Arc::clone(known)
            }
            _ => {
                let (known, kept) = self
                    .quick_cache
                    .get(dir, |d| self.ws.index().sources_in(d))?;
                cursor.held = kept.map(|at| (Arc::clone(&known), at));
                cursor.dir.clear();
                cursor.dir.push(dir);
                known
            }
        };
        let known = known.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rec) = known.get(file) else {
            return Ok(None);
        };
        let same = rec.size == size
            && rec.mtime_ns == mtime_ns
            && rec.name == name.as_str()
            && rec.meta.as_deref() == meta.map(Meta::as_str);
        Ok(same.then_some(rec.hash))
    }

    /// Copies `r` into a new external blob, hashing on the way. On a read
    /// error, `read_err` holds it (and the blob is discarded).
    fn store_reader(
        &self,
        r: &mut dyn Read,
        size: u64,
        read_err: &mut Option<io::Error>,
    ) -> std::result::Result<(Hash, u64), StoreError> {
        let mut w = self.ws.inner.blobs.writer(size)?;
        let mut hasher = blake3::Hasher::new();
        let n = match copy_hashing(r, &mut *w, &mut hasher) {
            Ok(n) => n,
            Err(CopyError::Read(e)) => {
                *read_err = Some(e);
                return Err(StoreError::Corrupt("read failed".into()));
            }
            Err(CopyError::Write(e)) => return Err(StoreError::io("writing a blob", e)),
        };
        let hash: Hash = hasher.finalize().into();
        w.finish(&hash)?;
        Ok((hash, n))
    }

    fn commit_loop(
        &self,
        done: Receiver<Prepared>,
        progress: &Progress,
        sink: &mut dyn FnMut(&FileReport),
    ) -> Result<()> {
        let mut pending: BTreeMap<u64, Prepared> = BTreeMap::new();
        // Both kept from batch to batch: a fresh pair per batch costs page
        // faults, not just allocations.
        let mut ready: Vec<Prepared> = Vec::new();
        let mut reports: Vec<FileReport> = Vec::new();
        let mut ready_bytes = 0u64;
        let mut oldest: Option<Instant> = None;
        let mut next = 0u64;
        let mut dry = DryRun::default();
        loop {
            // What is already there first: a blocking receive reads the
            // clock for its deadline.
            let msg = match done.try_recv() {
                Ok(p) => Ok(p),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) if ready.is_empty() => {
                    done.recv().map_err(|_| RecvTimeoutError::Disconnected)
                }
                Err(TryRecvError::Empty) => done.recv_timeout(self.linger),
            };
            let finished = match msg {
                Ok(p) => {
                    // In order (the usual case): no detour through the map.
                    let mut in_order = if p.seq == next {
                        Some(p)
                    } else {
                        pending.insert(p.seq, p);
                        None
                    };
                    while let Some(p) = in_order.take().or_else(|| pending.remove(&next)) {
                        next += 1;
                        ready_bytes += p.inline_bytes();
                        ready.push(p);
                        oldest.get_or_insert_with(Instant::now);
                    }
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            let idle = !finished && done.is_empty();
            let flush = finished
                || ready.len() >= self.batch_files
                || ready_bytes >= self.batch_bytes
                || (idle && !ready.is_empty() && progress.all_received(next))
                // Files keep coming: the age is checked now and then.
                || ((idle || ready.len().is_multiple_of(64))
                    && oldest.is_some_and(|t| t.elapsed() >= self.max_delay));
            if flush && !ready.is_empty() {
                ready_bytes = 0;
                oldest = None;
                if self.dry_run {
                    // One read transaction per batch; if there is none to
                    // be had, each lookup on its own.
                    let index = self.ws.index();
                    let view = index
                        .read_txn()
                        .unwrap_or_else(|_| Box::new(crate::store::EachAlone(index)));
                    reports.extend(ready.drain(..).map(|p| dry.decide(self, &*view, p)));
                } else {
                    self.commit_batch(&mut ready, &mut reports);
                }
                for r in reports.drain(..) {
                    sink(&r);
                }
                progress.committed(next);
            }
            if finished {
                return Ok(());
            }
        }
    }

    /// Commits a batch in one transaction; if that fails, each file alone,
    /// so that one bad file or a transient error costs only what it must.
    fn commit_batch(&self, batch: &mut Vec<Prepared>, out: &mut Vec<FileReport>) {
        if batch.iter().any(Prepared::stored_externally)
            && let Err(e) = self.ws.inner.blobs.sync()
        {
            // The blobs written for this batch may not be durable: those
            // files fail; the rest of the batch needs no blob store.
            for p in batch.iter_mut().filter(|p| p.stored_externally()) {
                p.state = store_failed(e.clone_lossy());
            }
        }
        out.clear();
        if let Err(e) = self.commit_txn(batch, out) {
            out.clear();
            if let [p] = batch.as_slice() {
                out.push(self.finish_failed_store(p, &e));
            } else {
                let mut one = Vec::with_capacity(1);
                for p in batch.iter() {
                    match self.commit_txn(std::slice::from_ref(p), &mut one) {
                        Ok(()) => out.append(&mut one),
                        Err(e) => out.push(self.finish_failed_store(p, &e)),
                    }
                }
            }
        }
        for (p, r) in batch.drain(..).zip(out.iter_mut()) {
            p.name_report(r);
        }
    }

    /// Reports a file whose commit failed. A file that would have written a
    /// version fails with `store_error`; any other keeps its own outcome
    /// (its recording is what failed). The failure is recorded in the
    /// session if the index still takes writes.
    fn finish_failed_store(&self, p: &Prepared, e: &StoreError) -> FileReport {
        let s = &self.session;
        let r = match &p.state {
            State::Refused { reason, message } => {
                return p.report(s, Outcome::Refused, Some(*reason), Some(message.clone()));
            }
            State::Failed { reason, message } => {
                p.report(s, Outcome::Failed, Some(*reason), Some(message.clone()))
            }
            // Unchanged only if the name still holds it; otherwise it was
            // to be written again (its name changed since the check).
            State::Quick { hash, meta, .. }
                if self
                    .ws
                    .index()
                    .current(&p.name)
                    .ok()
                    .flatten()
                    .is_some_and(|e| {
                        e.hash == *hash && e.meta.as_deref() == meta.as_ref().map(Meta::as_str)
                    }) =>
            {
                p.report(s, Outcome::Unchanged, None, None)
            }
            State::Quick { .. } | State::Read { .. } => p.report(
                s,
                Outcome::Failed,
                Some(Reason::StoreError),
                Some(format!("could not store the file: {e}")),
            ),
        };
        if r.outcome == Outcome::Failed && !self.record_retryable && is_retryable(r.reason) {
            return r;
        }
        let rec = p.record(&r);
        if let Ok(mut txn) = self.ws.index().begin(false)
            && txn.record_outcome(&rec).is_ok()
        {
            let _ = txn.commit();
        }
        r
    }

    /// Commits `batch` in one transaction, its reports (unnamed) in `out`.
    fn commit_txn(
        &self,
        batch: &[Prepared],
        out: &mut Vec<FileReport>,
    ) -> std::result::Result<(), StoreError> {
        // Only a batch that may write a version must be durable before it
        // is reported; the rest is bookkeeping.
        let mut durable = batch.iter().any(|p| matches!(p.state, State::Read { .. }));
        loop {
            out.clear();
            let mut txn = self.ws.index().begin(durable)?;
            let now = self.ws.now();
            for p in batch {
                let r = self.apply(&mut *txn, p, now)?;
                match r.outcome {
                    Outcome::Refused => {}
                    Outcome::Unchanged => {
                        txn.count_outcome(r.session_id, r.outcome, r.size.unwrap_or(0));
                    }
                    Outcome::Failed if !self.record_retryable && is_retryable(r.reason) => {}
                    _ => txn.record_outcome(&p.record(&r))?,
                }
                out.push(r);
            }
            // A quick-checked file whose name changed since the check
            // writes after all: roll back and redo the batch durably.
            if !durable
                && out
                    .iter()
                    .any(|r| matches!(r.outcome, Outcome::Ingested | Outcome::Overwritten))
            {
                durable = true;
                continue;
            }
            txn.commit()?;
            for (p, r) in batch.iter().zip(out.iter()) {
                if let State::Read {
                    source: Some(src), ..
                } = &p.state
                    && matches!(
                        r.outcome,
                        Outcome::Ingested | Outcome::Overwritten | Outcome::Unchanged
                    )
                {
                    self.quick_cache.update(src);
                }
            }
            return Ok(());
        }
    }

    fn written_may_contain(&self, name: &str) -> bool {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .may_contain(name)
    }

    /// Decides one file inside the write transaction and applies the
    /// decision.
    fn apply(
        &self,
        txn: &mut dyn WriteTxn,
        p: &Prepared,
        now: chrono::DateTime<chrono::Utc>,
    ) -> std::result::Result<FileReport, StoreError> {
        let s = &self.session;
        let (hash, size, meta, blob, source) = match &p.state {
            State::Refused { reason, message } => {
                return Ok(p.report(s, Outcome::Refused, Some(*reason), Some(message.clone())));
            }
            State::Failed { reason, message } => {
                return Ok(p.report(s, Outcome::Failed, Some(*reason), Some(message.clone())));
            }
            // The quick check looked before earlier files of this run
            // committed: if one of them may have written this name,
            // `unchanged` only if the name still holds this content and
            // metadata, else decide as usual.
            State::Quick { hash, size, meta } => {
                let still = !self.written_may_contain(&p.name)
                    || txn.current(&p.name)?.is_some_and(|e| {
                        e.hash == *hash && e.meta.as_deref() == meta.as_ref().map(Meta::as_str)
                    });
                if still {
                    let mut r = p.report(s, Outcome::Unchanged, None, None);
                    r.size = Some(*size);
                    r.blake3 = Some(*hash);
                    return Ok(r);
                }
                (hash, *size, meta, &Blob::NotStored, None)
            }
            State::Read {
                hash,
                size,
                meta,
                blob,
                source,
            } => (hash, *size, meta, blob, source.as_deref()),
        };
        let existing = txn.current(&p.name)?;
        let new = Identity {
            hash,
            meta: meta.as_ref().map(Meta::as_str),
        };
        let decision = decide(s.write_mode, existing.as_ref().map(identity), new);
        let report = |outcome, reason: Option<Reason>, message: Option<String>| {
            let mut r = p.report(s, outcome, reason, message);
            r.size = Some(size);
            r.blake3 = Some(*hash);
            r
        };
        if decision.writes() {
            match blob {
                Blob::Inline(data) => txn.put_blob(hash, size, Some(data))?,
                Blob::Stored => txn.put_blob(hash, size, None)?,
                Blob::NotStored => {
                    if !txn.has_blob(hash)? {
                        return Ok(report(
                            Outcome::Failed,
                            Some(Reason::StoreError),
                            Some(format!(
                                "{} changed in the workspace while it was read; run again",
                                p.name
                            )),
                        ));
                    }
                }
            }
            let entry = Entry {
                name: p.name.clone(),
                hash: *hash,
                size,
                meta: meta.as_ref().map(|m| m.as_str().to_owned()),
                session_id: s.session_id,
                ingested_at: now,
                version: existing.as_ref().map_or(1, |e| e.version + 1),
                replaced_at: None,
            };
            txn.write_version(&entry, existing.as_ref())?;
            self.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(&p.name);
        }
        if let (Some(src), true) = (source, decision.writes() || decision == Decision::Unchanged) {
            txn.record_source(src)?;
        }
        Ok(match decision {
            Decision::Ingest => report(Outcome::Ingested, None, None),
            Decision::Overwrite => report(Outcome::Overwritten, None, None),
            Decision::Unchanged => report(Outcome::Unchanged, None, None),
            Decision::Keep => report(Outcome::Kept, None, None),
            Decision::Conflict => report(
                Outcome::Failed,
                Some(Reason::Conflict),
                Some(format!(
                    "{} already exists with other content (write mode FAIL)",
                    p.name
                )),
            ),
        })
    }
}

fn identity(e: &Entry) -> Identity<'_> {
    Identity {
        hash: &e.hash,
        meta: e.meta.as_deref(),
    }
}

/// Failures that may pass if the file is tried again later.
pub(crate) fn is_retryable(reason: Option<Reason>) -> bool {
    matches!(
        reason,
        Some(Reason::ChangedWhileReading | Reason::StoreError)
    )
}

pub(crate) fn outcome_record(r: &FileReport) -> OutcomeRecord {
    OutcomeRecord {
        session_id: r.session_id,
        name: r.name.clone(),
        source: r.source.clone(),
        outcome: r.outcome,
        reason: r.reason,
        message: r.message.clone(),
        size: r.size,
        hash: r.blake3,
    }
}

fn store_failed(e: StoreError) -> State {
    State::Failed {
        reason: Reason::StoreError,
        message: format!("could not store the file: {e}"),
    }
}

pub(crate) fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

/// State shared by admission and the committer.
#[derive(Default)]
struct Progress {
    /// Files reported so far (the next sequence number to report).
    reported: Mutex<u64>,
    cv: Condvar,
    aborted: AtomicBool,
    admitted: AtomicU64,
}

impl Progress {
    /// Waits until `seq` is within `window` of the reported files; false
    /// if the run was aborted.
    fn wait_below(&self, seq: u64, window: u64) -> bool {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        while seq >= *reported + window {
            if self.aborted.load(Ordering::SeqCst) {
                return false;
            }
            reported = self
                .cv
                .wait_timeout(reported, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        !self.aborted.load(Ordering::SeqCst)
    }

    fn committed(&self, upto: u64) {
        *self.reported.lock().unwrap_or_else(|e| e.into_inner()) = upto;
        self.cv.notify_all();
    }

    fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        self.cv.notify_all();
    }

    /// Whether every admitted file has reached the committer: nothing is
    /// in flight, so waiting longer cannot grow the batch.
    fn all_received(&self, received: u64) -> bool {
        self.admitted.load(Ordering::SeqCst) <= received
    }
}

/// A file read and hashed, waiting for its decision.
#[derive(Debug)]
struct Prepared {
    seq: u64,
    name: String,
    source: Option<PathBuf>,
    state: State,
}

#[derive(Debug)]
enum State {
    Refused {
        reason: Reason,
        message: String,
    },
    Failed {
        reason: Reason,
        message: String,
    },
    /// Known unchanged by the quick check; not read.
    Quick {
        hash: Hash,
        size: u64,
        meta: Option<Meta>,
    },
    Read {
        hash: Hash,
        size: u64,
        meta: Option<Meta>,
        blob: Blob,
        /// Boxed: most files in flight are quick-checked and small.
        source: Option<Box<SourceRecord>>,
    },
}

#[derive(Debug)]
enum Blob {
    /// Small enough to go into the index with the row.
    Inline(Vec<u8>),
    /// Written to the blob store (durable after the store's sync).
    Stored,
    /// Not kept: the decision should not need it.
    NotStored,
}

impl Prepared {
    fn refused(seq: u64, item: &Item, reason: Reason, message: String) -> Prepared {
        let (name, source) = match item {
            Item::File { name, source, .. } => (
                name.as_str().to_owned(),
                source.path().map(|p| p.to_path_buf()),
            ),
            Item::Failed { name, source, .. } => (name.clone(), source.clone()),
        };
        Prepared {
            seq,
            name,
            source,
            state: State::Refused { reason, message },
        }
    }

    fn inline_bytes(&self) -> u64 {
        match &self.state {
            State::Read {
                blob: Blob::Inline(d),
                ..
            } => d.len() as u64,
            _ => 0,
        }
    }

    fn stored_externally(&self) -> bool {
        matches!(
            self.state,
            State::Read {
                blob: Blob::Stored,
                ..
            }
        )
    }

    /// The report of this file, but for its name and source: those are
    /// moved in by [`Prepared::into_report`] once the report is final, so
    /// that a file costs no copies of them.
    fn report(
        &self,
        s: &Session,
        outcome: Outcome,
        reason: Option<Reason>,
        message: Option<String>,
    ) -> FileReport {
        let (size, blake3) = match &self.state {
            State::Quick { hash, size, .. } | State::Read { hash, size, .. } => {
                (Some(*size), Some(*hash))
            }
            _ => (None, None),
        };
        FileReport {
            name: String::new(),
            source: None,
            outcome,
            reason,
            message,
            size,
            blake3,
            session_id: s.session_id,
        }
    }

    /// `r` (made by [`Prepared::report`]) with this file's name and source.
    fn into_report(self, mut r: FileReport) -> FileReport {
        self.name_report(&mut r);
        r
    }

    /// Moves this file's name and source into its report `r`.
    fn name_report(self, r: &mut FileReport) {
        r.name = self.name;
        r.source = self.source;
    }

    /// The session record of this file's report `r`.
    fn record(&self, r: &FileReport) -> OutcomeRecord {
        OutcomeRecord {
            name: self.name.clone(),
            source: self.source.clone(),
            ..outcome_record(r)
        }
    }
}

/// A dry run's view: the index plus what the run would have written.
#[derive(Default)]
struct DryRun {
    written: HashMap<String, (Hash, Option<Meta>)>,
}

impl DryRun {
    fn decide(&mut self, run: &IngestRun, view: &dyn ReadTxn, p: Prepared) -> FileReport {
        let r = self.decide_unnamed(run, view, &p);
        p.into_report(r)
    }

    fn decide_unnamed(&mut self, run: &IngestRun, view: &dyn ReadTxn, p: &Prepared) -> FileReport {
        let s = &run.session;
        let (hash, size, meta) = match &p.state {
            State::Refused { reason, message } => {
                return p.report(s, Outcome::Refused, Some(*reason), Some(message.clone()));
            }
            State::Failed { reason, message } => {
                return p.report(s, Outcome::Failed, Some(*reason), Some(message.clone()));
            }
            State::Quick {
                hash, size, meta, ..
            }
            | State::Read {
                hash, size, meta, ..
            } => (*hash, *size, meta.clone()),
        };
        let existing: Option<(Hash, Option<String>)> = match self.written.get(&p.name) {
            Some((h, m)) => Some((*h, m.as_ref().map(|m| m.as_str().to_owned()))),
            None => match view.current(&p.name) {
                Ok(e) => e.map(|e| (e.hash, e.meta)),
                Err(e) => {
                    return p.report(
                        s,
                        Outcome::Failed,
                        Some(Reason::StoreError),
                        Some(e.to_string()),
                    );
                }
            },
        };
        let new = Identity {
            hash: &hash,
            meta: meta.as_ref().map(Meta::as_str),
        };
        let decision = decide(
            s.write_mode,
            existing.as_ref().map(|(h, m)| Identity {
                hash: h,
                meta: m.as_deref(),
            }),
            new,
        );
        if decision.writes() {
            self.written.insert(p.name.clone(), (hash, meta));
        }
        let (outcome, reason) = match decision {
            Decision::Ingest => (Outcome::Ingested, None),
            Decision::Overwrite => (Outcome::Overwritten, None),
            Decision::Unchanged => (Outcome::Unchanged, None),
            Decision::Keep => (Outcome::Kept, None),
            Decision::Conflict => (Outcome::Failed, Some(Reason::Conflict)),
        };
        let mut r = p.report(s, outcome, reason, None);
        r.size = Some(size);
        r.blake3 = Some(hash);
        r
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl From<CopyError> for io::Error {
    fn from(e: CopyError) -> io::Error {
        match e {
            CopyError::Read(e) | CopyError::Write(e) => e,
        }
    }
}

fn copy_hashing(
    r: &mut dyn Read,
    w: &mut dyn Write,
    hasher: &mut blake3::Hasher,
) -> std::result::Result<u64, CopyError> {
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
