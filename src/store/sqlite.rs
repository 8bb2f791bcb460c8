//! The SQLite index: WAL mode so readers never wait for a long ingest,
//! `BEGIN IMMEDIATE` so writers from several processes queue for the write
//! lock instead of failing, and `synchronous=FULL` so a commit is durable
//! when it returns.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use uuid::Uuid;

use super::{
    BlobRecord, Entry, Index, IndexGc, KnownSource, OutcomeRecord, ReadTxn, SourceRecord,
    StoreError, StoreErrorKind, WriteTxn, Writes,
};
use crate::hash::Hash;
use crate::outcome::{Counts, Outcome, Reason};
use crate::session::{
    IngestionStatus, Session, SessionOauthUser, SessionRecord, UnknownWriteMode, WriteMode,
};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 3;

/// Each migration takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    "
    CREATE TABLE sessions (
        id          TEXT PRIMARY KEY,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL,
        expires_at  INTEGER,
        write_mode  TEXT NOT NULL,
        closed_at   INTEGER,
        ingested    INTEGER NOT NULL DEFAULT 0,
        overwritten INTEGER NOT NULL DEFAULT 0,
        unchanged   INTEGER NOT NULL DEFAULT 0,
        kept        INTEGER NOT NULL DEFAULT 0,
        failed      INTEGER NOT NULL DEFAULT 0,
        bytes       INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE blobs (
        id         INTEGER PRIMARY KEY,
        hash       BLOB NOT NULL UNIQUE,
        size       INTEGER NOT NULL,
        data       BLOB,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE entries (
        name        TEXT PRIMARY KEY,
        hash        BLOB NOT NULL,
        size        INTEGER NOT NULL,
        meta        TEXT,
        session_id  TEXT NOT NULL,
        ingested_at INTEGER NOT NULL,
        version     INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE history (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        hash        BLOB NOT NULL,
        size        INTEGER NOT NULL,
        meta        TEXT,
        session_id  TEXT NOT NULL,
        ingested_at INTEGER NOT NULL,
        replaced_at INTEGER NOT NULL
    );
    CREATE INDEX history_by_name ON history(name, version);
    CREATE TABLE sources (
        dir      BLOB NOT NULL,
        file     BLOB NOT NULL,
        size     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        name     TEXT NOT NULL,
        hash     BLOB NOT NULL,
        PRIMARY KEY (dir, file)
    ) WITHOUT ROWID;
    CREATE TABLE file_outcomes (
        id         INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        name       TEXT NOT NULL,
        source     BLOB,
        outcome    TEXT NOT NULL,
        reason     TEXT,
        message    TEXT,
        size       INTEGER,
        hash       BLOB
    );
    CREATE INDEX file_outcomes_by_session ON file_outcomes(session_id, id);
    ",
    // 1 -> 2: a source row holds only while its name holds its content and
    // metadata (a write of the name deletes the rows it makes stale), so the
    // quick check reads a folder's rows without a join.
    "
    ALTER TABLE sources ADD COLUMN meta TEXT;
    DELETE FROM sources WHERE NOT EXISTS (
        SELECT 1 FROM entries e WHERE e.name = sources.name AND e.hash = sources.hash
    );
    UPDATE sources SET meta = (SELECT e.meta FROM entries e WHERE e.name = sources.name);
    CREATE INDEX sources_by_name ON sources(name);
    ",
    // 2 -> 3: deletions (a version that removes its name), reverts, and
    // the horizon below which gc has dropped history.
    "
    ALTER TABLE entries ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE history ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN reverts TEXT;
    CREATE TABLE settings (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    ",
];

/// How to open a [`SqliteIndex`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Create the index (and its schema) if it is not there.
    pub create: bool,
    /// How long to wait for another process's write lock (default 60 s);
    /// past it, the error is [`StoreErrorKind::Unavailable`].
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            create: false,
            busy_timeout: Duration::from_secs(60),
        }
    }
}

/// The SQLite index in `intake.db`.
pub struct SqliteIndex {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    busy_timeout: Duration,
}

impl std::fmt::Debug for SqliteIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteIndex")
            .field("path", &self.path)
            .finish()
    }
}

/// The kind of a SQLite error: "busy" once the busy timeout has passed is
/// a store out of reach, not a broken one.
fn kind_of(e: &rusqlite::Error) -> StoreErrorKind {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => StoreErrorKind::Unavailable,
        Some(DatabaseCorrupt | NotADatabase) => StoreErrorKind::Corrupt,
        Some(_) => StoreErrorKind::Io,
        None => match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => StoreErrorKind::Corrupt,
            _ => StoreErrorKind::Io,
        },
    }
}

fn db_err(what: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::new(kind_of(&e), format!("index database {what}"), e)
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::UNIX_EPOCH)
}

fn hash_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Hash> {
    let b = row.get_ref(i)?.as_blob()?;
    Hash::from_slice(b).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            format!("a hash of {} bytes, not 32", b.len()).into(),
        )
    })
}

fn uuid_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    // Parsed where SQLite holds it: no copy per row.
    let s = row.get_ref(i)?.as_str()?;
    Uuid::parse_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A source path as the index keys it: its folder and its file name.
pub(crate) fn split_path(path: &Path) -> (&[u8], &[u8]) {
    let dir = path
        .parent()
        .map(|p| p.as_os_str())
        .unwrap_or(OsStr::new(""));
    let file = path.file_name().unwrap_or(OsStr::new(""));
    (dir.as_bytes(), file.as_bytes())
}

/// The columns `entry_row` reads (the per-file lookup spells them out).
const ENTRY_COLS: &str = "name, hash, size, meta, session_id, ingested_at, version, deleted";

fn entry_row(row: &Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        name: row.get(0)?,
        hash: hash_col(row, 1)?,
        size: row.get::<_, i64>(2)? as u64,
        meta: row.get(3)?,
        session_id: uuid_col(row, 4)?,
        ingested_at: from_micros(row.get(5)?),
        version: row.get::<_, i64>(6)? as u64,
        replaced_at: None,
        deleted: row.get(7)?,
    })
}

const SESSION_COLS: &str = "id, created_at, created_by, expires_at, write_mode, closed_at, \
     ingested, overwritten, unchanged, kept, failed, bytes, deleted, reverts";

fn session_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let conv = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    let by: String = row.get(2)?;
    let created_by: SessionOauthUser =
        serde_json::from_str(&by).map_err(|e| conv(2, e.to_string()))?;
    let mode: String = row.get(4)?;
    let write_mode: WriteMode = mode
        .parse()
        .map_err(|e: UnknownWriteMode| conv(4, e.to_string()))?;
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(i)? as u64) };
    let counts = Counts {
        ingested: n(6)?,
        overwritten: n(7)?,
        unchanged: n(8)?,
        kept: n(9)?,
        failed: n(10)?,
        bytes: n(11)?,
        deleted: n(12)?,
        refused: 0,
    };
    let reverts = match row.get::<_, Option<String>>(13)? {
        Some(s) => Some(Uuid::parse_str(&s).map_err(|e| conv(13, e.to_string()))?),
        None => None,
    };
    Ok(SessionRecord {
        session: Session {
            created_at: from_micros(row.get(1)?),
            created_by,
            expires_at: row.get::<_, Option<i64>>(3)?.map(from_micros),
            session_id: uuid_col(row, 0)?,
            write_mode,
        },
        closed_at: row.get::<_, Option<i64>>(5)?.map(from_micros),
        ingestion: IngestionStatus::from_counts(&counts),
        reverts,
    })
}

fn outcome_row(row: &Row<'_>) -> rusqlite::Result<OutcomeRecord> {
    let conv = |i: usize, s: String| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown value {s:?}").into(),
        )
    };
    let outcome: String = row.get(3)?;
    let reason: Option<String> = row.get(4)?;
    Ok(OutcomeRecord {
        session_id: uuid_col(row, 0)?,
        name: row.get(1)?,
        source: row
            .get::<_, Option<Vec<u8>>>(2)?
            .map(|b| PathBuf::from(OsStr::from_bytes(&b))),
        outcome: Outcome::parse(&outcome).ok_or_else(|| conv(3, outcome.clone()))?,
        reason: match reason {
            Some(r) => Some(Reason::parse(&r).ok_or_else(|| conv(4, r.clone()))?),
            None => None,
        },
        message: row.get(5)?,
        size: row.get::<_, Option<i64>>(6)?.map(|s| s as u64),
        hash: match row.get::<_, Option<Vec<u8>>>(7)? {
            Some(b) => Hash::from_slice(&b),
            None => None,
        },
    })
}

impl SqliteIndex {
    /// Opens (with `opts.create`: or creates) the index at `path`. A
    /// missing index is an error of kind [`StoreErrorKind::NotFound`].
    pub fn open(path: &Path, opts: &SqliteOptions) -> Result<SqliteIndex, StoreError> {
        let (create, busy_timeout) = (opts.create, opts.busy_timeout);
        if !create && !path.exists() {
            return Err(StoreError::not_found(format!(
                "no index at {}",
                path.display()
            )));
        }
        let conn = retry_busy(busy_timeout, || {
            let conn = open_conn(path, create, busy_timeout)?;
            migrate(&conn)?;
            Ok(conn)
        })?;
        Ok(SqliteIndex {
            path: path.to_owned(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            busy_timeout,
        })
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on a pooled read connection.
    fn read<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.pooled()?;
        let out = f(&conn).map_err(db_err(what));
        self.give_back(conn);
        out
    }

    /// A read connection from the pool, or a new one.
    fn pooled(&self) -> Result<Connection, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(c) => Ok(c),
            None => retry_busy(self.busy_timeout, || {
                open_conn(&self.path, false, self.busy_timeout)
            }),
        }
    }

    fn give_back(&self, conn: Connection) {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }
}

/// An error while opening the index, and whether it was SQLite's "busy".
struct OpenErr {
    err: StoreError,
    busy: bool,
}

impl From<StoreError> for OpenErr {
    fn from(err: StoreError) -> OpenErr {
        OpenErr { err, busy: false }
    }
}

fn open_err(what: &str) -> impl FnOnce(rusqlite::Error) -> OpenErr + '_ {
    move |e| OpenErr {
        busy: matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        ),
        err: db_err(what)(e),
    }
}

/// Runs `open` until it does not fail with "busy", for up to `timeout`.
/// SQLite answers "busy" at once, without its busy handler, where waiting
/// could deadlock: when processes create, or switch to WAL, or migrate one
/// index at the same moment. A fresh attempt after the other is done
/// succeeds.
fn retry_busy<T>(
    timeout: Duration,
    mut open: impl FnMut() -> Result<T, OpenErr>,
) -> Result<T, StoreError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match open() {
            Ok(t) => return Ok(t),
            Err(OpenErr { busy: true, .. }) if started.elapsed() < timeout => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e.err),
        }
    }
}

fn open_conn(path: &Path, create: bool, busy_timeout: Duration) -> Result<Connection, OpenErr> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let what = format!("opening {}", path.display());
    let conn = Connection::open_with_flags(path, flags).map_err(open_err(&what))?;
    conn.busy_timeout(busy_timeout).map_err(open_err(&what))?;
    // journal_mode=WAL is persistent and itself needs the lock; the busy
    // timeout above covers a concurrent opener.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(open_err(&what))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::corrupt(format!(
            "index database: {what}: could not switch to WAL mode (journal mode is {mode})"
        ))
        .into());
    }
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=OFF;
         PRAGMA cache_size=-32768;
         PRAGMA temp_store=MEMORY;",
    )
    .map_err(open_err(&what))?;
    // A stable plan: without it SQLite re-plans a cached statement whenever
    // a parameter it could plan on is bound anew (the quick check's
    // per-folder query, once per folder), and intake keeps no statistics
    // that a new plan could use.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(open_err(&what))?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), OpenErr> {
    let what = "checking the schema version";
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err(what))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::corrupt(format!(
            "the workspace index has schema version {version}, newer than this intake understands ({SCHEMA_VERSION}); upgrade intake"
        ))
        .into());
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(open_err("migrating the schema"))?;
    // Re-read under the lock: another process may have migrated meanwhile.
    let result = (|| {
        let mut v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        while v < SCHEMA_VERSION {
            conn.execute_batch(MIGRATIONS[v as usize])?;
            v += 1;
            conn.execute_batch(&format!("PRAGMA user_version = {v}"))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn
            .execute_batch("COMMIT")
            .map_err(open_err("migrating the schema")),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(open_err("migrating the schema")(e))
        }
    }
}

impl Index for SqliteIndex {
    fn create_session(&self, s: &Session, reverts: Option<Uuid>) -> Result<(), StoreError> {
        let by = serde_json::to_string(&s.created_by)
            .map_err(|e| StoreError::new(StoreErrorKind::Corrupt, "serializing the creator", e))?;
        self.writer()
            .execute(
                "INSERT INTO sessions (id, created_at, created_by, expires_at, write_mode, reverts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    s.session_id.to_string(),
                    micros(s.created_at),
                    by,
                    s.expires_at.map(micros),
                    s.write_mode.as_str(),
                    reverts.map(|id| id.to_string())
                ],
            )
            .map_err(db_err("creating a session"))?;
        Ok(())
    }

    fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        self.read("reading a session", |c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"
            ))?
            .query_row([id.to_string()], session_row)
            .optional()
        })
    }

    fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.read("listing sessions", |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions ORDER BY created_at, id"
            ))?;
            st.query_map([], session_row)?.collect()
        })
    }

    fn close_session(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let n = self
            .writer()
            .execute(
                "UPDATE sessions SET closed_at = ?2 WHERE id = ?1 AND closed_at IS NULL",
                params![id.to_string(), micros(at)],
            )
            .map_err(db_err("closing a session"))?;
        Ok(n == 1)
    }

    fn is_closed(&self, id: Uuid) -> Result<bool, StoreError> {
        self.read("reading a session", |c| {
            let closed: Option<Option<i64>> = c
                .prepare_cached("SELECT closed_at FROM sessions WHERE id = ?1")?
                .query_row([id.to_string()], |r| r.get(0))
                .optional()?;
            Ok(matches!(closed, Some(Some(_))))
        })
    }

    fn current(&self, name: &str) -> Result<Option<Entry>, StoreError> {
        self.read("looking up a name", |c| current_on(c, name))
    }

    fn read_txn(&self) -> Result<Box<dyn ReadTxn + '_>, StoreError> {
        let conn = self.pooled()?;
        // Deferred: the read transaction starts with the first lookup and
        // keeps its view until the end.
        conn.execute_batch("BEGIN")
            .map_err(db_err("starting a read transaction"))?;
        Ok(Box::new(SqliteReadTxn {
            index: self,
            conn: Some(conn),
        }))
    }

    fn sources_in(&self, dir: &Path) -> Result<Vec<KnownSource>, StoreError> {
        let dir = dir.as_os_str().as_bytes();
        self.read("looking up sources", |c| {
            let mut st = c.prepare_cached(
                "SELECT file, size, mtime_ns, name, hash, meta FROM sources WHERE dir = ?1",
            )?;
            st.query_map([dir], |r| {
                Ok(KnownSource {
                    file: OsStr::from_bytes(r.get_ref(0)?.as_blob()?).to_owned(),
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    name: r.get(3)?,
                    hash: hash_col(r, 4)?,
                    meta: r.get(5)?,
                })
            })?
            .collect()
        })
    }

    fn sources_under(&self, path: &Path) -> Result<Vec<SourceRecord>, StoreError> {
        let (dir, file) = split_path(path);
        let whole = path.as_os_str().as_bytes();
        // Folders under `path`: from "path/" up to, not including, "path0"
        // ('0' follows '/').
        let lo = [whole, b"/"].concat();
        let hi = [whole, b"0"].concat();
        self.read("looking up sources", |c| {
            let mut st = c.prepare_cached(
                "SELECT dir, file, size, mtime_ns, name, hash, meta FROM sources
                 WHERE (dir = ?1 AND file = ?2) OR dir = ?3 OR (dir >= ?4 AND dir < ?5)",
            )?;
            st.query_map(params![dir, file, whole, lo, hi], |r| {
                let dir = OsStr::from_bytes(r.get_ref(0)?.as_blob()?);
                let file = OsStr::from_bytes(r.get_ref(1)?.as_blob()?);
                Ok(SourceRecord {
                    path: Path::new(dir).join(file),
                    size: r.get::<_, i64>(2)? as u64,
                    mtime_ns: r.get(3)?,
                    name: r.get(4)?,
                    hash: hash_col(r, 5)?,
                    meta: r.get(6)?,
                })
            })?
            .collect()
        })
    }

    fn begin(&self, durable: bool) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        let conn = self.writer();
        // The safety level can only change outside a transaction; it is
        // set for every transaction, so it never leaks into the next one.
        let sync = if durable { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!("PRAGMA synchronous={sync}; BEGIN IMMEDIATE"))
            .map_err(db_err("starting a write transaction"))?;
        Ok(Box::new(SqliteTxn { conn, open: true }))
    }

    fn list(
        &self,
        prefix: Option<&str>,
        visit: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), StoreError> {
        self.read("listing names", |c| {
            let prefix = prefix.unwrap_or("");
            let mut st = c.prepare_cached(&format!(
                "SELECT {ENTRY_COLS} FROM entries WHERE name >= ?1 ORDER BY name"
            ))?;
            visit_live(st.query([prefix])?, prefix, visit)
        })
    }

    fn names(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read("listing names", |c| {
            let mut st = c.prepare_cached(
                "SELECT name FROM entries WHERE name > ?1 ORDER BY name LIMIT ?2",
            )?;
            st.query_map(params![after, limit as i64], |r| r.get(0))?
                .collect()
        })
    }

    fn list_at(
        &self,
        prefix: Option<&str>,
        at: DateTime<Utc>,
        visit: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), StoreError> {
        self.read("listing names at an instant", |c| {
            let prefix = prefix.unwrap_or("");
            // A name has at most one version whose span holds `at`: its
            // versions' spans follow each other without gaps.
            let mut st = c.prepare_cached(&format!(
                "SELECT {ENTRY_COLS} FROM entries
                   WHERE name >= ?1 AND ingested_at <= ?2
                 UNION ALL
                 SELECT {ENTRY_COLS} FROM history
                   WHERE name >= ?1 AND ingested_at <= ?2 AND replaced_at > ?2
                 ORDER BY name"
            ))?;
            visit_live(st.query(params![prefix, micros(at)])?, prefix, visit)
        })
    }

    fn history_horizon(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read("reading the history horizon", |c| {
            let v: Option<i64> = c
                .prepare_cached("SELECT value FROM settings WHERE key = 'gc_horizon'")?
                .query_row([], |r| r.get(0))
                .optional()?;
            Ok(v.map(from_micros))
        })
    }

    fn history(&self, name: &str) -> Result<Vec<Entry>, StoreError> {
        self.read("reading history", |c| {
            let mut out: Vec<Entry> = current_on(c, name)?.into_iter().collect();
            let mut st = c.prepare_cached(&format!(
                "SELECT {ENTRY_COLS}, replaced_at FROM history WHERE name = ?1 ORDER BY version DESC"
            ))?;
            let old = st.query_map([name], |r| {
                let mut e = entry_row(r)?;
                e.replaced_at = Some(from_micros(r.get(8)?));
                Ok(e)
            })?;
            for e in old {
                out.push(e?);
            }
            Ok(out)
        })
    }

    fn session_files(
        &self,
        id: Uuid,
        visit: &mut dyn FnMut(OutcomeRecord) -> bool,
    ) -> Result<(), StoreError> {
        self.read("listing a session's files", |c| {
            let mut st = c.prepare_cached(
                "SELECT session_id, name, source, outcome, reason, message, size, hash
                 FROM file_outcomes WHERE session_id = ?1 ORDER BY id",
            )?;
            let mut rows = st.query([id.to_string()])?;
            while let Some(row) = rows.next()? {
                if !visit(outcome_row(row)?) {
                    break;
                }
            }
            Ok(())
        })
    }

    fn inline_blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        self.read("reading a blob", |c| {
            let data: Option<Option<Vec<u8>>> = c
                .prepare_cached("SELECT data FROM blobs WHERE hash = ?1")?
                .query_row([&hash.0[..]], |r| r.get(0))
                .optional()?;
            Ok(data.flatten())
        })
    }

    fn has_blob(&self, hash: &Hash) -> Result<bool, StoreError> {
        self.read("looking up a blob", |c| has_blob_on(c, hash))
    }

    fn blobs(&self, visit: &mut dyn FnMut(BlobRecord) -> bool) -> Result<(), StoreError> {
        self.read("listing blobs", |c| {
            let mut st = c.prepare("SELECT hash, size, data IS NOT NULL FROM blobs ORDER BY id")?;
            let mut rows = st.query([])?;
            while let Some(row) = rows.next()? {
                let rec = BlobRecord {
                    hash: hash_col(row, 0)?,
                    size: row.get::<_, i64>(1)? as u64,
                    inline: row.get(2)?,
                };
                if !visit(rec) {
                    break;
                }
            }
            Ok(())
        })
    }

    fn dangling(&self) -> Result<Vec<(String, Hash)>, StoreError> {
        self.read("checking references", |c| {
            let mut st = c.prepare(
                "SELECT name, hash FROM entries WHERE hash NOT IN (SELECT hash FROM blobs)
                 UNION
                 SELECT name, hash FROM history WHERE hash NOT IN (SELECT hash FROM blobs)
                 ORDER BY 1",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, hash_col(r, 1)?)))?
                .collect()
        })
    }

    fn names_of(&self, hash: &Hash) -> Result<Vec<String>, StoreError> {
        self.read("finding names", |c| {
            let mut st = c.prepare(
                "SELECT name FROM entries WHERE hash = ?1
                 UNION SELECT name FROM history WHERE hash = ?1 ORDER BY 1",
            )?;
            st.query_map([&hash.0[..]], |r| r.get(0))?.collect()
        })
    }

    fn check_integrity(&self) -> Result<Vec<String>, StoreError> {
        self.read("checking the index's integrity", |c| {
            let mut st = c.prepare("PRAGMA integrity_check")?;
            let lines: Vec<String> = st
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(lines.into_iter().filter(|l| l != "ok").collect())
        })
    }

    fn gc(&self, cutoff: DateTime<Utc>) -> Result<IndexGc, StoreError> {
        let conn = self.writer();
        conn.execute_batch("PRAGMA synchronous=FULL; BEGIN IMMEDIATE")
            .map_err(db_err("starting garbage collection"))?;
        let result = (|| -> rusqlite::Result<IndexGc> {
            let versions = conn.execute(
                "DELETE FROM history WHERE replaced_at < ?1",
                [micros(cutoff)],
            )? + conn.execute(
                "DELETE FROM entries WHERE deleted = 1 AND ingested_at < ?1",
                [micros(cutoff)],
            )?;
            conn.execute(
                "INSERT INTO settings (key, value) VALUES ('gc_horizon', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                [micros(cutoff)],
            )?;
            let mut st = conn.prepare(
                "SELECT id, hash, data IS NOT NULL FROM blobs
                 WHERE hash NOT IN (SELECT hash FROM entries)
                   AND hash NOT IN (SELECT hash FROM history)",
            )?;
            let dead: Vec<(i64, Hash, bool)> = st
                .query_map([], |r| Ok((r.get(0)?, hash_col(r, 1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut del = conn.prepare("DELETE FROM blobs WHERE id = ?1")?;
            let mut out = IndexGc {
                versions: versions as u64,
                ..IndexGc::default()
            };
            for (id, hash, inline) in dead {
                del.execute([id])?;
                if inline {
                    out.inline_blobs += 1;
                } else {
                    out.external_blobs.push(hash);
                }
            }
            Ok(out)
        })();
        match result {
            Ok(out) => {
                conn.execute_batch("COMMIT")
                    .map_err(db_err("committing garbage collection"))?;
                Ok(out)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(db_err("garbage collection")(e))
            }
        }
    }
}

/// Visits the versions `rows` yields (in name order, from `prefix` on)
/// while their names start with `prefix`, leaving out deletions, until
/// `visit` returns `false`.
fn visit_live(
    mut rows: rusqlite::Rows<'_>,
    prefix: &str,
    visit: &mut dyn FnMut(Entry) -> bool,
) -> rusqlite::Result<()> {
    while let Some(row) = rows.next()? {
        let e = entry_row(row)?;
        if !e.name.starts_with(prefix) || (!e.deleted && !visit(e)) {
            break;
        }
    }
    Ok(())
}

fn current_on(c: &Connection, name: &str) -> rusqlite::Result<Option<Entry>> {
    // A literal, not format!: this runs once per file.
    c.prepare_cached(
        "SELECT name, hash, size, meta, session_id, ingested_at, version, deleted FROM entries WHERE name = ?1",
    )?
        .query_row([name], entry_row)
        .optional()
}

fn has_blob_on(c: &Connection, hash: &Hash) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT 1 FROM blobs WHERE hash = ?1")?
        .query_row([&hash.0[..]], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
}

/// A read transaction on a pooled connection, given back when it ends.
struct SqliteReadTxn<'a> {
    index: &'a SqliteIndex,
    conn: Option<Connection>,
}

impl ReadTxn for SqliteReadTxn<'_> {
    fn current(&self, name: &str) -> Result<Option<Entry>, StoreError> {
        match &self.conn {
            Some(c) => current_on(c, name).map_err(db_err("looking up a name")),
            None => Err(StoreError::corrupt("read transaction already ended")),
        }
    }
}

impl Drop for SqliteReadTxn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // A connection whose transaction would not end is not reused.
            if conn.execute_batch("COMMIT").is_ok() {
                self.index.give_back(conn);
            }
        }
    }
}

struct SqliteTxn<'a> {
    conn: MutexGuard<'a, Connection>,
    open: bool,
}

impl Drop for SqliteTxn<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl WriteTxn for SqliteTxn<'_> {
    /// SQLite's write lock, taken at `BEGIN IMMEDIATE`, covers every name:
    /// the lookups lock nothing more.
    fn lock(&mut self, names: &[&str]) -> Result<Vec<Option<Entry>>, StoreError> {
        names
            .iter()
            .map(|n| current_on(&self.conn, n).map_err(db_err("looking up a name")))
            .collect()
    }

    fn has_blob(&mut self, hash: &Hash) -> Result<bool, StoreError> {
        has_blob_on(&self.conn, hash).map_err(db_err("looking up a blob"))
    }

    fn write(&mut self, w: &Writes<'_>) -> Result<(), StoreError> {
        let c = &*self.conn;
        let at = micros(w.at);
        if !w.blobs.is_empty() {
            let mut st = c
                .prepare_cached(
                    "INSERT INTO blobs (hash, size, data, created_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (hash) DO NOTHING",
                )
                .map_err(db_err("storing a blob"))?;
            for b in &w.blobs {
                st.execute(params![&b.hash.0[..], b.size as i64, b.data, at])
                    .map_err(db_err("storing a blob"))?;
            }
        }
        for v in &w.versions {
            write_version(c, &v.entry, v.replaced.as_ref()).map_err(db_err("writing a version"))?;
        }
        if !w.sources.is_empty() {
            let mut st = c
                .prepare_cached(
                    "INSERT OR REPLACE INTO sources (dir, file, size, mtime_ns, name, hash, meta)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(db_err("recording a source"))?;
            for rec in &w.sources {
                let (dir, file) = split_path(&rec.path);
                st.execute(params![
                    dir,
                    file,
                    rec.size as i64,
                    rec.mtime_ns,
                    rec.name,
                    &rec.hash.0[..],
                    rec.meta
                ])
                .map_err(db_err("recording a source"))?;
            }
        }
        if !w.outcomes.is_empty() {
            let mut st = c
                .prepare_cached(
                    "INSERT INTO file_outcomes (session_id, name, source, outcome, reason, message, size, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(db_err("recording an outcome"))?;
            for r in &w.outcomes {
                st.execute(params![
                    r.session_id.to_string(),
                    r.name,
                    r.source.as_ref().map(|p| p.as_os_str().as_bytes()),
                    r.outcome.as_str(),
                    r.reason.map(Reason::as_str),
                    r.message,
                    r.size.map(|s| s as i64),
                    r.hash.as_ref().map(|h| &h.0[..])
                ])
                .map_err(db_err("recording an outcome"))?;
            }
        }
        for (id, d) in &w.counts {
            c.prepare_cached(
                "UPDATE sessions SET ingested = ingested + ?2, overwritten = overwritten + ?3,
                   unchanged = unchanged + ?4, kept = kept + ?5, failed = failed + ?6,
                   bytes = bytes + ?7, deleted = deleted + ?8 WHERE id = ?1",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id.to_string(),
                    d.ingested as i64,
                    d.overwritten as i64,
                    d.unchanged as i64,
                    d.kept as i64,
                    d.failed as i64,
                    d.bytes as i64,
                    d.deleted as i64
                ])
            })
            .map_err(db_err("updating session counters"))?;
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(db_err("committing"))?;
        self.open = false;
        Ok(())
    }
}

/// Makes `e` the current version of its name, moving `replaced` into
/// history and dropping the name's source records that no longer hold.
fn write_version(c: &Connection, e: &Entry, replaced: Option<&Entry>) -> rusqlite::Result<()> {
    if let Some(old) = replaced {
        // The sources recorded for the old content no longer hold (none
        // does once the name is deleted).
        if e.deleted {
            c.prepare_cached("DELETE FROM sources WHERE name = ?1")?
                .execute(params![e.name])?;
        } else {
            c.prepare_cached(
                "DELETE FROM sources WHERE name = ?1 AND (hash <> ?2 OR meta IS NOT ?3)",
            )?
            .execute(params![e.name, &e.hash.0[..], e.meta])?;
        }
        c.prepare_cached(
            "INSERT INTO history (name, version, hash, size, meta, session_id, ingested_at, replaced_at, deleted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            old.name,
            old.version as i64,
            &old.hash.0[..],
            old.size as i64,
            old.meta,
            old.session_id.to_string(),
            micros(old.ingested_at),
            micros(e.ingested_at),
            old.deleted
        ])?;
    }
    c.prepare_cached(
        "INSERT INTO entries (name, hash, size, meta, session_id, ingested_at, version, deleted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, size = excluded.size,
           meta = excluded.meta, session_id = excluded.session_id,
           ingested_at = excluded.ingested_at, version = excluded.version,
           deleted = excluded.deleted",
    )?
    .execute(params![
        e.name,
        &e.hash.0[..],
        e.size as i64,
        e.meta,
        e.session_id.to_string(),
        micros(e.ingested_at),
        e.version as i64,
        e.deleted
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> OpenErr {
        open_err("opening")(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        ))
    }

    #[test]
    fn retry_busy_retries_only_busy_and_only_until_the_timeout() {
        // Busy twice, then open.
        let mut tries = 0;
        let got = retry_busy(Duration::from_secs(10), || {
            tries += 1;
            if tries < 3 { Err(busy()) } else { Ok(tries) }
        });
        assert_eq!(got.ok(), Some(3));

        // Any other error at once.
        let mut tries = 0;
        let got: Result<(), StoreError> = retry_busy(Duration::from_secs(10), || {
            tries += 1;
            Err(StoreError::corrupt("not a database").into())
        });
        assert_eq!(tries, 1);
        assert_eq!(got.err().map(|e| e.kind()), Some(StoreErrorKind::Corrupt));

        // Busy for good: the error, once the timeout has passed.
        let started = std::time::Instant::now();
        let got: Result<(), StoreError> = retry_busy(Duration::from_millis(30), || Err(busy()));
        assert!(started.elapsed() >= Duration::from_millis(30));
        let e = got.expect_err("busy for good");
        assert_eq!(e.kind(), StoreErrorKind::Unavailable);
        assert_eq!(e.what(), "index database opening");
        assert!(e.to_string().contains("locked"), "{e}");
    }

    /// A version-1 index gains the quick-check metadata of each source, and
    /// loses the source rows whose names no longer hold their content.
    #[test]
    fn migration_from_1_keeps_only_the_source_records_that_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intake.db");
        let (h1, h2) = (Hash::of(b"one"), Hash::of(b"two"));
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute_batch("PRAGMA user_version = 1").unwrap();
            let entry =
                "INSERT INTO entries (name, hash, size, meta, session_id, ingested_at, version)
                         VALUES (?1, ?2, 3, ?3, 's', 0, 1)";
            c.execute(entry, params!["a", &h1.0[..], Option::<&str>::None])
                .unwrap();
            c.execute(entry, params!["b", &h2.0[..], Some(r#"{"k":1}"#)])
                .unwrap();
            let source = "INSERT INTO sources (dir, file, size, mtime_ns, name, hash)
                          VALUES (?1, ?2, 3, 7, ?3, ?4)";
            // Holds; holds (with metadata); stale (b holds h2); name gone.
            for (file, name, hash) in [
                ("a", "a", h1),
                ("b", "b", h2),
                ("b2", "b", h1),
                ("x", "x", h1),
            ] {
                c.execute(
                    source,
                    params![&b"/src"[..], file.as_bytes(), name, &hash.0[..]],
                )
                .unwrap();
            }
        }
        let index = SqliteIndex::open(&path, &SqliteOptions::default()).unwrap();
        let mut known = index.sources_in(Path::new("/src")).unwrap();
        known.sort_by(|x, y| x.file.cmp(&y.file));
        let got: Vec<(&OsStr, &str, Hash, Option<&str>)> = known
            .iter()
            .map(|k| {
                (
                    k.file.as_os_str(),
                    k.name.as_str(),
                    k.hash,
                    k.meta.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (OsStr::new("a"), "a", h1, None),
                (OsStr::new("b"), "b", h2, Some(r#"{"k":1}"#)),
            ]
        );
        let version: i64 = index
            .writer()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }
}
