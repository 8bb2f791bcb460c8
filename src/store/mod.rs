//! The storage seams: an [`Index`] (names, versions, sessions, counters) and a
//! [`BlobStore`] (content addressed by BLAKE3).
//!
//! The engine decides (see [`crate::decide::decide`]); these traits only store. The
//! defaults are [`SqliteIndex`] and [`FsBlobStore`]; a PostgreSQL index or an
//! object-store blob backend implements the same traits, and tests wrap them
//! to inject failures.
//!
//! Small blobs (up to [`crate::WorkspaceBuilder::inline_threshold`]) are kept
//! inside the index, in the same transaction as the row that refers to them:
//! one durable commit per batch instead of one fsync per file. Larger blobs go
//! to the blob store, are made durable first, and only then referenced.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::decide::Identity;
use crate::hash::Hash;
use crate::outcome::{Counts, FileReport, Outcome, Reason};
use crate::session::{Session, SessionRecord};

mod error;
mod fs;
#[cfg(feature = "postgres")]
pub mod pg;
mod retry;
#[cfg(feature = "s3")]
mod s3;
mod sqlite;

pub use error::{StoreError, StoreErrorKind};
pub use fs::FsBlobStore;
#[cfg(feature = "postgres")]
pub use pg::{PgAddress, PgIndex};
pub use retry::RetryPolicy;
#[cfg(feature = "s3")]
pub use s3::{S3BlobStore, is_s3_location};
pub use sqlite::{SqliteIndex, SqliteOptions};

/// The current version of a name, or an older one.
///
/// A *deletion* version (`deleted`) says the name was removed; it records
/// the content and metadata of the version it removed (so that history
/// shows what went, and that content stays until `gc` drops both), and
/// counts as no file at all for every decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name.
    pub name: String,
    /// Content hash.
    pub hash: Hash,
    /// Content size in bytes.
    pub size: u64,
    /// Canonical JSON metadata.
    pub meta: Option<String>,
    /// Session that wrote this version.
    pub session_id: Uuid,
    /// When it was written.
    pub ingested_at: DateTime<Utc>,
    /// Version number of the name, from 1.
    pub version: u64,
    /// When it was replaced by a newer version (`None` for the current one).
    pub replaced_at: Option<DateTime<Utc>>,
    /// Whether this version is a deletion of the name.
    pub deleted: bool,
}

/// What the index remembers of a source file, for the quick check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// The source file's path.
    pub path: PathBuf,
    /// Its size when last ingested.
    pub size: u64,
    /// Its mtime (ns since the epoch) when last ingested.
    pub mtime_ns: i64,
    /// The name it was ingested as.
    pub name: String,
    /// Its content hash.
    pub hash: Hash,
    /// The metadata the name got with it.
    pub meta: Option<String>,
}

/// A source file as the index remembers it, for the quick check: only
/// while its name still holds the content and metadata it was recorded
/// with (a write of the name drops the records it makes stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSource {
    /// The file name within its directory.
    pub file: std::ffi::OsString,
    /// Size when last ingested.
    pub size: u64,
    /// mtime (ns) when last ingested.
    pub mtime_ns: i64,
    /// The name it was ingested as.
    pub name: String,
    /// Its content hash, which the name still holds.
    pub hash: Hash,
    /// The metadata the name still holds.
    pub meta: Option<String>,
}

/// One file's outcome as recorded in its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// The session.
    pub session_id: Uuid,
    /// The name (lossy for invalid names).
    pub name: String,
    /// The source path, if any.
    pub source: Option<PathBuf>,
    /// The outcome.
    pub outcome: Outcome,
    /// The reason, for failures.
    pub reason: Option<Reason>,
    /// A message, for failures.
    pub message: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Content hash.
    pub hash: Option<Hash>,
}

impl OutcomeRecord {
    /// The record of a file's report.
    pub fn of(r: &FileReport) -> OutcomeRecord {
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
}

impl Entry {
    /// What the write-mode table compares of this version: `None` for a
    /// deletion, which counts as no file (SPEC §3).
    pub fn identity(&self) -> Option<Identity<'_>> {
        (!self.deleted).then_some(Identity {
            hash: &self.hash,
            meta: self.meta.as_deref(),
        })
    }

    /// The version if it is a file, `None` if it is a deletion.
    pub fn live(self) -> Option<Entry> {
        (!self.deleted).then_some(self)
    }
}

/// A blob the index knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    /// Its hash.
    pub hash: Hash,
    /// Its size.
    pub size: u64,
    /// Whether its bytes live inside the index.
    pub inline: bool,
}

/// What the index part of garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexGc {
    /// Old versions dropped.
    pub versions: u64,
    /// Inline blobs dropped.
    pub inline_blobs: u64,
    /// External blobs no longer referenced: the caller removes them from the
    /// blob store.
    pub external_blobs: Vec<Hash>,
}

/// What a batch writes, handed to [`WriteTxn::write`] in one call.
///
/// A backend applies it in this order: blobs, versions (in order: a name
/// may get two versions in one batch, the second replacing the first),
/// sources, outcomes, counters. The engine has already dropped the source
/// records that a later version of the same batch makes stale.
#[derive(Debug, Default)]
pub struct Writes<'a> {
    /// The engine's clock when the batch was decided: the time of every
    /// row the batch writes.
    pub at: DateTime<Utc>,
    /// Blob rows to add (a no-op for a blob that has one).
    pub blobs: Vec<NewBlob<'a>>,
    /// New current versions.
    pub versions: Vec<NewVersion>,
    /// Source files to remember for the quick check; each one's name holds
    /// its hash and metadata once the batch's versions are written.
    pub sources: Vec<&'a SourceRecord>,
    /// Per-file outcomes to list in their sessions.
    pub outcomes: Vec<OutcomeRecord>,
    /// What to add to each session's counters.
    pub counts: Vec<(Uuid, Counts)>,
}

impl Writes<'_> {
    /// Whether the batch writes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
            && self.versions.is_empty()
            && self.sources.is_empty()
            && self.outcomes.is_empty()
            && self.counts.is_empty()
    }
}

/// A blob row to add.
#[derive(Debug, Clone, Copy)]
pub struct NewBlob<'a> {
    /// Its hash.
    pub hash: Hash,
    /// Its size.
    pub size: u64,
    /// Its bytes, for a blob kept inside the index; `None` for one already
    /// durable in the blob store.
    pub data: Option<&'a [u8]>,
}

/// A new current version of a name.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The version.
    pub entry: Entry,
    /// The version it replaces (moved into history), if the name had one.
    pub replaced: Option<Entry>,
}

/// Lookups in one read transaction; see [`Index::read_txn`].
pub trait ReadTxn {
    /// The current version of a name.
    fn current(&self, name: &str) -> Result<Option<Entry>, StoreError>;

    /// The current versions of `names`, in their order: one call for a
    /// batch (a remote index answers it in one round trip). The default
    /// looks each name up on its own.
    fn current_many(&self, names: &[&str]) -> Result<Vec<Option<Entry>>, StoreError> {
        names.iter().map(|n| self.current(n)).collect()
    }
}

/// [`Index::read_txn`]'s default: each lookup on its own.
pub(crate) struct EachAlone<'a, I: ?Sized>(pub(crate) &'a I);

impl<I: Index + ?Sized> ReadTxn for EachAlone<'_, I> {
    fn current(&self, name: &str) -> Result<Option<Entry>, StoreError> {
        self.0.current(name)
    }
}

/// The index: names, versions, sessions, counters and small blobs.
///
/// Errors carry a [`StoreErrorKind`] that tells the engine what to do:
/// `Conflict` redoes the batch, `Unavailable` retries with backoff, the
/// rest fail the files concerned with `store_error`.
pub trait Index: Send + Sync {
    /// Whether each call costs a network round trip (a server's index):
    /// the engine then avoids lookups of one name where it can. Default:
    /// `false`.
    fn is_remote(&self) -> bool {
        false
    }
    /// Stores a new session; `reverts`: the session it reverts, if it is
    /// a revert.
    fn create_session(&self, session: &Session, reverts: Option<Uuid>) -> Result<(), StoreError>;
    /// One session with its counts.
    fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError>;
    /// Every session, oldest first.
    fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError>;
    /// Closes a session; `false` if it was already closed.
    fn close_session(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Whether the session has been closed (cheap; polled during runs).
    fn is_closed(&self, id: Uuid) -> Result<bool, StoreError>;
    /// The current version of a name (a deletion included).
    fn current(&self, name: &str) -> Result<Option<Entry>, StoreError>;
    /// A read transaction: one consistent view for many lookups, which
    /// costs less per name than [`Index::current`] alone. It holds back the
    /// index's housekeeping while it lives, so keep it short (a batch).
    ///
    /// The default looks each name up on its own.
    fn read_txn(&self) -> Result<Box<dyn ReadTxn + '_>, StoreError> {
        Ok(Box::new(EachAlone(self)))
    }
    /// What is remembered of the source files in one directory whose names
    /// still hold what they were recorded with: the quick check asks once
    /// per directory, not once per file.
    fn sources_in(&self, dir: &Path) -> Result<Vec<KnownSource>, StoreError>;
    /// What is remembered of the source files at `path` itself or anywhere
    /// under it (as a folder), whose names still hold what they were
    /// recorded with: what a watcher deletes when `path` disappears.
    fn sources_under(&self, path: &Path) -> Result<Vec<SourceRecord>, StoreError>;
    /// Starts a write transaction (see [`WriteTxn`] for what it promises).
    /// `durable`: its commit is on stable storage when it returns;
    /// otherwise it may be lost on power loss (never torn), which is enough
    /// for bookkeeping that changes no name.
    fn begin(&self, durable: bool) -> Result<Box<dyn WriteTxn + '_>, StoreError>;
    /// Visits the current version of every name that is not deleted, in
    /// name order, starting with `prefix`; the visitor returns `false` to
    /// stop.
    fn list(
        &self,
        prefix: Option<&str>,
        visit: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), StoreError>;
    /// Up to `limit` names after `after`, in name order: every name that
    /// has a current version, a deletion included (a copy of the whole
    /// workspace walks them).
    fn names(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Like [`Index::list`], but the versions that were current at the
    /// instant `at` (written at or before it, replaced after it), leaving
    /// out names that were deleted or not there yet. Only as complete as
    /// the history `gc` has kept (see [`Index::history_horizon`]).
    fn list_at(
        &self,
        prefix: Option<&str>,
        at: DateTime<Utc>,
        visit: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), StoreError>;
    /// The latest cutoff `gc` has used: the workspace's state at an
    /// earlier instant may have lost versions. `None` before any `gc`.
    fn history_horizon(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Every version of a name (deletions included), newest first.
    fn history(&self, name: &str) -> Result<Vec<Entry>, StoreError>;
    /// Every per-file outcome recorded in a session, in order.
    fn session_files(
        &self,
        id: Uuid,
        visit: &mut dyn FnMut(OutcomeRecord) -> bool,
    ) -> Result<(), StoreError>;
    /// The bytes of an inline blob, or `None` if the blob is not inline.
    fn inline_blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError>;
    /// Whether the index has a row for the blob.
    fn has_blob(&self, hash: &Hash) -> Result<bool, StoreError>;
    /// Visits every blob row.
    fn blobs(&self, visit: &mut dyn FnMut(BlobRecord) -> bool) -> Result<(), StoreError>;
    /// Hashes referenced by a version whose blob row is missing, with the name.
    fn dangling(&self) -> Result<Vec<(String, Hash)>, StoreError>;
    /// The names (current or historical) whose content is `hash`.
    fn names_of(&self, hash: &Hash) -> Result<Vec<String>, StoreError>;
    /// The index's own consistency check (for SQLite, `PRAGMA
    /// integrity_check`): one line per problem, empty when sound. The
    /// default checks nothing.
    fn check_integrity(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// Drops versions replaced before `cutoff`, current deletions written
    /// before it, and then the blob rows no version refers to, in one
    /// transaction, and moves the history horizon up to `cutoff`. The
    /// external blobs among them are returned for the caller to remove
    /// from the blob store.
    fn gc(&self, cutoff: DateTime<Utc>) -> Result<IndexGc, StoreError>;
}

/// A write transaction on the index. Dropped without [`WriteTxn::commit`], it
/// rolls back.
///
/// **The locking contract**, which makes the engine's decisions atomic per
/// name across processes and machines: the names a transaction looks up
/// with [`WriteTxn::lock`] are locked from that call until it commits or
/// rolls back, so no other transaction writes any of them in between.
/// Names are locked in sorted order (the engine asks for them sorted), so
/// two batches never wait on each other in a circle. A backend that does
/// not lock (an optimistic one) must instead fail the write or the commit
/// with [`StoreErrorKind::Conflict`] when another transaction wrote, since
/// the lookup, a name this one writes; the engine then redoes the batch. A
/// decision that writes nothing (`kept`, a FAIL `conflict`, `unchanged`)
/// then holds at the lookup, which is a valid place for it in that name's
/// serial order. The backend conformance suite (`tests/conformance.rs`)
/// checks both with racing handles.
pub trait WriteTxn {
    /// The current versions of `names` (sorted, without duplicates), in
    /// their order, locking each until the transaction ends: one call per
    /// batch.
    fn lock(&mut self, names: &[&str]) -> Result<Vec<Option<Entry>>, StoreError>;
    /// Whether a blob row exists.
    fn has_blob(&mut self, hash: &Hash) -> Result<bool, StoreError>;
    /// Applies a batch's writes (see [`Writes`] for the order): one call
    /// per batch.
    fn write(&mut self, writes: &Writes<'_>) -> Result<(), StoreError>;
    /// Commits (durably if the transaction was begun so).
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Locks `names` in `txn` the way the contract says (sorted, without
/// duplicates, with one call) and returns what each holds.
pub(crate) fn lock_all<'b>(
    txn: &mut dyn WriteTxn,
    mut names: Vec<&'b str>,
) -> Result<std::collections::HashMap<&'b str, Option<Entry>>, StoreError> {
    if names.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    names.sort_unstable();
    names.dedup();
    let found = txn.lock(&names)?;
    if found.len() != names.len() {
        return Err(StoreError::corrupt(format!(
            "the index answered {} of {} names",
            found.len(),
            names.len()
        )));
    }
    Ok(names.into_iter().zip(found).collect())
}

/// A blob being written.
pub trait BlobWriter: io::Write + Send {
    /// Makes the written bytes the blob `hash`: flushed to stable storage and
    /// in place, though the directory entry may wait for [`BlobStore::sync`].
    fn finish(self: Box<Self>, hash: &Hash) -> Result<(), StoreError>;
}

/// Content-addressed storage for blobs too large to keep in the index.
///
/// A missing blob is an error of kind [`StoreErrorKind::NotFound`].
pub trait BlobStore: Send + Sync {
    /// Starts a new blob; `size_hint` is the expected length.
    fn writer(&self, size_hint: u64) -> Result<Box<dyn BlobWriter>, StoreError>;
    /// Makes every finished blob durable (directory entries included).
    fn sync(&self) -> Result<(), StoreError>;
    /// Whether the store holds the blob durably; if it does, its age
    /// starts again, as if it had just been written, so that `gc`'s grace
    /// keeps it for the ingest about to refer to it. The engine asks before
    /// it finishes a large blob, so that a duplicate is not written (or
    /// uploaded) again.
    fn reuse(&self, hash: &Hash) -> Result<bool, StoreError>;
    /// Opens a blob for reading.
    fn open(&self, hash: &Hash) -> Result<Box<dyn Read + Send>, StoreError>;
    /// The blob's file on this machine, for a store that keeps blobs as
    /// local files, so that a copy of it can be the kernel's (no bytes
    /// through userspace). The default: `None`, read it with
    /// [`BlobStore::open`].
    fn local_path(&self, hash: &Hash) -> Option<PathBuf> {
        let _ = hash;
        None
    }
    /// Removes a blob if it was last written before `cutoff`; returns
    /// whether it did (missing is not an error). The age check keeps a blob
    /// that a running ingest has just written again.
    fn remove(&self, hash: &Hash, cutoff: SystemTime) -> Result<bool, StoreError>;
    /// Visits every blob with its modification time.
    fn list(&self, visit: &mut dyn FnMut(Hash, SystemTime)) -> Result<(), StoreError>;
    /// Removes unfinished writes older than `cutoff`; returns how many.
    fn remove_stale(&self, cutoff: SystemTime) -> Result<u64, StoreError>;
}
