//! What a running watcher reports, and its totals.

use std::time::Duration;

use uuid::Uuid;

use crate::outcome::{Counts, FileReport};
use crate::session::Session;

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
