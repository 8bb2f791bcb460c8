//! Why a watcher could not start, or stopped on its own.

use std::path::PathBuf;

use crate::plan::PlanError;

/// Why a watcher could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// A workspace or session error (an expired or closed session without
    /// rotation, a session that does not exist…).
    #[error(transparent)]
    Engine(#[from] crate::error::Error),
    /// An invalid selection option.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Nothing to watch.
    #[error("no folder to watch: give at least one")]
    NoFolders,
    /// A root that is not a folder.
    #[error("cannot watch {}: {why}", path.display())]
    NotAFolder {
        /// The root.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Two roots, one inside the other.
    #[error(
        "{} is inside {}: watch folders that do not contain one another",
        inner.display(), outer.display()
    )]
    Overlap {
        /// The outer root.
        outer: PathBuf,
        /// The root inside it.
        inner: PathBuf,
    },
    /// The inotify watch limit (one watch per folder) is reached.
    #[error(
        "the inotify watch limit is reached (fs.inotify.max_user_watches = {limit}) while watching {}: \
         raise it, e.g. `sudo sysctl fs.inotify.max_user_watches=524288` (and set it in /etc/sysctl.d/ \
         to keep it), or poll instead of using inotify (`intake watch --poll 5s`)",
        path.display()
    )]
    WatchLimit {
        /// The folder that could not be watched.
        path: PathBuf,
        /// The limit now.
        limit: String,
    },
    /// The inotify instance limit is reached.
    #[error(
        "too many inotify instances (fs.inotify.max_user_instances = {limit}): raise it, e.g. \
         `sudo sysctl fs.inotify.max_user_instances=512`, or poll instead (`intake watch --poll 5s`)"
    )]
    TooManyInstances {
        /// The limit now.
        limit: String,
    },
    /// A watched root was removed or moved away.
    #[error(
        "the watched folder {} was removed or moved away; nothing more would be seen there",
        .0.display()
    )]
    FolderGone(PathBuf),
    /// The file-watching backend failed.
    #[error("file watching failed: {0}")]
    Notify(String),
    /// A thread could not be started.
    #[error("cannot start the watcher: {0}")]
    Thread(#[source] std::io::Error),
}
