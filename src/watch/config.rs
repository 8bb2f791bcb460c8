//! What to watch and how: the watcher's configuration.

use std::time::Duration;

use uuid::Uuid;

use crate::plan::PlanOptions;
use crate::session::{CreateSession, SessionOauthUser};

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
    pub(crate) plan: PlanOptions,
    pub(crate) session: WatchSession,
    pub(crate) settle: Duration,
    pub(crate) poll: Option<Duration>,
    pub(crate) rotate: bool,
    pub(crate) quick_check: bool,
    pub(crate) parallelism: Option<usize>,
    pub(crate) max_retries: u32,
    pub(crate) event_capacity: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) max_queued: usize,
    pub(crate) open_timeout: Duration,
    pub(crate) deletions: bool,
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
            deletions: false,
        }
    }

    /// Whether a file removed from a watched folder (or moved out of it),
    /// and not back within the settle window, is deleted from the
    /// workspace: the names it was ingested as get a deletion version, if
    /// they still hold what it was ingested with (default off).
    pub fn delete(mut self, on: bool) -> Self {
        self.deletions = on;
        self
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

    /// Capacity of the [`crate::watch::WatchHandle::events`] channel (default 1024).
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
