//! How the store is retried: lost races redone for a while, a store out of
//! reach tried again a few times with growing pauses.

use std::time::Duration;

use super::error::{StoreError, StoreErrorKind};

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
