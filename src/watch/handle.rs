//! Starting a watcher, and the handle that stops it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded, unbounded};

use super::backend::{self, Control, Ctl, Found, Raw};
use super::commit;
use super::config::{WatchConfig, WatchSession};
use super::delete::Deleter;
use super::error::WatchError;
use super::event::{WatchEvent, WatchSummary};
use super::known::Known;
use super::pump::Pump;
use super::ready::{Done, FsProbe, Mode, Rules, Tracker};
use super::shared::Shared;
use crate::item::Item;
use crate::plan::Planner;
use crate::session::Session;
use crate::workspace::Workspace;

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

/// A running watcher. Read [`crate::watch::WatchHandle::events`]; end it with
/// [`crate::watch::WatchHandle::stop`]. Dropping it stops it too, and waits.
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
    /// [`crate::watch::WatchHandle::stop`].
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
            deletions: Mutex::new(crate::outcome::Counts::default()),
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
            deletions: config.deletions,
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
            known: Known::new(ws.clone()),
            planned: VecDeque::new(),
            deleter: Deleter {
                ws: ws.clone(),
                shared: Arc::clone(&shared),
                events: events_tx.clone(),
                again: Vec::new(),
            },
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
                    let r = committer.run(session).map(|mut summary| {
                        let d = shared2.deletion_counts();
                        let c = &mut summary.counts;
                        c.deleted += d.deleted;
                        c.unchanged += d.unchanged;
                        c.failed += d.failed;
                        summary
                    });
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
    /// [`crate::watch::WatchHandle::events`] until it disconnects, then call this.
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
