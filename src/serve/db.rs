//! What the server keeps beside a workspace, in `serve/serve.db` (SQLite):
//! API keys (their hashes), the API's view of each upload session (its
//! expiry, who made it, whether it was closed and committed), the uploads
//! staged for a session until it is committed, and the file ids handed
//! out.
//!
//! The folder is the owner's alone (0700, the database 0600): it holds the
//! key hashes and the token-signing secret.

use std::fs::{self, DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::outcome::Reason;
use crate::session::{SessionOauthUser, WriteMode};

/// The schema this build writes.
const SCHEMA: i64 = 1;

/// Why the server's own store failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite said no.
    #[error("the server's database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A file or folder of the server's state.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Others can read what only the owner may.
    #[error(
        "{path} can be read by other users, and it holds API key hashes and the upload-signing secret; run: chmod -R go-rwx {path}"
    )]
    Exposed {
        /// The folder.
        path: PathBuf,
    },
    /// A newer intake wrote it.
    #[error(
        "the server's database {path} has schema {found}; this intake knows {SCHEMA}: upgrade intake"
    )]
    Newer {
        /// The database file.
        path: PathBuf,
        /// Its schema.
        found: i64,
    },
    /// A group of writes failed.
    #[error("the server's database {path}: {message}")]
    Failed {
        /// The database file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A key of that name exists.
    #[error("a key named {0:?} exists already")]
    KeyExists(String),
}

/// An API key as stored: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Its name.
    pub name: String,
    /// The user its sessions are created by.
    pub user: SessionOauthUser,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// BLAKE3 of the key.
    pub(crate) hash: blake3::Hash,
}

/// The API's view of an upload session intake's server made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiSession {
    pub(crate) id: Uuid,
    /// The key that made it.
    pub(crate) key: String,
    /// The API's expiry: uploads are refused from then on, and a session
    /// never closed is closed then.
    pub(crate) expires_at: DateTime<Utc>,
    /// When it was closed (by the client, or at its expiry).
    pub(crate) closed_at: Option<DateTime<Utc>>,
    /// Closed at its expiry rather than by the client.
    pub(crate) expired: bool,
    /// When its uploads were committed and its intake session closed.
    pub(crate) committed_at: Option<DateTime<Utc>>,
    /// The write mode, for the session that takes a key's direct uploads
    /// (`POST files`) in that mode; `None` for an upload session.
    pub(crate) direct: Option<WriteMode>,
}

/// Where a staged upload's body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StagedBody {
    /// In its own file.
    File(PathBuf),
    /// In the database, with its row (a small body): read it with
    /// [`ServeDb::upload_data`].
    Inline,
    /// Nowhere: the upload was refused, for this reason (it still counts,
    /// as a failed file, when the session is committed).
    Refused(Reason, String),
}

/// An upload staged for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Staged {
    /// Arrival order.
    pub(crate) seq: i64,
    /// The object's name as uploaded.
    pub(crate) name: String,
    /// Its body.
    pub(crate) body: StagedBody,
}

/// The body of an upload to record.
pub(crate) enum NewBody {
    /// In a file, synced (its folder is synced with the group).
    File(PathBuf),
    /// Small enough to keep in the database.
    Bytes(Vec<u8>),
    /// Refused, and why.
    Refused(Reason, String),
}

/// An upload to record.
pub(crate) struct NewUpload {
    pub(crate) session: Uuid,
    pub(crate) name: String,
    pub(crate) body: NewBody,
}

/// A write to the server's database.
pub(crate) enum Write {
    /// A new session.
    Session(ApiSession),
    /// An upload.
    Upload(NewUpload),
    /// A session closed.
    Close {
        id: Uuid,
        at: DateTime<Utc>,
        expired: bool,
    },
    /// A session's uploads committed: its staged rows go.
    Committed { id: Uuid, at: DateTime<Utc> },
}

/// What a write gives back.
pub(crate) enum Wrote {
    /// Done.
    Done,
    /// Whether it changed anything (a close of a closed session does not).
    Changed(bool),
    /// An upload's place in arrival order, or `None` when its session was
    /// closed meanwhile.
    Upload(Option<i64>),
}

/// One write, inside the group's transaction.
fn apply_one(tx: &rusqlite::Savepoint<'_>, w: &Write) -> rusqlite::Result<Wrote> {
    match w {
        Write::Session(s) => {
            tx.prepare_cached(
                "INSERT INTO sessions (session_id, key_name, expires_at, direct) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                s.id.to_string(),
                s.key,
                ts(s.expires_at),
                s.direct.map(WriteMode::as_str)
            ])?;
            Ok(Wrote::Done)
        }
        Write::Close { id, at, expired } => {
            let n = tx
                .prepare_cached(
                    "UPDATE sessions SET closed_at = ?2, expired = ?3
                     WHERE session_id = ?1 AND closed_at IS NULL",
                )?
                .execute(params![id.to_string(), ts(*at), expired])?;
            Ok(Wrote::Changed(n > 0))
        }
        Write::Committed { id, at } => {
            tx.prepare_cached("UPDATE sessions SET committed_at = ?2 WHERE session_id = ?1")?
                .execute(params![id.to_string(), ts(*at)])?;
            tx.prepare_cached("DELETE FROM uploads WHERE session_id = ?1")?
                .execute([id.to_string()])?;
            Ok(Wrote::Done)
        }
        Write::Upload(u) => {
            let id = u.session.to_string();
            let open = tx
                .prepare_cached(
                    "SELECT 1 FROM sessions WHERE session_id = ?1 AND closed_at IS NULL",
                )?
                .query_row([&id], |r| r.get::<_, i64>(0))
                .optional()?;
            if open.is_none() {
                return Ok(Wrote::Upload(None));
            }
            let (file, data, reason, message) = match &u.body {
                NewBody::File(f) => (Some(f.to_string_lossy().into_owned()), None, None, None),
                NewBody::Bytes(b) => (None, Some(b.as_slice()), None, None),
                NewBody::Refused(r, m) => (None, None, Some(r.as_str()), Some(m.as_str())),
            };
            tx.prepare_cached(
                "INSERT INTO uploads (session_id, name, file, data, reason, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![id, u.name, file, data, reason, message])?;
            let seq = tx.last_insert_rowid();
            if crate::meta::sidecar_of(std::ffi::OsStr::new(&u.name)).is_none() {
                tx.prepare_cached(
                    "UPDATE sessions SET objects = objects + 1 WHERE session_id = ?1",
                )?
                .execute([&id])?;
            }
            Ok(Wrote::Upload(Some(seq)))
        }
    }
}

/// The server's database of one workspace: one connection that writes,
/// and a pool of readers (WAL: they never wait for the writer's fsync).
pub(crate) struct ServeDb {
    path: PathBuf,
    conn: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    writes: super::group::Group<Write, Result<Wrote, String>>,
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_ts(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Creates `dir` owner-only if it is missing.
pub(crate) fn private_dir(dir: &Path) -> Result<(), DbError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DbError::Io {
            what: "cannot create",
            path: dir.to_owned(),
            source,
        })
}

/// Refuses a folder that users other than its owner can enter or read.
pub(crate) fn check_private(dir: &Path) -> Result<(), DbError> {
    let meta = fs::metadata(dir).map_err(|source| DbError::Io {
        what: "cannot stat",
        path: dir.to_owned(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(DbError::Exposed {
            path: dir.to_owned(),
        });
    }
    Ok(())
}

impl ServeDb {
    /// Opens (creating if needed) the database in the private folder `dir`.
    pub(crate) fn open(dir: &Path) -> Result<ServeDb, DbError> {
        private_dir(dir)?;
        check_private(dir)?;
        let path = dir.join("serve.db");
        // Created 0600 before SQLite opens it; SQLite gives its journal
        // files the database's permissions.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| DbError::Io {
                what: "cannot create",
                path: path.clone(),
                source,
            })?;
        let sql = |source| DbError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(sql)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        if found > SCHEMA {
            return Err(DbError::Newer { path, found });
        }
        if found < SCHEMA {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS keys (
                     name TEXT PRIMARY KEY,
                     hash BLOB NOT NULL UNIQUE,
                     user TEXT NOT NULL,
                     created_at INTEGER NOT NULL,
                     revoked_at INTEGER
                 );
                 CREATE TABLE IF NOT EXISTS sessions (
                     session_id TEXT PRIMARY KEY,
                     key_name TEXT NOT NULL,
                     expires_at INTEGER NOT NULL,
                     closed_at INTEGER,
                     expired INTEGER NOT NULL DEFAULT 0,
                     committed_at INTEGER,
                     direct TEXT,
                     objects INTEGER NOT NULL DEFAULT 0
                 );
                 CREATE INDEX IF NOT EXISTS sessions_open ON sessions(closed_at, expires_at);
                 CREATE TABLE IF NOT EXISTS uploads (
                     seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     session_id TEXT NOT NULL,
                     name TEXT NOT NULL,
                     file TEXT,
                     data BLOB,
                     reason TEXT,
                     message TEXT
                 );
                 CREATE INDEX IF NOT EXISTS uploads_session ON uploads(session_id, seq);
                 CREATE TABLE IF NOT EXISTS file_ids (
                     file_id TEXT PRIMARY KEY,
                     name TEXT NOT NULL
                 );
                 PRAGMA user_version = 1;
                 COMMIT;",
            )
            .map_err(sql)?;
        }
        Ok(ServeDb {
            path,
            conn: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            writes: super::group::Group::new(),
        })
    }

    /// Runs `f` on a pooled read connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, DbError> {
        let sql = |source| DbError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.path).map_err(sql)?;
                c.busy_timeout(std::time::Duration::from_secs(30))
                    .map_err(sql)?;
                c.execute_batch("PRAGMA query_only = ON;").map_err(sql)?;
                c
            }
        };
        let out = f(&conn).map_err(sql);
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        out
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| DbError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    // ---- keys

    /// Stores a new key's hash.
    pub(crate) fn add_key(&self, rec: &KeyRecord) -> Result<(), DbError> {
        let user = serde_json::to_string(&rec.user).unwrap_or_default();
        let added = self.with(|c| {
            c.execute(
                "INSERT INTO keys (name, hash, user, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![
                    rec.name,
                    rec.hash.as_bytes().as_slice(),
                    user,
                    ts(rec.created_at)
                ],
            )
        })?;
        if added == 0 {
            return Err(DbError::KeyExists(rec.name.clone()));
        }
        Ok(())
    }

    /// Every key, revoked ones included, by name.
    pub(crate) fn keys(&self) -> Result<Vec<KeyRecord>, DbError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT name, hash, user, created_at, revoked_at FROM keys ORDER BY name",
            )?;
            let rows = st.query_map([], |r| {
                let hash: Vec<u8> = r.get(1)?;
                let user: String = r.get(2)?;
                Ok(KeyRecord {
                    name: r.get(0)?,
                    hash: <[u8; 32]>::try_from(hash.as_slice())
                        .map(blake3::Hash::from_bytes)
                        .unwrap_or_else(|_| blake3::Hash::from_bytes([0; 32])),
                    user: serde_json::from_str(&user)
                        .unwrap_or_else(|_| SessionOauthUser::from_name("unknown")),
                    created_at: from_ts(r.get(3)?),
                    revoked_at: r.get::<_, Option<i64>>(4)?.map(from_ts),
                })
            })?;
            rows.collect()
        })
    }

    /// Revokes a key; `false` if there is no such key or it was revoked.
    pub(crate) fn revoke_key(&self, name: &str, at: DateTime<Utc>) -> Result<bool, DbError> {
        self.with(|c| {
            c.execute(
                "UPDATE keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                params![name, ts(at)],
            )
        })
        .map(|n| n > 0)
    }

    // ---- sessions

    /// Records a session the server made.
    pub(crate) fn add_session(&self, s: &ApiSession) -> Result<(), DbError> {
        self.write(Write::Session(s.clone())).map(|_| ())
    }

    fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiSession> {
        let id: String = r.get(0)?;
        let direct: Option<String> = r.get(6)?;
        Ok(ApiSession {
            id: id.parse().unwrap_or_default(),
            key: r.get(1)?,
            expires_at: from_ts(r.get(2)?),
            closed_at: r.get::<_, Option<i64>>(3)?.map(from_ts),
            expired: r.get(4)?,
            committed_at: r.get::<_, Option<i64>>(5)?.map(from_ts),
            direct: direct.and_then(|d| d.parse().ok()),
        })
    }

    const SESSION_COLUMNS: &str =
        "session_id, key_name, expires_at, closed_at, expired, committed_at, direct";

    /// The API's view of a session, if the server made it.
    pub(crate) fn session(&self, id: Uuid) -> Result<Option<ApiSession>, DbError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM sessions WHERE session_id = ?1",
                Self::SESSION_COLUMNS
            ))?
            .query_row([id.to_string()], Self::session_row)
            .optional()
        })
    }

    /// Every session the server made.
    pub(crate) fn sessions(&self) -> Result<Vec<ApiSession>, DbError> {
        self.read(|c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {} FROM sessions", Self::SESSION_COLUMNS))?;
            let rows = st.query_map([], Self::session_row)?;
            rows.collect()
        })
    }

    /// Closes a session; `false` if it was closed already.
    pub(crate) fn close_session(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        expired: bool,
    ) -> Result<bool, DbError> {
        self.write(Write::Close { id, at, expired })
            .map(|w| matches!(w, Wrote::Changed(true)))
    }

    /// Records that a session's uploads are committed.
    pub(crate) fn mark_committed(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), DbError> {
        self.write(Write::Committed { id, at }).map(|_| ())
    }

    /// Sessions closed whose uploads are not committed yet.
    pub(crate) fn uncommitted(&self) -> Result<Vec<Uuid>, DbError> {
        self.ids(
            "SELECT session_id FROM sessions
             WHERE closed_at IS NOT NULL AND committed_at IS NULL ORDER BY closed_at",
            None,
        )
    }

    /// Sessions open past their expiry at `now`.
    pub(crate) fn due(&self, now: DateTime<Utc>) -> Result<Vec<Uuid>, DbError> {
        self.ids(
            "SELECT session_id FROM sessions
             WHERE closed_at IS NULL AND expires_at <= ?1 ORDER BY expires_at",
            Some(ts(now)),
        )
    }

    fn ids(&self, sql: &str, arg: Option<i64>) -> Result<Vec<Uuid>, DbError> {
        self.read(|c| {
            let mut st = c.prepare_cached(sql)?;
            let ids: Vec<String> = match arg {
                Some(a) => st
                    .query_map([a], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<_>>()?,
                None => st
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<_>>()?,
            };
            Ok(ids.iter().filter_map(|s| s.parse().ok()).collect())
        })
    }

    /// Upload sessions open at `now`: of `key`, or of every key.
    pub(crate) fn open_sessions(
        &self,
        key: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u64, DbError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT count(*) FROM sessions
                 WHERE (?1 IS NULL OR key_name = ?1)
                   AND direct IS NULL AND closed_at IS NULL AND expires_at > ?2",
            )?
            .query_row(params![key, ts(now)], |r| r.get::<_, i64>(0))
        })
        .map(|n| n.max(0) as u64)
    }

    /// The open session taking `key`'s direct uploads in `mode` that
    /// stays open at least until `until`.
    pub(crate) fn direct_session(
        &self,
        key: &str,
        mode: WriteMode,
        until: DateTime<Utc>,
    ) -> Result<Option<Uuid>, DbError> {
        let ids = self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT session_id FROM sessions
                 WHERE key_name = ?1 AND direct = ?2 AND closed_at IS NULL AND expires_at > ?3
                 ORDER BY expires_at DESC LIMIT 1",
            )?;
            let rows = st.query_map(params![key, mode.as_str(), ts(until)], |r| {
                r.get::<_, String>(0)
            })?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
        })?;
        Ok(ids.first().and_then(|s| s.parse().ok()))
    }

    // ---- uploads

    /// Records an upload whose body is durable in its file, or is kept
    /// with its row (or which was refused, and why), unless the session was closed meanwhile (then
    /// `None`: the caller refuses it). Closing and this take the same
    /// lock, so the commit that follows a close sees every upload accepted
    /// before it.
    ///
    /// Uploads arriving together are recorded together: one sync of each
    /// staging folder (for the bodies' directory entries) and one durable
    /// transaction for the group.
    pub(crate) fn add_upload(&self, up: NewUpload) -> Result<Option<i64>, DbError> {
        self.write(Write::Upload(up)).map(|w| match w {
            Wrote::Upload(seq) => seq,
            _ => None,
        })
    }

    /// Applies one write, together with the writes that arrive with it:
    /// one transaction (and one fsync) for the group, each write in a
    /// savepoint of its own so that one failing fails alone. The staging
    /// folders of the group's upload bodies are synced first, so that no
    /// row refers to a file whose entry is not durable.
    fn write(&self, w: Write) -> Result<Wrote, DbError> {
        self.writes
            .submit(w, |group| self.apply(&group))
            .map_err(|message| DbError::Failed {
                path: self.path.clone(),
                message,
            })
    }

    fn apply(&self, group: &[Write]) -> Vec<Result<Wrote, String>> {
        let mut dirs: Vec<&Path> = group
            .iter()
            .filter_map(|w| match w {
                Write::Upload(NewUpload {
                    body: NewBody::File(f),
                    ..
                }) => f.parent(),
                _ => None,
            })
            .collect();
        dirs.sort_unstable();
        dirs.dedup();
        for d in dirs {
            if let Err(e) = std::fs::File::open(d).and_then(|f| f.sync_all()) {
                let message = format!("syncing {}: {e}", d.display());
                return group.iter().map(|_| Err(message.clone())).collect();
            }
        }
        let applied = self.with(|c| {
            let mut tx = c.transaction()?;
            let mut out = Vec::with_capacity(group.len());
            for w in group {
                let mut sp = tx.savepoint()?;
                match apply_one(&sp, w) {
                    Ok(r) => {
                        sp.commit()?;
                        out.push(Ok(r));
                    }
                    Err(e) => {
                        sp.rollback()?;
                        drop(sp);
                        out.push(Err(e.to_string()));
                    }
                }
            }
            tx.commit()?;
            Ok(out)
        });
        match applied {
            Ok(v) => v,
            Err(e) => {
                let message = e.to_string();
                group.iter().map(|_| Err(message.clone())).collect()
            }
        }
    }

    /// A session's staged uploads in arrival order (small bodies stay in
    /// the database until [`ServeDb::upload_data`] reads them).
    pub(crate) fn uploads(&self, session: Uuid) -> Result<Vec<Staged>, DbError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, name, file, data IS NOT NULL, reason, message FROM uploads
                 WHERE session_id = ?1 ORDER BY seq",
            )?;
            let rows = st.query_map([session.to_string()], |r| {
                let file: Option<String> = r.get(2)?;
                let inline: bool = r.get(3)?;
                let reason: Option<String> = r.get(4)?;
                let message: Option<String> = r.get(5)?;
                let body = match (file, inline) {
                    (Some(f), _) => StagedBody::File(PathBuf::from(f)),
                    (None, true) => StagedBody::Inline,
                    (None, false) => StagedBody::Refused(
                        reason
                            .and_then(|r| Reason::parse(&r))
                            .unwrap_or(Reason::ReadError),
                        message.unwrap_or_default(),
                    ),
                };
                Ok(Staged {
                    seq: r.get(0)?,
                    name: r.get(1)?,
                    body,
                })
            })?;
            rows.collect()
        })
    }

    /// The body of an upload kept in the database.
    pub(crate) fn upload_data(&self, seq: i64) -> Result<Vec<u8>, DbError> {
        self.read(|c| {
            c.prepare_cached("SELECT data FROM uploads WHERE seq = ?1 AND data IS NOT NULL")?
                .query_row([seq], |r| r.get(0))
        })
    }

    /// How many objects other than sidecars a session has taken (an
    /// object uploaded again counts again).
    pub(crate) fn upload_count(&self, session: Uuid) -> Result<u64, DbError> {
        self.read(|c| {
            c.prepare_cached("SELECT objects FROM sessions WHERE session_id = ?1")?
                .query_row([session.to_string()], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map(|n| n.unwrap_or(0).max(0) as u64)
    }

    // ---- file ids

    /// Remembers the names of ids handed out.
    pub(crate) fn remember_ids(&self, ids: &[(Uuid, &str)]) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO file_ids (file_id, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                )?;
                for (id, name) in ids {
                    st.execute(params![id.to_string(), name])?;
                }
            }
            tx.commit()
        })
    }

    /// The name an id was handed out for.
    pub(crate) fn name_of(&self, id: Uuid) -> Result<Option<String>, DbError> {
        self.read(|c| {
            c.prepare_cached("SELECT name FROM file_ids WHERE file_id = ?1")?
                .query_row([id.to_string()], |r| r.get(0))
                .optional()
        })
    }
}
