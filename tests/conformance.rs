//! The backend conformance suite: one set of tests that every pair of
//! storage backends (an [`Index`] and a [`BlobStore`]) must pass, through
//! the library's public API only.
//!
//! - the write-mode table, deletions, restores and session reverts against
//!   a sequential model (proptest), at parallelism 1 and 4;
//! - FAIL, OVERWRITE and KEEP sessions racing over the same names from
//!   independent handles, each with connections of its own;
//! - a session expiring in the middle of a run;
//! - `verify` and `gc`;
//! - a lost race (`Conflict`) injected at every step of a batch: every
//!   outcome and the final workspace equal the serial run's;
//! - the store out of reach (`Unavailable`): retried, then a clean
//!   `store_error`, then recovery.
//!
//! A backend is a type implementing [`Backend`]; adding one to the suite is
//! one `conformance!` line at the bottom of this file.

// A test that hits an unexpected error should panic where it happened.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration as StdDuration;

use common::seams::{HookedIndex, IndexHooks};
use common::user;
use common::ws::{MoveClockAfter, names};
use intake::chrono::{DateTime, Duration, Utc};
use intake::store::{
    BlobStore, Entry, FsBlobStore, Index, SqliteIndex, SqliteOptions, StoreError, StoreErrorKind,
    Writes,
};
use intake::{
    CreateSession, FileReport, Hash, Item, Lifetime, ManualClock, Meta, Name, Outcome, Reason,
    Session, Workspace, WorkspaceBuilder, WriteMode, workspace::RetryPolicy,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// A pair of storage backends under test.
trait Backend: Sized {
    /// A fresh, empty store, or `None` (with the reason printed) when what
    /// it needs (a server) is not there.
    fn fresh() -> Option<Self>;
    /// An independent handle on the store: its own connections, as another
    /// process (or machine) would have.
    fn handle(&self) -> (Arc<dyn Index>, Arc<dyn BlobStore>);
}

/// The embedded default: SQLite in a folder, blobs as files beside it.
struct SqliteLocal {
    dir: tempfile::TempDir,
}

impl Backend for SqliteLocal {
    fn fresh() -> Option<SqliteLocal> {
        Some(SqliteLocal {
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn handle(&self) -> (Arc<dyn Index>, Arc<dyn BlobStore>) {
        let opts = SqliteOptions {
            create: true,
            ..SqliteOptions::default()
        };
        let index = SqliteIndex::open(&self.dir.path().join("intake.db"), &opts).unwrap();
        let blobs = FsBlobStore::open(self.dir.path().join("blobs")).unwrap();
        (Arc::new(index), Arc::new(blobs))
    }
}

/// PostgreSQL as the index, shared by every handle, with the blobs in an
/// S3-compatible store (`S3: true`) or in a local folder. Each store is a
/// schema of its own (and a prefix of its own in the bucket). Needs
/// `INTAKE_TEST_PG` (and `INTAKE_TEST_S3`), which `.ci/run` sets.
#[cfg(feature = "s3")]
struct Postgres<const S3: bool> {
    url: String,
    blobs: String,
    _dir: Option<tempfile::TempDir>,
}

#[cfg(feature = "s3")]
impl<const S3: bool> Backend for Postgres<S3> {
    fn fresh() -> Option<Self> {
        let (pg, s3) = common::servers::addresses(S3)?;
        let schema = common::servers::fresh_schema();
        let (blobs, dir) = match s3 {
            Some(bucket) => (format!("{bucket}/{schema}"), None),
            None => {
                let d = tempfile::tempdir().unwrap();
                (d.path().join("blobs").display().to_string(), Some(d))
            }
        };
        Some(Postgres {
            url: format!("{pg}?schema={schema}&pool_max=4"),
            blobs,
            _dir: dir,
        })
    }

    fn handle(&self) -> (Arc<dyn Index>, Arc<dyn BlobStore>) {
        use intake::store::{PgAddress, PgIndex, S3BlobStore};
        let addr = PgAddress::parse(&self.url).unwrap();
        let index = PgIndex::open(addr, true, Some(&self.blobs)).unwrap();
        let blobs: Arc<dyn BlobStore> = if S3 {
            Arc::new(S3BlobStore::open(&self.blobs, Arc::clone(index.pool())).unwrap())
        } else {
            Arc::new(FsBlobStore::open(&self.blobs).unwrap())
        };
        (Arc::new(index), blobs)
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn t0() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

/// Retries short enough for tests.
fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        unavailable_retries: 2,
        first_pause: StdDuration::from_millis(1),
        conflict_budget: StdDuration::from_secs(60),
    }
}

/// A workspace on a new handle of `b`, its index wrapped by `wrap`.
fn workspace<B: Backend>(
    b: &B,
    clock: &ManualClock,
    threshold: u64,
    wrap: impl FnOnce(Arc<dyn Index>) -> Arc<dyn Index>,
) -> Workspace {
    let (index, blobs) = b.handle();
    WorkspaceBuilder::from_backends("conformance", wrap(index), blobs)
        .clock(Arc::new(clock.clone()))
        .inline_threshold(threshold)
        .gc_grace(StdDuration::ZERO)
        .retry(quick_retry())
        .create()
        .unwrap()
}

fn plain<B: Backend>(b: &B, clock: &ManualClock, threshold: u64) -> Workspace {
    workspace(b, clock, threshold, |i| i)
}

fn session(ws: &Workspace, mode: WriteMode, life: Lifetime) -> Session {
    ws.create_session(&CreateSession::new(mode).lifetime(life), user())
        .unwrap()
}

fn run_items(ws: &Workspace, s: &Session, items: Vec<Item>, parallelism: usize) -> Vec<FileReport> {
    let mut reports = Vec::new();
    ws.ingest(s)
        .parallelism(parallelism)
        .batch(3, 1 << 20)
        .run(items, |r| reports.push(r.clone()))
        .unwrap();
    reports
}

type Got = Vec<(String, Outcome, Option<Reason>)>;

fn outcomes(reports: &[FileReport]) -> Got {
    reports
        .iter()
        .map(|r| (r.name.clone(), r.outcome, r.reason))
        .collect()
}

fn read_all(ws: &Workspace, name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    ws.read(name).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Every name with its history, newest first: (version, hash, meta).
type Versions = BTreeMap<String, Vec<(u64, Hash, Option<String>)>>;

fn versions(ws: &Workspace) -> Versions {
    names(ws)
        .into_iter()
        .map(|n| {
            let h = ws.history(&n).unwrap();
            let v = h.into_iter().map(|e| (e.version, e.hash, e.meta)).collect();
            (n, v)
        })
        .collect()
}

/// Each session's counters: (ingested, overwritten, unchanged, kept,
/// failed, bytes).
fn counters(ws: &Workspace, ids: &[Session]) -> Vec<[u64; 6]> {
    ids.iter()
        .map(|s| {
            let i = ws.session(s.session_id).unwrap().ingestion;
            [
                i.ingested,
                i.overwritten,
                i.unchanged,
                i.kept,
                i.failed_files,
                i.bytes,
            ]
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 1. The write-mode table against a sequential model
// ---------------------------------------------------------------------------

const NAMES: [&str; 3] = ["a", "b", "dir/c"];
const METAS: [Option<&str>; 2] = [None, Some(r#"{"k":1}"#)];

/// Contents of 0, 1, 40 and 100 bytes: each threshold below sends some
/// inline and some to the blob store.
fn content(i: usize) -> Vec<u8> {
    match i {
        0 => Vec::new(),
        1 => b"x".to_vec(),
        2 => vec![b'm'; 40],
        _ => vec![b'L'; 100],
    }
}

fn meta(i: usize) -> Option<Meta> {
    METAS[i].map(|m| Meta::parse(m.as_bytes()).unwrap().unwrap())
}

/// An ingest run's items: (name, content, metadata, read from a file
/// rather than given as bytes).
type RunItems = Vec<(usize, usize, usize, bool)>;

/// One step of a case, each in a session of its own.
#[derive(Debug, Clone)]
enum Op {
    /// An ingest run in this mode.
    Ingest(WriteMode, RunItems),
    /// `files rm` of these names.
    Delete(Vec<usize>),
    /// `files restore` of a name's version.
    Restore(usize, u64),
    /// `session revert` of the session of an earlier step (its index,
    /// modulo the steps before), forced or not.
    Revert(usize, bool),
}

#[derive(Debug, Clone)]
struct ModelCase {
    threshold: u64,
    ops: Vec<Op>,
}

fn model_case() -> impl Strategy<Value = ModelCase> {
    let mode = prop_oneof![
        Just(WriteMode::Keep),
        Just(WriteMode::Overwrite),
        Just(WriteMode::Fail)
    ];
    let item = (0..NAMES.len(), 0..4usize, 0..METAS.len(), any::<bool>());
    let op = prop_oneof![
        4 => (mode, prop::collection::vec(item, 0..8)).prop_map(|(m, i)| Op::Ingest(m, i)),
        1 => prop::collection::vec(0..NAMES.len(), 1..4).prop_map(Op::Delete),
        1 => (0..NAMES.len(), 1..5u64).prop_map(|(n, v)| Op::Restore(n, v)),
        1 => (0..8usize, any::<bool>()).prop_map(|(k, f)| Op::Revert(k, f)),
    ];
    (
        prop_oneof![Just(0u64), Just(16), Just(64 * 1024)],
        prop::collection::vec(op, 1..7),
    )
        .prop_map(|(threshold, ops)| ModelCase { threshold, ops })
}

/// One version in the model: (version, hash, meta, deleted, the step
/// whose session wrote it).
type ModelVersion = (u64, Hash, Option<String>, bool, usize);
/// Every name with its history, newest first.
type ModelVersions = BTreeMap<String, Vec<ModelVersion>>;
/// Each session's counters: ingested, overwritten, unchanged, kept,
/// deleted, failed, bytes.
type Counters = [u64; 7];

/// What a change asks of a name in the model: a target (`None`: absent),
/// and the version the name must still be at.
struct ModelWant {
    target: Option<(Hash, Option<String>)>,
    expect: Option<u64>,
    /// A plain delete: an absent name fails `not_found`.
    delete: bool,
}

/// Applies one change to a name's history; the outcome.
fn model_change(
    history: &mut Vec<ModelVersion>,
    want: &ModelWant,
    step: usize,
) -> (Outcome, Option<Reason>) {
    let now = history.first().cloned();
    let live = now.clone().filter(|v| !v.3);
    if want.expect.is_some() && now.as_ref().map(|v| v.0) != want.expect {
        return (Outcome::Failed, Some(Reason::Conflict));
    }
    let version = now.as_ref().map_or(1, |v| v.0 + 1);
    match (&want.target, live) {
        (None, None) if want.delete => (Outcome::Failed, Some(Reason::NotFound)),
        (None, None) => (Outcome::Unchanged, None),
        (None, Some(l)) => {
            history.insert(0, (version, l.1, l.2, true, step));
            (Outcome::Deleted, None)
        }
        (Some((h, m)), Some(l)) if l.1 == *h && l.2 == *m => (Outcome::Unchanged, None),
        (Some((h, m)), l) => {
            history.insert(0, (version, *h, m.clone(), false, step));
            if l.is_some() {
                (Outcome::Overwritten, None)
            } else {
                (Outcome::Ingested, None)
            }
        }
    }
}

fn count(c: &mut Counters, outcome: Outcome, bytes: u64) {
    let slot = match outcome {
        Outcome::Ingested => 0,
        Outcome::Overwritten => 1,
        Outcome::Unchanged => 2,
        Outcome::Kept => 3,
        Outcome::Deleted => 4,
        _ => 5,
    };
    c[slot] += 1;
    if slot < 4 {
        c[6] += bytes;
    }
}

/// What the case should give: each step's outcomes, then every name's
/// history and every session's counters. The tables are spelled out here,
/// not taken from the engine.
fn model(case: &ModelCase) -> (Vec<Got>, ModelVersions, Vec<Counters>) {
    let mut names: ModelVersions = BTreeMap::new();
    let mut steps: Vec<Got> = Vec::new();
    let mut counts = Vec::new();
    for (i, op) in case.ops.iter().enumerate() {
        let mut got = Vec::new();
        let mut c = [0u64; 7];
        match op {
            Op::Ingest(mode, items) => {
                for &(n, ci, mi, _) in items {
                    let data = content(ci);
                    let (hash, m) = (Hash::of(&data), meta(mi).map(|m| m.as_str().to_owned()));
                    let history = names.entry(NAMES[n].to_owned()).or_default();
                    let live = history.first().filter(|v| !v.3);
                    let (outcome, reason) = match live {
                        None => (Outcome::Ingested, None),
                        Some(v) if v.1 == hash && v.2 == m => (Outcome::Unchanged, None),
                        Some(_) => match mode {
                            WriteMode::Keep => (Outcome::Kept, None),
                            WriteMode::Overwrite => (Outcome::Overwritten, None),
                            WriteMode::Fail => (Outcome::Failed, Some(Reason::Conflict)),
                        },
                    };
                    if matches!(outcome, Outcome::Ingested | Outcome::Overwritten) {
                        let version = history.first().map_or(1, |v| v.0 + 1);
                        history.insert(0, (version, hash, m, false, i));
                    }
                    count(&mut c, outcome, data.len() as u64);
                    got.push((NAMES[n].to_owned(), outcome, reason));
                }
            }
            Op::Delete(ns) => {
                for &n in ns {
                    let history = names.entry(NAMES[n].to_owned()).or_default();
                    let want = ModelWant {
                        target: None,
                        expect: None,
                        delete: true,
                    };
                    let (outcome, reason) = model_change(history, &want, i);
                    count(&mut c, outcome, 0);
                    got.push((NAMES[n].to_owned(), outcome, reason));
                }
            }
            Op::Restore(n, v) => {
                let history = names.entry(NAMES[*n].to_owned()).or_default();
                if let Some(t) = history.iter().find(|x| x.0 == *v).cloned() {
                    let want = ModelWant {
                        target: (!t.3).then(|| (t.1, t.2.clone())),
                        expect: None,
                        delete: false,
                    };
                    let (outcome, reason) = model_change(history, &want, i);
                    let bytes = history
                        .first()
                        .filter(|x| !x.3)
                        .map_or(0, |x| size_of(&x.1));
                    count(&mut c, outcome, bytes);
                    got.push((NAMES[*n].to_owned(), outcome, reason));
                }
            }
            Op::Revert(k, force) if i > 0 => {
                let k = k % i;
                // The names step k changed, in the order it changed them.
                let mut changed: Vec<String> = Vec::new();
                for (name, outcome, _) in &steps[k] {
                    if matches!(
                        outcome,
                        Outcome::Ingested | Outcome::Overwritten | Outcome::Deleted
                    ) && !changed.contains(name)
                    {
                        changed.push(name.clone());
                    }
                }
                for name in changed {
                    let history = names.entry(name.clone()).or_default();
                    let mine: Vec<u64> = history.iter().filter(|v| v.4 == k).map(|v| v.0).collect();
                    let (Some(&last), Some(&first)) = (mine.iter().max(), mine.iter().min()) else {
                        continue;
                    };
                    let target = history
                        .iter()
                        .find(|v| v.0 == first - 1)
                        .filter(|v| !v.3)
                        .map(|v| (v.1, v.2.clone()));
                    let want = ModelWant {
                        target,
                        expect: (!force).then_some(last),
                        delete: false,
                    };
                    let (outcome, reason) = model_change(history, &want, i);
                    let bytes = match outcome {
                        Outcome::Ingested | Outcome::Overwritten | Outcome::Unchanged => history
                            .first()
                            .filter(|x| !x.3)
                            .map_or(0, |x| size_of(&x.1)),
                        _ => 0,
                    };
                    count(&mut c, outcome, bytes);
                    got.push((name, outcome, reason));
                }
            }
            Op::Revert(..) => {}
        }
        names.retain(|_, v| !v.is_empty());
        steps.push(got);
        counts.push(c);
    }
    (steps, names, counts)
}

/// The size of the model's content with this hash.
fn size_of(h: &Hash) -> u64 {
    (0..4)
        .map(content)
        .find(|c| Hash::of(c) == *h)
        .map_or(0, |c| c.len() as u64)
}

/// Every name of `NAMES` with its whole history (deletions included),
/// each version's session given as the step that made it.
fn model_versions(ws: &Workspace, step_of: &BTreeMap<uuid::Uuid, usize>) -> ModelVersions {
    NAMES
        .iter()
        .filter_map(|n| {
            let h = ws.history(n).ok()?;
            let v = h
                .into_iter()
                .map(|e| (e.version, e.hash, e.meta, e.deleted, step_of[&e.session_id]))
                .collect();
            Some(((*n).to_owned(), v))
        })
        .collect()
}

/// Plays `case` on a fresh store of `B`. A file item comes from a pool
/// where each (name, content) has a path of its own, so that the quick
/// check (the index's source records) takes part.
fn play<B: Backend>(
    case: &ModelCase,
    parallelism: usize,
) -> (Vec<Got>, ModelVersions, Vec<Counters>) {
    let b = B::fresh().unwrap();
    let pool = tempfile::tempdir().unwrap();
    let path = |n: usize, c: usize| pool.path().join(format!("n{n}_c{c}"));
    for n in 0..NAMES.len() {
        for c in 0..4 {
            std::fs::write(path(n, c), content(c)).unwrap();
        }
    }
    let clock = ManualClock::new(t0());
    let ws = plain(&b, &clock, case.threshold);
    let mut steps = Vec::new();
    let mut sessions: Vec<uuid::Uuid> = Vec::new();
    for (i, op) in case.ops.iter().enumerate() {
        // Each step a microsecond after the last: the history's times
        // tell the steps apart.
        clock.advance(Duration::microseconds(1));
        let (id, reports) = match op {
            Op::Ingest(mode, items) => {
                let s = session(&ws, *mode, Lifetime::Forever);
                let items = items
                    .iter()
                    .map(|&(n, c, m, from_path)| {
                        let name = Name::new(NAMES[n]).unwrap();
                        let item = if from_path {
                            Item::path(name, path(n, c))
                        } else {
                            Item::bytes(name, content(c))
                        };
                        item.with_meta(meta(m))
                    })
                    .collect();
                (s.session_id, run_items(&ws, &s, items, parallelism))
            }
            Op::Delete(ns) => {
                let s = session(&ws, WriteMode::Keep, Lifetime::Forever);
                let names: Vec<&str> = ns.iter().map(|&n| NAMES[n]).collect();
                (s.session_id, ws.delete(&s, &names).unwrap())
            }
            Op::Restore(n, v) => {
                let s = session(&ws, WriteMode::Keep, Lifetime::Forever);
                let r = match ws.restore(&s, NAMES[*n], *v) {
                    Ok(r) => vec![r],
                    Err(intake::Error::VersionNotFound { .. } | intake::Error::NameNotFound(_)) => {
                        vec![]
                    }
                    Err(e) => panic!("restore: {e}"),
                };
                (s.session_id, r)
            }
            Op::Revert(k, force) if i > 0 => {
                let opts = intake::workspace::RevertOptions {
                    force: *force,
                    dry_run: false,
                };
                let done = ws.revert_session(sessions[k % i], opts, user()).unwrap();
                let rec = ws.session(done.session.session_id).unwrap();
                assert_eq!(rec.reverts, Some(sessions[k % i]));
                (done.session.session_id, done.files)
            }
            Op::Revert(..) => {
                let s = session(&ws, WriteMode::Keep, Lifetime::Forever);
                (s.session_id, vec![])
            }
        };
        if ws.session(id).unwrap().closed_at.is_none() {
            ws.close_session(id).unwrap();
        }
        steps.push(outcomes(&reports));
        sessions.push(id);
    }
    let report = ws.verify().unwrap();
    assert!(report.is_sound(), "{report:?}");
    let step_of: BTreeMap<uuid::Uuid, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    let counters = sessions
        .iter()
        .map(|id| {
            let i = ws.session(*id).unwrap().ingestion;
            [
                i.ingested,
                i.overwritten,
                i.unchanged,
                i.kept,
                i.deleted,
                i.failed_files,
                i.bytes,
            ]
        })
        .collect();
    // A deleted name is not listed.
    let mut listed = Vec::new();
    ws.list(None, |e| {
        listed.push(e.name);
        true
    })
    .unwrap();
    let versions = model_versions(&ws, &step_of);
    let live: Vec<String> = versions
        .iter()
        .filter(|(_, h)| h.first().is_some_and(|v| !v.3))
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(listed, live, "list shows exactly the names not deleted");
    (steps, versions, counters)
}

fn model_matches<B: Backend>(parallelism: usize) {
    if B::fresh().is_none() {
        return;
    }
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(96);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    runner
        .run(&model_case(), |case| {
            let want = model(&case);
            let got = play::<B>(&case, parallelism);
            prop_assert_eq!(&got.0, &want.0, "outcomes");
            prop_assert_eq!(&got.1, &want.1, "versions");
            prop_assert_eq!(&got.2, &want.2, "session counters");
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// 2. Races between independent handles
// ---------------------------------------------------------------------------

/// `HANDLES` handles, each with its own connections and session in `mode`,
/// ingest the same `N` new names at once, each with content of its own.
fn race<B: Backend>(mode: WriteMode) {
    const HANDLES: usize = 3;
    const N: usize = 60;
    let Some(b) = B::fresh() else { return };
    let clock = ManualClock::new(t0());
    let body = |h: usize, i: usize| format!("handle {h} file {i}").into_bytes();
    let barrier = Barrier::new(HANDLES);
    let reports: Vec<Vec<FileReport>> = std::thread::scope(|sc| {
        let threads: Vec<_> = (0..HANDLES)
            .map(|h| {
                let ws = plain(&b, &clock, 16);
                let (barrier, body) = (&barrier, &body);
                sc.spawn(move || {
                    let s = session(&ws, mode, Lifetime::Forever);
                    // Each handle in its own order, so batches interleave.
                    let mut order: Vec<usize> = (0..N).collect();
                    if h % 2 == 1 {
                        order.reverse();
                    }
                    let items: Vec<Item> = order
                        .into_iter()
                        .map(|i| Item::bytes(Name::new(&format!("f{i:02}")).unwrap(), body(h, i)))
                        .collect();
                    barrier.wait();
                    let mut out = Vec::new();
                    ws.ingest(&s)
                        .parallelism(2)
                        .batch(4, 1 << 20)
                        .run(items, |r| out.push(r.clone()))
                        .unwrap();
                    out
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let ws = plain(&b, &clock, 16);
    for i in 0..N {
        let name = format!("f{i:02}");
        let of_name: Vec<(usize, &FileReport)> = reports
            .iter()
            .enumerate()
            .flat_map(|(h, rs)| rs.iter().filter(|r| r.name == name).map(move |r| (h, r)))
            .collect();
        assert_eq!(of_name.len(), HANDLES, "{name}: one report per handle");
        let ingested: Vec<usize> = of_name
            .iter()
            .filter(|(_, r)| r.outcome == Outcome::Ingested)
            .map(|(h, _)| *h)
            .collect();
        assert_eq!(
            ingested.len(),
            1,
            "{name}: ingested exactly once: {of_name:?}"
        );
        let others: Vec<(Outcome, Option<Reason>)> = of_name
            .iter()
            .filter(|(h, _)| *h != ingested[0])
            .map(|(_, r)| (r.outcome, r.reason))
            .collect();
        let want_other = match mode {
            WriteMode::Fail => (Outcome::Failed, Some(Reason::Conflict)),
            WriteMode::Keep => (Outcome::Kept, None),
            WriteMode::Overwrite => (Outcome::Overwritten, None),
        };
        assert_eq!(others, vec![want_other; HANDLES - 1], "{name}");
        let history = ws.history(&name).unwrap();
        match mode {
            WriteMode::Fail | WriteMode::Keep => {
                assert_eq!(history.len(), 1, "{name}");
                assert_eq!(read_all(&ws, &name), body(ingested[0], i), "{name}");
            }
            WriteMode::Overwrite => {
                // No update lost: one version per handle, numbered 1..=3,
                // each a different handle's content.
                let got: Vec<u64> = history.iter().map(|e| e.version).collect();
                assert_eq!(
                    got,
                    (1..=HANDLES as u64).rev().collect::<Vec<_>>(),
                    "{name}"
                );
                let mut hashes: Vec<Hash> = history.iter().map(|e| e.hash).collect();
                hashes.sort();
                let mut want: Vec<Hash> = (0..HANDLES).map(|h| Hash::of(&body(h, i))).collect();
                want.sort();
                assert_eq!(hashes, want, "{name}");
                assert_eq!(Hash::of(&read_all(&ws, &name)), history[0].hash, "{name}");
            }
        }
    }
    assert!(ws.verify().unwrap().is_sound());
}

// ---------------------------------------------------------------------------
// 3. Expiry in the middle of a run
// ---------------------------------------------------------------------------

fn expiry_mid_stream<B: Backend>() {
    let Some(b) = B::fresh() else { return };
    let clock = ManualClock::new(t0());
    let ws = plain(&b, &clock, 16);
    let s = session(&ws, WriteMode::Fail, Lifetime::Ttl(Duration::minutes(10)));
    let items = MoveClockAfter {
        inner: (0..30).map(|i| {
            Item::bytes(
                Name::new(&format!("f{i:02}")).unwrap(),
                vec![b'a' + i as u8; 20],
            )
        }),
        yielded: 0,
        after: 12,
        clock: clock.clone(),
        to: s.expires_at.unwrap(),
    };
    let mut reports = Vec::new();
    ws.ingest(&s)
        .parallelism(4)
        .batch(5, 1 << 20)
        .run(items, |r| reports.push(r.clone()))
        .unwrap();
    let want: Got = (0..30)
        .map(|i| {
            let (o, r) = if i < 12 {
                (Outcome::Ingested, None)
            } else {
                (Outcome::Refused, Some(Reason::SessionExpired))
            };
            (format!("f{i:02}"), o, r)
        })
        .collect();
    assert_eq!(outcomes(&reports), want);
    assert_eq!(versions(&ws).len(), 12);
    let c = counters(&ws, std::slice::from_ref(&s));
    assert_eq!(c, vec![[12, 0, 0, 0, 0, 12 * 20]]);
}

// ---------------------------------------------------------------------------
// 4. verify and gc
// ---------------------------------------------------------------------------

fn verify_and_gc<B: Backend>() {
    let Some(b) = B::fresh() else { return };
    let clock = ManualClock::new(t0());
    // Threshold 0: every blob in the blob store.
    let ws = plain(&b, &clock, 0);
    let item = |n: &str, c: &[u8]| Item::bytes(Name::new(n).unwrap(), c.to_vec());
    let s1 = session(&ws, WriteMode::Overwrite, Lifetime::Forever);
    run_items(&ws, &s1, vec![item("a", b"one"), item("b", b"two")], 1);
    clock.advance(Duration::hours(1));
    let s2 = session(&ws, WriteMode::Overwrite, Lifetime::Forever);
    let r = run_items(&ws, &s2, vec![item("a", b"three"), item("b", b"two")], 1);
    assert_eq!(
        outcomes(&r),
        vec![
            ("a".into(), Outcome::Overwritten, None),
            ("b".into(), Outcome::Unchanged, None)
        ]
    );
    let v = ws.verify().unwrap();
    assert!(v.is_sound(), "{v:?}");
    assert_eq!((v.blobs, v.bytes), (3, 3 + 3 + 5));

    // Kept for a day: nothing goes.
    let g = ws.gc(Duration::days(1)).unwrap();
    assert_eq!((g.versions, g.blobs), (0, 0));
    // Two days on by the workspace's clock: the replaced version goes. Its
    // blob's age is the blob store's own (real time), younger than the
    // retention: it stays until a later gc finds it old enough.
    clock.advance(Duration::days(2));
    let g = ws.gc(Duration::days(1)).unwrap();
    assert_eq!((g.versions, g.blobs, g.orphans), (1, 0, 0));
    assert!(ws.verify().unwrap().is_sound());
    let g = ws.gc(Duration::zero()).unwrap();
    assert_eq!((g.versions, g.blobs, g.orphans), (0, 0, 1));
    let v = ws.verify().unwrap();
    assert!(v.is_sound(), "{v:?}");
    assert_eq!(v.blobs, 2);
    assert_eq!(read_all(&ws, "a"), b"three");
    assert_eq!(read_all(&ws, "b"), b"two");
    assert_eq!(ws.history("a").unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// 5. Conflict and Unavailable injected into every step of a batch
// ---------------------------------------------------------------------------

/// A step of a batch's write transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Begin,
    Lock,
    Write,
    Commit,
}

const STEPS: [Step; 4] = [Step::Begin, Step::Lock, Step::Write, Step::Commit];

/// Fails the first `times` calls of `step` (counting only transactions
/// that write a version, so that recording a failure afterwards goes
/// through) with an error of `kind`; nothing is applied when it fires.
struct Inject {
    step: Step,
    kind: StoreErrorKind,
    left: AtomicU32,
    fired: AtomicU32,
}

impl Inject {
    fn new(step: Step, kind: StoreErrorKind, times: u32) -> Inject {
        Inject {
            step,
            kind,
            left: AtomicU32::new(times),
            fired: AtomicU32::new(0),
        }
    }

    fn fire(&self, step: Step, durable: bool) -> Result<(), StoreError> {
        if step != self.step || !durable {
            return Ok(());
        }
        let took = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if took.is_err() {
            return Ok(());
        }
        self.fired.fetch_add(1, Ordering::SeqCst);
        let what = format!("{step:?} (injected)");
        Err(match self.kind {
            StoreErrorKind::Conflict => StoreError::conflict(what, "could not serialize access"),
            _ => StoreError::unavailable(what, "connection reset by peer"),
        })
    }
}

impl IndexHooks for Inject {
    /// Whether the transaction was begun durable (it may write a version).
    type Txn = bool;

    fn begin(&self, durable: bool) -> Result<bool, StoreError> {
        self.fire(Step::Begin, durable)?;
        Ok(durable)
    }
    fn lock(
        &self,
        durable: &mut bool,
        _names: &[&str],
        run: impl FnOnce() -> Result<Vec<Option<Entry>>, StoreError>,
    ) -> Result<Vec<Option<Entry>>, StoreError> {
        self.fire(Step::Lock, *durable)?;
        run()
    }
    fn write(
        &self,
        durable: &mut bool,
        _writes: &Writes<'_>,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.fire(Step::Write, *durable)?;
        run()
    }
    fn commit(
        &self,
        durable: bool,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.fire(Step::Commit, durable)?;
        run()
    }
}

/// Two sessions' worth of files: new names, a name twice in one batch,
/// unchanged, overwritten and kept files, inline and external blobs.
fn mixed_runs() -> Vec<(WriteMode, Vec<Item>)> {
    let item = |n: &str, c: &str| Item::bytes(Name::new(n).unwrap(), c.as_bytes().to_vec());
    let long = |c: char| c.to_string().repeat(50);
    vec![
        (
            WriteMode::Overwrite,
            vec![
                item("a", "short a"),
                item("b", &long('b')),
                item("a", &long('A')),
                item("c", "c"),
                item("d", &long('d')),
                item("e", "e"),
                item("c", "c"),
            ],
        ),
        (
            WriteMode::Keep,
            vec![
                item("a", "other"),
                item("b", &long('b')),
                item("f", &long('f')),
                item("f", "second f"),
                item("g", "g"),
            ],
        ),
    ]
}

fn play_mixed<B: Backend>(
    b: &B,
    wrap: impl FnOnce(Arc<dyn Index>) -> Arc<dyn Index>,
) -> (Vec<Got>, Versions, Vec<[u64; 6]>) {
    let clock = ManualClock::new(t0());
    let ws = workspace(b, &clock, 16, wrap);
    let mut runs = Vec::new();
    let mut sessions = Vec::new();
    for (mode, items) in mixed_runs() {
        let s = session(&ws, mode, Lifetime::Forever);
        runs.push(outcomes(&run_items(&ws, &s, items, 2)));
        sessions.push(s);
    }
    (runs, versions(&ws), counters(&ws, &sessions))
}

/// A `Conflict` at any step of a batch, several times over: the batch is
/// redone against the new state, and the run equals the serial one, file
/// for file; no file fails because of it.
fn conflict_redoes_the_batch<B: Backend>() {
    let Some(serial_store) = B::fresh() else {
        return;
    };
    let want = play_mixed(&serial_store, |i| i);
    assert!(
        want.0
            .iter()
            .flatten()
            .all(|(_, o, _)| *o != Outcome::Failed)
    );
    for step in STEPS {
        let b = B::fresh().unwrap();
        let inject = Arc::new(Inject::new(step, StoreErrorKind::Conflict, 3));
        let hooks = Arc::clone(&inject);
        let got = play_mixed(&b, move |i| Arc::new(HookedIndex::wrap(i, hooks)));
        assert_eq!(inject.fired.load(Ordering::SeqCst), 3, "{step:?}: injected");
        assert_eq!(got.0, want.0, "{step:?}: outcomes");
        assert_eq!(got.1, want.1, "{step:?}: versions");
        assert_eq!(got.2, want.2, "{step:?}: session counters");
    }
}

/// The store out of reach: a short outage is retried away; a long one
/// fails the batch's files with a clean `store_error`, and once the store
/// is back the same files go in.
fn unavailable_fails_cleanly_then_recovers<B: Backend>() {
    let item = |n: &str| Item::bytes(Name::new(n).unwrap(), format!("{n} content").into_bytes());
    let names = ["p", "q", "r"];
    if B::fresh().is_none() {
        return;
    }
    for step in STEPS {
        // Short: two failures, within the two retries.
        let b = B::fresh().unwrap();
        let clock = ManualClock::new(t0());
        let inject = Arc::new(Inject::new(step, StoreErrorKind::Unavailable, 2));
        let hooks = Arc::clone(&inject);
        let ws = workspace(&b, &clock, 16, move |i| {
            Arc::new(HookedIndex::wrap(i, hooks))
        });
        let s = session(&ws, WriteMode::Fail, Lifetime::Forever);
        let r = run_items(&ws, &s, names.iter().map(|n| item(n)).collect(), 1);
        assert_eq!(inject.fired.load(Ordering::SeqCst), 2, "{step:?}");
        assert!(
            r.iter().all(|r| r.outcome == Outcome::Ingested),
            "{step:?}: {r:?}"
        );

        // Long: every attempt fails until the store is back.
        let b = B::fresh().unwrap();
        let inject = Arc::new(Inject::new(step, StoreErrorKind::Unavailable, u32::MAX));
        let hooks = Arc::clone(&inject);
        let ws = workspace(&b, &clock, 16, move |i| {
            Arc::new(HookedIndex::wrap(i, hooks))
        });
        let s = session(&ws, WriteMode::Fail, Lifetime::Forever);
        let r = run_items(&ws, &s, names.iter().map(|n| item(n)).collect(), 1);
        for r in &r {
            assert_eq!(
                (r.outcome, r.reason),
                (Outcome::Failed, Some(Reason::StoreError)),
                "{step:?}"
            );
            let msg = r.message.as_deref().unwrap_or_default();
            assert!(
                msg.contains("injected") && msg.contains("connection reset"),
                "{step:?}: {msg}"
            );
        }
        assert!(versions(&ws).is_empty(), "{step:?}: nothing written");
        inject.left.store(0, Ordering::SeqCst);
        let r = run_items(&ws, &s, names.iter().map(|n| item(n)).collect(), 1);
        assert!(
            r.iter().all(|r| r.outcome == Outcome::Ingested),
            "{step:?}: {r:?}"
        );
        for n in names {
            assert_eq!(read_all(&ws, n), format!("{n} content").into_bytes());
        }
        assert!(ws.verify().unwrap().is_sound());
    }
}

// ---------------------------------------------------------------------------
// The suite, per backend
// ---------------------------------------------------------------------------

/// The whole suite for one backend, as a module of tests.
macro_rules! conformance {
    ($module:ident: $backend:ty) => {
        mod $module {
            use super::*;

            #[test]
            fn write_modes_match_the_model_at_parallelism_1() {
                model_matches::<$backend>(1);
            }
            #[test]
            fn write_modes_match_the_model_at_parallelism_4() {
                model_matches::<$backend>(4);
            }
            #[test]
            fn fail_race_ingests_each_name_once() {
                race::<$backend>(WriteMode::Fail);
            }
            #[test]
            fn overwrite_race_loses_no_update() {
                race::<$backend>(WriteMode::Overwrite);
            }
            #[test]
            fn keep_race_keeps_the_first() {
                race::<$backend>(WriteMode::Keep);
            }
            #[test]
            fn session_expiring_mid_stream_refuses_the_rest() {
                expiry_mid_stream::<$backend>();
            }
            #[test]
            fn verify_and_gc() {
                super::verify_and_gc::<$backend>();
            }
            #[test]
            fn conflict_at_every_step_redoes_the_batch() {
                conflict_redoes_the_batch::<$backend>();
            }
            #[test]
            fn unavailable_fails_cleanly_then_recovers() {
                super::unavailable_fails_cleanly_then_recovers::<$backend>();
            }
        }
    };
}

conformance!(sqlite_local: SqliteLocal);
#[cfg(feature = "s3")]
conformance!(postgres_s3: Postgres<true>);
#[cfg(feature = "s3")]
conformance!(postgres_local: Postgres<false>);
