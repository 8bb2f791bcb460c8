//! What a plan is asked for and what it yields.

use std::io;
use std::path::PathBuf;

use crate::item::Item;
use crate::name::NameError;
use crate::outcome::Reason;

/// What to walk and how to name it. Defaults: recursive, no filters, hidden
/// files skipped, symlinks not followed, names relative to each root.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Sources in order: folders are walked, files taken as they are.
    pub roots: Vec<PathBuf>,
    /// Deepest level to take files from (1: only a folder's own files).
    pub max_depth: Option<usize>,
    /// Extensions to take (without the dot, any case); empty takes all.
    pub extensions: Vec<String>,
    /// Globs a file must match one of (empty: all). A glob without `/`
    /// matches the file name at any depth, one with `/` the path relative to
    /// the root.
    pub include: Vec<String>,
    /// Globs that exclude files and whole folders (same matching).
    pub exclude: Vec<String>,
    /// Take hidden files and folders (names starting with `.`).
    pub hidden: bool,
    /// Follow symbolic links (loops are reported, never followed).
    pub follow_links: bool,
    /// Name every file by its basename only.
    pub flatten: bool,
    /// Put `PREFIX/` in front of every name.
    pub prefix: Option<String>,
    /// Folders never to enter (the workspace itself is added here).
    pub skip_dirs: Vec<PathBuf>,
}

impl PlanOptions {
    /// Options for `roots` with every default.
    pub fn new(roots: Vec<PathBuf>) -> PlanOptions {
        PlanOptions {
            roots,
            ..PlanOptions::default()
        }
    }
}

/// An invalid option.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A glob that does not parse.
    #[error("invalid glob {glob:?}: {message}")]
    Glob {
        /// The glob.
        glob: String,
        /// Why.
        message: String,
    },
    /// A prefix that is not a valid name.
    #[error("invalid --prefix {prefix:?}: {source}")]
    Prefix {
        /// The prefix.
        prefix: String,
        /// Why.
        source: NameError,
    },
    /// The current directory is needed and unavailable.
    #[error("cannot resolve {}: {source}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Why a path was left out, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// A symbolic link, not followed (without `follow_links`).
    Symlink,
    /// Neither a regular file nor a folder: a FIFO, a socket, a device.
    SpecialFile,
    /// The workspace itself, met in a source.
    Workspace,
}

impl SkipReason {
    /// The stable wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Symlink => "symlink",
            SkipReason::SpecialFile => "special_file",
            SkipReason::Workspace => "workspace",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a plan.
#[derive(Debug)]
pub enum PlanEvent {
    /// Something for the run: a file, or a failure to report in order.
    Item(Item),
    /// A path left out that the user may want to know about (a FIFO, a
    /// socket, a device, a symlink not followed).
    Skipped {
        /// The path.
        path: PathBuf,
        /// Why, as a stable code.
        reason: SkipReason,
        /// Why, for people.
        why: String,
    },
}

impl PlanEvent {
    /// The item, if this is one.
    pub fn into_item(self) -> Option<Item> {
        match self {
            PlanEvent::Item(i) => Some(i),
            PlanEvent::Skipped { .. } => None,
        }
    }
}

impl PlanEvent {
    /// A failure to report in order, for the entry at `path` shown as
    /// `name`.
    pub(crate) fn failed(
        name: String,
        path: PathBuf,
        reason: Reason,
        message: String,
    ) -> PlanEvent {
        PlanEvent::Item(Item::Failed {
            name,
            source: Some(path),
            reason,
            message,
        })
    }
}
