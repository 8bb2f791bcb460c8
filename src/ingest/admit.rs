//! Admission: numbers the items in order, refuses them once the session is
//! over, answers what the quick check can, and sends the rest to the
//! readers, keeping at most a window of files between itself and their
//! reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::prepared::Prepared;
use super::progress::Progress;
use super::quick::{DirCursor, QuickCache};
use crate::engine::Engine;
use crate::error::Error;
use crate::item::{Item, Source};
use crate::outcome::Reason;
use crate::session::Session;

/// The admission thread's settings.
pub(crate) struct Admission<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) session: &'a Session,
    /// The quick check's records, if the check is on.
    pub(crate) quick: Option<&'a QuickCache>,
    pub(crate) stop: Option<&'a Arc<AtomicBool>>,
    /// How often the index is asked whether the session was closed.
    pub(crate) closed_poll: Duration,
}

impl Admission<'_> {
    /// Admits `items` in order until they run out, the stop flag is set,
    /// or the run is aborted.
    pub(crate) fn run(
        &self,
        items: impl Iterator<Item = Item>,
        work: Sender<(u64, Item)>,
        done: Sender<Prepared>,
        progress: &Progress,
        window: u64,
    ) {
        let mut refused: Option<(Reason, String)> = None;
        let mut last_poll: Option<Instant> = None;
        let mut cursor = DirCursor::default();
        for (seq, item) in items.enumerate() {
            let seq = seq as u64;
            if self.stop.is_some_and(|f| f.load(Ordering::SeqCst)) {
                break;
            }
            if !progress.wait_below(seq, window) {
                return;
            }
            if refused.is_none() {
                refused = self.refusal(&mut last_poll);
            }
            progress.admitted.store(seq + 1, Ordering::SeqCst);
            let sent = match (&refused, item) {
                (Some((reason, msg)), item) => done
                    .send(Prepared::refused(seq, item, *reason, msg.clone()))
                    .is_ok(),
                (
                    None,
                    Item::Failed {
                        name,
                        source,
                        reason,
                        message,
                    },
                ) => done
                    .send(Prepared::failed(seq, name, source, reason, message))
                    .is_ok(),
                (
                    None,
                    Item::File {
                        name,
                        source: source @ (Source::Path(_) | Source::Listed { .. }),
                        meta,
                    },
                ) if self.quick.is_some() => {
                    let quick = self.quick.and_then(|q| {
                        q.state(self.engine, &mut cursor, &name, &source, meta.as_ref())
                    });
                    match quick {
                        Some(state) => done
                            .send(Prepared {
                                seq,
                                name: name.into_string(),
                                source: source.into_path(),
                                state,
                            })
                            .is_ok(),
                        None => work.send((seq, Item::File { name, source, meta })).is_ok(),
                    }
                }
                (None, item) => work.send((seq, item)).is_ok(),
            };
            if !sent {
                return;
            }
        }
    }

    /// Why the session refuses files now, if it does: expiry by the clock
    /// at every file, closing by the index now and then.
    fn refusal(&self, last_poll: &mut Option<Instant>) -> Option<(Reason, String)> {
        let s = self.session;
        let engine = self.engine;
        if let Some(at) = s.expires_at.filter(|at| engine.clock.reached(*at)) {
            return Some(refusal(Error::SessionExpired {
                id: s.session_id,
                at,
            }));
        }
        if last_poll.is_none_or(|t| t.elapsed() >= self.closed_poll) {
            *last_poll = Some(Instant::now());
            if let Ok(true) = engine.index.is_closed(s.session_id) {
                let at = engine
                    .index
                    .session(s.session_id)
                    .ok()
                    .flatten()
                    .and_then(|r| r.closed_at)
                    .unwrap_or_else(|| engine.now());
                return Some(refusal(Error::SessionClosed {
                    id: s.session_id,
                    at,
                }));
            }
        }
        None
    }
}

/// The reason and message a file is refused with when the session is over.
fn refusal(over: Error) -> (Reason, String) {
    let reason = over.refusal_reason().unwrap_or(Reason::SessionClosed);
    (reason, over.to_string())
}
