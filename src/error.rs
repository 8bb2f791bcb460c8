//! The library's error type.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::session::format_ts;
use crate::store::StoreError;

/// An error that stops an operation as a whole. (A bad file never does: it
/// becomes a per-file outcome.)
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No workspace at the path.
    #[error(
        "{} is not an intake workspace (no intake.db); create it with `intake init --workspace {}`",
        .0.display(), .0.display()
    )]
    NotAWorkspace(PathBuf),
    /// The path exists and is not a directory.
    #[error("{} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The storage failed.
    #[error("workspace {}: {source}", path.display())]
    Store {
        /// The workspace.
        path: PathBuf,
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
    /// No such version of a name.
    #[error("{name:?} has no version {version}; see `intake files history {name}`")]
    VersionNotFound {
        /// The name.
        name: String,
        /// The version asked for.
        version: u64,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
