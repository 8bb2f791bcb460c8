//! The storage seam's error: a kind the engine acts on, what was being
//! done, and the backend's own error as its source.

use std::fmt;
use std::io;

/// What kind of failure a [`StoreError`] is; the engine's response depends
/// on it and on nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The thing asked for is not there (a blob, a workspace).
    NotFound,
    /// A lost race: another transaction wrote what this one read or locked
    /// (a serialization failure, a deadlock). Nothing was applied; the
    /// engine redoes the whole batch, re-taking every decision against the
    /// new state. A file is never reported failed because of it.
    Conflict,
    /// The store could not be reached in time (a lost connection, a
    /// timeout, a lock held too long). Retried with backoff, then the files
    /// fail with `store_error`.
    Unavailable,
    /// The store holds something it should not, or something this build
    /// cannot read (a newer schema).
    Corrupt,
    /// Any other failure of the store's I/O.
    Io,
}

impl StoreErrorKind {
    /// Whether trying the same work again may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, StoreErrorKind::Conflict | StoreErrorKind::Unavailable)
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a storage backend.
///
/// ```
/// use intake::store::{StoreError, StoreErrorKind};
/// let e = StoreError::io("syncing blobs/ab", std::io::Error::other("disk full"));
/// assert_eq!(e.kind(), StoreErrorKind::Io);
/// assert_eq!(e.to_string(), "syncing blobs/ab: disk full");
/// ```
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    what: String,
    source: Option<Source>,
}

impl StoreError {
    /// An error of `kind` while doing `what`, caused by `source`.
    pub fn new(
        kind: StoreErrorKind,
        what: impl Into<String>,
        source: impl Into<Source>,
    ) -> StoreError {
        StoreError {
            kind,
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// An error of `kind` that `what` says all of.
    pub fn bare(kind: StoreErrorKind, what: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            what: what.into(),
            source: None,
        }
    }

    /// An I/O error with what was being done; a missing file is
    /// [`StoreErrorKind::NotFound`], a timeout [`StoreErrorKind::Unavailable`].
    pub fn io(what: impl Into<String>, source: io::Error) -> StoreError {
        let kind = match source.kind() {
            io::ErrorKind::NotFound => StoreErrorKind::NotFound,
            io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NotConnected
            | io::ErrorKind::BrokenPipe => StoreErrorKind::Unavailable,
            _ => StoreErrorKind::Io,
        };
        StoreError::new(kind, what, source)
    }

    /// Something missing.
    pub fn not_found(what: impl Into<String>) -> StoreError {
        StoreError::bare(StoreErrorKind::NotFound, what)
    }

    /// Something the store should not hold.
    pub fn corrupt(what: impl Into<String>) -> StoreError {
        StoreError::bare(StoreErrorKind::Corrupt, what)
    }

    /// A lost race (see [`StoreErrorKind::Conflict`]).
    pub fn conflict(what: impl Into<String>, source: impl Into<Source>) -> StoreError {
        StoreError::new(StoreErrorKind::Conflict, what, source)
    }

    /// A store out of reach (see [`StoreErrorKind::Unavailable`]).
    pub fn unavailable(what: impl Into<String>, source: impl Into<Source>) -> StoreError {
        StoreError::new(StoreErrorKind::Unavailable, what, source)
    }

    /// The kind, which says what the engine does about it.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// What was being done.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// A copy for reporting the same failure more than once: the same kind
    /// and message, with the source kept as text.
    pub fn clone_lossy(&self) -> StoreError {
        StoreError {
            kind: self.kind,
            what: self.what.clone(),
            source: self.source.as_ref().map(|s| Source::from(s.to_string())),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {s}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_get_the_kind_the_engine_acts_on() {
        let kind = |k: io::ErrorKind| StoreError::io("x", io::Error::from(k)).kind();
        assert_eq!(kind(io::ErrorKind::NotFound), StoreErrorKind::NotFound);
        assert_eq!(kind(io::ErrorKind::TimedOut), StoreErrorKind::Unavailable);
        assert_eq!(
            kind(io::ErrorKind::ConnectionReset),
            StoreErrorKind::Unavailable
        );
        assert_eq!(kind(io::ErrorKind::PermissionDenied), StoreErrorKind::Io);
        assert_eq!(kind(io::ErrorKind::StorageFull), StoreErrorKind::Io);
    }

    #[test]
    fn a_lossy_clone_keeps_kind_and_message() {
        let e = StoreError::conflict("committing", "could not serialize access");
        let c = e.clone_lossy();
        assert_eq!(c.kind(), StoreErrorKind::Conflict);
        assert_eq!(c.to_string(), e.to_string());
        assert_eq!(c.to_string(), "committing: could not serialize access");
        assert!(std::error::Error::source(&c).is_some());
    }
}
