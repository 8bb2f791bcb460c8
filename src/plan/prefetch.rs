//! Listing ahead: the folders the walk will enter next are listed (and
//! their files stat-ed) on threads of their own, so that the walk's system
//! calls overlap the rest of the run.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::listing::{Ent, read_sorted};

/// Lists (and stats the files of) the folders the walk will enter next, on a
/// thread of its own, so that the walk's system calls overlap the rest of
/// the run. The walk order does not depend on it: a folder is taken from it
/// by path, or listed in place if it was not asked for.
pub(crate) struct Prefetch {
    tx: Option<crossbeam_channel::Sender<PathBuf>>,
    shared: Arc<(Mutex<Prefetched>, Condvar)>,
}

#[derive(Default)]
struct Prefetched {
    /// Folders asked for and not yet taken or forgotten.
    wanted: HashSet<PathBuf>,
    done: HashMap<PathBuf, io::Result<Vec<Ent>>>,
}

impl Prefetch {
    /// How many folders may be listed ahead of the walk.
    pub(crate) const AHEAD: usize = 8;
    /// Threads listing: the stat of each file is most of a walk's cost, and
    /// two threads spread it over two cores.
    const LISTERS: usize = 2;

    pub(crate) fn start() -> Option<Prefetch> {
        let (tx, rx) = crossbeam_channel::unbounded::<PathBuf>();
        let shared = Arc::new((Mutex::new(Prefetched::default()), Condvar::new()));
        for _ in 0..Self::LISTERS {
            let theirs = Arc::clone(&shared);
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name("intake-list".into())
                .spawn(move || {
                    for dir in rx {
                        let listed = read_sorted(&dir);
                        let (lock, cv) = &*theirs;
                        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                        if g.wanted.contains(&dir) {
                            g.done.insert(dir, listed);
                            cv.notify_all();
                        }
                    }
                });
            // One lister is enough to go on with; none, and the walk lists
            // in place.
            if spawned.is_err() && Arc::strong_count(&shared) == 1 {
                return None;
            }
        }
        Some(Prefetch {
            tx: Some(tx),
            shared,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Prefetched> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn ask(&self, dir: &Path) {
        let mut g = self.lock();
        if g.wanted.len() < Self::AHEAD
            && !g.wanted.contains(dir)
            && let Some(tx) = &self.tx
        {
            g.wanted.insert(dir.to_path_buf());
            if tx.send(dir.to_path_buf()).is_err() {
                g.wanted.remove(dir);
            }
        }
    }

    /// The listing of `dir` if it was asked for (waiting for it).
    pub(crate) fn take(&self, dir: &Path) -> Option<io::Result<Vec<Ent>>> {
        let mut g = self.lock();
        if !g.wanted.contains(dir) {
            return None;
        }
        loop {
            if let Some(listed) = g.done.remove(dir) {
                g.wanted.remove(dir);
                return Some(listed);
            }
            g = self.shared.1.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Drops what was asked for under `parent` and will not be taken.
    pub(crate) fn forget_under(&self, parent: &Path) {
        let mut g = self.lock();
        g.wanted.retain(|d| d.parent() != Some(parent));
        g.done.retain(|d, _| d.parent() != Some(parent));
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its current folder is done.
        self.tx.take();
    }
}
