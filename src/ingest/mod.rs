//! An ingest run: admission, reading and hashing on worker threads, and the
//! committer that decides and commits in the order files were given.
//!
//! ```text
//! items ──admission──▶ work queue ──N readers──▶ results ──committer──▶ reports
//!       (admit.rs:      (read.rs: read once,     (commit.rs: reorders by
//!        session over?,  hash, store large        sequence, decides per name
//!        quick.rs)       blobs)                   inside one write transaction
//!                                                per batch, then reports)
//! ```
//!
//! Every decision is taken by the committer, one file at a time in sequence
//! order, inside the index's write transaction: two files with the same name
//! are never decided concurrently, and a run gives the same result at any
//! parallelism. No report leaves the committer before its batch is durable.

mod admit;
mod commit;
mod dry_run;
mod prepared;
mod progress;
mod quick;
mod read;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use uuid::Uuid;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::item::Item;
use crate::outcome::{Counts, FileReport};
use crate::session::Session;
use admit::Admission;
use commit::{Batching, Committer, WrittenNames};
use prepared::Prepared;
use progress::Progress;
use quick::QuickCache;
use read::Reader;

/// The totals of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// The session.
    pub session_id: Uuid,
    /// Counts per outcome.
    pub counts: Counts,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// A configured ingest run; see [`crate::Workspace::ingest`].
#[must_use]
pub struct IngestRun {
    engine: Arc<Engine>,
    session: Session,
    parallelism: usize,
    quick_check: bool,
    dry_run: bool,
    batching: Batching,
    closed_poll: Duration,
    stop: Option<Arc<AtomicBool>>,
    record_retryable: bool,
}

impl IngestRun {
    pub(crate) fn new(engine: Arc<Engine>, session: Session) -> IngestRun {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        IngestRun {
            engine,
            session,
            parallelism: (cores * 2).clamp(2, 16),
            quick_check: true,
            dry_run: false,
            batching: Batching {
                files: 1024,
                bytes: 16 * 1024 * 1024,
                linger: Duration::from_millis(5),
                max_delay: Duration::from_millis(200),
            },
            closed_poll: Duration::from_millis(250),
            stop: None,
            record_retryable: true,
        }
    }

    /// Worker threads that read and hash (default: twice the cores, 2..=16).
    /// The outcome does not depend on it.
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// Whether a source file already ingested from the same path with the
    /// same size and mtime, whose name still holds the same content, comes
    /// out `unchanged` without being read (default: true; `--checksum`
    /// turns it off).
    pub fn quick_check(mut self, on: bool) -> Self {
        self.quick_check = on;
        self
    }

    /// Decide every file but change nothing (default: false).
    pub fn dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// Largest group commit, in files and in inline bytes (default 1024
    /// files, 16 MiB).
    pub fn batch(mut self, files: usize, bytes: u64) -> Self {
        self.batching.files = files.max(1);
        self.batching.bytes = bytes.max(1);
        self
    }

    /// Longest a finished file waits for its group commit (default 200 ms).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.batching.max_delay = d;
        self
    }

    /// Whether a failure worth retrying (`changed_while_reading`,
    /// `store_error`) is recorded in the session (default: true). A caller
    /// that retries such files (the watcher) turns this off and records the
    /// final outcome itself with [`crate::Workspace::record_outcome`], so that the
    /// session counts each file once.
    pub fn record_retryable(mut self, on: bool) -> Self {
        self.record_retryable = on;
        self
    }

    /// A flag that, once set, stops admitting files; admitted files finish.
    pub fn stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Runs over `items`, calling `report` once per file in item order, each
    /// only after the file's outcome is durable.
    ///
    /// Errors only if the session does not exist; everything that goes wrong
    /// with a file is that file's outcome.
    pub fn run<I>(self, items: I, mut report: impl FnMut(&FileReport)) -> Result<Summary>
    where
        I: IntoIterator<Item = Item>,
        I::IntoIter: Send,
    {
        let started = Instant::now();
        let engine = &*self.engine;
        if !self.dry_run
            && engine
                .index
                .session(self.session.session_id)
                .map_err(|e| engine.err(e))?
                .is_none()
        {
            return Err(Error::SessionNotFound(self.session.session_id));
        }
        let window = (self.batching.files * 2).max(64) as u64;
        let (work_tx, work_rx) = bounded::<(u64, Item)>(self.parallelism * 4);
        let (done_tx, done_rx) = bounded::<Prepared>(window as usize);
        let progress = Progress::default();
        let quick = QuickCache::default();
        let mut counts = Counts::default();
        let mut sink = |r: &FileReport| {
            counts.add(r);
            report(r);
        };
        let admission = Admission {
            engine,
            session: &self.session,
            quick: self.quick_check.then_some(&quick),
            stop: self.stop.as_ref(),
            closed_poll: self.closed_poll,
        };
        let reader = Reader {
            engine,
            mode: self.session.write_mode,
            dry_run: self.dry_run,
        };
        let mut committer = Committer {
            engine,
            session: &self.session,
            batching: self.batching,
            dry_run: self.dry_run,
            record_retryable: self.record_retryable,
            quick: &quick,
            written: WrittenNames::new(),
        };
        std::thread::scope(|s| {
            let progress = &progress;
            {
                let done_tx = done_tx.clone();
                let items = items.into_iter();
                let admission = &admission;
                s.spawn(move || admission.run(items, work_tx, done_tx, progress, window));
            }
            for _ in 0..self.parallelism {
                let work_rx = work_rx.clone();
                let done_tx = done_tx.clone();
                let reader = &reader;
                s.spawn(move || {
                    for (seq, item) in work_rx {
                        if done_tx.send(reader.prepare(seq, item)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(done_tx);
            drop(work_rx);
            committer.run(done_rx, progress, &mut sink);
            // Whatever happened, let the admission thread finish.
            progress.abort();
        });
        Ok(Summary {
            session_id: self.session.session_id,
            counts,
            elapsed: started.elapsed(),
        })
    }
}
