//! Listing ahead: the folders the walk will enter next are listed (and
//! their entries stat-ed) on threads of their own, so that the walk's
//! system calls are spread over the cores.
//!
//! The listers run ahead of the walk by themselves: a folder they list has
//! its subfolders (those the walk will enter) queued in turn, the first
//! first, so that they work through the tree in about the walk's order,
//! up to [`Prefetch::AHEAD`] folders ahead. A folder's listing is handed
//! over by path; the walk order never depends on it.

use std::collections::HashMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::filter::Selection;
use super::listing::{Ent, read_sorted};

/// Lists the folders the walk will enter next, on threads of their own.
pub(crate) struct Prefetch {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// A folder was listed: for the walk.
    listed: Condvar,
    /// A folder was queued, or the walk ended: for the listers.
    work: Condvar,
    sel: Arc<Selection>,
}

#[derive(Default)]
struct State {
    /// Every folder asked for and not yet taken or forgotten, and where
    /// it is.
    wanted: HashMap<PathBuf, Step>,
    /// Folders to list, the next on top.
    queue: Vec<Want>,
    /// The walk is over: the listers stop.
    closed: bool,
}

enum Step {
    Queued,
    Listing,
    /// The listing, and how far into it subfolders were asked for.
    Listed(io::Result<Vec<Ent>>, usize),
}

/// A listing handed to the walk, and how far into it subfolders were asked
/// for.
pub(crate) type Listed = (io::Result<Vec<Ent>>, usize);

/// A folder to list: where it is, relative to its root, and how deep.
struct Want {
    dir: PathBuf,
    rel: PathBuf,
    depth: usize,
}

impl Prefetch {
    /// How many folders may be asked for, listed and not yet taken.
    pub(crate) const AHEAD: usize = 64;
    /// Threads listing: the stat of each file is most of a walk's cost, and
    /// two threads spread it over two cores.
    const LISTERS: usize = 2;

    pub(crate) fn start(sel: Arc<Selection>) -> Option<Prefetch> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            listed: Condvar::new(),
            work: Condvar::new(),
            sel,
        });
        let mut started = 0;
        for _ in 0..Self::LISTERS {
            let theirs = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name("intake-list".into())
                .spawn(move || theirs.list());
            started += usize::from(spawned.is_ok());
        }
        // None started: the walk lists in place.
        (started > 0).then_some(Prefetch { shared })
    }

    /// Asks for the subfolders of `dir` (at `rel` from its root, `depth`
    /// below it) that the walk will enter, from entry `from` on, in order,
    /// as far as there is room; returns how far it came.
    pub(crate) fn ask_under(
        &self,
        dir: &Path,
        rel: &Path,
        depth: usize,
        entries: &[Ent],
        from: usize,
    ) -> usize {
        if from >= entries.len() {
            return from;
        }
        let mut g = self.shared.lock();
        let before = g.queue.len();
        let to = g.ask_under(&self.shared.sel, dir, rel, depth, entries, from);
        if g.queue.len() > before {
            self.shared.work.notify_all();
        }
        to
    }

    /// The listing of `dir`: `None` if it was not asked for, or was asked
    /// for and no lister has started on it yet (it is then the caller's to
    /// list); waits while a lister is at it.
    pub(crate) fn take(&self, dir: &Path) -> Option<Listed> {
        let mut g = self.shared.lock();
        loop {
            match g.wanted.remove(dir)? {
                Step::Queued => return None,
                Step::Listed(listed, asked) => return Some((listed, asked)),
                Step::Listing => {
                    g.wanted.insert(dir.to_path_buf(), Step::Listing);
                    g = self
                        .shared
                        .listed
                        .wait(g)
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// Drops everything asked for under `parent`: the walk is done with it.
    pub(crate) fn forget_under(&self, parent: &Path) {
        let mut g = self.shared.lock();
        if g.wanted.is_empty() {
            return;
        }
        let under = |d: &Path| {
            let (d, p) = (d.as_os_str().as_bytes(), parent.as_os_str().as_bytes());
            d.len() > p.len() && d.starts_with(p) && d[p.len()] == b'/'
        };
        g.wanted.retain(|d, _| !under(d));
        g.queue.retain(|w| !under(&w.dir));
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A lister: takes the folder on top of the queue, lists it, keeps the
    /// listing for the walk and queues its subfolders.
    fn list(&self) {
        let mut g = self.lock();
        loop {
            if g.closed {
                return;
            }
            let Some(want) = g.queue.pop() else {
                g = self.work.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            match g.wanted.get_mut(&want.dir) {
                Some(step @ Step::Queued) => *step = Step::Listing,
                // Taken by the walk to list in place, or forgotten.
                _ => continue,
            }
            drop(g);
            let listed = read_sorted(&want.dir);
            g = self.lock();
            if !g.wanted.contains_key(&want.dir) {
                // Forgotten meanwhile.
                continue;
            }
            let asked = match &listed {
                Ok(entries) => g.ask_under(&self.sel, &want.dir, &want.rel, want.depth, entries, 0),
                Err(_) => 0,
            };
            if let Some(step) = g.wanted.get_mut(&want.dir) {
                *step = Step::Listed(listed, asked);
            }
            self.listed.notify_all();
        }
    }
}

impl State {
    /// Queues the subfolders among `entries[from..]` of `dir` that the
    /// walk will enter (plain folders, not hidden unless asked, not
    /// temporary, not excluded, within the depth) while there is room;
    /// returns the index of the first entry not looked at.
    fn ask_under(
        &mut self,
        sel: &Selection,
        dir: &Path,
        rel: &Path,
        depth: usize,
        entries: &[Ent],
        from: usize,
    ) -> usize {
        let at = self.queue.len();
        let mut to = from;
        for e in &entries[from..] {
            if self.wanted.len() >= Prefetch::AHEAD {
                break;
            }
            to += 1;
            if !e.ty.is_dir() || sel.hides(&e.name) {
                continue;
            }
            let rel = rel.join(&e.name);
            if !sel.enters_by_name(&rel, &e.name, depth + 1) {
                continue;
            }
            let dir = dir.join(&e.name);
            if self.wanted.contains_key(&dir) {
                continue;
            }
            self.wanted.insert(dir.clone(), Step::Queued);
            self.queue.push(Want {
                dir,
                rel,
                depth: depth + 1,
            });
        }
        // The first subfolder on top: the listers go depth first, as the
        // walk does.
        self.queue[at..].reverse();
        to
    }
}
