//! Time, injected: the engine asks a [`Clock`] for "now" so that tests can
//! expire a session without sleeping.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// Whether `at` has come (`now() >= at`); asked once per file, so a
    /// clock may answer it faster than `now`.
    fn reached(&self, at: DateTime<Utc>) -> bool {
        self.now() >= at
    }
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn reached(&self, at: DateTime<Utc>) -> bool {
        // No calendar arithmetic for the current time, unlike `Utc::now`.
        std::time::SystemTime::now() >= std::time::SystemTime::from(at)
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// ```
/// use intake::{Clock, ManualClock};
/// let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
/// clock.advance(chrono::Duration::hours(25));
/// assert_eq!(clock.now().to_rfc3339(), "2026-01-02T01:00:00+00:00");
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_reached_agrees_with_now() {
        let c = SystemClock;
        let now = c.now();
        assert!(c.reached(now - Duration::seconds(1)));
        assert!(!c.reached(now + Duration::hours(1)));
        assert!(c.reached(DateTime::<Utc>::MIN_UTC));
        assert!(!c.reached(DateTime::<Utc>::MAX_UTC));
    }
}
