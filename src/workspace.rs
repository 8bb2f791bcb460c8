//! The workspace: the library's face of the engine (an index, a blob store
//! and a clock), and the operations that are not an ingest run (sessions,
//! reading, history, `verify`, `gc`).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::change::{self, Want};
use crate::clock::{Clock, SystemClock};
use crate::engine::Engine;
pub use crate::engine::RetryPolicy;
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::ingest::IngestRun;
use crate::outcome::{Counts, FileReport, Outcome};
use crate::session::{
    CreateSession, Session, SessionOauthUser, SessionRecord, SessionStatus, WriteMode,
};
use crate::store::{
    BlobStore, Entry, FsBlobStore, Index, OutcomeRecord, ReadTxn, SqliteIndex, SqliteOptions,
    StoreError, StoreErrorKind,
};

/// File name of the index inside a workspace.
pub const INDEX_FILE: &str = "intake.db";
/// Directory of the blob store inside a workspace.
pub const BLOB_DIR: &str = "blobs";
/// Blobs up to this size are kept inside the index by default.
pub const DEFAULT_INLINE_THRESHOLD: u64 = 64 * 1024;
/// `gc` never removes a blob file written more recently than this.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);

/// A workspace: cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Workspace {
    engine: Arc<Engine>,
    dir: Option<Arc<Path>>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("at", &self.engine.label)
            .finish_non_exhaustive()
    }
}

/// Opens or creates a workspace with non-default settings.
///
/// A workspace is a local folder (the SQLite index `intake.db` and the
/// blob store `blobs/`, made for it) or any pair of backends given with
/// [`WorkspaceBuilder::from_backends`], with no folder at all.
///
/// Defaults: the system clock, blobs up to 64 KiB inline in the index, a
/// one-hour grace before `gc` may remove a blob file, the store retried as
/// [`RetryPolicy::default`] says.
#[must_use]
pub struct WorkspaceBuilder {
    dir: Option<PathBuf>,
    label: String,
    clock: Arc<dyn Clock>,
    inline_threshold: u64,
    gc_grace: Duration,
    retry: RetryPolicy,
    index: Option<Arc<dyn Index>>,
    blobs: Option<Arc<dyn BlobStore>>,
    blobs_at: Option<String>,
    group_access: bool,
}

/// A workspace's label, index and blob store.
type Backends = (String, Arc<dyn Index>, Arc<dyn BlobStore>);

/// The PostgreSQL address `dir` spells, if it is one
/// (`postgresql://…` or `postgres://…`) rather than a folder.
pub fn postgres_address(dir: &Path) -> Option<&str> {
    dir.to_str()
        .filter(|s| s.starts_with("postgresql://") || s.starts_with("postgres://"))
}

impl WorkspaceBuilder {
    /// Settings for the workspace in the folder `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> WorkspaceBuilder {
        let dir = dir.into();
        WorkspaceBuilder {
            label: dir.display().to_string(),
            dir: Some(dir),
            clock: Arc::new(SystemClock),
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            gc_grace: DEFAULT_GC_GRACE,
            retry: RetryPolicy::default(),
            index: None,
            blobs: None,
            blobs_at: None,
            group_access: false,
        }
    }

    /// Settings for a workspace made of `index` and `blobs`, with no local
    /// folder; `label` names it in messages (an address, never a
    /// credential). [`WorkspaceBuilder::create`] and
    /// [`WorkspaceBuilder::open`] then only wrap the backends.
    pub fn from_backends(
        label: impl Into<String>,
        index: Arc<dyn Index>,
        blobs: Arc<dyn BlobStore>,
    ) -> WorkspaceBuilder {
        WorkspaceBuilder {
            dir: None,
            label: label.into(),
            index: Some(index),
            blobs: Some(blobs),
            ..WorkspaceBuilder::new("")
        }
    }

    /// The clock that decides expiry and stamps every row (default: the
    /// system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Files up to this many bytes are stored inside the index (default
    /// 64 KiB; 0 sends every blob to the blob store).
    pub fn inline_threshold(mut self, bytes: u64) -> Self {
        self.inline_threshold = bytes;
        self
    }

    /// `gc` never removes a blob file younger than this, whatever the
    /// retention (default one hour): a running ingest writes a blob file
    /// before the row that refers to it is committed, and such a file must
    /// not be taken from under it.
    pub fn gc_grace(mut self, grace: Duration) -> Self {
        self.gc_grace = grace;
        self
    }

    /// How the store is retried when it reports a lost race or is out of
    /// reach.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Whether a workspace folder [`WorkspaceBuilder::create`] makes lets
    /// its group read it (0750, the index 0640) rather than only its owner
    /// (0700 and 0600, the default): a workspace holds every file ingested,
    /// and `intake serve`'s key hashes. A folder that exists already keeps
    /// its permissions.
    pub fn group_access(mut self, on: bool) -> Self {
        self.group_access = on;
        self
    }

    /// Where a new PostgreSQL workspace keeps its large blobs:
    /// `s3://BUCKET/PREFIX` (an S3-compatible store) or an absolute folder
    /// (on one machine, or a mount every machine shares). Recorded in the
    /// index at creation; opening checks it against the recorded one.
    pub fn blobs_location(mut self, at: impl Into<String>) -> Self {
        self.blobs_at = Some(at.into());
        self
    }

    /// Uses another index instead of the folder's `intake.db`.
    pub fn index(mut self, index: Arc<dyn Index>) -> Self {
        self.index = Some(index);
        self
    }

    /// Uses another blob store instead of the folder's `blobs/`.
    pub fn blob_store(mut self, blobs: Arc<dyn BlobStore>) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// Creates the workspace if needed (idempotent), then opens it.
    pub fn create(self) -> Result<Workspace> {
        if let Some(dir) = self.dir.as_ref().filter(|d| postgres_address(d).is_none()) {
            if dir.exists() && !dir.is_dir() {
                return Err(Error::NotADirectory(dir.clone()));
            }
            let (dir_mode, file_mode) = if self.group_access {
                (0o750, 0o640)
            } else {
                (0o700, 0o600)
            };
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            // The folders above it as `mkdir -p` makes them; the
            // workspace's own with its mode.
            let mkdir = |e| self.store_err(StoreError::io("creating the directory", e));
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(mkdir)?;
            }
            match fs::DirBuilder::new().mode(dir_mode).create(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(mkdir(e)),
                _ => {}
            }
            // A new index file is made with the workspace's mode before
            // SQLite opens it (SQLite would make it 0644, and gives its
            // journal files the database's mode). If that fails, SQLite
            // says why when it opens it.
            let index = dir.join(INDEX_FILE);
            if fs::symlink_metadata(&index).is_err() {
                let _ = fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(file_mode)
                    .open(&index);
            }
        }
        self.build(true)
    }

    /// Opens an existing workspace.
    pub fn open(self) -> Result<Workspace> {
        self.build(false)
    }

    /// The index and blob store of the PostgreSQL workspace at `url`.
    #[cfg(feature = "postgres")]
    fn open_postgres(&self, url: &str, create: bool) -> Result<Backends> {
        use crate::store::{PgAddress, PgIndex};
        let addr = PgAddress::parse(url).map_err(|source| Error::Store {
            workspace: crate::store::pg::redact(url),
            source,
        })?;
        let label = addr.label.clone();
        let err = |source| Error::Store {
            workspace: label.clone(),
            source,
        };
        // A PostgreSQL workspace is created only with its blob location
        // (`intake init --blobs`); anything else only opens one.
        let create = create && self.blobs_at.is_some();
        let index = match PgIndex::open(addr, create, self.blobs_at.as_deref()) {
            Ok(i) => i,
            Err(e) if e.kind() == StoreErrorKind::NotFound && !create => {
                return Err(Error::NotAWorkspace(PathBuf::from(&label)));
            }
            Err(e) => return Err(err(e)),
        };
        let blobs: Arc<dyn BlobStore> = match index.blobs_at() {
            #[cfg(feature = "s3")]
            Some(at) if crate::store::is_s3_location(at) => Arc::new(
                crate::store::S3BlobStore::open(at, Arc::clone(index.pool())).map_err(err)?,
            ),
            Some(at) if at.starts_with('/') => Arc::new(FsBlobStore::open(at).map_err(err)?),
            Some(at) => {
                return Err(err(StoreError::not_found(format!(
                    "the workspace keeps its blobs at {at}, which this intake cannot reach (built without the s3 feature?)"
                ))));
            }
            None => {
                return Err(err(StoreError::not_found(
                    "the workspace records no blob location: create it with one (intake init --blobs s3://BUCKET/PREFIX or --blobs /FOLDER)",
                )));
            }
        };
        Ok((label, Arc::new(index), blobs))
    }

    #[cfg(not(feature = "postgres"))]
    fn open_postgres(&self, _url: &str, _create: bool) -> Result<Backends> {
        Err(Error::Store {
            workspace: "a PostgreSQL address".into(),
            source: StoreError::not_found(
                "this intake was built without PostgreSQL support (the postgres feature)",
            ),
        })
    }

    fn store_err(&self, source: StoreError) -> Error {
        Error::Store {
            workspace: self.label.clone(),
            source,
        }
    }

    fn build(mut self, create: bool) -> Result<Workspace> {
        if self.index.is_none()
            && let Some(url) = self.dir.as_deref().and_then(postgres_address)
        {
            let url = url.to_owned();
            let (label, index, blobs) = self.open_postgres(&url, create)?;
            self.label = label;
            self.dir = None;
            self.index = Some(index);
            self.blobs = self.blobs.or(Some(blobs));
        }
        let index = match (self.index.clone(), &self.dir) {
            (Some(i), _) => i,
            (None, Some(dir)) => {
                let opts = SqliteOptions {
                    create,
                    ..SqliteOptions::default()
                };
                match SqliteIndex::open(&dir.join(INDEX_FILE), &opts) {
                    Ok(i) => Arc::new(i),
                    // The index says whether the workspace is there.
                    Err(e) if e.kind() == StoreErrorKind::NotFound => {
                        return Err(Error::NotAWorkspace(dir.clone()));
                    }
                    Err(e) => return Err(self.store_err(e)),
                }
            }
            (None, None) => {
                return Err(self.store_err(StoreError::not_found("no index given")));
            }
        };
        let blobs = match (self.blobs.clone(), &self.dir) {
            (Some(b), _) => b,
            (None, Some(dir)) => {
                Arc::new(FsBlobStore::open(dir.join(BLOB_DIR)).map_err(|e| self.store_err(e))?)
            }
            (None, None) => {
                return Err(self.store_err(StoreError::not_found("no blob store given")));
            }
        };
        Ok(Workspace {
            dir: self.dir.map(Arc::from),
            engine: Arc::new(Engine {
                label: self.label,
                index,
                blobs,
                clock: self.clock,
                inline_threshold: self.inline_threshold,
                gc_grace: self.gc_grace,
                retry: self.retry,
                removals: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }
}

/// One problem found by [`Workspace::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defect {
    /// A name whose content (current or an older version) is affected.
    pub name: Option<String>,
    /// The blob.
    pub hash: Hash,
    /// What is wrong.
    pub problem: String,
}

/// The result of [`Workspace::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub blobs: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Problems, one per affected name (or per blob when no name refers to it).
    pub defects: Vec<Defect>,
    /// Problems the index finds in its own structure (SQLite's
    /// `integrity_check`), which no blob check would see.
    pub index_problems: Vec<String>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_sound(&self) -> bool {
        self.defects.is_empty() && self.index_problems.is_empty()
    }
}

/// The result of [`Workspace::gc`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Old versions dropped.
    pub versions: u64,
    /// Blobs removed (inline and external).
    pub blobs: u64,
    /// Blob files left by interrupted writes or never referenced, removed.
    pub orphans: u64,
}

/// A consistent view of a workspace's names; see [`Workspace::snapshot`].
pub struct Snapshot<'a> {
    ws: &'a Workspace,
    txn: Box<dyn ReadTxn + 'a>,
}

impl Snapshot<'_> {
    /// The current version of a name, as of the snapshot (`None` if it
    /// is not there or deleted).
    pub fn current(&self, name: &str) -> Result<Option<Entry>> {
        Ok(self
            .txn
            .current(name)
            .map_err(|e| self.ws.err(e))?
            .and_then(Entry::live))
    }

    /// The current versions of `names`, in their order, with one lookup.
    pub fn current_many(&self, names: &[&str]) -> Result<Vec<Option<Entry>>> {
        let found = self.txn.current_many(names).map_err(|e| self.ws.err(e))?;
        Ok(found.into_iter().map(|e| e.and_then(Entry::live)).collect())
    }
}

/// The workspace as it was at an instant; see [`Workspace::as_of`].
#[derive(Debug, Clone, Copy)]
pub struct AsOf<'a> {
    ws: &'a Workspace,
    at: DateTime<Utc>,
}

impl AsOf<'_> {
    /// The instant.
    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    /// Visits every name the workspace held at the instant, with the
    /// version it held, in name order, starting with `prefix`; the visitor
    /// returns `false` to stop.
    pub fn list(&self, prefix: Option<&str>, mut visit: impl FnMut(Entry) -> bool) -> Result<()> {
        self.ws
            .index()
            .list_at(prefix, self.at, &mut visit)
            .map_err(|e| self.ws.err(e))
    }

    /// The version a name held at the instant (`None`: not there then).
    pub fn current(&self, name: &str) -> Result<Option<Entry>> {
        let history = self.ws.index().history(name).map_err(|e| self.ws.err(e))?;
        Ok(history
            .into_iter()
            .find(|e| e.ingested_at <= self.at && e.replaced_at.is_none_or(|r| r > self.at))
            .and_then(Entry::live))
    }

    /// Opens the content a name held at the instant.
    pub fn read(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        let e = self
            .current(name)?
            .ok_or_else(|| Error::NameNotFound(name.to_owned()))?;
        self.ws.open_blob(&e.hash)
    }
}

/// How [`Workspace::revert_session`] goes about it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevertOptions {
    /// Revert a name even if a later session changed it since.
    pub force: bool,
    /// Decide and report, but change nothing (and create no session).
    pub dry_run: bool,
}

/// What [`Workspace::revert_session`] did.
#[derive(Debug, Clone)]
pub struct Reverted {
    /// The new session that holds the revert (with a dry run: one that was
    /// never stored).
    pub session: Session,
    /// One report per name the reverted session changed, in the order it
    /// changed them.
    pub files: Vec<FileReport>,
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("ws", self.ws).finish()
    }
}

impl Workspace {
    /// Creates a workspace in `dir` (or opens the one there) with defaults.
    pub fn create(dir: impl Into<PathBuf>) -> Result<Workspace> {
        WorkspaceBuilder::new(dir).create()
    }

    /// Opens the workspace in `dir` with defaults.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Workspace> {
        WorkspaceBuilder::new(dir).open()
    }

    /// The workspace's folder, for a workspace that is one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// How messages name the workspace: its folder, or its index's address.
    pub fn label(&self) -> &str {
        &self.engine.label
    }

    /// The clock's current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.engine.now()
    }

    fn err(&self, source: StoreError) -> Error {
        self.engine.err(source)
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    fn index(&self) -> &dyn Index {
        &*self.engine.index
    }

    /// A new session as `req` asks, starting now (not stored yet).
    fn new_session(&self, req: &CreateSession, user: SessionOauthUser) -> Session {
        // The index keeps microseconds: print what `session show` will.
        let now = self.now().trunc_subsecs(6);
        Session {
            created_at: now,
            created_by: user,
            expires_at: req.expiry(now).map(|t| t.trunc_subsecs(6)),
            session_id: Uuid::new_v4(),
            write_mode: req.write_mode,
        }
    }

    /// Creates a session.
    pub fn create_session(&self, req: &CreateSession, user: SessionOauthUser) -> Result<Session> {
        let session = self.new_session(req, user);
        self.index()
            .create_session(&session, None)
            .map_err(|e| self.err(e))?;
        Ok(session)
    }

    /// A session with its status counts.
    pub fn session(&self, id: Uuid) -> Result<SessionRecord> {
        self.index()
            .session(id)
            .map_err(|e| self.err(e))?
            .ok_or(Error::SessionNotFound(id))
    }

    /// Every session, oldest first.
    pub fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.index().sessions().map_err(|e| self.err(e))
    }

    /// A session that is open now, or the error saying why not.
    pub fn open_session(&self, id: Uuid) -> Result<Session> {
        let rec = self.session(id)?;
        match Error::session_over(&rec, self.now()) {
            None => Ok(rec.session),
            Some(over) => Err(over),
        }
    }

    /// Whether a session has been closed: cheap, for polling while it is
    /// in use.
    pub fn is_closed(&self, id: Uuid) -> Result<bool> {
        self.index().is_closed(id).map_err(|e| self.err(e))
    }

    /// Closes a session (closing a closed session changes nothing).
    pub fn close_session(&self, id: Uuid) -> Result<SessionRecord> {
        self.session(id)?;
        self.index()
            .close_session(id, self.now())
            .map_err(|e| self.err(e))?;
        self.session(id)
    }

    /// Records a file's final outcome in its session (counters and file
    /// list), for a caller that ran the file with
    /// [`IngestRun::record_retryable`] off and has stopped retrying it.
    /// Refused files are not part of a session and are not recorded.
    pub fn record_outcome(&self, report: &FileReport) -> Result<()> {
        if report.outcome == Outcome::Refused {
            return Ok(());
        }
        self.engine
            .record_outcome(OutcomeRecord::of(report), Counts::of(report), true)
            .map_err(|e| self.err(e))
    }

    /// Starts configuring an ingest run in `session`.
    pub fn ingest(&self, session: &Session) -> IngestRun {
        IngestRun::new(Arc::clone(&self.engine), session.clone())
    }

    /// The current version of a name; `None` if the name is not in the
    /// workspace (never was, or is deleted).
    pub fn current(&self, name: &str) -> Result<Option<Entry>> {
        Ok(self
            .index()
            .current(name)
            .map_err(|e| self.err(e))?
            .and_then(Entry::live))
    }

    /// One consistent view of the names for many lookups, cheaper per name
    /// than [`Workspace::current`]: a read transaction, which holds back the
    /// index's housekeeping while it lives, so keep it for a batch, not for
    /// a day.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let ws = intake::WorkspaceBuilder::new(dir.path()).create()?;
    /// let snap = ws.snapshot()?;
    /// assert!(snap.current("not/there.txt")?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshot(&self) -> Result<Snapshot<'_>> {
        let txn = self.index().read_txn().map_err(|e| self.err(e))?;
        Ok(Snapshot { ws: self, txn })
    }

    /// Deletes `names` in `session` (SPEC §10): each gets a deletion
    /// version (outcome `deleted`); a name not in the workspace fails with
    /// `not_found`. One report per name, in order; once the session is
    /// over, the rest are `refused`.
    pub fn delete(&self, session: &Session, names: &[&str]) -> Result<Vec<FileReport>> {
        let changes: Vec<(String, Want)> = names
            .iter()
            .map(|n| ((*n).to_owned(), Want::Delete))
            .collect();
        change::apply(&self.engine, session, &changes, false)
    }

    /// Deletes, in `session`, each name of `sources` that still holds what
    /// its source file was ingested with (a watched file that was
    /// removed); the others are left alone, without a report.
    pub(crate) fn delete_sources(
        &self,
        session: &Session,
        sources: &[crate::store::SourceRecord],
    ) -> Result<Vec<FileReport>> {
        let changes: Vec<(String, Want)> = sources
            .iter()
            .map(|s| {
                let want = Want::DeleteIf {
                    hash: s.hash,
                    meta: s.meta.clone(),
                };
                (s.name.clone(), want)
            })
            .collect();
        change::apply(&self.engine, session, &changes, false)
    }

    /// What is remembered of the source files in the folder `dir` whose
    /// names still hold what they were ingested with: one attempt, not
    /// retried (a watcher's tracker asks, and must not wait out an outage).
    pub(crate) fn sources_in(&self, dir: &Path) -> Result<Vec<crate::store::KnownSource>> {
        self.index().sources_in(dir).map_err(|e| self.err(e))
    }

    /// What is remembered of the source files at `path` or under it whose
    /// names still hold what they were ingested with.
    pub(crate) fn sources_under(&self, path: &Path) -> Result<Vec<crate::store::SourceRecord>> {
        self.index().sources_under(path).map_err(|e| self.err(e))
    }

    /// Makes version `version` of `name` current again, as a new version
    /// written in `session`: `overwritten` (`ingested` if the name was
    /// deleted), or `unchanged` if the name already holds its content and
    /// metadata. Restoring a deletion version deletes the name.
    pub fn restore(&self, session: &Session, name: &str, version: u64) -> Result<FileReport> {
        let target = self.version(name, version)?;
        let want = Want::Become {
            target: Some(target),
            expect: None,
        };
        let mut out = change::apply(&self.engine, session, &[(name.to_owned(), want)], false)?;
        out.pop()
            .ok_or_else(|| Error::NameNotFound(name.to_owned()))
    }

    /// Undoes what session `id` changed (SPEC §10), in a new session
    /// created by `user` that records it reverts `id`, closed at the end: a
    /// name the session created is deleted, a name it overwrote or deleted
    /// gets back the version it had before. A name a later session changed
    /// since fails with `conflict` unless `opts.force`. Names the session
    /// left unchanged, kept or failed are not touched. A session still open
    /// is refused ([`Error::SessionStillOpen`]).
    pub fn revert_session(
        &self,
        id: Uuid,
        opts: RevertOptions,
        user: SessionOauthUser,
    ) -> Result<Reverted> {
        let target = self.session(id)?;
        if target.status(self.now()) == SessionStatus::Open {
            return Err(Error::SessionStillOpen(id));
        }
        let mut names: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.session_files(id, |f| {
            if matches!(
                f.outcome,
                Outcome::Ingested | Outcome::Overwritten | Outcome::Deleted
            ) && seen.insert(f.name.clone())
            {
                names.push(f.name);
            }
            true
        })?;
        let mut changes = Vec::with_capacity(names.len());
        for name in names {
            let history = self.index().history(&name).map_err(|e| self.err(e))?;
            if let Some(want) = change::revert_want(id, &history, opts.force) {
                changes.push((name, want));
            }
        }
        let session = self.new_session(&CreateSession::new(WriteMode::Overwrite), user);
        if !opts.dry_run {
            self.index()
                .create_session(&session, Some(id))
                .map_err(|e| self.err(e))?;
        }
        let files = change::apply(&self.engine, &session, &changes, opts.dry_run);
        // Closed whatever happened: a revert's session takes nothing more.
        if !opts.dry_run {
            let closed = self.index().close_session(session.session_id, self.now());
            let files = files?;
            closed.map_err(|e| self.err(e))?;
            return Ok(Reverted { session, files });
        }
        Ok(Reverted {
            session,
            files: files?,
        })
    }

    /// The workspace as it was at the instant `at`: what `list`, `current`
    /// and `read` would have answered then. An instant older than what
    /// `gc` has kept is an error ([`Error::BeforeHistory`]).
    pub fn as_of(&self, at: DateTime<Utc>) -> Result<AsOf<'_>> {
        if let Some(horizon) = self.index().history_horizon().map_err(|e| self.err(e))?
            && at < horizon
        {
            return Err(Error::BeforeHistory { at, horizon });
        }
        Ok(AsOf { ws: self, at })
    }

    /// Visits the current version of every name starting with `prefix`, in
    /// name order; the visitor returns `false` to stop.
    pub fn list(&self, prefix: Option<&str>, mut visit: impl FnMut(Entry) -> bool) -> Result<()> {
        self.index()
            .list(prefix, &mut visit)
            .map_err(|e| self.err(e))
    }

    /// Every version of a name, newest first.
    pub fn history(&self, name: &str) -> Result<Vec<Entry>> {
        let h = self.index().history(name).map_err(|e| self.err(e))?;
        if h.is_empty() {
            return Err(Error::NameNotFound(name.to_owned()));
        }
        Ok(h)
    }

    /// The per-file outcomes recorded in a session, in order.
    pub fn session_files(
        &self,
        id: Uuid,
        mut visit: impl FnMut(OutcomeRecord) -> bool,
    ) -> Result<()> {
        self.index()
            .session_files(id, &mut visit)
            .map_err(|e| self.err(e))
    }

    /// Opens the current content of a name.
    pub fn read(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        let e = self
            .current(name)?
            .ok_or_else(|| Error::NameNotFound(name.to_owned()))?;
        self.open_blob(&e.hash)
    }

    /// One version of a name (a deletion included).
    pub fn version(&self, name: &str, version: u64) -> Result<Entry> {
        self.history(name)?
            .into_iter()
            .find(|e| e.version == version)
            .ok_or_else(|| Error::VersionNotFound {
                name: name.to_owned(),
                version,
            })
    }

    /// Opens one version of a name (for a deletion: the content it
    /// removed).
    pub fn read_version(&self, name: &str, version: u64) -> Result<Box<dyn Read + Send>> {
        let e = self.version(name, version)?;
        self.open_blob(&e.hash)
    }

    /// The local file of an external blob, if the blob store keeps blobs
    /// as local files and this one is not inline.
    pub(crate) fn blob_file(&self, hash: &Hash) -> Option<PathBuf> {
        self.engine.blobs.local_path(hash).filter(|p| p.is_file())
    }

    /// Opens a blob by hash, inline or external.
    pub fn open_blob(&self, hash: &Hash) -> Result<Box<dyn Read + Send>> {
        if let Some(data) = self.index().inline_blob(hash).map_err(|e| self.err(e))? {
            return Ok(Box::new(io::Cursor::new(data)));
        }
        self.engine.blobs.open(hash).map_err(|e| self.err(e))
    }

    /// Checks the index's own structure, re-hashes every blob and checks
    /// every version's reference.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport {
            index_problems: self.index().check_integrity().map_err(|e| self.err(e))?,
            ..VerifyReport::default()
        };
        let mut bad: Vec<(Hash, String)> = Vec::new();
        self.index()
            .blobs(&mut |b| {
                let result: std::result::Result<(u64, Hash), String> = (|| {
                    let mut r: Box<dyn Read + Send> = if b.inline {
                        match self.index().inline_blob(&b.hash) {
                            Ok(Some(d)) => Box::new(io::Cursor::new(d)),
                            Ok(None) => return Err("inline blob has no data".into()),
                            Err(e) => return Err(e.to_string()),
                        }
                    } else {
                        match self.engine.blobs.open(&b.hash) {
                            Ok(r) => r,
                            Err(e) if e.kind() == StoreErrorKind::NotFound => {
                                return Err("blob is missing".into());
                            }
                            Err(e) => return Err(e.to_string()),
                        }
                    };
                    hash_reader(&mut r).map_err(|e| format!("reading the blob: {e}"))
                })();
                report.blobs += 1;
                match result {
                    Ok((size, actual)) => {
                        report.bytes += size;
                        if actual != b.hash {
                            bad.push((b.hash, format!("content hashes to {actual}: corrupt")));
                        } else if size != b.size {
                            bad.push((b.hash, format!("size {size}, index says {}", b.size)));
                        }
                    }
                    Err(problem) => bad.push((b.hash, problem)),
                }
                true
            })
            .map_err(|e| self.err(e))?;
        for (hash, problem) in bad {
            let names = self.index().names_of(&hash).map_err(|e| self.err(e))?;
            if names.is_empty() {
                report.defects.push(Defect {
                    name: None,
                    hash,
                    problem: problem.clone(),
                });
            }
            for name in names {
                report.defects.push(Defect {
                    name: Some(name),
                    hash,
                    problem: problem.clone(),
                });
            }
        }
        for (name, hash) in self.index().dangling().map_err(|e| self.err(e))? {
            report.defects.push(Defect {
                name: Some(name),
                hash,
                problem: "no blob is recorded for this content".into(),
            });
        }
        report
            .defects
            .sort_by(|a, b| a.name.cmp(&b.name).then(a.hash.cmp(&b.hash)));
        Ok(report)
    }

    /// Drops versions replaced more than `retention` ago and every blob no
    /// version refers to any more. A blob file is removed only once it is
    /// older than both `retention` and the grace period
    /// ([`WorkspaceBuilder::gc_grace`]), so the fresh blobs of a running
    /// ingest are never taken; a later `gc` removes what the grace kept.
    pub fn gc(&self, retention: chrono::Duration) -> Result<GcReport> {
        let now = self.now();
        // A retention longer than the calendar keeps every version.
        let cutoff = now
            .checked_sub_signed(retention)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let age = retention
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(self.engine.gc_grace);
        let file_cutoff = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let idx = self.index().gc(cutoff).map_err(|e| self.err(e))?;
        let mut report = GcReport {
            versions: idx.versions,
            blobs: idx.inline_blobs,
            orphans: 0,
        };
        let blobs = &self.engine.blobs;
        for h in &idx.external_blobs {
            if blobs.remove(h, file_cutoff).map_err(|e| self.err(e))? {
                report.blobs += 1;
            }
        }
        // Files with no row: written by a run that crashed or whose file was
        // kept, never referenced.
        let mut candidates = Vec::new();
        blobs
            .list(&mut |h, mtime| {
                if mtime < file_cutoff {
                    candidates.push(h);
                }
            })
            .map_err(|e| self.err(e))?;
        for h in candidates {
            if !self.index().has_blob(&h).map_err(|e| self.err(e))?
                && blobs.remove(&h, file_cutoff).map_err(|e| self.err(e))?
            {
                report.orphans += 1;
            }
        }
        report.orphans += blobs.remove_stale(file_cutoff).map_err(|e| self.err(e))?;
        blobs.sync().map_err(|e| self.err(e))?;
        Ok(report)
    }
}

/// Hashes everything `r` yields; returns the length and the hash.
pub(crate) fn hash_reader(r: &mut dyn Read) -> io::Result<(u64, Hash)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                hasher.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok((n, hasher.finalize().into()))
}
