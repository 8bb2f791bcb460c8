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

use crate::hash::Hash;
use crate::outcome::{Outcome, Reason};
use crate::session::{Session, SessionRecord};

mod fs;
mod sqlite;

pub use fs::FsBlobStore;
pub use sqlite::SqliteIndex;

/// An error from a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An error from the index database.
    #[error("index database {what}: {message}")]
    Index {
        /// What was being done.
        what: String,
        /// The database's message.
        message: String,
    },
    /// The index is too new for this version of intake.
    #[error(
        "the workspace index has schema version {found}, newer than this intake understands ({supported}); upgrade intake"
    )]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Highest version this build supports.
        supported: i64,
    },
    /// The store holds something it should not.
    #[error("{0}")]
    Corrupt(String),
}

impl StoreError {
    /// A copy for reporting the same failure more than once (an I/O error
    /// keeps its kind and message, not its inner source).
    pub fn clone_lossy(&self) -> StoreError {
        match self {
            StoreError::Io { what, source } => StoreError::Io {
                what: what.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::Index { what, message } => StoreError::Index {
                what: what.clone(),
                message: message.clone(),
            },
            StoreError::SchemaTooNew { found, supported } => StoreError::SchemaTooNew {
                found: *found,
                supported: *supported,
            },
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        }
    }

    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: io::Error) -> StoreError {
        StoreError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The current version of a name, or an older one.
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

/// Lookups in one read transaction; see [`Index::read_txn`].
pub trait ReadTxn {
    /// The current version of a name.
    fn current(&self, name: &str) -> Result<Option<Entry>, StoreError>;
}

/// [`Index::read_txn`]'s default: each lookup on its own.
pub(crate) struct EachAlone<'a, I: ?Sized>(pub(crate) &'a I);

impl<I: Index + ?Sized> ReadTxn for EachAlone<'_, I> {
    fn current(&self, name: &str) -> Result<Option<Entry>, StoreError> {
        self.0.current(name)
    }
}

/// The index: names, versions, sessions, counters and small blobs.
pub trait Index: Send + Sync {
    /// Stores a new session.
    fn create_session(&self, session: &Session) -> Result<(), StoreError>;
    /// One session with its counts.
    fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError>;
    /// Every session, oldest first.
    fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError>;
    /// Closes a session; `false` if it was already closed.
    fn close_session(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Whether the session has been closed (cheap; polled during runs).
    fn is_closed(&self, id: Uuid) -> Result<bool, StoreError>;
    /// The current version of a name.
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
    /// Starts a write transaction: it holds the index's write lock, so the
    /// decisions taken inside it are atomic per name across processes.
    /// `durable`: its commit is on stable storage when it returns;
    /// otherwise it may be lost on power loss (never torn), which is enough
    /// for bookkeeping that changes no name.
    fn begin(&self, durable: bool) -> Result<Box<dyn WriteTxn + '_>, StoreError>;
    /// Visits the current version of every name, in name order, starting
    /// with `prefix`; the visitor returns `false` to stop.
    fn list(
        &self,
        prefix: Option<&str>,
        visit: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), StoreError>;
    /// Every version of a name, newest first.
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
    /// Drops versions replaced before `cutoff` and then the blob rows no
    /// version refers to, in one transaction. The external blobs among them
    /// are returned for the caller to remove from the blob store.
    fn gc(&self, cutoff: DateTime<Utc>) -> Result<IndexGc, StoreError>;
}

/// A write transaction on the index. Dropped without [`WriteTxn::commit`], it
/// rolls back.
pub trait WriteTxn {
    /// The current version of a name, as seen inside the transaction.
    fn current(&mut self, name: &str) -> Result<Option<Entry>, StoreError>;
    /// Whether a blob row exists.
    fn has_blob(&mut self, hash: &Hash) -> Result<bool, StoreError>;
    /// Adds a blob row (`data` for an inline blob); a no-op if it exists.
    fn put_blob(&mut self, hash: &Hash, size: u64, data: Option<&[u8]>) -> Result<(), StoreError>;
    /// Makes `entry` the current version of its name, moving `replaced` (the
    /// previous current version, if any) into history, and forgets the
    /// source records of the name that no longer hold.
    fn write_version(&mut self, entry: &Entry, replaced: Option<&Entry>) -> Result<(), StoreError>;
    /// Remembers a source file for the quick check; its name must hold its
    /// hash and metadata (it was just written, or found unchanged).
    fn record_source(&mut self, rec: &SourceRecord) -> Result<(), StoreError>;
    /// Records a file's outcome in its session and updates the counters.
    fn record_outcome(&mut self, rec: &OutcomeRecord) -> Result<(), StoreError>;
    /// Counts an outcome in its session without listing the file (used for
    /// `unchanged`, so that re-running over a large tree writes no row per
    /// file).
    fn count_outcome(&mut self, session_id: Uuid, outcome: Outcome, size: u64);
    /// Commits (durably if the transaction was begun so).
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// A blob being written.
pub trait BlobWriter: io::Write + Send {
    /// Makes the written bytes the blob `hash`: flushed to stable storage and
    /// in place, though the directory entry may wait for [`BlobStore::sync`].
    fn finish(self: Box<Self>, hash: &Hash) -> Result<(), StoreError>;
}

/// Content-addressed storage for blobs too large to keep in the index.
pub trait BlobStore: Send + Sync {
    /// Starts a new blob; `size_hint` is the expected length.
    fn writer(&self, size_hint: u64) -> Result<Box<dyn BlobWriter>, StoreError>;
    /// Makes every finished blob durable (directory entries included).
    fn sync(&self) -> Result<(), StoreError>;
    /// Whether the blob exists.
    fn contains(&self, hash: &Hash) -> Result<bool, StoreError>;
    /// Opens a blob for reading.
    fn open(&self, hash: &Hash) -> Result<Box<dyn Read + Send>, StoreError>;
    /// Removes a blob if it was last written before `cutoff`; returns
    /// whether it did (missing is not an error). The age check keeps a blob
    /// that a running ingest has just written again.
    fn remove(&self, hash: &Hash, cutoff: SystemTime) -> Result<bool, StoreError>;
    /// Visits every blob with its modification time.
    fn list(&self, visit: &mut dyn FnMut(Hash, SystemTime)) -> Result<(), StoreError>;
    /// Removes unfinished writes older than `cutoff`; returns how many.
    fn remove_stale(&self, cutoff: SystemTime) -> Result<u64, StoreError>;
}
