//! The walk on a thread of its own: it runs ahead of the caller, and hands
//! its events over in chunks, so that listing and stat-ing a tree (half of
//! an unchanged re-run's work) takes one core while the caller's work on
//! each event (the quick check, admission) takes the other. A handoff costs
//! a thread wake-up at most; paid once per chunk, not once per file or per
//! folder, it is lost in the noise.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, bounded};

use super::filter::Selection;
use super::options::PlanEvent;
use super::walk::Walk;

/// Events handed over at a time.
const CHUNK: usize = 256;
/// Chunks walked ahead of the caller at most: bounds the memory a walk
/// ahead holds (a few hundred KiB), whatever the size of the tree.
const CHUNKS_AHEAD: usize = 4;

/// A walk running ahead, or, if no thread could be started, in place.
pub(crate) enum Ahead {
    Thread {
        rx: Receiver<Vec<PlanEvent>>,
        chunk: std::vec::IntoIter<PlanEvent>,
        /// Joined at the end, so that a panic on the walk's thread is the
        /// caller's, as it would be walking in place, not a short plan.
        walker: Option<JoinHandle<()>>,
    },
    Here {
        walk: Walk,
        sel: Arc<Selection>,
    },
}

impl Ahead {
    /// Starts the walk of `roots` by the rules of `sel`.
    pub(crate) fn start(sel: Arc<Selection>, roots: Vec<PathBuf>) -> Ahead {
        let (tx, rx) = bounded::<Vec<PlanEvent>>(CHUNKS_AHEAD);
        let theirs = Arc::clone(&sel);
        let started = std::thread::Builder::new()
            .name("intake-walk".into())
            .spawn({
                let roots = roots.clone();
                move || {
                    let mut walk = Walk::new(roots, &theirs);
                    let mut chunk = Vec::with_capacity(CHUNK);
                    while let Some(ev) = walk.next(&theirs) {
                        chunk.push(ev);
                        if chunk.len() == CHUNK {
                            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                            // The caller is gone: stop walking.
                            if tx.send(full).is_err() {
                                return;
                            }
                        }
                    }
                    if !chunk.is_empty() {
                        let _ = tx.send(chunk);
                    }
                }
            });
        match started {
            Ok(walker) => Ahead::Thread {
                rx,
                chunk: Vec::new().into_iter(),
                walker: Some(walker),
            },
            Err(e) => {
                tracing::debug!("cannot start a thread to walk on ({e}); walking in place");
                Ahead::Here {
                    walk: Walk::new(roots, &sel),
                    sel,
                }
            }
        }
    }

    /// The next event in walk order.
    pub(crate) fn next(&mut self) -> Option<PlanEvent> {
        match self {
            Ahead::Thread { rx, chunk, walker } => loop {
                if let Some(ev) = chunk.next() {
                    return Some(ev);
                }
                match rx.recv() {
                    Ok(next) => *chunk = next.into_iter(),
                    // A closed channel is the end of the walk.
                    Err(_) => {
                        if let Some(Err(panic)) = walker.take().map(JoinHandle::join) {
                            std::panic::resume_unwind(panic);
                        }
                        return None;
                    }
                }
            },
            Ahead::Here { walk, sel } => walk.next(sel),
        }
    }
}
