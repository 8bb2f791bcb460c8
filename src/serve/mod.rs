//! `intake serve`: the deepset upload-session API over HTTP, so that the
//! official `deepset-cloud` SDK and CLI upload into intake workspaces.
//!
//! [`Server`] holds the workspaces it serves, by name, and a committer
//! thread; [`Server::router`] is an axum [`Router`](axum::Router) that a
//! program can serve itself or mount in its own application. Uploads into
//! a session are staged (durably) until the session is closed; then they
//! are decided and committed in one ingest run, in the order they arrived.
//! What the server keeps beside a workspace (key hashes, the signing
//! secret, staged uploads) lives in the workspace's owner-only `serve/`
//! folder.

mod api;
mod commit;
mod db;
mod files;
mod group;
mod keys;
mod metrics;
mod objects;
mod page;
mod routes;
mod sessions;
mod token;
mod upload;
mod wire;

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender, bounded};
use uuid::Uuid;

pub use db::{DbError, KeyRecord};

use crate::session::SessionOauthUser;
use crate::workspace::Workspace;
use db::ServeDb;
use token::Secret;

/// The limits a server keeps to, each with a default that suits an
/// operator's first day.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest upload body, in bytes (default 5 GiB, S3's limit for one
    /// PUT).
    pub max_upload_bytes: u64,
    /// Most files (objects other than sidecars) one session takes
    /// (default 100,000).
    pub max_files_per_session: u64,
    /// Most upload sessions one key may have open (default 10, as
    /// deepset's hosted service).
    pub max_open_sessions_per_key: u64,
    /// Longest a request other than an upload may take, body included
    /// (default 30 s).
    pub request_timeout: Duration,
    /// Longest an upload body may stall between two pieces (default 30 s):
    /// a client that sends one byte a minute is cut off.
    pub upload_idle_timeout: Duration,
    /// Most requests served at once; more are answered 503 at once
    /// (default 512).
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_upload_bytes: 5 << 30,
            max_files_per_session: 100_000,
            max_open_sessions_per_key: 10,
            request_timeout: Duration::from_secs(30),
            upload_idle_timeout: Duration::from_secs(30),
            max_in_flight: 512,
        }
    }
}

/// How a server runs.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The URL clients reach the server at (`https://intake.example.com`),
    /// used in the upload URLs sessions hand out; default: `http://` and
    /// the request's `Host`.
    pub public_url: Option<String>,
    /// Its limits.
    pub limits: Limits,
    /// Show the status page at `/` to every client, not only to this
    /// machine's (default: loopback only; it lists file names).
    pub public_status: bool,
    /// Clients reach the server over TLS: without a `public_url`, upload
    /// URLs start with `https://`.
    pub tls: bool,
}

/// Why a server cannot start, or a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The server's own store.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The workspace.
    #[error(transparent)]
    Workspace(#[from] crate::Error),
    /// A workspace with no folder of its own.
    #[error("workspace {0} has no folder for the server's state")]
    NoFolder(String),
    /// A workspace name that cannot be part of a URL path.
    #[error(
        "{0:?} cannot be a served workspace name: use letters, digits, '.', '_' and '-' (not starting with '.')"
    )]
    BadName(String),
    /// The same name twice.
    #[error("workspace name {0:?} is given twice")]
    Duplicate(String),
    /// The operating system's random numbers.
    #[error("no random numbers from the operating system: {0}")]
    Random(getrandom::Error),
    /// The commit thread could not start.
    #[error("cannot start the commit thread: {0}")]
    Thread(std::io::Error),
    /// The signing secret.
    #[error("the upload-signing secret {path}: {message}")]
    Secret {
        /// Its file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Whether `name` may name a served workspace.
pub fn valid_workspace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One served workspace and the server's state beside it.
pub(crate) struct Hosted {
    pub(crate) name: String,
    pub(crate) ws: Workspace,
    pub(crate) db: ServeDb,
    pub(crate) secret: Secret,
    /// Where uploads wait for their session's commit.
    pub(crate) stage: PathBuf,
}

impl Hosted {
    fn open(name: String, ws: Workspace) -> Result<Hosted, ServeError> {
        let dir = state_dir(&ws)?;
        let db = ServeDb::open(&dir)?;
        let secret = secret(&dir.join("secret"))?;
        let stage = dir.join("uploads");
        db::private_dir(&stage)?;
        let hosted = Hosted {
            name,
            ws,
            db,
            secret,
            stage,
        };
        hosted.clear_leftovers()?;
        Ok(hosted)
    }

    /// Removes the staged uploads of sessions already committed (or never
    /// recorded): what a server stopped between a commit and its clean-up
    /// left behind.
    fn clear_leftovers(&self) -> Result<(), ServeError> {
        let Ok(entries) = std::fs::read_dir(&self.stage) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let id = e.file_name().to_str().and_then(|n| n.parse::<Uuid>().ok());
            let done = match id {
                None => true,
                Some(id) => self
                    .db
                    .session(id)?
                    .is_none_or(|s| s.committed_at.is_some()),
            };
            if done {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(())
    }

    /// The folder a session's uploads are staged in.
    pub(crate) fn stage_of(&self, session: Uuid) -> PathBuf {
        self.stage.join(session.to_string())
    }
}

fn state_dir(ws: &Workspace) -> Result<PathBuf, ServeError> {
    ws.dir()
        .map(|d| d.join("serve"))
        .ok_or_else(|| ServeError::NoFolder(ws.label().to_owned()))
}

/// Reads the workspace's signing secret, making one the first time.
fn secret(path: &Path) -> Result<Secret, ServeError> {
    let bad = |message: String| ServeError::Secret {
        path: path.to_owned(),
        message,
    };
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(ServeError::Random)?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| bad(e.to_string()))?;
            Ok(Secret(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| bad(e.to_string()))?;
            <[u8; 32]>::try_from(bytes.as_slice())
                .map(Secret)
                .map_err(|_| bad(format!("{} bytes, not 32: remove it to make a new one (every upload URL handed out stops working)", bytes.len())))
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Keys of one workspace: what `intake keys` does.
pub struct Keys {
    db: ServeDb,
    now: DateTime<Utc>,
}

impl Keys {
    /// The keys of `ws` (creating its private state folder if needed).
    pub fn open(ws: &Workspace) -> Result<Keys, ServeError> {
        let dir = state_dir(ws)?;
        Ok(Keys {
            db: ServeDb::open(&dir)?,
            now: ws.now(),
        })
    }

    /// Creates a key named `name` whose sessions are created by `user`,
    /// and returns it: the only time it is ever shown.
    pub fn create(&self, name: &str, user: SessionOauthUser) -> Result<String, ServeError> {
        let key = keys::generate().map_err(ServeError::Random)?;
        self.db.add_key(&keys::record(name, &key, user, self.now))?;
        Ok(key)
    }

    /// Every key (never the key itself), by name.
    pub fn list(&self) -> Result<Vec<KeyRecord>, ServeError> {
        Ok(self.db.keys()?)
    }

    /// Revokes a key; `false` if no live key has that name.
    pub fn revoke(&self, name: &str) -> Result<bool, ServeError> {
        Ok(self.db.revoke_key(name, self.now)?)
    }
}

/// A server: the workspaces it serves and the thread that commits closed
/// sessions. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) workspaces: BTreeMap<String, Arc<Hosted>>,
    pub(crate) options: ServeOptions,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) in_flight: tokio::sync::Semaphore,
    wake: Sender<()>,
    stop: AtomicBool,
    committer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Inner {
    /// Asks the committer to look for work now.
    pub(crate) fn wake(&self) {
        let _ = self.wake.try_send(());
    }
}

impl Server {
    /// A server for `workspaces` (name, workspace). It opens each
    /// workspace's server state, refusing one whose secrets others can
    /// read, and starts committing: sessions closed before a restart and
    /// not yet committed are committed first.
    pub fn new(
        workspaces: Vec<(String, Workspace)>,
        options: ServeOptions,
    ) -> Result<Server, ServeError> {
        let mut map = BTreeMap::new();
        for (name, ws) in workspaces {
            if !valid_workspace_name(&name) {
                return Err(ServeError::BadName(name));
            }
            if map.contains_key(&name) {
                return Err(ServeError::Duplicate(name));
            }
            let hosted = Hosted::open(name.clone(), ws)?;
            map.insert(name, Arc::new(hosted));
        }
        let (wake, woken) = bounded(1);
        let in_flight = tokio::sync::Semaphore::new(options.limits.max_in_flight.max(1));
        let inner = Arc::new(Inner {
            workspaces: map,
            metrics: metrics::Metrics::new(),
            in_flight,
            options,
            wake,
            stop: AtomicBool::new(false),
            committer: std::sync::Mutex::new(None),
        });
        let worker = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("intake-commit".into())
            .spawn(move || committer(&worker, &woken))
            .map_err(ServeError::Thread)?;
        *inner.committer.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        inner.wake();
        Ok(Server { inner })
    }

    /// The HTTP API, the status page, `/healthz` and `/metrics`.
    pub fn router(&self) -> axum::Router {
        routes::router(Arc::clone(&self.inner))
    }

    /// The names of the workspaces served.
    pub fn workspaces(&self) -> Vec<String> {
        self.inner.workspaces.keys().cloned().collect()
    }

    /// Commits every closed session and stops the committer. Call it after
    /// the HTTP server has stopped accepting and its requests finished.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.wake();
        let handle = self
            .inner
            .committer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// How many sessions are committed at once.
const COMMITTERS: usize = 8;

/// The committer: closes sessions at their expiry and commits closed
/// ones, waking when asked and at least once a second. A commit that
/// fails (the store is down) is tried again later.
fn committer(inner: &Inner, woken: &Receiver<()>) {
    let mut retry_at: std::collections::HashMap<Uuid, Instant> = Default::default();
    loop {
        let stopping = inner.stop.load(Ordering::SeqCst);
        for hosted in inner.workspaces.values() {
            let now = hosted.ws.now();
            match hosted.db.due(now) {
                Ok(ids) => {
                    for id in ids {
                        if let Err(e) = hosted.db.close_session(id, now, true) {
                            tracing::error!(workspace = %hosted.name, session = %id, "closing at expiry: {e}");
                        }
                    }
                }
                Err(e) => tracing::error!(workspace = %hosted.name, "{e}"),
            }
            let ids = match hosted.db.uncommitted() {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(workspace = %hosted.name, "{e}");
                    continue;
                }
            };
            let ids: Vec<Uuid> = ids
                .into_iter()
                .filter(|id| stopping || retry_at.get(id).is_none_or(|t| Instant::now() >= *t))
                .collect();
            // Sessions are committed side by side: each waits on its own
            // durable writes, which the index and the disk overlap.
            let next = std::sync::atomic::AtomicUsize::new(0);
            let failed = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for _ in 0..COMMITTERS.min(ids.len()) {
                    scope.spawn(|| {
                        while let Some(&id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                            if let Err(e) = commit_session(inner, hosted, id) {
                                tracing::error!(workspace = %hosted.name, session = %id, "committing: {e}; trying again in 5 s");
                                failed.lock().unwrap_or_else(|p| p.into_inner()).push(id);
                            }
                        }
                    });
                }
            });
            let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
            for id in &ids {
                if failed.contains(id) {
                    retry_at.insert(*id, Instant::now() + Duration::from_secs(5));
                } else {
                    retry_at.remove(id);
                }
            }
        }
        if stopping {
            return;
        }
        let _ = woken.recv_timeout(Duration::from_secs(1));
    }
}

/// Commits one closed session (see [`commit`]).
fn commit_session(inner: &Inner, hosted: &Hosted, id: Uuid) -> Result<(), String> {
    let rec = hosted.ws.session(id).map_err(|e| e.to_string())?;
    if rec.closed_at.is_none() {
        let uploads = hosted.db.uploads(id).map_err(|e| e.to_string())?;
        let (paired, orphans) = commit::pair(&uploads);
        for o in orphans {
            tracing::warn!(workspace = %hosted.name, session = %id, "{o}: a sidecar whose file was never uploaded; ignored");
        }
        let mut done = HashSet::new();
        hosted
            .ws
            .session_files(id, |o| {
                done.insert(o.name);
                true
            })
            .map_err(|e| e.to_string())?;
        let items: Vec<_> = paired
            .iter()
            .filter(|p| !done.contains(p.name))
            .map(|p| {
                commit::item(p, &|seq| {
                    hosted.db.upload_data(seq).map_err(|e| e.to_string())
                })
            })
            .collect();
        if !items.is_empty() {
            let started = Instant::now();
            let summary = hosted
                .ws
                .ingest(&rec.session)
                .quick_check(false)
                // Smaller group commits than a folder ingest's: the
                // client polling the status sees the count grow.
                .batch(256, 16 << 20)
                .run(items, |r| inner.metrics.file(r))
                .map_err(|e| e.to_string())?;
            tracing::info!(
                workspace = %hosted.name, session = %id,
                files = summary.counts.total(), failed = summary.counts.failed,
                ms = started.elapsed().as_millis() as u64,
                "committed"
            );
        }
        hosted.ws.close_session(id).map_err(|e| e.to_string())?;
    }
    hosted
        .db
        .mark_committed(id, hosted.ws.now())
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(hosted.stage_of(id));
    Ok(())
}
