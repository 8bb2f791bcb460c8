//! State shared by the watcher's threads and its handle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::error::WatchError;
use crate::outcome::{Counts, FileReport};
use crate::session::Session;

/// State shared by the watcher's threads and its handle.
pub(crate) struct Shared {
    /// Stop admitting files (also the ingest run's stop flag).
    pub(crate) stop: Arc<AtomicBool>,
    /// Threads other than the committer end.
    pub(crate) shutdown: AtomicBool,
    pub(crate) fatal: Mutex<Option<WatchError>>,
    pub(crate) rescans: AtomicU64,
    pub(crate) watching: (Mutex<bool>, Condvar),
    pub(crate) session: Mutex<Session>,
    /// The outcomes of the deletions made for removed files (`--delete`).
    pub(crate) deletions: Mutex<Counts>,
}

impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Records the first fatal error and stops.
    pub(crate) fn fail(&self, e: WatchError) {
        // Reported by `WatchHandle::stop`; the caller prints it.
        tracing::debug!("stopping: {e}");
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
        self.set_watching();
    }

    pub(crate) fn set_watching(&self) {
        let (m, cv) = &self.watching;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    pub(crate) fn set_session(&self, s: &Session) {
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = s.clone();
    }

    pub(crate) fn current_session(&self) -> Session {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn add_deletion(&self, r: &FileReport) {
        self.deletions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(r);
    }

    /// The deletions' counts so far.
    pub(crate) fn deletion_counts(&self) -> Counts {
        *self.deletions.lock().unwrap_or_else(|p| p.into_inner())
    }
}
