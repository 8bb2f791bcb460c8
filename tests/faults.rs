//! Fault injection through the storage seams (`intake::store::{Index,
//! WriteTxn, BlobStore, BlobWriter}`): `ENOSPC` and `EIO` at every step of
//! one file's ingest, for inline and external blobs, as one table.
//!
//! For every case, the target file comes out `failed (store_error)` and
//! every other file of the run `ingested`. The workspace passes `verify`,
//! holds nothing of the target (no name, no history, no blob row, no
//! temporary file), and the same run without the fault ingests it.
//!
//! Two steps belong to a batch, not to a file: the blob store's `sync` (one
//! directory fsync for every blob of the batch) and the index's `begin`.
//! Those cases run one reader and commit one file per batch, so that the
//! fault lands on the target's own step and nowhere else; what a failed
//! `sync` does to the other files of a larger batch is a test of its own
//! below. The other steps run two readers at the default batching, so the
//! target shares its batch and the committer's file-by-file retry is what
//! keeps the others `ingested`.

// A test that hits an unexpected error should panic where it happened.
#![allow(clippy::unwrap_used)]

mod common;

use common::user;
use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::seams::{BlobHooks, HookedBlobs, HookedIndex, IndexHooks};
use common::tmp_files;
use intake::store::{BlobStore, Entry, Index, OutcomeRecord, SourceRecord, StoreError};
use intake::{
    CreateSession, Error, FileReport, Hash, Item, Lifetime, Name, Outcome, Reason, Session,
    Workspace, WorkspaceBuilder, WriteMode, session::IngestionStatus,
    workspace::DEFAULT_INLINE_THRESHOLD,
};

// ---------------------------------------------------------------------------
// The fault: which step, which error, which file.

/// A step of one file's ingest that can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `BlobStore::writer`: creating the temporary file.
    BlobWriter,
    /// `BlobWriter::write`.
    BlobWrite,
    /// `BlobWriter::finish`: fsync and rename into place.
    BlobFinish,
    /// `BlobStore::sync`: the directory fsync before the batch commits.
    BlobSync,
    /// `Index::begin`: the write transaction (and its lock).
    Begin,
    /// `WriteTxn::put_blob`.
    PutBlob,
    /// `WriteTxn::write_version`.
    WriteVersion,
    /// `WriteTxn::record_source`: the quick-check record.
    RecordSource,
    /// `WriteTxn::record_outcome`.
    RecordOutcome,
    /// `WriteTxn::commit`.
    Commit,
}

impl Step {
    const ALL: [Step; 10] = [
        Step::BlobWriter,
        Step::BlobWrite,
        Step::BlobFinish,
        Step::BlobSync,
        Step::Begin,
        Step::PutBlob,
        Step::WriteVersion,
        Step::RecordSource,
        Step::RecordOutcome,
        Step::Commit,
    ];

    /// A step of the blob store, which an inline blob never reaches.
    fn in_blob_store(self) -> bool {
        matches!(
            self,
            Step::BlobWriter | Step::BlobWrite | Step::BlobFinish | Step::BlobSync
        )
    }

    /// A step taken once per batch rather than once per file.
    fn per_batch(self) -> bool {
        matches!(self, Step::BlobSync | Step::Begin)
    }
}

/// The injected error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Errno {
    Enospc,
    Eio,
}

impl Errno {
    fn raw(self) -> i32 {
        match self {
            Errno::Enospc => libc::ENOSPC,
            Errno::Eio => libc::EIO,
        }
    }

    /// How the OS words it (it must reach the user).
    fn text(self) -> &'static str {
        match self {
            Errno::Enospc => "No space left on device",
            Errno::Eio => "Input/output error",
        }
    }
}

/// Where a case keeps its blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blobs {
    /// In the index, with the row (the default for small files).
    Inline,
    /// In the blob store (`inline_threshold(0)`).
    External,
}

/// The fault, and the hooks of both the index and the blob store
/// (`common::seams`).
struct Fault {
    step: Step,
    errno: Errno,
    armed: AtomicBool,
    /// The target file: its name, size, content hash and source path.
    name: String,
    size: u64,
    hash: Hash,
    /// Every name of the run in item order, and those whose outcome a
    /// committed transaction has recorded: the first of `order` not yet in
    /// `committed` is the file the committer's next batch starts with.
    order: Vec<String>,
    committed: Mutex<HashSet<String>>,
    injected: AtomicU64,
}

impl Fault {
    fn fires(&self, step: Step) -> bool {
        self.step == step && self.armed.load(Ordering::SeqCst)
    }

    fn hit(&self, what: &str) -> StoreError {
        self.injected.fetch_add(1, Ordering::SeqCst);
        StoreError::io(what, io::Error::from_raw_os_error(self.errno.raw()))
    }

    /// Whether the committer's next batch is the target's (exact with one
    /// file per batch, which the per-batch cases use).
    fn target_is_next(&self) -> bool {
        let committed = self.committed.lock().unwrap();
        self.order.iter().find(|n| !committed.contains(*n)) == Some(&self.name)
    }
}

// ---------------------------------------------------------------------------
// The hooks, on the blob store and the index.

impl BlobHooks for Fault {
    /// Whether the writer was started for the target (by its size).
    type Writer = bool;

    fn writer(&self, size_hint: u64) -> Result<bool, StoreError> {
        let target = size_hint == self.size;
        if target && self.fires(Step::BlobWriter) {
            return Err(self.hit("creating a blob"));
        }
        Ok(target)
    }
    fn write(
        &self,
        target: &mut bool,
        _buf: &[u8],
        run: impl FnOnce() -> io::Result<usize>,
    ) -> io::Result<usize> {
        if *target && self.fires(Step::BlobWrite) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(self.errno.raw()));
        }
        run()
    }
    fn finish(
        &self,
        _target: bool,
        hash: &Hash,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if *hash == self.hash && self.fires(Step::BlobFinish) {
            // Dropping the inner writer discards its temporary file, as a
            // failed fsync or rename leaves it to do.
            return Err(self.hit("syncing a blob"));
        }
        run()
    }
    fn sync(&self, run: impl FnOnce() -> Result<(), StoreError>) -> Result<(), StoreError> {
        if self.fires(Step::BlobSync) && self.target_is_next() {
            return Err(self.hit("syncing the blob folders"));
        }
        run()
    }
}

/// What one write transaction did.
#[derive(Default)]
struct TxnState {
    /// Names whose outcome this transaction recorded.
    recorded: Vec<String>,
    /// Whether it wrote a version of the target.
    wrote_target: bool,
}

impl IndexHooks for Fault {
    type Txn = TxnState;

    fn begin(&self, durable: bool) -> Result<TxnState, StoreError> {
        // Only a transaction that may write a version is durable; the one
        // that records a failure afterwards is not, and goes through.
        if durable && self.fires(Step::Begin) && self.target_is_next() {
            return Err(self.hit("starting a write transaction"));
        }
        Ok(TxnState::default())
    }
    fn put_blob(
        &self,
        _txn: &mut TxnState,
        hash: &Hash,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if *hash == self.hash && self.fires(Step::PutBlob) {
            return Err(self.hit("storing a blob"));
        }
        run()
    }
    fn write_version(
        &self,
        txn: &mut TxnState,
        entry: &Entry,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if entry.name == self.name {
            if self.fires(Step::WriteVersion) {
                return Err(self.hit("writing a version"));
            }
            txn.wrote_target = true;
        }
        run()
    }
    fn record_source(
        &self,
        _txn: &mut TxnState,
        rec: &SourceRecord,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if rec.name == self.name && self.fires(Step::RecordSource) {
            return Err(self.hit("recording a source"));
        }
        run()
    }
    fn record_outcome(
        &self,
        txn: &mut TxnState,
        rec: &OutcomeRecord,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // The fault hits the target's ingest; recording its failure after
        // that goes through, so that the session counts it.
        if rec.name == self.name
            && rec.outcome != Outcome::Failed
            && self.fires(Step::RecordOutcome)
        {
            return Err(self.hit("recording an outcome"));
        }
        run()?;
        txn.recorded.push(rec.name.clone());
        Ok(())
    }
    fn commit(
        &self,
        txn: TxnState,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if txn.wrote_target && self.fires(Step::Commit) {
            // Dropping the inner transaction rolls it back.
            return Err(self.hit("committing"));
        }
        run()?;
        self.committed.lock().unwrap().extend(txn.recorded);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Helpers.

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn outcome_lines(v: impl IntoIterator<Item = (String, Outcome, Option<Reason>)>) -> Vec<String> {
    v.into_iter()
        .map(|(n, o, r)| match r {
            Some(r) => format!("{n}: {o} {r}"),
            None => format!("{n}: {o}"),
        })
        .collect()
}

fn report_lines(reports: &[FileReport]) -> Vec<String> {
    outcome_lines(
        reports
            .iter()
            .map(|r| (r.name.clone(), r.outcome, r.reason)),
    )
}

fn assert_lines(what: &str, want: &[String], got: &[String]) {
    assert!(
        want == got,
        "{what}:\n  expected: {want:#?}\n  actual:   {got:#?}"
    );
}

fn read_all(ws: &Workspace, name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    ws.read(name).unwrap().read_to_end(&mut v).unwrap();
    v
}

fn status(ingested: u64, unchanged: u64, failed: u64, bytes: u64) -> IngestionStatus {
    IngestionStatus {
        finished_files: ingested + unchanged,
        failed_files: failed,
        ingested,
        overwritten: 0,
        unchanged,
        kept: 0,
        deleted: 0,
        bytes,
    }
}

/// One file of the run: bytes in memory or a file on disk.
struct Spec {
    name: &'static str,
    on_disk: bool,
    content: Vec<u8>,
}

/// The run: the target in the middle, files before and after it, from
/// memory and from disk, every content (and so every size and hash)
/// distinct, so the hooks can tell the target by any of them.
fn specs() -> Vec<Spec> {
    let body = |tag: &str, len: usize| -> Vec<u8> {
        let mut v = format!("<{tag}>").into_bytes();
        v.resize(len, tag.as_bytes()[0]);
        v
    };
    vec![
        Spec {
            name: "a.txt",
            on_disk: false,
            content: body("a", 101),
        },
        Spec {
            name: "b.txt",
            on_disk: true,
            content: body("b", 202),
        },
        Spec {
            name: "target.bin",
            on_disk: true,
            content: body("target", 777),
        },
        Spec {
            name: "c.txt",
            on_disk: false,
            content: body("c", 303),
        },
        Spec {
            name: "d.txt",
            on_disk: true,
            content: body("d", 404),
        },
    ]
}

const TARGET: &str = "target.bin";

fn items(specs: &[Spec], src: &Path) -> Vec<Item> {
    specs
        .iter()
        .map(|s| {
            if s.on_disk {
                Item::path(name(s.name), src.join(s.name))
            } else {
                Item::bytes(name(s.name), s.content.clone())
            }
        })
        .collect()
}

struct Case {
    step: Step,
    errno: Errno,
    blobs: Blobs,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} × {:?} × {:?} blobs",
            self.step, self.errno, self.blobs
        )
    }
}

/// Runs one case and returns what it printed for the table.
fn run_case(case: &Case) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (src, ws_dir) = (dir.path().join("src"), dir.path().join("ws"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&ws_dir).unwrap();
    let specs = specs();
    for s in specs.iter().filter(|s| s.on_disk) {
        fs::write(src.join(s.name), &s.content).unwrap();
    }
    let target = specs.iter().find(|s| s.name == TARGET).unwrap();
    let fault = Arc::new(Fault {
        step: case.step,
        errno: case.errno,
        armed: AtomicBool::new(true),
        name: TARGET.into(),
        size: target.content.len() as u64,
        hash: Hash::of(&target.content),
        order: specs.iter().map(|s| s.name.to_owned()).collect(),
        committed: Mutex::new(HashSet::new()),
        injected: AtomicU64::new(0),
    });
    let index = Arc::new(HookedIndex::open(&ws_dir, Arc::clone(&fault)));
    let blobs = Arc::new(HookedBlobs::open(&ws_dir, Arc::clone(&fault)));
    let threshold = match case.blobs {
        Blobs::Inline => DEFAULT_INLINE_THRESHOLD,
        Blobs::External => 0,
    };
    let ws = WorkspaceBuilder::new(&ws_dir)
        .inline_threshold(threshold)
        .index(Arc::clone(&index) as Arc<dyn Index>)
        .blob_store(blobs as Arc<dyn BlobStore>)
        .create()
        .unwrap();
    let session = ws
        .create_session(
            &CreateSession::new(WriteMode::Keep).lifetime(Lifetime::Forever),
            user(),
        )
        .unwrap();
    let run = |ws: &Workspace| {
        let mut reports = Vec::new();
        let mut run = ws.ingest(&session).parallelism(2);
        if case.step.per_batch() {
            // One reader, so files reach the committer in order, one at a
            // time; with a batch of one file, each commit is one file's.
            run = run.parallelism(1).batch(1, u64::MAX);
        }
        run.run(items(&specs, &src), |r| reports.push(r.clone()))
            .unwrap();
        reports
    };

    // With the fault.
    let reports = run(&ws);
    let injected = fault.injected.load(Ordering::SeqCst);
    let reaches = !(case.blobs == Blobs::Inline && case.step.in_blob_store());
    let want: Vec<String> = outcome_lines(specs.iter().map(|s| {
        if s.name == TARGET && reaches {
            (s.name.into(), Outcome::Failed, Some(Reason::StoreError))
        } else {
            (s.name.into(), Outcome::Ingested, None)
        }
    }));
    assert_lines(&format!("{case}"), &want, &report_lines(&reports));
    let others: u64 = specs
        .iter()
        .filter(|s| s.name != TARGET)
        .map(|s| s.content.len() as u64)
        .sum();
    let all = others + target.content.len() as u64;
    let printed = if reaches {
        assert!(injected >= 1, "{case}: the fault never fired");
        let t = reports.iter().find(|r| r.name == TARGET).unwrap();
        let msg = t.message.as_deref().unwrap_or_default();
        assert!(msg.contains(case.errno.text()), "{case}: {msg}");
        // No half state: no name, no history, no blob row, no temporary file.
        assert_eq!(ws.current(TARGET).unwrap(), None, "{case}");
        assert!(
            matches!(ws.history(TARGET), Err(Error::NameNotFound(_))),
            "{case}"
        );
        assert!(!index.has_blob(&fault.hash).unwrap(), "{case}");
        assert_eq!(
            ws.session(session.session_id).unwrap().ingestion,
            status(4, 0, 1, others),
            "{case}"
        );
        format!("target failed store_error ({injected} injected): {msg}")
    } else {
        assert_eq!(injected, 0, "{case}: an inline blob reached the blob store");
        assert_eq!(
            ws.session(session.session_id).unwrap().ingestion,
            status(5, 0, 0, all),
            "{case}"
        );
        "n/a: an inline blob never reaches the blob store; all ingested".to_owned()
    };
    assert_eq!(tmp_files(&ws_dir), Vec::<PathBuf>::new(), "{case}");
    assert_eq!(ws.verify().unwrap().defects, vec![], "{case}");
    let mut listed = Vec::new();
    ws.session_files(session.session_id, |r| {
        listed.push((r.name, r.outcome, r.reason));
        true
    })
    .unwrap();
    assert_lines(
        &format!("{case}: session files"),
        &want,
        &outcome_lines(listed),
    );
    for s in specs.iter().filter(|s| s.name != TARGET || !reaches) {
        assert_eq!(read_all(&ws, s.name), s.content, "{case}: {}", s.name);
    }

    // Without it: the same run converges.
    fault.armed.store(false, Ordering::SeqCst);
    let reports = run(&ws);
    let want: Vec<String> = outcome_lines(specs.iter().map(|s| {
        if s.name == TARGET && reaches {
            (s.name.into(), Outcome::Ingested, None)
        } else {
            (s.name.into(), Outcome::Unchanged, None)
        }
    }));
    assert_lines(
        &format!("{case}, recovered"),
        &want,
        &report_lines(&reports),
    );
    assert_eq!(read_all(&ws, TARGET), target.content, "{case}");
    assert_eq!(ws.verify().unwrap().defects, vec![], "{case}");
    assert_eq!(tmp_files(&ws_dir), Vec::<PathBuf>::new(), "{case}");
    let (ingested, unchanged, failed, bytes) = if reaches {
        (5, 4, 1, 2 * others + target.content.len() as u64)
    } else {
        (5, 5, 0, 2 * all)
    };
    assert_eq!(
        ws.session(session.session_id).unwrap().ingestion,
        status(ingested, unchanged, failed, bytes),
        "{case}, recovered"
    );
    printed
}

#[test]
fn every_step_of_one_files_ingest_fails_only_that_file_and_recovers() {
    let mut table = Vec::new();
    for blobs in [Blobs::Inline, Blobs::External] {
        for step in Step::ALL {
            for errno in [Errno::Enospc, Errno::Eio] {
                let case = Case { step, errno, blobs };
                let line = run_case(&case);
                eprintln!("{case:<40} {line}");
                table.push(line);
            }
        }
    }
    assert_eq!(table.len(), 2 * Step::ALL.len() * 2);
}

// ---------------------------------------------------------------------------
// A failed `sync` with a whole batch.

/// A blob store's hooks: `sync` fails while armed.
struct FailingSync {
    armed: Arc<AtomicBool>,
}

impl BlobHooks for FailingSync {
    type Writer = ();

    fn sync(&self, run: impl FnOnce() -> Result<(), StoreError>) -> Result<(), StoreError> {
        if self.armed.load(Ordering::SeqCst) {
            return Err(StoreError::io(
                "syncing the blob folders",
                io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        run()
    }
}

/// A workspace whose blob store's sync fails while `armed` is set, and a
/// KEEP session that never expires.
fn failing_sync_workspace(ws_dir: &Path, armed: bool) -> (Workspace, Session, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(armed));
    let blobs = HookedBlobs::open(
        &ws_dir.join(intake::workspace::BLOB_DIR),
        Arc::new(FailingSync {
            armed: Arc::clone(&armed),
        }),
    );
    let ws = WorkspaceBuilder::new(ws_dir)
        .blob_store(Arc::new(blobs))
        .create()
        .unwrap();
    let session = ws
        .create_session(
            &CreateSession::new(WriteMode::Keep).lifetime(Lifetime::Forever),
            user(),
        )
        .unwrap();
    (ws, session, armed)
}

/// One directory fsync covers every external blob of a batch, so a failed
/// one fails exactly those files. The rest of the batch needs nothing from
/// the blob store and keeps its own outcome: an inline file is ingested, a
/// file the quick check vouched for is unchanged, a file that had already
/// failed (here: an invalid name) keeps its reason.
#[test]
fn failed_blob_sync_fails_only_the_files_stored_in_the_blob_store() {
    let dir = tempfile::tempdir().unwrap();
    let (src, ws_dir) = (dir.path().join("src"), dir.path().join("ws"));
    fs::create_dir_all(&src).unwrap();
    let (ws, session, armed) = failing_sync_workspace(&ws_dir, false);
    let big = |fill: u8| vec![fill; 100 * 1024];
    fs::write(src.join("old.txt"), "ingested by the first run").unwrap();
    let run = |items: Vec<Item>| {
        let mut reports = Vec::new();
        // One batch: it is committed once every file has reached the
        // committer, well before this delay.
        ws.ingest(&session)
            .max_delay(Duration::from_secs(60))
            .run(items, |r| reports.push(r.clone()))
            .unwrap();
        reports
    };
    let first = run(vec![Item::path(name("old.txt"), src.join("old.txt"))]);
    assert_lines(
        "first run",
        &["old.txt: ingested".to_owned()],
        &report_lines(&first),
    );

    armed.store(true, Ordering::SeqCst);
    let items = || {
        vec![
            Item::Failed {
                name: "bad\u{1b}name.txt".into(),
                source: None,
                reason: Reason::InvalidName,
                message: "the name contains a control character (U+001B)".into(),
            },
            Item::bytes(name("big1.bin"), big(b'1')),
            Item::path(name("old.txt"), src.join("old.txt")),
            Item::bytes(name("small.txt"), b"inline, in the index".to_vec()),
            Item::bytes(name("big2.bin"), big(b'2')),
        ]
    };
    let reports = run(items());
    assert_lines(
        "with a failing sync",
        &[
            "bad\u{1b}name.txt: failed invalid_name",
            "big1.bin: failed store_error",
            "old.txt: unchanged",
            "small.txt: ingested",
            "big2.bin: failed store_error",
        ]
        .map(String::from),
        &report_lines(&reports),
    );
    assert!(
        reports[1]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("Input/output error")),
        "{:?}",
        reports[1].message
    );
    assert_eq!(ws.current("big1.bin").unwrap(), None);
    assert_eq!(ws.current("big2.bin").unwrap(), None);
    assert_eq!(ws.verify().unwrap().defects, vec![]);

    armed.store(false, Ordering::SeqCst);
    let reports = run(items());
    assert_lines(
        "recovered",
        &[
            "bad\u{1b}name.txt: failed invalid_name",
            "big1.bin: ingested",
            "old.txt: unchanged",
            "small.txt: unchanged",
            "big2.bin: ingested",
        ]
        .map(String::from),
        &report_lines(&reports),
    );
    assert_eq!(read_all(&ws, "big2.bin"), big(b'2'));
    assert_eq!(ws.verify().unwrap().defects, vec![]);
}

/// A caller that retries failures itself (the watcher) runs with
/// `record_retryable(false)`: a retryable failure is reported but not counted
/// in the session, and the final outcome, recorded with
/// `Workspace::record_outcome`, is counted once.
#[test]
fn retryable_failures_are_counted_once_when_the_caller_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    let (ws, session, armed) = failing_sync_workspace(&ws_dir, true);
    let items = || {
        vec![
            Item::bytes(name("small.txt"), b"inline".to_vec()),
            Item::bytes(name("big.bin"), vec![7u8; 100 * 1024]),
        ]
    };
    let mut reports = Vec::new();
    ws.ingest(&session)
        .record_retryable(false)
        .run(items(), |r| reports.push(r.clone()))
        .unwrap();
    assert_lines(
        "first attempt",
        &outcome_lines([
            ("small.txt".into(), Outcome::Ingested, None),
            ("big.bin".into(), Outcome::Failed, Some(Reason::StoreError)),
        ]),
        &report_lines(&reports),
    );
    let counts = |ws: &Workspace| {
        let s = ws.session(session.session_id).unwrap().ingestion;
        (s.finished_files, s.failed_files)
    };
    assert_eq!(counts(&ws), (1, 0), "a retryable failure is not counted");
    // The caller gives up on it: counted once.
    ws.record_outcome(&reports[1]).unwrap();
    assert_eq!(counts(&ws), (1, 1));
    // Recorded with a run's defaults, it is counted by the run.
    armed.store(false, Ordering::SeqCst);
    let mut again = Vec::new();
    ws.ingest(&session)
        .run(items(), |r| again.push(r.clone()))
        .unwrap();
    assert_lines(
        "retry",
        &outcome_lines([
            ("small.txt".into(), Outcome::Unchanged, None),
            ("big.bin".into(), Outcome::Ingested, None),
        ]),
        &report_lines(&again),
    );
    assert_eq!(counts(&ws), (3, 1));
    assert!(ws.verify().unwrap().is_sound());
}

// ---------------------------------------------------------------------------
// Disk full in the blob store and on the index's commit, with whole batches
// and a quick-checked file.

mod batches {
    use std::collections::{BTreeMap, HashSet};
    use std::fs;
    use std::io;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use intake::store::{Entry, Index, StoreError};
    use intake::workspace::DEFAULT_INLINE_THRESHOLD;
    use intake::{
        Error, Hash, Item, Lifetime, ManualClock, Outcome, Reason, WorkspaceBuilder, WriteMode,
    };

    use crate::common::seams::{BlobHooks, HookedBlobs, HookedIndex, IndexHooks};
    use crate::common::tmp_files;
    use crate::common::ws::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum BlobFault {
        /// `writer()` fails for a blob of `MARKER_SIZE` bytes (it sees no content).
        Writer,
        /// `write` fails on bytes that contain `MARKER`.
        Write,
        /// `finish` fails for a blob whose bytes contained `MARKER`.
        Finish,
        /// `sync` fails, whatever it covers.
        Sync,
    }

    const MARKER: &[u8] = b"<<disk full here>>";
    const MARKER_SIZE: u64 = 777;

    /// A marked content of `MARKER_SIZE` bytes.
    fn marked(fill: u8) -> Vec<u8> {
        let mut v = MARKER.to_vec();
        v.resize(MARKER_SIZE as usize, fill);
        v
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// The blob store's faults: ENOSPC for marked contents while armed.
    struct BlobFaults {
        fault: BlobFault,
        armed: Arc<AtomicBool>,
        injected: Arc<AtomicU64>,
    }

    impl BlobFaults {
        fn fires(&self, fault: BlobFault) -> bool {
            self.fault == fault && self.armed.load(Ordering::SeqCst)
        }
    }

    impl BlobHooks for BlobFaults {
        /// Whether the writer has been given marked bytes.
        type Writer = bool;

        fn writer(&self, size_hint: u64) -> Result<bool, StoreError> {
            if size_hint == MARKER_SIZE && self.fires(BlobFault::Writer) {
                self.injected.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::io("creating a blob", enospc()));
            }
            Ok(false)
        }
        fn write(
            &self,
            marked: &mut bool,
            buf: &[u8],
            run: impl FnOnce() -> io::Result<usize>,
        ) -> io::Result<usize> {
            *marked |= contains(buf, MARKER);
            if *marked && self.fires(BlobFault::Write) {
                self.injected.fetch_add(1, Ordering::SeqCst);
                return Err(enospc());
            }
            run()
        }
        fn finish(
            &self,
            marked: bool,
            _hash: &Hash,
            run: impl FnOnce() -> Result<(), StoreError>,
        ) -> Result<(), StoreError> {
            if marked && self.fires(BlobFault::Finish) {
                self.injected.fetch_add(1, Ordering::SeqCst);
                // Dropping the inner writer discards the temporary file.
                return Err(StoreError::io("syncing a blob", enospc()));
            }
            run()
        }
        fn sync(&self, run: impl FnOnce() -> Result<(), StoreError>) -> Result<(), StoreError> {
            if self.fires(BlobFault::Sync) {
                self.injected.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::io("syncing the blob directories", enospc()));
            }
            run()
        }
    }

    #[test]
    fn enospc_in_the_blob_store_fails_only_the_affected_file() {
        for fault in [BlobFault::Writer, BlobFault::Write, BlobFault::Finish] {
            let dir = tempfile::tempdir().unwrap();
            let ws_dir = dir.path().join("ws");
            let clock = ManualClock::new(t0());
            let armed = Arc::new(AtomicBool::new(true));
            let injected = Arc::new(AtomicU64::new(0));
            let blobs = HookedBlobs::open(
                &ws_dir,
                Arc::new(BlobFaults {
                    fault,
                    armed: Arc::clone(&armed),
                    injected: Arc::clone(&injected),
                }),
            );
            let ws = WorkspaceBuilder::new(&ws_dir)
                .clock(Arc::new(clock.clone()))
                .inline_threshold(0)
                .blob_store(Arc::new(blobs))
                .create()
                .unwrap();
            let s = session(&ws, WriteMode::Fail, Lifetime::Forever);
            let src = dir.path().join("src");
            fs::create_dir(&src).unwrap();
            let (bad_bytes, bad_file) = (marked(b'x'), marked(b'y'));
            fs::write(src.join("bad.bin"), &bad_file).unwrap();
            fs::write(src.join("good.txt"), b"a good file on disk").unwrap();
            let items = || {
                vec![
                    Item::bytes(name("a.txt"), b"first good file".to_vec()),
                    Item::bytes(name("bad-bytes.bin"), bad_bytes.clone()),
                    Item::path(name("good-path.txt"), src.join("good.txt")),
                    Item::path(name("bad-path.bin"), src.join("bad.bin")),
                    Item::bytes(name("b.txt"), b"second good file".to_vec()),
                ]
            };

            let mut reports = Vec::new();
            ws.ingest(&s)
                .parallelism(3)
                .run(items(), |r| reports.push(r.clone()))
                .unwrap();
            let store_error = Some(Reason::StoreError);
            let want = expect(&[
                ("a.txt", Outcome::Ingested, None),
                ("bad-bytes.bin", Outcome::Failed, store_error),
                ("good-path.txt", Outcome::Ingested, None),
                ("bad-path.bin", Outcome::Failed, store_error),
                ("b.txt", Outcome::Ingested, None),
            ]);
            assert_lines(&format!("{fault:?}"), &outcomes(&reports), &want);
            assert_eq!(injected.load(Ordering::SeqCst), 2, "{fault:?}");
            let msg = reports[1].message.as_deref().unwrap();
            assert!(msg.contains("No space left on device"), "{fault:?}: {msg}");
            for n in ["bad-bytes.bin", "bad-path.bin"] {
                assert_eq!(ws.current(n).unwrap(), None, "{fault:?}");
                assert!(
                    matches!(ws.history(n), Err(Error::NameNotFound(_))),
                    "{fault:?}"
                );
            }
            let good: [(&str, &[u8]); 3] = [
                ("a.txt", b"first good file"),
                ("b.txt", b"second good file"),
                ("good-path.txt", b"a good file on disk"),
            ];
            assert_eq!(contents(&ws), contents_of(&good), "{fault:?}");
            assert_eq!(
                blob_files(&ws_dir),
                hex_set(good.iter().map(|(_, c)| *c)),
                "{fault:?}"
            );
            assert_eq!(tmp_files(&ws_dir), Vec::<PathBuf>::new(), "{fault:?}");
            assert_eq!(ws.verify().unwrap().defects, vec![], "{fault:?}");
            let good_bytes: u64 = good.iter().map(|(_, c)| c.len() as u64).sum();
            assert_eq!(
                ws.session(s.session_id).unwrap().ingestion,
                status(3, 0, 0, 0, 2, good_bytes),
                "{fault:?}"
            );

            // The disk has room again: the same run recovers.
            armed.store(false, Ordering::SeqCst);
            let (reports, _) = run(&ws, &s, items());
            let again = expect(&[
                ("a.txt", Outcome::Unchanged, None),
                ("bad-bytes.bin", Outcome::Ingested, None),
                ("good-path.txt", Outcome::Unchanged, None),
                ("bad-path.bin", Outcome::Ingested, None),
                ("b.txt", Outcome::Unchanged, None),
            ]);
            assert_lines(
                &format!("{fault:?}, recovered"),
                &outcomes(&reports),
                &again,
            );
            let mut all = contents_of(&good);
            all.insert("bad-bytes.bin".into(), bad_bytes.clone());
            all.insert("bad-path.bin".into(), bad_file.clone());
            assert_eq!(contents(&ws), all, "{fault:?}");
            assert_eq!(ws.verify().unwrap().defects, vec![], "{fault:?}");
            assert_eq!(
                ws.session(s.session_id).unwrap().ingestion,
                status(5, 0, 3, 0, 2, 2 * good_bytes + 2 * MARKER_SIZE),
                "{fault:?}"
            );
            let mut files = want.clone();
            files.extend(again);
            assert_lines(
                "session files",
                &session_files(&ws, s.session_id),
                &listed(&files),
            );
            assert_eq!(injected.load(Ordering::SeqCst), 2, "{fault:?}");
        }
    }

    #[test]
    fn enospc_on_blob_sync_fails_only_the_files_stored_externally() {
        let dir = tempfile::tempdir().unwrap();
        let ws_dir = dir.path().join("ws");
        let clock = ManualClock::new(t0());
        let armed = Arc::new(AtomicBool::new(true));
        let injected = Arc::new(AtomicU64::new(0));
        let blobs = HookedBlobs::open(
            &ws_dir,
            Arc::new(BlobFaults {
                fault: BlobFault::Sync,
                armed: Arc::clone(&armed),
                injected: Arc::clone(&injected),
            }),
        );
        // Up to 16 bytes inline: those files never need the blob store.
        let ws = WorkspaceBuilder::new(&ws_dir)
            .clock(Arc::new(clock.clone()))
            .inline_threshold(16)
            .blob_store(Arc::new(blobs))
            .create()
            .unwrap();
        let s = session(&ws, WriteMode::Keep, Lifetime::Forever);
        let src = dir.path().join("big2.bin");
        let big1 = vec![b'1'; 100];
        let big2 = vec![b'2'; 200];
        fs::write(&src, &big2).unwrap();
        let items = || {
            vec![
                Item::bytes(name("tiny1"), b"small one".to_vec()),
                Item::bytes(name("big1"), big1.clone()),
                Item::bytes(name("tiny2"), b"small two".to_vec()),
                Item::path(name("big2"), &src),
            ]
        };
        let (reports, _) = run(&ws, &s, items());
        let store_error = Some(Reason::StoreError);
        assert_eq!(
            outcomes(&reports),
            expect(&[
                ("tiny1", Outcome::Ingested, None),
                ("big1", Outcome::Failed, store_error),
                ("tiny2", Outcome::Ingested, None),
                ("big2", Outcome::Failed, store_error),
            ])
        );
        assert!(injected.load(Ordering::SeqCst) >= 1);
        assert_eq!(ws.current("big1").unwrap(), None);
        assert_eq!(ws.current("big2").unwrap(), None);
        assert_eq!(
            contents(&ws),
            contents_of(&[("tiny1", b"small one"), ("tiny2", b"small two")])
        );
        assert_eq!(ws.verify().unwrap().defects, vec![]);
        assert_eq!(
            ws.session(s.session_id).unwrap().ingestion,
            status(2, 0, 0, 0, 2, 18)
        );

        armed.store(false, Ordering::SeqCst);
        let (reports, _) = run(&ws, &s, items());
        assert_eq!(
            outcomes(&reports),
            expect(&[
                ("tiny1", Outcome::Unchanged, None),
                ("big1", Outcome::Ingested, None),
                ("tiny2", Outcome::Unchanged, None),
                ("big2", Outcome::Ingested, None),
            ])
        );
        assert_eq!(
            contents(&ws),
            contents_of(&[
                ("big1", &big1),
                ("big2", &big2),
                ("tiny1", b"small one"),
                ("tiny2", b"small two"),
            ])
        );
        assert_eq!(ws.verify().unwrap().defects, vec![]);
        assert_eq!(
            ws.session(s.session_id).unwrap().ingestion,
            status(4, 0, 2, 0, 2, 18 + 18 + 300)
        );
    }

    /// The SQLite index's faults: failing the commit of any transaction that
    /// writes a version of a name in `fail_names` or with a content in
    /// `fail_hashes`.
    #[derive(Default)]
    struct CommitFaults {
        fail_names: Mutex<HashSet<String>>,
        fail_hashes: Mutex<HashSet<Hash>>,
        injected: AtomicU64,
    }

    type FaultyIndex = HookedIndex<CommitFaults>;

    impl IndexHooks for CommitFaults {
        /// Whether the transaction is doomed to fail its commit.
        type Txn = bool;

        fn write_version(
            &self,
            doomed: &mut bool,
            entry: &Entry,
            run: impl FnOnce() -> Result<(), StoreError>,
        ) -> Result<(), StoreError> {
            if self.fail_names.lock().unwrap().contains(&entry.name)
                || self.fail_hashes.lock().unwrap().contains(&entry.hash)
            {
                *doomed = true;
            }
            run()
        }
        fn commit(
            &self,
            doomed: bool,
            run: impl FnOnce() -> Result<(), StoreError>,
        ) -> Result<(), StoreError> {
            if doomed {
                self.injected.fetch_add(1, Ordering::SeqCst);
                // Dropping the inner transaction rolls it back.
                return Err(StoreError::io("committing", enospc()));
            }
            run()
        }
    }

    fn failing_index_commit_fails_only_the_affected_files(threshold: u64) {
        let dir = tempfile::tempdir().unwrap();
        let ws_dir = dir.path().join("ws");
        fs::create_dir(&ws_dir).unwrap();
        let index = Arc::new(FaultyIndex::open(&ws_dir, Arc::default()));
        *index.hooks.fail_names.lock().unwrap() = ["bad1.txt", "bad2.txt"].map(String::from).into();
        let clock = ManualClock::new(t0());
        let ws = WorkspaceBuilder::new(&ws_dir)
            .clock(Arc::new(clock.clone()))
            .inline_threshold(threshold)
            .index(Arc::clone(&index) as Arc<dyn Index>)
            .create()
            .unwrap();
        let s = session(&ws, WriteMode::Overwrite, Lifetime::Forever);
        let body = |n: &str| format!("contents of {n}, long enough to be external").into_bytes();
        let names = ["a.txt", "bad1.txt", "b.txt", "c.txt", "bad2.txt", "d.txt"];
        let items = || -> Vec<Item> {
            names
                .iter()
                .map(|n| Item::bytes(name(n), body(n)))
                .collect()
        };

        let mut reports = Vec::new();
        ws.ingest(&s)
            .parallelism(2)
            .run(items(), |r| reports.push(r.clone()))
            .unwrap();
        let store_error = Some(Reason::StoreError);
        let want = expect(&[
            ("a.txt", Outcome::Ingested, None),
            ("bad1.txt", Outcome::Failed, store_error),
            ("b.txt", Outcome::Ingested, None),
            ("c.txt", Outcome::Ingested, None),
            ("bad2.txt", Outcome::Failed, store_error),
            ("d.txt", Outcome::Ingested, None),
        ]);
        assert_lines("with a failing commit", &outcomes(&reports), &want);
        assert!(index.hooks.injected.load(Ordering::SeqCst) >= 2);
        for n in ["bad1.txt", "bad2.txt"] {
            assert_eq!(ws.current(n).unwrap(), None);
            assert!(matches!(ws.history(n), Err(Error::NameNotFound(_))));
        }
        let good = ["a.txt", "b.txt", "c.txt", "d.txt"];
        let good_contents: BTreeMap<String, Vec<u8>> =
            good.iter().map(|n| (n.to_string(), body(n))).collect();
        assert_eq!(contents(&ws), good_contents);
        assert_eq!(ws.verify().unwrap().defects, vec![]);
        let len = |ns: &[&str]| -> u64 { ns.iter().map(|n| body(n).len() as u64).sum() };
        let good_bytes = len(&good);
        assert_eq!(
            ws.session(s.session_id).unwrap().ingestion,
            status(4, 0, 0, 0, 2, good_bytes)
        );
        assert_lines("session files", &session_files(&ws, s.session_id), &want);

        // The index works again: the same run recovers.
        index.hooks.fail_names.lock().unwrap().clear();
        let (reports, _) = run(&ws, &s, items());
        let again = expect(&[
            ("a.txt", Outcome::Unchanged, None),
            ("bad1.txt", Outcome::Ingested, None),
            ("b.txt", Outcome::Unchanged, None),
            ("c.txt", Outcome::Unchanged, None),
            ("bad2.txt", Outcome::Ingested, None),
            ("d.txt", Outcome::Unchanged, None),
        ]);
        assert_lines("recovered", &outcomes(&reports), &again);
        let all: BTreeMap<String, Vec<u8>> =
            names.iter().map(|n| (n.to_string(), body(n))).collect();
        assert_eq!(contents(&ws), all);
        assert_eq!(ws.verify().unwrap().defects, vec![]);
        assert_eq!(
            ws.session(s.session_id).unwrap().ingestion,
            status(
                6,
                0,
                4,
                0,
                2,
                2 * good_bytes + len(&["bad1.txt", "bad2.txt"])
            )
        );
        if threshold == 0 {
            assert_eq!(blob_files(&ws_dir), hex_set(all.values().map(|c| &c[..])));
        }
    }

    #[test]
    fn failing_index_commit_fails_only_the_affected_inline_files() {
        failing_index_commit_fails_only_the_affected_files(DEFAULT_INLINE_THRESHOLD);
    }

    #[test]
    fn failing_index_commit_fails_only_the_affected_external_files() {
        failing_index_commit_fails_only_the_affected_files(0);
    }

    /// A file the quick check vouched for, whose name another file of the same
    /// run changed, is written again; if that write fails, the file failed: it
    /// is not `unchanged`, since the name no longer holds its content.
    #[test]
    fn quick_checked_file_whose_write_fails_is_not_reported_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let ws_dir = dir.path().join("ws");
        let index = Arc::new(FaultyIndex::open(&ws_dir, Arc::default()));
        let clock = ManualClock::new(t0());
        let ws = WorkspaceBuilder::new(&ws_dir)
            .clock(Arc::new(clock.clone()))
            .index(Arc::clone(&index) as Arc<dyn Index>)
            .create()
            .unwrap();
        let s = session(&ws, WriteMode::Overwrite, Lifetime::Forever);
        let src = dir.path().join("doc.txt");
        fs::write(&src, b"from the file").unwrap();
        let (r, _) = run(&ws, &s, vec![Item::path(name("doc.txt"), &src)]);
        assert_eq!(
            outcomes(&r),
            expect(&[("doc.txt", Outcome::Ingested, None)])
        );

        // Any transaction writing the file's content back fails to commit.
        index
            .hooks
            .fail_hashes
            .lock()
            .unwrap()
            .insert(Hash::of(b"from the file"));
        let (r, _) = run(
            &ws,
            &s,
            vec![
                Item::bytes(name("doc.txt"), b"from memory".to_vec()),
                Item::path(name("doc.txt"), &src),
            ],
        );
        assert_eq!(
            outcomes(&r),
            expect(&[
                ("doc.txt", Outcome::Overwritten, None),
                ("doc.txt", Outcome::Failed, Some(Reason::StoreError)),
            ])
        );
        assert!(index.hooks.injected.load(Ordering::SeqCst) >= 1);
        assert_eq!(contents(&ws), contents_of(&[("doc.txt", b"from memory")]));
        assert_eq!(ws.history("doc.txt").unwrap().len(), 2);
        assert_eq!(ws.verify().unwrap().defects, vec![]);
        assert_eq!(
            ws.session(s.session_id).unwrap().ingestion,
            status(1, 1, 0, 0, 1, 13 + 11)
        );

        index.hooks.fail_hashes.lock().unwrap().clear();
        let (r, _) = run(&ws, &s, vec![Item::path(name("doc.txt"), &src)]);
        assert_eq!(
            outcomes(&r),
            expect(&[("doc.txt", Outcome::Overwritten, None)])
        );
        assert_eq!(contents(&ws), contents_of(&[("doc.txt", b"from the file")]));
    }
}
