//! The engine: the storage backends, the clock and the settings that every
//! operation on a workspace shares. [`crate::Workspace`] is its public face;
//! an ingest run holds it directly.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::error::Error;
use crate::outcome::Counts;
use crate::store::{BlobStore, Index, OutcomeRecord, StoreError, StoreErrorKind, Writes};

/// How the engine retries the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first for work that failed with
    /// [`StoreErrorKind::Unavailable`], each after twice the pause before.
    pub unavailable_retries: u32,
    /// The first pause.
    pub first_pause: Duration,
    /// How long a batch keeps being redone after
    /// [`StoreErrorKind::Conflict`]s before its files fail with
    /// `store_error` (a store that reports conflicts for that long is not
    /// losing races, it is broken).
    pub conflict_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            unavailable_retries: 6,
            first_pause: Duration::from_millis(50),
            conflict_budget: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, retrying conflicts (up to the budget)
    /// and unavailability (up to the retries) with growing pauses; any
    /// other error at once.
    pub(crate) fn run<T>(
        &self,
        mut op: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let mut unavailable = 0;
        let mut conflicts = 0u32;
        loop {
            let e = match op() {
                Ok(t) => return Ok(t),
                Err(e) => e,
            };
            let pause = match e.kind() {
                StoreErrorKind::Conflict if started.elapsed() < self.conflict_budget => {
                    conflicts += 1;
                    // Short and spread: the winner is usually done at once.
                    let cap = Duration::from_millis(1 << conflicts.min(7));
                    cap.mul_f64(jitter())
                }
                StoreErrorKind::Unavailable if unavailable < self.unavailable_retries => {
                    unavailable += 1;
                    self.first_pause * 2u32.saturating_pow(unavailable - 1)
                }
                _ => return Err(e),
            };
            std::thread::sleep(pause);
        }
    }
}

/// A number in [0.5, 1), different on every call, to spread retries.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    0.5 + (bits % 1024) as f64 / 2048.0
}

/// The backends, the clock and the settings of one workspace.
pub(crate) struct Engine {
    /// How errors name the workspace (its folder, or its index's address).
    pub(crate) label: String,
    pub(crate) index: Arc<dyn Index>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) inline_threshold: u64,
    pub(crate) gc_grace: Duration,
    pub(crate) retry: RetryPolicy,
    /// Bumped after every committed change that removes a name (a
    /// deletion), so that the quick check loads again the source records
    /// it loaded before: a deleted name's file must be read again, even if
    /// it comes back with the same size and mtime.
    pub(crate) removals: std::sync::atomic::AtomicU64,
}

impl Engine {
    /// The clock's current time.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A store error as the library reports it.
    pub(crate) fn err(&self, source: StoreError) -> Error {
        Error::Store {
            workspace: self.label.clone(),
            source,
        }
    }

    /// Records one file's outcome in its session, in a transaction of its
    /// own that need not be durable: `counts` into its counters, and `rec`
    /// into its file list if `list`.
    pub(crate) fn record_outcome(
        &self,
        rec: OutcomeRecord,
        counts: Counts,
        list: bool,
    ) -> Result<(), StoreError> {
        let writes = Writes {
            at: self.now(),
            counts: vec![(rec.session_id, counts)],
            outcomes: if list { vec![rec] } else { Vec::new() },
            ..Writes::default()
        };
        self.retry.run(|| {
            let mut txn = self.index.begin(false)?;
            txn.write(&writes)?;
            txn.commit()
        })
    }
}
