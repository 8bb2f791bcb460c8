//! The library's error type.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::outcome::Reason;
use crate::session::{SessionRecord, SessionStatus, format_ts};
use crate::store::StoreError;

/// An error that stops an operation as a whole. (A bad file never does: it
/// becomes a per-file outcome.)
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No workspace at the path.
    #[error(
        "{} is not an intake workspace (no intake.db, or no schema of that name); create it with `intake init --workspace {}`",
        .0.display(), .0.display()
    )]
    NotAWorkspace(PathBuf),
    /// The path exists and is not a directory.
    #[error("{} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The storage failed.
    #[error("workspace {workspace}: {source}")]
    Store {
        /// The workspace: its folder, or its index's address.
        workspace: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// No such session.
    #[error("no session {0} in this workspace; list sessions with `intake session list`")]
    SessionNotFound(Uuid),
    /// The session has expired.
    #[error(
        "session {id} expired at {}; create a new session with `intake session create`",
        format_ts(*at)
    )]
    SessionExpired {
        /// The session.
        id: Uuid,
        /// When it expired.
        at: DateTime<Utc>,
    },
    /// The session was closed.
    #[error(
        "session {id} was closed at {}; create a new session with `intake session create`",
        format_ts(*at)
    )]
    SessionClosed {
        /// The session.
        id: Uuid,
        /// When it was closed.
        at: DateTime<Utc>,
    },
    /// No such name.
    #[error("no file named {0:?} in the workspace; list names with `intake files list`")]
    NameNotFound(String),
    /// The instant asked for is older than the history `gc` has kept.
    #[error(
        "the workspace's history before {} was removed by gc, so its state at {} is not known; ask for an instant at or after {}",
        format_ts(*horizon), format_ts(*at), format_ts(*horizon)
    )]
    BeforeHistory {
        /// The instant asked for.
        at: DateTime<Utc>,
        /// The oldest instant whose state is known.
        horizon: DateTime<Utc>,
    },
    /// An export failed as a whole (its folder, its manifest).
    #[error("export: {what}: {source}")]
    Export {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Another export is writing into the folder.
    #[error("another export is writing into {}; wait for it to finish", .0.display())]
    ExportBusy(PathBuf),
    /// A session that is still open cannot be reverted.
    #[error(
        "session {0} is still open, so more may come into it; close it first with `intake session close {0}`"
    )]
    SessionStillOpen(Uuid),
    /// No such version of a name.
    #[error("{name:?} has no version {version}; see `intake files history {name}`")]
    VersionNotFound {
        /// The name.
        name: String,
        /// The version asked for.
        version: u64,
    },
}

impl Error {
    /// The error of the session `rec` if it is over at `now` (closed, or
    /// past its expiry); `None` while it is open.
    pub fn session_over(rec: &SessionRecord, now: DateTime<Utc>) -> Option<Error> {
        let id = rec.session.session_id;
        match rec.status(now) {
            SessionStatus::Open => None,
            SessionStatus::Closed => Some(Error::SessionClosed {
                id,
                at: rec.closed_at.unwrap_or(rec.session.created_at),
            }),
            SessionStatus::Expired => Some(Error::SessionExpired {
                id,
                at: rec.session.expires_at.unwrap_or(rec.session.created_at),
            }),
        }
    }

    /// The reason files are refused with because of this error, for an
    /// error that says the session is over.
    pub fn refusal_reason(&self) -> Option<Reason> {
        match self {
            Error::SessionExpired { .. } => Some(Reason::SessionExpired),
            Error::SessionClosed { .. } => Some(Reason::SessionClosed),
            _ => None,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
