//! Watching folders (SPEC §8): ingest what is there at start, then every
//! file that appears, is renamed in, or changes, once it is complete.
//!
//! ```
//! use std::time::Duration;
//!
//! use intake::plan::PlanOptions;
//! use intake::watch::{WatchConfig, WatchEvent, WatchSession, Watcher};
//! use intake::{CreateSession, SessionOauthUser, Workspace, WriteMode};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let inbox = dir.path().join("inbox");
//! std::fs::create_dir(&inbox)?;
//! let ws = Workspace::create(dir.path().join("ws"))?;
//! let user = SessionOauthUser {
//!     user_id: uuid::Uuid::new_v4(),
//!     given_name: "Inbox".into(),
//!     family_name: "Daemon".into(),
//! };
//! let config = WatchConfig::new(
//!     PlanOptions::new(vec![inbox.clone()]),
//!     WatchSession::New { request: CreateSession::new(WriteMode::Keep), user },
//! )
//! .settle(Duration::from_millis(500));
//! let watch = Watcher::start(ws, config)?;
//! watch.wait_watching(Duration::from_secs(10));
//!
//! // Ingested once it is closed; its outcome comes as an event.
//! std::fs::write(inbox.join("hello.txt"), "hi")?;
//! match watch.events().recv_timeout(Duration::from_secs(10))? {
//!     WatchEvent::File(report) => assert_eq!(report.name, "hello.txt"),
//!     other => panic!("{other:?}"),
//! }
//!
//! // From another thread, `watch.stopper().stop()` does the same.
//! let summary = watch.stop()?;
//! assert_eq!(summary.counts.ingested, 1);
//! # Ok(()) }
//! ```
//!
//! Inside, four threads and bounded channels:
//!
//! ```text
//! kernel ─▶ notify thread ─raw(bounded, blocking)─▶ tracker ─ready─▶ ingest run ─▶ events
//!                 ▲                                  │  ▲ ▲                │
//!                 └── control thread (every watch()) ◀┘  │ └──── found ──────┘ (scans)
//!                                                        └────── done ◀──────┘ (outcomes)
//! ```
//!
//! - the **control thread** (`backend.rs`) owns the notify watcher and makes
//!   every `watch()` call, watching each folder before listing it;
//! - the **tracker** (`ready.rs`) decides when each file is complete, keeps
//!   one entry per path (so a file named by many events is read once per
//!   readiness), and never blocks: when its ready queue is long it stops
//!   reading events, notify blocks in its handler, the kernel queue fills
//!   and overflows, and the overflow (the only place events are lost, and
//!   always reported) triggers a rescan, which is paced by the queue;
//! - the **committer** (`commit.rs`) runs one ingest run per session and
//!   rotates sessions.

mod backend;
mod commit;
mod ready;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender, bounded, unbounded};
use uuid::Uuid;

use crate::item::Item;
use crate::outcome::{Counts, FileReport};
use crate::plan::{PlanError, PlanEvent, PlanOptions, Planner};
use crate::session::{CreateSession, Session, SessionOauthUser};
use crate::workspace::Workspace;

use backend::{Control, Ctl, Found, Raw, ScanKind};
use ready::{Action, Done, FsProbe, Mode, Rules, Tracker};

/// The default settle window.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(500);

/// The longest settle window, poll interval or open timeout: longer values
/// are cut to this (a week), so that no deadline overflows the clock.
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Which session the watcher ingests into.
#[derive(Debug, Clone)]
pub enum WatchSession {
    /// Open a new session (and close it when the watcher stops).
    New {
        /// Its settings; rotation opens the next session with the same.
        request: CreateSession,
        /// Its creator.
        user: SessionOauthUser,
    },
    /// Use this open session (and leave it open). When it expires, the
    /// next session has its write mode, lifetime and creator.
    Existing(Uuid),
}

/// What to watch and how. Build with [`WatchConfig::new`]; every setter
/// documents its default.
#[derive(Debug, Clone)]
#[must_use]
pub struct WatchConfig {
    plan: PlanOptions,
    session: WatchSession,
    settle: Duration,
    poll: Option<Duration>,
    rotate: bool,
    quick_check: bool,
    parallelism: Option<usize>,
    max_retries: u32,
    event_capacity: usize,
    queue_capacity: usize,
    max_queued: usize,
    open_timeout: Duration,
}

impl WatchConfig {
    /// Watch the folders `plan.roots`, selecting and naming files as
    /// `plan` says (the workspace itself is always left out), ingesting
    /// into `session`.
    pub fn new(plan: PlanOptions, session: WatchSession) -> WatchConfig {
        WatchConfig {
            plan,
            session,
            settle: DEFAULT_SETTLE,
            poll: None,
            rotate: true,
            quick_check: true,
            parallelism: None,
            max_retries: 10,
            event_capacity: 1024,
            queue_capacity: 4096,
            max_queued: 65_536,
            open_timeout: Duration::from_secs(300),
        }
    }

    /// How long a file must stay unchanged (size, mtime, ctime) before it
    /// is read when no close event tells: files found by a scan, every
    /// file in poll mode (default 500 ms).
    pub fn settle(mut self, d: Duration) -> Self {
        self.settle = d.min(MAX_WAIT);
        self
    }

    /// Poll every `interval` instead of using inotify, for network file
    /// systems where inotify sees nothing (default: inotify).
    pub fn poll(mut self, interval: Option<Duration>) -> Self {
        self.poll = interval.map(|i| i.min(MAX_WAIT));
        self
    }

    /// Open a new session with the same settings when the session expires
    /// or is closed from outside (default: true). Off, the watcher stops
    /// with [`crate::Error::SessionExpired`] or
    /// [`crate::Error::SessionClosed`].
    pub fn rotate(mut self, on: bool) -> Self {
        self.rotate = on;
        self
    }

    /// Trust size and mtime for files already ingested from the same path
    /// (default: true; see [`crate::IngestRun::quick_check`]).
    pub fn quick_check(mut self, on: bool) -> Self {
        self.quick_check = on;
        self
    }

    /// Reader threads of the ingest (default: the engine's).
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = Some(n.max(1));
        self
    }

    /// How many times a file that fails with `changed_while_reading` (it
    /// changed while it was read) or `store_error` (the workspace failed:
    /// busy, full…) is retried, after the settle window, doubling up to a
    /// minute, before the failure is final (default 10, about four minutes
    /// at the default settle window). Any later change to the file starts
    /// over.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Capacity of the [`WatchHandle::events`] channel (default 1024).
    /// The watcher waits for the reader when it is full: read it.
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// Capacity of the channel between notify and the tracker (default
    /// 4096 events); notify waits when it is full.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Files ready and waiting for the ingest beyond which the tracker
    /// stops reading events until the ingest catches up (default 65,536);
    /// this bounds memory, and if the kernel queue overflows meanwhile the
    /// overflow is reported and rescanned.
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = n.max(1);
        self
    }

    /// How long a file being written may go without any change, when no
    /// read lease can tell whether a writer still holds it, before it is
    /// read without its close (default 5 minutes). Only reached when a
    /// close event cannot come (a file linked in from `O_TMPFILE`).
    pub fn open_timeout(mut self, d: Duration) -> Self {
        self.open_timeout = d.min(MAX_WAIT);
        self
    }
}

/// What a running watcher reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A file's outcome, durable in the index.
    File(FileReport),
    /// A file failed in a way worth retrying (`changed_while_reading`,
    /// `store_error`); it is read again after `delay`. The engine records
    /// the failure in the session as it happens.
    Retrying {
        /// The failure.
        report: FileReport,
        /// Which retry this is (from 1).
        attempt: u32,
        /// When it is read again.
        delay: Duration,
    },
    /// The session expired or was closed; this one replaces it.
    SessionRotated {
        /// The session that ended.
        previous: Uuid,
        /// The new session.
        session: Session,
    },
}

/// The totals of a watcher's life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSummary {
    /// Final outcomes, per outcome.
    pub counts: Counts,
    /// Every session used, in order.
    pub sessions: Vec<Uuid>,
    /// Kernel queue overflows, each followed by a rescan.
    pub rescans: u64,
    /// Reads retried (`changed_while_reading`, `store_error`).
    pub retries: u64,
    /// How long the watcher ran.
    pub elapsed: Duration,
}

/// Why a watcher could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// A workspace or session error (an expired or closed session without
    /// rotation, a session that does not exist…).
    #[error(transparent)]
    Engine(#[from] crate::error::Error),
    /// An invalid selection option.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Nothing to watch.
    #[error("no folder to watch: give at least one")]
    NoFolders,
    /// A root that is not a folder.
    #[error("cannot watch {}: {why}", path.display())]
    NotAFolder {
        /// The root.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Two roots, one inside the other.
    #[error(
        "{} is inside {}: watch folders that do not contain one another",
        inner.display(), outer.display()
    )]
    Overlap {
        /// The outer root.
        outer: PathBuf,
        /// The root inside it.
        inner: PathBuf,
    },
    /// The inotify watch limit (one watch per folder) is reached.
    #[error(
        "the inotify watch limit is reached (fs.inotify.max_user_watches = {limit}) while watching {}: \
         raise it, e.g. `sudo sysctl fs.inotify.max_user_watches=524288` (and set it in /etc/sysctl.d/ \
         to keep it), or poll instead of using inotify (`intake watch --poll 5s`)",
        path.display()
    )]
    WatchLimit {
        /// The folder that could not be watched.
        path: PathBuf,
        /// The limit now.
        limit: String,
    },
    /// The inotify instance limit is reached.
    #[error(
        "too many inotify instances (fs.inotify.max_user_instances = {limit}): raise it, e.g. \
         `sudo sysctl fs.inotify.max_user_instances=512`, or poll instead (`intake watch --poll 5s`)"
    )]
    TooManyInstances {
        /// The limit now.
        limit: String,
    },
    /// A watched root was removed or moved away.
    #[error(
        "the watched folder {} was removed or moved away; nothing more would be seen there",
        .0.display()
    )]
    FolderGone(PathBuf),
    /// The file-watching backend failed.
    #[error("file watching failed: {0}")]
    Notify(String),
    /// A thread could not be started.
    #[error("cannot start the watcher: {0}")]
    Thread(#[source] std::io::Error),
}

/// State shared by the watcher's threads and its handle.
pub(crate) struct Shared {
    /// Stop admitting files (also the ingest run's stop flag).
    stop: Arc<AtomicBool>,
    /// Threads other than the committer end.
    shutdown: AtomicBool,
    fatal: Mutex<Option<WatchError>>,
    rescans: AtomicU64,
    watching: (Mutex<bool>, Condvar),
    session: Mutex<Session>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Records the first fatal error and stops.
    fn fail(&self, e: WatchError) {
        // Reported by `WatchHandle::stop`; the caller prints it.
        tracing::debug!("stopping: {e}");
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
        self.set_watching();
    }

    fn set_watching(&self) {
        let (m, cv) = &self.watching;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    fn set_session(&self, s: &Session) {
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = s.clone();
    }
}

/// Stops a watcher from anywhere (another thread, a signal handler's
/// thread); cheap to clone.
#[derive(Clone)]
pub struct StopHandle(Arc<Shared>);

impl StopHandle {
    /// Stops admitting files; files already admitted finish, then the
    /// watcher closes the session it opened and its events channel.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopHandle").finish_non_exhaustive()
    }
}

/// The watcher: see [`Watcher::start`].
#[derive(Debug)]
pub struct Watcher;

/// A running watcher. Read [`WatchHandle::events`]; end it with
/// [`WatchHandle::stop`]. Dropping it stops it too, and waits.
pub struct WatchHandle {
    events: Receiver<WatchEvent>,
    shared: Arc<Shared>,
    committer: Option<JoinHandle<Result<WatchSummary, WatchError>>>,
    others: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Starts watching: opens (or checks) the session, then, in the
    /// background, watches and scans every folder (the catch-up) and
    /// follows events.
    ///
    /// Errors if an option is invalid, a root is not a folder, roots
    /// overlap, the session is not open, or the file-watching backend cannot
    /// start. Errors found later (the watch limit reached on a new folder, a
    /// root removed) stop the watcher and come out of
    /// [`WatchHandle::stop`].
    pub fn start(ws: Workspace, config: WatchConfig) -> Result<WatchHandle, WatchError> {
        let roots = check_roots(&config.plan.roots, ws.dir())?;
        let mut plan = config.plan.clone();
        plan.roots = roots.clone();
        plan.skip_dirs.extend(ws.dir().map(Path::to_path_buf));
        let tracker_planner = Planner::new(plan.clone())?;
        let control_planner = Planner::new(plan)?;

        let (session, request, creator, owns) = match &config.session {
            WatchSession::New { request, user } => (
                ws.create_session(request, user.clone())?,
                request.clone(),
                user.clone(),
                true,
            ),
            WatchSession::Existing(id) => {
                let s = ws.open_session(*id)?;
                let req = commit::request_like(&s);
                let user = s.created_by.clone();
                (s, req, user, false)
            }
        };
        let session_id = session.session_id;
        let close_if_owned = |e: WatchError| {
            if owns {
                let _ = ws.close_session(session_id);
            }
            e
        };

        let shared = Arc::new(Shared {
            stop: Arc::new(AtomicBool::new(false)),
            shutdown: AtomicBool::new(false),
            fatal: Mutex::new(None),
            rescans: AtomicU64::new(0),
            watching: (Mutex::new(false), Condvar::new()),
            session: Mutex::new(session.clone()),
        });
        let (raw_tx, raw_rx) = bounded::<Raw>(config.queue_capacity);
        let (ctl_tx, ctl_rx) = unbounded::<Ctl>();
        let (found_tx, found_rx) = bounded::<Found>(1024);
        let (ready_tx, ready_rx) = bounded::<Item>(64);
        let (done_tx, done_rx) = bounded::<Done>(4096);
        let (events_tx, events_rx) = bounded::<WatchEvent>(config.event_capacity);

        let watcher = backend::make_watcher(config.poll, config.plan.follow_links, raw_tx)
            .map_err(close_if_owned)?;
        let mode = if config.poll.is_some() {
            Mode::Poll
        } else {
            Mode::Inotify
        };
        tracing::info!(
            session = %session.session_id,
            "watching {} ({}) into session {}",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            match config.poll {
                Some(p) => format!("polling every {p:?}"),
                None => "inotify".to_owned(),
            },
            session.session_id
        );
        // The caller's subscriber, for the watcher's threads.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            let dispatch = dispatch.clone();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    let _guard = tracing::dispatcher::set_default(&dispatch);
                    f()
                })
                .map_err(WatchError::Thread)
        };

        let mut others = Vec::new();
        let control = Control {
            watcher,
            planner: control_planner,
            roots: roots.clone(),
            poll: config.poll.is_some(),
            follow_links: config.plan.follow_links,
            cmds: ctl_rx,
            found: found_tx,
            shared: Arc::clone(&shared),
        };
        // Queued before the thread starts: the catch-up is its first job.
        let _ = ctl_tx.send(Ctl::Initial);
        let rules = Rules {
            mode,
            settle: config.settle,
            open_timeout: config.open_timeout,
            seen_capacity: 131_072,
        };
        let tracker = Tracker::new(
            rules,
            FsProbe {
                follow_links: config.plan.follow_links,
            },
            &roots,
        );
        let pump = Pump {
            tracker,
            planner: tracker_planner,
            raw: raw_rx,
            found: found_rx,
            done: done_rx,
            ready: ready_tx,
            ctl: ctl_tx,
            shared: Arc::clone(&shared),
            max_queued: config.max_queued,
        };
        let committer = commit::Committer {
            ws: ws.clone(),
            ready: ready_rx,
            done: done_tx,
            events: events_tx,
            shared: Arc::clone(&shared),
            rotate: config.rotate,
            quick_check: config.quick_check,
            parallelism: config.parallelism,
            max_retries: config.max_retries,
            settle: config.settle,
            request,
            creator,
            owns_session: owns,
        };

        let started = (|| {
            others.push(spawn(
                "intake-watch-control",
                Box::new(move || control.run()),
            )?);
            others.push(spawn("intake-watch-tracker", Box::new(move || pump.run()))?);
            let dispatch = dispatch.clone();
            let shared2 = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("intake-watch-commit".into())
                .spawn(move || {
                    let _guard = tracing::dispatcher::set_default(&dispatch);
                    let r = committer.run(session);
                    // Whatever ended the committer ends the rest.
                    shared2.stop.store(true, Ordering::SeqCst);
                    shared2.shutdown.store(true, Ordering::SeqCst);
                    shared2.set_watching();
                    r
                })
                .map_err(WatchError::Thread)
        })();
        match started {
            Ok(committer) => Ok(WatchHandle {
                events: events_rx,
                shared,
                committer: Some(committer),
                others,
            }),
            Err(e) => {
                shared.stop.store(true, Ordering::SeqCst);
                shared.shutdown.store(true, Ordering::SeqCst);
                for t in others {
                    let _ = t.join();
                }
                Err(close_if_owned(e))
            }
        }
    }
}

impl WatchHandle {
    /// File outcomes and session rotations, in order. It disconnects when
    /// the watcher has stopped (asked to, or on an error).
    pub fn events(&self) -> &Receiver<WatchEvent> {
        &self.events
    }

    /// A handle that stops the watcher from another thread.
    pub fn stopper(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.shared))
    }

    /// The session files go into now.
    pub fn session(&self) -> Session {
        self.shared
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Kernel queue overflows so far (each is followed by a rescan).
    pub fn rescans(&self) -> u64 {
        self.shared.rescans.load(Ordering::SeqCst)
    }

    /// Waits until every folder present at start is watched and listed
    /// (its files are then queued or settling, not necessarily ingested):
    /// from then on, every change is seen. False if `timeout` passed
    /// first.
    pub fn wait_watching(&self, timeout: Duration) -> bool {
        let (m, cv) = &self.shared.watching;
        let deadline = Instant::now() + timeout;
        let mut done = m.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = cv
                .wait_timeout(done, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Stops admitting files, lets the files in flight finish, closes the
    /// session the watcher opened, and returns the totals, or the error
    /// that stopped the watcher. Events not read yet are dropped: to see
    /// every outcome, call [`StopHandle::stop`] and read
    /// [`WatchHandle::events`] until it disconnects, then call this.
    pub fn stop(mut self) -> Result<WatchSummary, WatchError> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    fn join(&mut self) -> Result<WatchSummary, WatchError> {
        let Some(committer) = self.committer.take() else {
            return Ok(WatchSummary::default());
        };
        // Keep the committer from waiting on a full events channel.
        while !committer.is_finished() {
            let _ = self.events.recv_timeout(Duration::from_millis(20));
        }
        let result = committer.join().unwrap_or_else(|_| {
            Err(WatchError::Notify(
                "the watcher's committer panicked".into(),
            ))
        });
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for t in self.others.drain(..) {
            let _ = t.join();
        }
        let fatal = self
            .shared
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match (result, fatal) {
            (Err(e), _) | (Ok(_), Some(e)) => Err(e),
            (Ok(mut s), None) => {
                s.rescans = self.shared.rescans.load(Ordering::SeqCst);
                Ok(s)
            }
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        if self.committer.is_some() {
            self.shared.stop.store(true, Ordering::SeqCst);
            let _ = self.join();
        }
    }
}

/// The roots, absolute, checked: folders, not inside one another, not
/// inside the workspace.
fn check_roots(roots: &[PathBuf], ws: Option<&Path>) -> Result<Vec<PathBuf>, WatchError> {
    if roots.is_empty() {
        return Err(WatchError::NoFolders);
    }
    let abs = |p: &Path| {
        std::path::absolute(p).map_err(|e| WatchError::NotAFolder {
            path: p.to_path_buf(),
            why: e.to_string(),
        })
    };
    let ws = ws.map(abs).transpose()?;
    let mut out: Vec<PathBuf> = Vec::new();
    for r in roots {
        let a = abs(r)?;
        match std::fs::metadata(&a) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(WatchError::NotAFolder {
                    path: r.clone(),
                    why: "it is not a folder (intake watch watches folders)".into(),
                });
            }
            Err(e) => {
                return Err(WatchError::NotAFolder {
                    path: r.clone(),
                    why: e.to_string(),
                });
            }
        }
        if let Some(ws) = ws.as_ref().filter(|ws| a.starts_with(ws)) {
            return Err(WatchError::NotAFolder {
                path: r.clone(),
                why: format!("it is inside the workspace {}", ws.display()),
            });
        }
        for o in &out {
            if a.starts_with(o) || o.starts_with(&a) {
                let (outer, inner) = if a.starts_with(o) {
                    (o.clone(), a.clone())
                } else {
                    (a.clone(), o.clone())
                };
                return Err(WatchError::Overlap { outer, inner });
            }
        }
        out.push(a);
    }
    Ok(out)
}

/// How long the tracker sleeps at most between looks at its timers.
const TICK: Duration = Duration::from_millis(100);
/// Queue length beyond which scans wait (they are paced by the ingest).
const FOUND_HIGH_WATER: usize = 4096;
/// Events taken in one go before looking at the other channels.
const BATCH: usize = 1024;

/// The tracker's thread: events, scan results and outcomes in, ready
/// items out. It never blocks on anything but its select.
struct Pump {
    tracker: Tracker<FsProbe>,
    planner: Planner,
    raw: Receiver<Raw>,
    found: Receiver<Found>,
    done: Receiver<Done>,
    ready: Sender<Item>,
    ctl: Sender<Ctl>,
    shared: Arc<Shared>,
    max_queued: usize,
}

impl Pump {
    fn run(mut self) {
        let mut pending: Option<Item> = None;
        let mut actions = Vec::new();
        let (mut raw_open, mut found_open) = (true, true);
        loop {
            if self.shared.is_shutdown() {
                return;
            }
            let now = Instant::now();
            self.tracker.tick(now);
            if pending.is_none() {
                pending = self.next_item();
            }
            let queued = self.tracker.queued();
            let mut sel = Select::new();
            let raw_i = (raw_open && queued < self.max_queued).then(|| sel.recv(&self.raw));
            let found_i = (found_open && queued < FOUND_HIGH_WATER).then(|| sel.recv(&self.found));
            let done_i = sel.recv(&self.done);
            let ready_i = pending.is_some().then(|| sel.send(&self.ready));
            let timeout = self
                .tracker
                .next_due()
                .map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
            let Ok(op) = sel.select_timeout(timeout) else {
                continue;
            };
            let i = op.index();
            if Some(i) == raw_i {
                match op.recv(&self.raw) {
                    Ok(r) => {
                        self.on_raw(r, &mut actions);
                        for _ in 0..BATCH {
                            let Ok(r) = self.raw.try_recv() else { break };
                            self.on_raw(r, &mut actions);
                        }
                    }
                    Err(_) => raw_open = false,
                }
            } else if Some(i) == found_i {
                match op.recv(&self.found) {
                    Ok(f) => {
                        self.on_found(f);
                        for _ in 0..BATCH {
                            let Ok(f) = self.found.try_recv() else { break };
                            self.on_found(f);
                        }
                    }
                    Err(_) => found_open = false,
                }
            } else if i == done_i {
                match op.recv(&self.done) {
                    Ok(d) => self.tracker.on_done(d, Instant::now()),
                    // The committer is gone.
                    Err(_) => return,
                }
            } else if Some(i) == ready_i
                // The send was offered only with an item pending.
                && let Some(item) = pending.take()
                && op.send(&self.ready, item).is_err()
            {
                return;
            }
            for a in actions.drain(..) {
                match a {
                    Action::Scan(dir) => {
                        let _ = self.ctl.send(Ctl::Scan(dir));
                    }
                    Action::Rescan => {
                        let _ = self.ctl.send(Ctl::Rescan);
                    }
                    Action::RootGone(root) => self.shared.fail(WatchError::FolderGone(root)),
                }
            }
        }
    }

    fn on_raw(&mut self, r: Raw, actions: &mut Vec<Action>) {
        match r {
            Ok(ev) => {
                if ev.need_rescan() {
                    self.shared.rescans.fetch_add(1, Ordering::SeqCst);
                    tracing::warn!(
                        "the kernel's event queue overflowed (fs.inotify.max_queued_events); \
                         events were lost: rescanning every folder"
                    );
                }
                self.tracker.on_event(&ev, Instant::now(), actions);
            }
            Err(e) => match backend::limit_error(&e) {
                Some(fatal) => self.shared.fail(fatal),
                None => tracing::warn!("file watching: {e}"),
            },
        }
    }

    fn on_found(&mut self, f: Found) {
        match f {
            Found::File(p) => self.tracker.on_found(p, Instant::now()),
            Found::Done { what, files, dirs } => match what {
                ScanKind::Initial => {
                    tracing::info!(
                        "initial scan done: {files} files in {dirs} folders; watching for changes"
                    );
                    self.shared.set_watching();
                }
                ScanKind::Rescan => {
                    tracing::info!("rescan done: {files} files in {dirs} folders");
                    // A rescan queued during the catch-up replaced it.
                    self.shared.set_watching();
                }
                ScanKind::Folder => {
                    tracing::debug!("new folders scanned: {files} files in {dirs} folders")
                }
            },
        }
    }

    /// The next ready file, planned: its item, or `None` if nothing is
    /// ready.
    fn next_item(&mut self) -> Option<Item> {
        loop {
            let path = self.tracker.pop_ready()?;
            match self.planner.plan_path(&path) {
                Some(PlanEvent::Item(item)) => {
                    let source = match &item {
                        Item::File { source, .. } => source.path().map(Path::to_path_buf),
                        Item::Failed { source, .. } => source.clone(),
                    };
                    if source.as_deref() == Some(path.as_path()) {
                        return Some(item);
                    }
                    // Planned under another path: track it under that one.
                    self.tracker.forget(&path);
                    if let Some(s) = source {
                        self.tracker.make_ready(&s);
                    }
                }
                Some(PlanEvent::Skipped { path: p, why }) => {
                    tracing::info!(path = %p.display(), "skipped {}: {why}", p.display());
                    self.tracker.forget(&path);
                }
                None => self.tracker.forget(&path),
            }
        }
    }
}
