//! The notify backend: creating the watcher (inotify, or the poll watcher
//! for network file systems), and the control thread that owns it.
//!
//! The control thread makes every `watch()` call and never drains the event
//! channel: notify's `watch()` waits for its own event loop, which may be
//! blocked handing us an event, so the thread that drains events must never
//! be the one that calls `watch()`.
//!
//! With inotify, every folder gets its own non-recursive watch, added
//! *before* the folder is listed: a file created in a new folder before its
//! watch exists is then found by the listing, and one created after by an
//! event (inotify(7): "scan the contents of the subdirectory immediately
//! after adding the watch"). notify's own recursive mode adds watches for
//! new folders after the fact and reports nothing of what they already hold.

use std::ffi::{OsStr, OsString};
use std::fs::FileType;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use notify::{ErrorKind, RecursiveMode};

use super::error::WatchError;
use super::ready::{Stat, file_stat};
use super::shared::Shared;
use crate::meta::sidecar_name;
use crate::plan::Planner;

/// What notify hands the event handler.
pub(crate) type Raw = notify::Result<notify::Event>;

/// Creates the watcher. Its event handler blocks on a bounded channel:
/// when we fall behind, notify stops reading, the kernel queue fills, and
/// the kernel reports the overflow (a rescan event) instead of anything
/// being dropped silently on our side.
pub(crate) fn make_watcher(
    poll: Option<Duration>,
    follow_links: bool,
    tx: Sender<Raw>,
) -> Result<Box<dyn notify::Watcher + Send>, WatchError> {
    let handler = move |r: Raw| {
        // Fails only once the tracker is gone, that is, at shutdown.
        let _ = tx.send(r);
    };
    let w: Box<dyn notify::Watcher + Send> = match poll {
        None => Box::new(notify::recommended_watcher(handler).map_err(|e| start_error(&e))?),
        Some(every) => Box::new(
            notify::PollWatcher::new(
                handler,
                notify::Config::default()
                    // Zero would make the poll thread spin.
                    .with_poll_interval(every.max(Duration::from_millis(10)))
                    .with_follow_symlinks(follow_links),
            )
            .map_err(|e| start_error(&e))?,
        ),
    };
    Ok(w)
}

fn start_error(e: &notify::Error) -> WatchError {
    match &e.kind {
        ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => {
            WatchError::TooManyInstances {
                limit: sysctl("fs/inotify/max_user_instances"),
            }
        }
        _ => limit_error(e).unwrap_or_else(|| WatchError::Notify(e.to_string())),
    }
}

/// The error for a watch-limit failure, if `e` is one.
pub(crate) fn limit_error(e: &notify::Error) -> Option<WatchError> {
    match &e.kind {
        ErrorKind::MaxFilesWatch => Some(WatchError::WatchLimit {
            path: e.paths.first().cloned().unwrap_or_default(),
            limit: sysctl("fs/inotify/max_user_watches"),
        }),
        ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => {
            Some(WatchError::WatchLimit {
                path: e.paths.first().cloned().unwrap_or_default(),
                limit: sysctl("fs/inotify/max_user_watches"),
            })
        }
        _ => None,
    }
}

fn sysctl(name: &str) -> String {
    std::fs::read_to_string(Path::new("/proc/sys").join(name))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Work for the control thread.
#[derive(Debug)]
pub(crate) enum Ctl {
    /// Watch and scan every root: the catch-up at start.
    Initial,
    /// Watch and scan a new folder and everything under it.
    Scan(PathBuf),
    /// Events were lost: watch and scan every root again.
    Rescan,
}

/// What a scan finds, for the tracker.
#[derive(Debug)]
pub(crate) enum Found {
    /// A file (or a symbolic link, or anything not a folder), with what
    /// the listing says of a regular file, and whether the listing has its
    /// sidecar.
    File(PathBuf, Option<Stat>, bool),
    /// A scan finished.
    Done {
        /// Which.
        what: ScanKind,
        /// Files found.
        files: u64,
        /// Folders listed.
        dirs: u64,
    },
}

/// Which scan finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanKind {
    /// The catch-up at start.
    Initial,
    /// New folders.
    Folder,
    /// A rescan after lost events.
    Rescan,
}

/// Why a walk stopped early.
enum Halt {
    /// A fatal error.
    Fatal(WatchError),
    /// The tracker is gone: shutting down.
    Gone,
}

/// The control thread: owns the watcher, makes every `watch()` call.
pub(crate) struct Control {
    pub watcher: Box<dyn notify::Watcher + Send>,
    pub planner: Planner,
    pub roots: Vec<PathBuf>,
    pub poll: bool,
    pub follow_links: bool,
    pub cmds: Receiver<Ctl>,
    pub found: Sender<Found>,
    pub shared: std::sync::Arc<Shared>,
}

impl Control {
    pub(crate) fn run(mut self) {
        while let Ok(first) = self.cmds.recv() {
            if self.shared.is_shutdown() {
                return;
            }
            // Take everything queued: one rescan covers every scan.
            let mut cmds = vec![first];
            cmds.extend(self.cmds.try_iter());
            let result = if cmds.iter().any(|c| matches!(c, Ctl::Rescan)) {
                self.walk_roots(ScanKind::Rescan)
            } else if cmds.iter().any(|c| matches!(c, Ctl::Initial)) {
                self.walk_roots(ScanKind::Initial)
            } else {
                self.walk_folders(cmds)
            };
            match result {
                Ok(()) => {}
                Err(Halt::Gone) => return,
                Err(Halt::Fatal(e)) => {
                    self.shared.fail(e);
                    return;
                }
            }
        }
    }

    fn walk_roots(&mut self, what: ScanKind) -> Result<(), Halt> {
        let (mut files, mut dirs) = (0, 0);
        for root in self.roots.clone() {
            if self.poll {
                // The poll watcher walks the tree itself every interval;
                // it needs one recursive watch per root, before the scan.
                if what == ScanKind::Initial {
                    self.watcher
                        .watch(&root, RecursiveMode::Recursive)
                        .map_err(|e| Halt::Fatal(watch_error(&e, &root)))?;
                }
            }
            self.walk(&root, &mut files, &mut dirs)?;
        }
        self.found
            .send(Found::Done { what, files, dirs })
            .map_err(|_| Halt::Gone)
    }

    fn walk_folders(&mut self, cmds: Vec<Ctl>) -> Result<(), Halt> {
        let mut dirs_to_scan: Vec<PathBuf> = cmds
            .into_iter()
            .filter_map(|c| match c {
                Ctl::Scan(d) => Some(d),
                Ctl::Initial | Ctl::Rescan => None,
            })
            .collect();
        dirs_to_scan.sort();
        dirs_to_scan.dedup();
        let (mut files, mut dirs) = (0, 0);
        let mut done: Vec<PathBuf> = Vec::new();
        for d in dirs_to_scan {
            // Sorted: a folder's parent, if also new, came first and
            // covered it.
            if done.iter().any(|p| d.starts_with(p)) {
                continue;
            }
            self.walk(&d, &mut files, &mut dirs)?;
            done.push(d);
        }
        self.found
            .send(Found::Done {
                what: ScanKind::Folder,
                files,
                dirs,
            })
            .map_err(|_| Halt::Gone)
    }

    /// Watches then lists `top` and every folder under it that the plan
    /// enters, reporting every file in walk order.
    fn walk(&mut self, top: &Path, files: &mut u64, dirs: &mut u64) -> Result<(), Halt> {
        if !self.planner.enters_dir(top) {
            return Ok(());
        }
        let mut stack: Vec<Frame> = Vec::new();
        let top_id = std::fs::metadata(top).ok().map(|m| (m.dev(), m.ino()));
        if let Some(f) = self.enter(top, top_id)? {
            *dirs += 1;
            stack.push(f);
        }
        while let Some(frame) = stack.last_mut() {
            if self.shared.is_shutdown() {
                return Err(Halt::Gone);
            }
            let Some(e) = frame.entries.get(frame.pos).cloned() else {
                stack.pop();
                continue;
            };
            frame.pos += 1;
            let path = frame.dir.join(&e.name);
            // A plain folder's id came with the listing; a followed link's
            // is its target's.
            let (is_dir, id) = if e.ty.is_dir() {
                (true, e.id)
            } else if e.ty.is_symlink() && self.follow_links {
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_dir() => (true, Some((m.dev(), m.ino()))),
                    _ => (false, None),
                }
            } else {
                (false, None)
            };
            if is_dir {
                // The folders above are entered: only this one is judged.
                if !self.planner.enters_subdir(&path, e.ty.is_symlink(), id) {
                    continue;
                }
                // A link back to a folder above: reported by the catch-up
                // walk of `intake ingest`; here, just not followed.
                if id.is_some_and(|id| stack.iter().any(|f| f.id == Some(id))) {
                    continue;
                }
                if let Some(f) = self.enter(&path, id)? {
                    *dirs += 1;
                    stack.push(f);
                }
                continue;
            }
            *files += 1;
            let has_sidecar = frame.has_file(&sidecar_name(&e.name));
            self.found
                .send(Found::File(path, e.stat, has_sidecar))
                .map_err(|_| Halt::Gone)?;
        }
        Ok(())
    }

    /// Watches `dir` (inotify), then lists it; `id` is its device and
    /// inode, if known.
    fn enter(&mut self, dir: &Path, id: Option<(u64, u64)>) -> Result<Option<Frame>, Halt> {
        if !self.poll {
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {}
                Err(e) if vanished(&e) => return Ok(None),
                Err(e) => {
                    if let Some(fatal) = limit_error(&e) {
                        return Err(Halt::Fatal(fatal));
                    }
                    tracing::warn!(
                        folder = %dir.display(),
                        "cannot watch {}: {e}; changes there will not be seen",
                        dir.display()
                    );
                }
            }
        }
        let entries = match read_sorted(dir) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                tracing::warn!(
                    folder = %dir.display(),
                    "cannot read folder {}: {e}",
                    dir.display()
                );
                return Ok(None);
            }
        };
        Ok(Some(Frame {
            dir: dir.to_path_buf(),
            id,
            entries,
            pos: 0,
        }))
    }
}

fn vanished(e: &notify::Error) -> bool {
    match &e.kind {
        ErrorKind::PathNotFound => true,
        ErrorKind::Io(io) => io.kind() == io::ErrorKind::NotFound,
        _ => false,
    }
}

/// A root that cannot be watched at all.
fn watch_error(e: &notify::Error, root: &Path) -> WatchError {
    limit_error(e).unwrap_or_else(|| WatchError::Notify(format!("{}: {e}", root.display())))
}

struct Frame {
    dir: PathBuf,
    id: Option<(u64, u64)>,
    entries: Vec<Entry>,
    pos: usize,
}

impl Frame {
    /// Whether an entry other than a folder is named `name`.
    fn has_file(&self, name: &OsStr) -> bool {
        self.entries
            .binary_search_by(|e| e.name.as_bytes().cmp(name.as_bytes()))
            .is_ok_and(|i| !self.entries[i].ty.is_dir())
    }
}

/// One entry of a listing.
#[derive(Clone)]
struct Entry {
    name: OsString,
    ty: FileType,
    /// A regular file's stat.
    stat: Option<Stat>,
    /// A folder's device and inode.
    id: Option<(u64, u64)>,
}

/// The entries of `dir`, sorted by name, each regular file with its stat
/// and each folder with its id: a stat relative to the open folder costs
/// no path lookup, and the tracker then needs none of its own.
fn read_sorted(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ty = e.file_type()?;
        let (mut stat, mut id) = (None, None);
        if (ty.is_file() || ty.is_dir())
            && let Ok(m) = e.metadata()
        {
            if m.is_file() {
                stat = Some(file_stat(&m));
            } else if m.is_dir() {
                id = Some((m.dev(), m.ino()));
            }
        }
        v.push(Entry {
            name: e.file_name(),
            ty,
            stat,
            id,
        });
    }
    v.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(v)
}
