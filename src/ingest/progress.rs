//! The window between admission and the committer: admission waits while
//! too many files are between it and their reports.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// State shared by admission and the committer.
#[derive(Default)]
pub(crate) struct Progress {
    /// Files reported so far (the next sequence number to report).
    reported: Mutex<u64>,
    cv: Condvar,
    aborted: AtomicBool,
    pub(crate) admitted: AtomicU64,
}

impl Progress {
    /// Waits until `seq` is within `window` of the reported files; false
    /// if the run was aborted.
    pub(crate) fn wait_below(&self, seq: u64, window: u64) -> bool {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        while seq >= *reported + window {
            if self.aborted.load(Ordering::SeqCst) {
                return false;
            }
            reported = self
                .cv
                .wait_timeout(reported, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        !self.aborted.load(Ordering::SeqCst)
    }

    pub(crate) fn committed(&self, upto: u64) {
        *self.reported.lock().unwrap_or_else(|e| e.into_inner()) = upto;
        self.cv.notify_all();
    }

    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        self.cv.notify_all();
    }

    /// Whether every admitted file has reached the committer: nothing is
    /// in flight, so waiting longer cannot grow the batch.
    pub(crate) fn all_received(&self, received: u64) -> bool {
        self.admitted.load(Ordering::SeqCst) <= received
    }
}
