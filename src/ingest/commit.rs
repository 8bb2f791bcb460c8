//! The committer: puts files back in item order, groups them into batches,
//! and decides every file of a batch inside one write transaction, which
//! locks the batch's names (in sorted order) with one lookup and writes
//! everything with one call. No report leaves before its batch is durable.
//!
//! A batch that loses a race (`Conflict`) is redone whole, every decision
//! taken again against the new state; a store out of reach
//! (`Unavailable`) is retried with backoff. What still fails is tried file
//! by file, so that one bad file costs only itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::dry_run::DryRun;
use super::prepared::{Blob, Prepared, State, store_failed};
use super::progress::Progress;
use super::quick::QuickCache;
use crate::decide::{Decision, decide};
use crate::engine::Engine;
use crate::outcome::{Counts, FileReport, Outcome, Reason};
use crate::session::Session;
use crate::store::{Entry, NewBlob, NewVersion, StoreError, WriteTxn, Writes, lock_all};

/// How the committer groups files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    /// Most files in one batch.
    pub(crate) files: usize,
    /// Most inline bytes in one batch.
    pub(crate) bytes: u64,
    /// How long to wait for more files once the readers go quiet.
    pub(crate) linger: Duration,
    /// Longest a finished file waits for its batch.
    pub(crate) max_delay: Duration,
}

/// The committer thread's state.
pub(crate) struct Committer<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) session: &'a Session,
    pub(crate) batching: Batching,
    pub(crate) dry_run: bool,
    /// Whether failures worth retrying are recorded in the session.
    pub(crate) record_retryable: bool,
    /// The quick check's records, kept up to date with each commit.
    pub(crate) quick: &'a QuickCache,
    pub(crate) written: WrittenNames,
}

/// The names this run has written, as a fixed-size Bloom filter: a file
/// the quick check vouched for needs its name re-checked inside the commit
/// transaction only if an earlier file of this run may have written that
/// name. (Other processes' writes need no re-check: an `unchanged` that
/// writes nothing is decided when the check looked, which is a valid place
/// for it in a serial order.) A false positive only costs a lookup.
pub(crate) struct WrittenNames {
    bits: Vec<u64>,
    /// Whether anything was inserted: a run that writes nothing (an
    /// unchanged re-run) then never touches the bits, whose random reads
    /// miss the cache.
    any: bool,
}

impl WrittenNames {
    const BITS: usize = 1 << 23; // 1 MiB

    pub(crate) fn new() -> WrittenNames {
        WrittenNames {
            bits: vec![0; Self::BITS / 64],
            any: false,
        }
    }

    fn slots(name: &str) -> [usize; 2] {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(name);
        [(h as usize) % Self::BITS, ((h >> 32) as usize) % Self::BITS]
    }

    fn insert(&mut self, name: &str) {
        self.any = true;
        for i in Self::slots(name) {
            self.bits[i / 64] |= 1 << (i % 64);
        }
    }

    fn may_contain(&self, name: &str) -> bool {
        self.any
            && Self::slots(name)
                .iter()
                .all(|&i| self.bits[i / 64] & (1 << (i % 64)) != 0)
    }
}

/// The names a batch has looked up or written, with what they hold as the
/// batch's decisions go.
type Current<'b> = HashMap<&'b str, Option<Entry>>;

impl Committer<'_> {
    /// Receives prepared files until the readers are done, committing them
    /// in batches and reporting each file, in order, once durable.
    pub(crate) fn run(
        &mut self,
        done: Receiver<Prepared>,
        progress: &Progress,
        sink: &mut dyn FnMut(&FileReport),
    ) {
        let b = self.batching;
        let mut pending: BTreeMap<u64, Prepared> = BTreeMap::new();
        // Both kept from batch to batch: a fresh pair per batch costs page
        // faults, not just allocations.
        let mut ready: Vec<Prepared> = Vec::new();
        let mut reports: Vec<FileReport> = Vec::new();
        let mut ready_bytes = 0u64;
        // Whether the batch has a file that was read (and so may write a
        // version someone waits for).
        let mut any_read = false;
        let mut oldest: Option<Instant> = None;
        let mut next = 0u64;
        let mut dry = DryRun::default();
        loop {
            // What is already there first: a blocking receive reads the
            // clock for its deadline.
            let msg = match done.try_recv() {
                Ok(p) => Ok(p),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) if ready.is_empty() => {
                    done.recv().map_err(|_| RecvTimeoutError::Disconnected)
                }
                // A batch of bookkeeping waits for more anyway: sleeping,
                // rather than waiting on the channel, spares admission a
                // wake-up of this thread for every file it sends.
                Err(TryRecvError::Empty) if !any_read => {
                    std::thread::sleep(b.linger);
                    Err(RecvTimeoutError::Timeout)
                }
                Err(TryRecvError::Empty) => done.recv_timeout(b.linger),
            };
            let finished = match msg {
                Ok(p) => {
                    // In order (the usual case): no detour through the map.
                    let mut in_order = if p.seq == next {
                        Some(p)
                    } else {
                        pending.insert(p.seq, p);
                        None
                    };
                    while let Some(p) = in_order.take().or_else(|| pending.remove(&next)) {
                        next += 1;
                        ready_bytes += p.inline_bytes();
                        any_read |= matches!(p.state, State::Read { .. });
                        ready.push(p);
                        oldest.get_or_insert_with(Instant::now);
                    }
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            let idle = !finished && done.is_empty();
            // A batch of files that were not read (found unchanged by the
            // quick check, failed, refused) is bookkeeping: it waits for
            // more (up to `max_delay`) rather than being committed each
            // time the committer catches up with admission, which on a
            // re-run of a tree of small folders is every few files.
            let flush = finished
                || ready.len() >= b.files
                || ready_bytes >= b.bytes
                || (idle && any_read && progress.all_received(next))
                // Files keep coming: the age is checked now and then.
                || ((idle || ready.len().is_multiple_of(64))
                    && oldest.is_some_and(|t| t.elapsed() >= b.max_delay));
            if flush && !ready.is_empty() {
                ready_bytes = 0;
                any_read = false;
                oldest = None;
                if self.dry_run {
                    dry.decide_batch(self.engine, self.session, &mut ready, &mut reports);
                } else {
                    self.commit_batch(&mut ready, &mut reports);
                }
                for r in reports.drain(..) {
                    sink(&r);
                }
                progress.committed(next);
            }
            if finished {
                return;
            }
        }
    }

    /// Commits a batch in one transaction (redone after a lost race,
    /// retried while the store is out of reach); if that fails, each file
    /// alone, so that one bad file or a lasting error costs only what it
    /// must.
    fn commit_batch(&mut self, batch: &mut Vec<Prepared>, out: &mut Vec<FileReport>) {
        let retry = self.engine.retry;
        if batch.iter().any(Prepared::stored_externally)
            && let Err(e) = retry.run(|| self.engine.blobs.sync())
        {
            // The blobs written for this batch may not be durable: those
            // files fail; the rest of the batch needs no blob store.
            for p in batch.iter_mut().filter(|p| p.stored_externally()) {
                p.state = store_failed(e.clone_lossy());
            }
        }
        out.clear();
        if let Err(e) = retry.run(|| self.commit_txn(batch, out)) {
            out.clear();
            if let [p] = batch.as_slice() {
                out.push(self.finish_failed_store(p, &e));
            } else {
                let mut one = Vec::with_capacity(1);
                for p in batch.iter() {
                    match retry.run(|| self.commit_txn(std::slice::from_ref(p), &mut one)) {
                        Ok(()) => out.append(&mut one),
                        Err(e) => out.push(self.finish_failed_store(p, &e)),
                    }
                }
            }
        }
        for (p, r) in batch.drain(..).zip(out.iter_mut()) {
            p.name_report(r);
        }
    }

    /// Reports a file whose commit failed for good. A file that would have
    /// written a version fails with `store_error`; any other keeps its own
    /// outcome (its recording is what failed). The outcome is recorded in
    /// the session if the index still takes writes.
    fn finish_failed_store(&self, p: &Prepared, e: &StoreError) -> FileReport {
        let sid = self.session.session_id;
        let r = match (&p.state, p.settled(sid)) {
            (State::Refused { .. }, Some(r)) => return r,
            (_, Some(r)) => r,
            // Unchanged only if the name still holds it; otherwise it was
            // to be written again (its name changed since the check).
            (State::Quick { .. }, None)
                if self
                    .engine
                    .index
                    .current(&p.name)
                    .ok()
                    .flatten()
                    .is_some_and(|e| e.identity().is_some() && e.identity() == p.identity()) =>
            {
                p.report(sid, Outcome::Unchanged, None, None)
            }
            (_, None) => p.report(
                sid,
                Outcome::Failed,
                Some(Reason::StoreError),
                Some(format!("could not store the file: {e}")),
            ),
        };
        if self.records(&r) {
            // `unchanged` is counted, not listed, as in a batch.
            let list = r.outcome != Outcome::Unchanged;
            let _ = self
                .engine
                .record_outcome(p.record(&r), Counts::of(&r), list);
        }
        r
    }

    /// Whether the session records (counts) this report: refused files are
    /// not part of it, and a failure worth retrying only if this run's
    /// caller does not retry it itself.
    fn records(&self, r: &FileReport) -> bool {
        match (r.outcome, r.reason) {
            (Outcome::Refused, _) => false,
            (Outcome::Failed, Some(reason)) => self.record_retryable || !reason.is_retryable(),
            _ => true,
        }
    }

    /// Commits `batch` in one transaction, its reports (unnamed) in `out`.
    fn commit_txn(
        &mut self,
        batch: &[Prepared],
        out: &mut Vec<FileReport>,
    ) -> Result<(), StoreError> {
        // Only a batch that may write a version must be durable before it
        // is reported; the rest is bookkeeping.
        let mut durable = batch.iter().any(|p| matches!(p.state, State::Read { .. }));
        let sid = self.session.session_id;
        loop {
            out.clear();
            let mut txn = self.engine.index.begin(durable)?;
            let at = self.engine.now();
            let mut current = self.lock_names(&mut *txn, batch)?;
            let mut writes = Writes {
                at,
                ..Writes::default()
            };
            let mut counts = Counts::default();
            // The names this batch has recorded a source for.
            let mut sourced: HashSet<&str> = HashSet::new();
            for p in batch {
                let r = self.apply(&mut *txn, p, &mut current, &mut writes, &mut sourced)?;
                if self.records(&r) {
                    counts.add(&r);
                    // `unchanged` is counted, not listed: re-running over
                    // a large tree writes no row per file.
                    if r.outcome != Outcome::Unchanged {
                        writes.outcomes.push(p.record(&r));
                    }
                }
                out.push(r);
            }
            // A quick-checked file whose name changed since the check
            // writes after all: roll back and redo the batch durably.
            if !durable && !writes.versions.is_empty() {
                durable = true;
                continue;
            }
            if !counts.is_empty() {
                writes.counts.push((sid, counts));
            }
            if !writes.is_empty() {
                txn.write(&writes)?;
            }
            txn.commit()?;
            // The quick check's cache learns exactly what the index did.
            for src in &writes.sources {
                self.quick.update(src);
            }
            return Ok(());
        }
    }

    /// Looks up, with one call that locks them, the names of `batch` whose
    /// decision needs what they hold: every file read, and a quick-checked
    /// file whose name this run may have written.
    fn lock_names<'b>(
        &self,
        txn: &mut dyn WriteTxn,
        batch: &'b [Prepared],
    ) -> Result<Current<'b>, StoreError> {
        // The names read in this batch, which a quick-checked file of the
        // same name must see written; only built if there is such a file.
        let any_quick = batch.iter().any(|p| matches!(p.state, State::Quick { .. }));
        let read: HashSet<&str> = batch
            .iter()
            .filter(|p| any_quick && matches!(p.state, State::Read { .. }))
            .map(|p| p.name.as_str())
            .collect();
        let names: Vec<&str> = batch
            .iter()
            .filter(|p| match p.state {
                State::Read { .. } => true,
                State::Quick { .. } => {
                    self.written.may_contain(&p.name) || read.contains(p.name.as_str())
                }
                State::Refused { .. } | State::Failed { .. } => false,
            })
            .map(|p| p.name.as_str())
            .collect();
        lock_all(txn, names)
    }

    /// Decides one file against what its name holds now, adding what the
    /// decision writes to `writes`.
    fn apply<'b>(
        &mut self,
        txn: &mut dyn WriteTxn,
        p: &'b Prepared,
        current: &mut Current<'b>,
        writes: &mut Writes<'b>,
        sourced: &mut HashSet<&'b str>,
    ) -> Result<FileReport, StoreError> {
        let s = self.session;
        let name = p.name.as_str();
        let (new, size, blob, source) = match (&p.state, p.identity()) {
            // The quick check looked before earlier files of this run
            // committed: if one of them may have written this name,
            // `unchanged` only if the name still holds this content and
            // metadata, else decide as usual.
            (State::Quick { size, .. }, Some(new)) => {
                let still = !self.written.may_contain(name)
                    || lookup(txn, current, name)?.is_some_and(|e| e.identity() == Some(new));
                if still {
                    return Ok(p.decided(s.session_id, Decision::Unchanged));
                }
                (new, *size, &Blob::NotStored, None)
            }
            (
                State::Read {
                    size, blob, source, ..
                },
                Some(new),
            ) => (new, *size, blob, source.as_deref()),
            // Refused or failed before any decision.
            _ => {
                return Ok(p.settled(s.session_id).unwrap_or_else(|| {
                    p.report(s.session_id, Outcome::Failed, Some(Reason::ReadError), None)
                }));
            }
        };
        let existing = lookup(txn, current, name)?;
        let decision = decide(s.write_mode, existing.and_then(Entry::identity), new);
        if decision.writes() {
            let hash = *new.hash;
            match blob {
                Blob::Inline(data) => writes.blobs.push(NewBlob {
                    hash,
                    size,
                    data: Some(data),
                }),
                Blob::Stored => writes.blobs.push(NewBlob {
                    hash,
                    size,
                    data: None,
                }),
                Blob::NotStored => {
                    if !writes.blobs.iter().any(|b| b.hash == hash) && !txn.has_blob(&hash)? {
                        return Ok(p.report(
                            s.session_id,
                            Outcome::Failed,
                            Some(Reason::StoreError),
                            Some(format!(
                                "{name} changed in the workspace while it was read; run again"
                            )),
                        ));
                    }
                }
            }
            // What the name held moves into history: taken, not copied.
            let existing = current.remove(name).flatten();
            let entry = Entry {
                name: name.to_owned(),
                hash,
                size,
                meta: new.meta.map(str::to_owned),
                session_id: s.session_id,
                ingested_at: writes.at,
                version: existing.as_ref().map_or(1, |e| e.version + 1),
                replaced_at: None,
                deleted: false,
            };
            // The sources this batch recorded earlier for this name (found
            // unchanged, or written) no longer hold unless they have what
            // it is about to hold.
            if sourced.contains(name) {
                writes.sources.retain(|src| {
                    src.name != name || (src.hash == hash && src.meta.as_deref() == new.meta)
                });
            }
            current.insert(name, Some(entry.clone()));
            writes.versions.push(NewVersion {
                entry,
                replaced: existing,
            });
            self.written.insert(name);
        }
        if let (Some(src), true) = (source, decision.name_holds_it()) {
            writes.sources.push(src);
            sourced.insert(name);
        }
        Ok(p.decided(s.session_id, decision))
    }
}

/// What `name` holds as the batch goes: looked up (and locked) on its own
/// if the batch's lookup did not cover it.
fn lookup<'c, 'b>(
    txn: &mut dyn WriteTxn,
    current: &'c mut Current<'b>,
    name: &'b str,
) -> Result<Option<&'c Entry>, StoreError> {
    if !current.contains_key(name) {
        let found = txn.lock(&[name])?.into_iter().next().flatten();
        current.insert(name, found);
    }
    Ok(current.get(name).and_then(Option::as_ref))
}
