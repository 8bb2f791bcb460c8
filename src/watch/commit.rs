//! Committing: one [`IngestRun`](crate::IngestRun) per session, fed from
//! the ready channel, and the rotation from one session to the next.
//!
//! A run's item iterator blocks on the ready channel and ends when the
//! watcher stops or the session is over (expired by the workspace's clock,
//! or closed from outside). The run then finishes the files it admitted,
//! and, unless rotation is off, the next session opens with the same
//! settings. A file refused at the boundary (the clock passed the expiry
//! between the iterator's check and the run's) goes back to the front of
//! the queue for the next session: it is never lost.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::error::WatchError;
use super::event::{WatchEvent, WatchSummary};
use super::ready::{Done, retry_delay};
use super::shared::Shared;
use crate::error::Error;
use crate::item::Item;
use crate::outcome::{FileReport, Outcome, Reason};
use crate::session::{CreateSession, Lifetime, Session, SessionOauthUser};
use crate::workspace::Workspace;

/// How often an idle run looks at the clock and the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// How often an idle run asks the index whether its session was closed.
const CLOSED_POLL: Duration = Duration::from_secs(1);

const NOT_OVER: u8 = 0;
const EXPIRED: u8 = 1;
const CLOSED: u8 = 2;

/// The committing side of the watcher.
pub(crate) struct Committer {
    pub ws: Workspace,
    pub ready: Receiver<Item>,
    pub done: Sender<Done>,
    pub events: Sender<WatchEvent>,
    pub shared: Arc<Shared>,
    pub rotate: bool,
    pub quick_check: bool,
    pub parallelism: Option<usize>,
    pub max_retries: u32,
    pub settle: Duration,
    /// How to open the next session.
    pub request: CreateSession,
    pub creator: SessionOauthUser,
    /// Whether the watcher opened the current session (and so closes it).
    pub owns_session: bool,
}

impl Committer {
    /// Runs session after session until stopped; closes the last session if
    /// the watcher opened it.
    pub(crate) fn run(mut self, first: Session) -> Result<WatchSummary, WatchError> {
        let started = Instant::now();
        let mut summary = WatchSummary {
            sessions: vec![first.session_id],
            ..WatchSummary::default()
        };
        let mut attempts: HashMap<PathBuf, u32> = HashMap::new();
        let mut session = first;
        let result = loop {
            let over = match self.run_session(&session, &mut summary, &mut attempts) {
                Ok(o) => o,
                Err(e) => break Err(e),
            };
            if over == NOT_OVER {
                break Ok(());
            }
            let now = self.ws.now();
            let was = if over == CLOSED {
                "was closed"
            } else {
                "expired"
            };
            if !self.rotate {
                let id = session.session_id;
                tracing::warn!(session = %id, "session {id} {was}; not opening another (rotation is off)");
                break Err(WatchError::Engine(if over == CLOSED {
                    Error::SessionClosed { id, at: now }
                } else {
                    Error::SessionExpired {
                        id,
                        at: session.expires_at.unwrap_or(now),
                    }
                }));
            }
            let Some(next) = self.next_session(&session) else {
                // Stopped while waiting for the index.
                break Ok(());
            };
            let next = match next {
                Ok(s) => s,
                Err(e) => break Err(e),
            };
            tracing::info!(
                previous = %session.session_id,
                session = %next.session_id,
                "session {} {was}; opened session {}",
                session.session_id,
                next.session_id
            );
            self.owns_session = true;
            summary.sessions.push(next.session_id);
            self.shared.set_session(&next);
            let _ = self.events.send(WatchEvent::SessionRotated {
                previous: session.session_id,
                session: next.clone(),
            });
            session = next;
        };
        if self.owns_session {
            let open = self
                .ws
                .session(session.session_id)
                .is_ok_and(|r| r.status(self.ws.now()) == crate::session::SessionStatus::Open);
            if open {
                match self.ws.close_session(session.session_id) {
                    Ok(_) => {
                        tracing::info!(session = %session.session_id, "closed session {}", session.session_id)
                    }
                    Err(e) => {
                        tracing::warn!(session = %session.session_id, "could not close session {}: {e}", session.session_id)
                    }
                }
            }
        }
        summary.elapsed = started.elapsed();
        result.map(|()| summary)
    }

    /// One ingest run in `session`; returns why it ended.
    fn run_session(
        &mut self,
        session: &Session,
        summary: &mut WatchSummary,
        attempts: &mut HashMap<PathBuf, u32>,
    ) -> Result<u8, WatchError> {
        let over = AtomicU8::new(NOT_OVER);
        let feeder = Feeder {
            ready: &self.ready,
            shared: &self.shared,
            ws: &self.ws,
            session,
            over: &over,
            last_closed_check: Instant::now(),
        };
        let mut run = self
            .ws
            .ingest(session)
            .stop_flag(Arc::clone(&self.shared.stop))
            .quick_check(self.quick_check)
            // Retried failures are counted once, when the watcher gives up.
            .record_retryable(false);
        if let Some(n) = self.parallelism {
            run = run.parallelism(n);
        }
        let (rotate, max_retries, settle) = (self.rotate, self.max_retries, self.settle);
        let (done, events) = (&self.done, &self.events);
        run.run(feeder, |r| {
            let Some(path) = r.source.clone() else {
                summary.counts.add(r);
                let _ = events.send(WatchEvent::File(r.clone()));
                return;
            };
            match (r.outcome, r.reason) {
                (Outcome::Refused, reason) => {
                    over.store(
                        if reason == Some(Reason::SessionClosed) {
                            CLOSED
                        } else {
                            EXPIRED
                        },
                        Ordering::SeqCst,
                    );
                    if rotate {
                        tracing::debug!(path = %path.display(), "refused at the session boundary; queued for the next session");
                        let _ = done.send(Done::Requeue(path));
                        return;
                    }
                    finish(summary, events, done, r, path, attempts);
                }
                // Worth another try later: the file was being changed, or
                // the workspace failed (busy, full, changed under the read).
                (Outcome::Failed, Some(reason)) if reason.is_retryable() => {
                    let n = attempts.entry(path.clone()).or_insert(0);
                    *n += 1;
                    let attempt = *n;
                    if attempt > max_retries {
                        if let Err(e) = self.ws.record_outcome(r) {
                            tracing::warn!("cannot record the outcome of {}: {e}", path.display());
                        }
                        finish(summary, events, done, r, path, attempts);
                        return;
                    }
                    let delay = retry_delay(settle, attempt);
                    summary.retries += 1;
                    tracing::info!(
                        path = %path.display(),
                        attempt,
                        "{} failed ({}); retrying in {delay:?}",
                        path.display(),
                        r.message.as_deref().unwrap_or("changed while it was read")
                    );
                    let _ = events.send(WatchEvent::Retrying {
                        report: r.clone(),
                        attempt,
                        delay,
                    });
                    let _ = done.send(Done::Retry { path, attempt });
                }
                _ => finish(summary, events, done, r, path, attempts),
            }
        })?;
        Ok(over.load(Ordering::SeqCst))
    }

    /// Opens the session after `old` with the same settings, retrying while
    /// the index fails; `None` if stopped meanwhile.
    fn next_session(&self, old: &Session) -> Option<Result<Session, WatchError>> {
        let mut wait = Duration::from_secs(1);
        loop {
            if self.shared.stopping() {
                return None;
            }
            match self.ws.create_session(&self.request, self.creator.clone()) {
                Ok(s) => {
                    if s.expires_at.is_some_and(|e| e <= self.ws.now()) {
                        // A fixed expiry instant: every new session would
                        // be born expired.
                        let _ = self.ws.close_session(s.session_id);
                        return Some(Err(WatchError::Engine(Error::SessionExpired {
                            id: old.session_id,
                            at: old.expires_at.unwrap_or(s.created_at),
                        })));
                    }
                    return Some(Ok(s));
                }
                Err(e) => {
                    tracing::error!("cannot open a new session: {e}; retrying in {wait:?}");
                    let until = Instant::now() + wait;
                    while Instant::now() < until && !self.shared.stopping() {
                        std::thread::sleep(POLL);
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// A file's final outcome: counted, reported, and done with.
fn finish(
    summary: &mut WatchSummary,
    events: &Sender<WatchEvent>,
    done: &Sender<Done>,
    r: &FileReport,
    path: PathBuf,
    attempts: &mut HashMap<PathBuf, u32>,
) {
    attempts.remove(&path);
    summary.counts.add(r);
    let read_failed = r.reason == Some(Reason::ReadError);
    let _ = done.send(Done::Final { path, read_failed });
    let _ = events.send(WatchEvent::File(r.clone()));
}

/// The request that opens sessions like `s`: same write mode, same
/// lifetime.
pub(crate) fn request_like(s: &Session) -> CreateSession {
    let lifetime = match s.expires_at {
        None => Lifetime::Forever,
        Some(e) => Lifetime::Ttl(e - s.created_at),
    };
    CreateSession::new(s.write_mode).lifetime(lifetime)
}

/// The items of one run: blocks on the ready channel, ends when the
/// watcher stops or the session is over.
struct Feeder<'a> {
    ready: &'a Receiver<Item>,
    shared: &'a Shared,
    ws: &'a Workspace,
    session: &'a Session,
    over: &'a AtomicU8,
    last_closed_check: Instant,
}

impl Iterator for Feeder<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if self.shared.stopping() || self.over.load(Ordering::SeqCst) != NOT_OVER {
                return None;
            }
            if self.session.expires_at.is_some_and(|e| self.ws.now() >= e) {
                self.over.store(EXPIRED, Ordering::SeqCst);
                return None;
            }
            if self.last_closed_check.elapsed() >= CLOSED_POLL {
                self.last_closed_check = Instant::now();
                if let Ok(true) = self.ws.is_closed(self.session.session_id) {
                    self.over.store(CLOSED, Ordering::SeqCst);
                    return None;
                }
            }
            match self.ready.recv_timeout(POLL) {
                Ok(item) => return Some(item),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}
