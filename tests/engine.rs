//! Integration tests of the engine through the library's public API: the
//! write-mode table against a sequential model (proptest), concurrent
//! handles, expiry and closing, `verify`, `gc`, and failures injected through
//! the storage seams.
//!
//! Every test asserts exact outcomes: per-file reports, session counters,
//! workspace contents and history.

// A test that hits an unexpected error should panic where it happened.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration as StdDuration, SystemTime};

use chrono::{DateTime, Duration, Utc};
use common::tmp_files;
use common::ws::*;
use intake::store::{Entry, OutcomeRecord};
use intake::{
    Clock, Error, Hash, Item, Lifetime, ManualClock, Meta, Outcome, Reason, Session, Workspace,
    WorkspaceBuilder, WriteMode, outcome::Counts, session::IngestionStatus, session::SessionStatus,
    workspace::DEFAULT_INLINE_THRESHOLD, workspace::GcReport,
};
use proptest::prelude::*;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// 1. The write-mode table against a sequential model
// ---------------------------------------------------------------------------

const NAMES: [&str; 4] = ["a", "b", "dir/c", "dir/sub/d"];
const METAS: [Option<&str>; 4] = [
    None,
    Some(r#"{"k":1}"#),
    Some(r#"{"k":2}"#),
    Some(r#"{"tags":["x","y"],"k":1}"#),
];
const CONTENTS: usize = 5;
const THRESHOLDS: [u64; 3] = [0, 16, DEFAULT_INLINE_THRESHOLD];

/// Content number `i`: empty, two of the same size, one over 16 bytes, one
/// of a few KiB.
fn pool_content(i: usize) -> Vec<u8> {
    match i {
        0 => Vec::new(),
        1 => b"alpha".to_vec(),
        2 => b"bravo".to_vec(),
        3 => (0..40u8).collect(),
        _ => (0..3000u32).map(|i| (i * 7 % 251) as u8).collect(),
    }
}

fn pool_meta(i: usize) -> Option<Meta> {
    METAS[i].and_then(meta)
}

/// The source file holding content `c` for name `n`. Such a file is written
/// once and never changed, so the quick check may rightly skip reading it.
fn pool_path(src: &Path, n: usize, c: usize) -> PathBuf {
    src.join(format!("c{c}_n{n}"))
}

#[derive(Debug, Clone, Copy)]
enum Life {
    Default,
    Forever,
    Minutes(i64),
}

#[derive(Debug, Clone, Copy)]
struct ItemSpec {
    name: usize,
    content: usize,
    meta: usize,
    from_path: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Create(WriteMode, Life),
    Ingest(usize, Vec<ItemSpec>),
    Advance(i64),
    Close(usize),
}

#[derive(Debug, Clone)]
struct Case {
    threshold: u64,
    ops: Vec<Op>,
}

fn mode_strategy() -> impl Strategy<Value = WriteMode> {
    prop_oneof![
        Just(WriteMode::Keep),
        Just(WriteMode::Overwrite),
        Just(WriteMode::Fail)
    ]
}

fn create_strategy() -> impl Strategy<Value = Op> {
    let life = prop_oneof![
        2 => Just(Life::Default),
        1 => Just(Life::Forever),
        2 => (1i64..=30).prop_map(Life::Minutes),
    ];
    (mode_strategy(), life).prop_map(|(m, l)| Op::Create(m, l))
}

fn item_strategy() -> impl Strategy<Value = ItemSpec> {
    // Mostly no metadata and a few favourite contents, so that `unchanged`
    // comes up as often as the other outcomes.
    let meta = prop_oneof![4 => Just(0usize), 1 => 1usize..METAS.len()];
    let content = prop_oneof![3 => 1usize..3, 2 => 0..CONTENTS];
    (0..NAMES.len(), content, meta, any::<bool>()).prop_map(|(name, content, meta, from_path)| {
        ItemSpec {
            name,
            content,
            meta,
            from_path,
        }
    })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => create_strategy(),
        10 => (0usize..8, prop::collection::vec(item_strategy(), 0..8))
            .prop_map(|(s, items)| Op::Ingest(s, items)),
        2 => (0i64..=20).prop_map(Op::Advance),
        1 => (0usize..8).prop_map(Op::Close),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(THRESHOLDS.to_vec()),
        create_strategy(),
        prop::collection::vec(op_strategy(), 1..14),
    )
        .prop_map(|(threshold, first, rest)| {
            let mut ops = vec![first];
            ops.extend(rest);
            Case { threshold, ops }
        })
}

/// One file's report, with the session as its index in creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReportObs {
    name: String,
    outcome: Outcome,
    reason: Option<Reason>,
    size: Option<u64>,
    blake3: Option<Hash>,
    source: Option<PathBuf>,
    session: usize,
    has_message: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RunObs {
    session: usize,
    reports: Vec<ReportObs>,
    counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct EntryObs {
    name: String,
    content: Vec<u8>,
    hash: Hash,
    size: u64,
    meta: Option<String>,
    session: usize,
    version: u64,
    ingested_at: DateTime<Utc>,
    replaced_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionObs {
    write_mode: WriteMode,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    status: SessionStatus,
    ingestion: IngestionStatus,
    /// The per-file records listed in the session (refused files are not
    /// part of it; unchanged ones are only counted).
    files: Vec<ReportObs>,
}

/// Everything a case can be judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    runs: Vec<RunObs>,
    current: BTreeMap<String, EntryObs>,
    /// Newest first.
    history: BTreeMap<String, Vec<EntryObs>>,
    sessions: Vec<SessionObs>,
}

#[derive(Debug, Clone, Copy)]
struct RunCfg {
    parallelism: usize,
    small_batches: bool,
}

/// What SPEC §3 and §4 say should happen, one file at a time.
fn model(case: &Case, src: &Path) -> Observed {
    let mut now = t0();
    let mut sessions: Vec<SessionObs> = Vec::new();
    // Oldest first while building.
    let mut names: BTreeMap<String, Vec<EntryObs>> = BTreeMap::new();
    let mut runs = Vec::new();
    for op in &case.ops {
        match op {
            Op::Create(mode, life) => sessions.push(SessionObs {
                write_mode: *mode,
                created_at: now,
                expires_at: match life {
                    Life::Default => Some(now + Duration::hours(24)),
                    Life::Forever => None,
                    Life::Minutes(m) => Some(now + Duration::minutes(*m)),
                },
                closed_at: None,
                status: SessionStatus::Open,
                ingestion: IngestionStatus::default(),
                files: Vec::new(),
            }),
            Op::Advance(m) => now += Duration::minutes(*m),
            Op::Close(i) => {
                let si = i % sessions_len(&sessions);
                let s = &mut sessions[si];
                s.closed_at.get_or_insert(now);
            }
            Op::Ingest(i, items) => {
                let si = i % sessions_len(&sessions);
                let s = &mut sessions[si];
                let refusal = if s.expires_at.is_some_and(|e| now >= e) {
                    Some(Reason::SessionExpired)
                } else if s.closed_at.is_some() {
                    Some(Reason::SessionClosed)
                } else {
                    None
                };
                let mut counts = Counts::default();
                let mut reports = Vec::new();
                for it in items {
                    let n = NAMES[it.name].to_owned();
                    let content = pool_content(it.content);
                    let hash = Hash::of(&content);
                    let size = content.len() as u64;
                    let m = pool_meta(it.meta).map(|m| m.as_str().to_owned());
                    let source = it.from_path.then(|| pool_path(src, it.name, it.content));
                    let report = |outcome, reason| ReportObs {
                        name: n.clone(),
                        outcome,
                        reason,
                        size: Some(size),
                        blake3: Some(hash),
                        source: source.clone(),
                        session: si,
                        has_message: outcome == Outcome::Failed,
                    };
                    if let Some(reason) = refusal {
                        counts.refused += 1;
                        reports.push(ReportObs {
                            size: None,
                            blake3: None,
                            has_message: true,
                            ..report(Outcome::Refused, Some(reason))
                        });
                        continue;
                    }
                    let new_version = |version| EntryObs {
                        name: n.clone(),
                        content: content.clone(),
                        hash,
                        size,
                        meta: m.clone(),
                        session: si,
                        version,
                        ingested_at: now,
                        replaced_at: None,
                    };
                    let versions = names.get_mut(&n);
                    let r = match versions {
                        None => {
                            names.insert(n.clone(), vec![new_version(1)]);
                            report(Outcome::Ingested, None)
                        }
                        Some(v) => {
                            let cur = v.last_mut().unwrap();
                            if cur.hash == hash && cur.meta == m {
                                report(Outcome::Unchanged, None)
                            } else {
                                match s.write_mode {
                                    WriteMode::Keep => report(Outcome::Kept, None),
                                    WriteMode::Fail => {
                                        report(Outcome::Failed, Some(Reason::Conflict))
                                    }
                                    WriteMode::Overwrite => {
                                        cur.replaced_at = Some(now);
                                        let next = new_version(cur.version + 1);
                                        v.push(next);
                                        report(Outcome::Overwritten, None)
                                    }
                                }
                            }
                        }
                    };
                    let st = &mut s.ingestion;
                    match r.outcome {
                        Outcome::Ingested => st.ingested += 1,
                        Outcome::Overwritten => st.overwritten += 1,
                        Outcome::Unchanged => st.unchanged += 1,
                        Outcome::Kept => st.kept += 1,
                        _ => st.failed_files += 1,
                    }
                    if r.outcome == Outcome::Failed {
                        counts.failed += 1;
                    } else {
                        st.finished_files += 1;
                        st.bytes += size;
                        counts.bytes += size;
                        match r.outcome {
                            Outcome::Ingested => counts.ingested += 1,
                            Outcome::Overwritten => counts.overwritten += 1,
                            Outcome::Unchanged => counts.unchanged += 1,
                            _ => counts.kept += 1,
                        }
                    }
                    // `unchanged` is counted, not listed.
                    if r.outcome != Outcome::Unchanged {
                        s.files.push(r.clone());
                    }
                    reports.push(r);
                }
                runs.push(RunObs {
                    session: si,
                    reports,
                    counts,
                });
            }
        }
    }
    for s in &mut sessions {
        s.status = if s.closed_at.is_some() {
            SessionStatus::Closed
        } else if s.expires_at.is_some_and(|e| now >= e) {
            SessionStatus::Expired
        } else {
            SessionStatus::Open
        };
    }
    let current = names
        .iter()
        .map(|(n, v)| (n.clone(), v.last().unwrap().clone()))
        .collect();
    let history = names
        .into_iter()
        .map(|(n, mut v)| {
            v.reverse();
            (n, v)
        })
        .collect();
    Observed {
        runs,
        current,
        history,
        sessions,
    }
}

fn sessions_len<T>(v: &[T]) -> usize {
    assert!(!v.is_empty(), "every case starts by creating a session");
    v.len()
}

/// Plays a case against a fresh workspace in `ws_dir` and observes it; checks
/// on the way what only the real store has (blob files, `verify`).
fn drive(case: &Case, src: &Path, ws_dir: &Path, cfg: RunCfg) -> Result<Observed, TestCaseError> {
    let clock = ManualClock::new(t0());
    let ws = open_ws(ws_dir, &clock, case.threshold);
    let mut ids: Vec<Uuid> = Vec::new();
    let mut sessions: Vec<Session> = Vec::new();
    let mut runs = Vec::new();
    // Contents some non-refused item carried: the only blobs that may exist.
    let mut attempted: BTreeSet<String> = BTreeSet::new();
    let index_of = |ids: &[Uuid], id: Uuid| ids.iter().position(|x| *x == id).unwrap();
    for op in &case.ops {
        match op {
            Op::Create(mode, life) => {
                let life = match life {
                    Life::Default => Lifetime::Default,
                    Life::Forever => Lifetime::Forever,
                    Life::Minutes(m) => Lifetime::Ttl(Duration::minutes(*m)),
                };
                let s = session(&ws, *mode, life);
                ids.push(s.session_id);
                sessions.push(s);
            }
            Op::Advance(m) => clock.advance(Duration::minutes(*m)),
            Op::Close(i) => {
                ws.close_session(ids[i % ids.len()]).unwrap();
            }
            Op::Ingest(i, specs) => {
                let si = i % sessions.len();
                let items: Vec<Item> = specs
                    .iter()
                    .map(|it| {
                        let n = name(NAMES[it.name]);
                        let item = if it.from_path {
                            Item::path(n, pool_path(src, it.name, it.content))
                        } else {
                            Item::bytes(n, pool_content(it.content))
                        };
                        item.with_meta(pool_meta(it.meta))
                    })
                    .collect();
                let mut runner = ws.ingest(&sessions[si]).parallelism(cfg.parallelism);
                if cfg.small_batches {
                    runner = runner.batch(3, 1 << 20);
                }
                let mut reports = Vec::new();
                let summary = runner
                    .run(items, |r| {
                        reports.push(ReportObs {
                            name: r.name.clone(),
                            outcome: r.outcome,
                            reason: r.reason,
                            size: r.size,
                            blake3: r.blake3,
                            source: r.source.clone(),
                            session: index_of(&ids, r.session_id),
                            has_message: r.message.is_some(),
                        })
                    })
                    .unwrap();
                prop_assert_eq!(summary.session_id, ids[si]);
                for r in &reports {
                    if r.outcome != Outcome::Refused {
                        attempted.insert(r.blake3.unwrap().to_hex());
                    }
                }
                runs.push(RunObs {
                    session: si,
                    reports,
                    counts: summary.counts,
                });
                let stale = tmp_files(ws_dir);
                prop_assert!(stale.is_empty(), "unfinished blob writes left: {stale:?}");
            }
        }
    }

    let mut current = BTreeMap::new();
    let mut history = BTreeMap::new();
    let mut listed = Vec::new();
    ws.list(None, |e| {
        listed.push(e);
        true
    })
    .unwrap();
    let entry_obs = |e: &Entry, content: Vec<u8>| EntryObs {
        name: e.name.clone(),
        content,
        hash: e.hash,
        size: e.size,
        meta: e.meta.clone(),
        session: index_of(&ids, e.session_id),
        version: e.version,
        ingested_at: e.ingested_at,
        replaced_at: e.replaced_at,
    };
    for e in &listed {
        current.insert(
            e.name.clone(),
            entry_obs(e, read_all(ws.read(&e.name).unwrap())),
        );
        let h: Vec<EntryObs> = ws
            .history(&e.name)
            .unwrap()
            .iter()
            .map(|v| entry_obs(v, read_all(ws.read_version(&e.name, v.version).unwrap())))
            .collect();
        history.insert(e.name.clone(), h);
    }
    for n in NAMES {
        if !current.contains_key(n) {
            prop_assert_eq!(ws.current(n).unwrap(), None);
            prop_assert!(matches!(ws.history(n), Err(Error::NameNotFound(x)) if x == n));
        }
    }

    let now = clock.now();
    let mut obs_sessions = Vec::new();
    let all = ws.sessions().unwrap();
    prop_assert_eq!(all.len(), ids.len());
    for (i, id) in ids.iter().enumerate() {
        let rec = ws.session(*id).unwrap();
        prop_assert_eq!(&rec.session, &sessions[i]);
        let mut files = Vec::new();
        ws.session_files(*id, |r: OutcomeRecord| {
            files.push(ReportObs {
                name: r.name,
                outcome: r.outcome,
                reason: r.reason,
                size: r.size,
                blake3: r.hash,
                source: r.source,
                session: index_of(&ids, r.session_id),
                has_message: r.message.is_some(),
            });
            true
        })
        .unwrap();
        obs_sessions.push(SessionObs {
            write_mode: rec.session.write_mode,
            created_at: rec.session.created_at,
            expires_at: rec.session.expires_at,
            closed_at: rec.closed_at,
            status: rec.status(now),
            ingestion: rec.ingestion,
            files,
        });
    }

    // The blob store: every external blob a version refers to is a file at
    // blobs/xx/<hex> (inline ones are not), and no file holds anything no
    // file of the case carried.
    let files = blob_files(ws_dir);
    for versions in history.values() {
        for v in versions {
            let hex = v.hash.to_hex();
            let external = v.size > case.threshold;
            prop_assert_eq!(
                files.contains(&hex),
                external,
                "blob of {} v{} ({} bytes, threshold {})",
                v.name,
                v.version,
                v.size,
                case.threshold
            );
            if external {
                prop_assert_eq!(&fs::read(blob_path(ws_dir, &v.hash)).unwrap(), &v.content);
            }
        }
    }
    let extra: Vec<&String> = files.difference(&attempted).collect();
    prop_assert!(extra.is_empty(), "blob files nobody ingested: {extra:?}");
    let report = ws.verify().unwrap();
    prop_assert_eq!(report.defects, vec![]);

    Ok(Observed {
        runs,
        current,
        history,
        sessions: obs_sessions,
    })
}

fn compare(label: &str, got: &Observed, want: &Observed) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.runs.len(), want.runs.len(), "{}: runs", label);
    for (i, (g, w)) in got.runs.iter().zip(&want.runs).enumerate() {
        prop_assert_eq!(g, w, "{}: run #{}", label, i);
    }
    for (i, (g, w)) in got.sessions.iter().zip(&want.sessions).enumerate() {
        prop_assert_eq!(g, w, "{}: session #{}", label, i);
    }
    prop_assert_eq!(&got.sessions, &want.sessions, "{}: sessions", label);
    prop_assert_eq!(&got.current, &want.current, "{}: current versions", label);
    prop_assert_eq!(&got.history, &want.history, "{}: history", label);
    Ok(())
}

/// A temporary directory for the model test, in memory where there is a
/// tmpfs: the test is about decisions, not durability, and every commit's
/// fsync on a busy disk would dominate its run time.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

fn write_pool(src: &Path) {
    for n in 0..NAMES.len() {
        for c in 0..CONTENTS {
            fs::write(pool_path(src, n, c), pool_content(c)).unwrap();
        }
    }
}

proptest! {
    // 128 cases by default (a few seconds); PROPTEST_CASES=N for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(128),
        ..ProptestConfig::default()
    })]

    /// Random sessions, batches, clock moves and closes give exactly what the
    /// sequential model says, at parallelism 1 and at parallelism 4 with
    /// small group commits.
    #[test]
    fn write_modes_match_the_sequential_model(case in case_strategy()) {
        let dir = scratch_dir();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        write_pool(&src);
        let want = model(&case, &src);
        let serial = drive(
            &case,
            &src,
            &dir.path().join("ws1"),
            RunCfg { parallelism: 1, small_batches: false },
        )?;
        compare("parallelism 1", &serial, &want)?;
        let parallel = drive(
            &case,
            &src,
            &dir.path().join("ws4"),
            RunCfg { parallelism: 4, small_batches: true },
        )?;
        compare("parallelism 4, batches of 3", &parallel, &want)?;
        prop_assert_eq!(serial, parallel);
    }
}

/// The model itself, on a hand-written case: if it were wrong in the same way
/// as the engine, the property above could not tell.
#[test]
fn the_model_follows_the_spec_table() {
    let item = |name, content| ItemSpec {
        name,
        content,
        meta: 0,
        from_path: false,
    };
    let mut ops = Vec::new();
    for mode in [WriteMode::Keep, WriteMode::Overwrite, WriteMode::Fail] {
        ops.push(Op::Create(mode, Life::Forever));
    }
    // Session 0 (KEEP) ingests a=1; then every session tries a=1 and a=2.
    ops.push(Op::Ingest(0, vec![item(0, 1)]));
    for s in 0..3 {
        ops.push(Op::Ingest(s, vec![item(0, 1), item(1, 1), item(1, 2)]));
    }
    let m = model(&Case { threshold: 0, ops }, Path::new("/nowhere"));
    let got: Vec<Vec<(Outcome, Option<Reason>)>> = m
        .runs
        .iter()
        .map(|r| r.reports.iter().map(|r| (r.outcome, r.reason)).collect())
        .collect();
    use Outcome::*;
    assert_eq!(
        got,
        vec![
            vec![(Ingested, None)],
            vec![(Unchanged, None), (Ingested, None), (Kept, None)],
            vec![(Unchanged, None), (Unchanged, None), (Overwritten, None)],
            // b now holds 2 (OVERWRITE above): 1 conflicts, 2 is unchanged.
            vec![
                (Unchanged, None),
                (Failed, Some(Reason::Conflict)),
                (Unchanged, None)
            ],
        ]
    );
    assert_eq!(m.history["b"].len(), 2);
}

// ---------------------------------------------------------------------------
// 2. Two handles racing FAIL sessions over the same new names
// ---------------------------------------------------------------------------

#[test]
fn two_handles_racing_fail_sessions_ingest_each_name_once() {
    const N: usize = 500;
    for reversed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let ws_dir = dir.path().join("ws");
        drop(Workspace::create(&ws_dir).unwrap());
        // Two handles, each with its own SQLite connections.
        let a = Workspace::open(&ws_dir).unwrap();
        let b = Workspace::open(&ws_dir).unwrap();
        let sa = session(&a, WriteMode::Fail, Lifetime::Forever);
        let sb = session(&b, WriteMode::Fail, Lifetime::Forever);
        let names: Vec<String> = (0..N).map(|i| format!("race/{i:03}.txt")).collect();
        let content = |side: &str, n: &str| format!("{side} wrote {n}").into_bytes();
        let items = |side: &str, rev: bool| -> Vec<Item> {
            let mut v: Vec<Item> = names
                .iter()
                .map(|n| Item::bytes(name(n), content(side, n)))
                .collect();
            if rev {
                v.reverse();
            }
            v
        };
        let (ia, ib) = (items("A", false), items("B", reversed));
        let barrier = Barrier::new(2);
        let go = |ws: &Workspace, s: &Session, items: Vec<Item>| {
            barrier.wait();
            let mut out = Vec::new();
            ws.ingest(s)
                .parallelism(2)
                .batch(7, 1 << 20)
                .run(items, |r| out.push(r.clone()))
                .unwrap();
            out
        };
        let (ra, rb) = std::thread::scope(|sc| {
            let ha = sc.spawn(|| go(&a, &sa, ia));
            let hb = sc.spawn(|| go(&b, &sb, ib));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert_eq!((ra.len(), rb.len()), (N, N));

        let mut winner: BTreeMap<String, &str> = BTreeMap::new();
        let mut conflicts = 0;
        for (side, reports) in [("A", &ra), ("B", &rb)] {
            for r in reports.iter() {
                match (r.outcome, r.reason) {
                    (Outcome::Ingested, None) => {
                        let prev = winner.insert(r.name.clone(), side);
                        assert_eq!(prev, None, "{} ingested by both sides", r.name);
                    }
                    (Outcome::Failed, Some(Reason::Conflict)) => conflicts += 1,
                    other => panic!("{}: unexpected {other:?} on side {side}", r.name),
                }
            }
        }
        assert_eq!(winner.len(), N, "every name ingested exactly once");
        assert_eq!(conflicts, N, "every name failed exactly once");
        let won_by_a = winner.values().filter(|s| **s == "A").count() as u64;
        let won_by_b = N as u64 - won_by_a;

        // What the workspace holds is what the winner sent; seen from a third
        // handle too.
        let c = Workspace::open(&ws_dir).unwrap();
        let expected: BTreeMap<String, Vec<u8>> = winner
            .iter()
            .map(|(n, side)| (n.clone(), content(side, n)))
            .collect();
        assert_eq!(contents(&c), expected);
        for (n, side) in &winner {
            let h = c.history(n).unwrap();
            let sid = if *side == "A" {
                sa.session_id
            } else {
                sb.session_id
            };
            assert_eq!(h.len(), 1, "{n}");
            assert_eq!((h[0].version, h[0].session_id), (1, sid), "{n}");
        }
        let bytes = |side: &str| -> u64 {
            winner
                .iter()
                .filter(|(_, s)| **s == side)
                .map(|(n, _)| content(side, n).len() as u64)
                .sum()
        };
        assert_eq!(
            c.session(sa.session_id).unwrap().ingestion,
            status(won_by_a, 0, 0, 0, won_by_b, bytes("A"))
        );
        assert_eq!(
            c.session(sb.session_id).unwrap().ingestion,
            status(won_by_b, 0, 0, 0, won_by_a, bytes("B"))
        );
        assert_eq!(c.verify().unwrap().defects, vec![]);
        eprintln!("race (reversed: {reversed}): A won {won_by_a}, B won {won_by_b}");
    }
}

// ---------------------------------------------------------------------------
// 3. Expiry and closing
// ---------------------------------------------------------------------------

#[test]
fn session_expiring_mid_stream_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let ws = open_ws(dir.path(), &clock, DEFAULT_INLINE_THRESHOLD);
    let body = |i: usize| format!("content of file {i}").into_bytes();
    let fname = |i: usize| format!("f{i:03}");

    // Earlier: f000..f004 hold what the run brings, f005..f009 something else.
    let before = session(&ws, WriteMode::Overwrite, Lifetime::Forever);
    let pre: Vec<Item> = (0..10)
        .map(|i| {
            let c = if i < 5 { body(i) } else { b"older".to_vec() };
            Item::bytes(name(&fname(i)), c)
        })
        .collect();
    let (r, _) = run(&ws, &before, pre);
    assert!(r.iter().all(|r| r.outcome == Outcome::Ingested));

    let s = session(&ws, WriteMode::Keep, Lifetime::Ttl(Duration::minutes(10)));
    let expires = s.expires_at.unwrap();
    assert_eq!(expires, t0() + Duration::minutes(10));
    let items = MoveClockAfter {
        inner: (0..100).map(|i| Item::bytes(name(&fname(i)), body(i))),
        yielded: 0,
        after: 40,
        clock: clock.clone(),
        // Exactly the expiry instant: `now >= expires_at` is expired.
        to: expires,
    };
    let mut reports = Vec::new();
    let summary = ws
        .ingest(&s)
        .parallelism(4)
        .batch(8, 1 << 20)
        .run(items, |r| reports.push(r.clone()))
        .unwrap();

    let mut want = Vec::new();
    for i in 0..100 {
        let (o, r) = match i {
            0..5 => (Outcome::Unchanged, None),
            5..10 => (Outcome::Kept, None),
            10..40 => (Outcome::Ingested, None),
            _ => (Outcome::Refused, Some(Reason::SessionExpired)),
        };
        want.push((fname(i), o, r));
    }
    assert_lines("reports", &outcomes(&reports), &want);
    for r in &reports[40..] {
        assert_eq!((r.size, r.blake3, r.session_id), (None, None, s.session_id));
        let msg = r.message.as_deref().unwrap();
        assert!(
            msg.contains(&s.session_id.to_string()) && msg.contains("expired"),
            "{msg}"
        );
    }
    let bytes: u64 = (0..40).map(|i| body(i).len() as u64).sum();
    assert_eq!(
        summary.counts,
        Counts {
            ingested: 30,
            unchanged: 5,
            kept: 5,
            refused: 60,
            bytes,
            ..Counts::default()
        }
    );
    // Refused files are not part of the session.
    assert_eq!(
        ws.session(s.session_id).unwrap().ingestion,
        status(30, 0, 5, 5, 0, bytes)
    );
    assert_lines(
        "session files",
        &session_files(&ws, s.session_id),
        &listed(&want[..40]),
    );

    let mut expected = BTreeMap::new();
    for i in 0..40 {
        let c = if (5..10).contains(&i) {
            b"older".to_vec()
        } else {
            body(i)
        };
        expected.insert(fname(i), c);
    }
    assert_eq!(contents(&ws), expected);

    // The session now says why it cannot be used, and a new run refuses all.
    match ws.open_session(s.session_id) {
        Err(Error::SessionExpired { id, at }) => assert_eq!((id, at), (s.session_id, expires)),
        other => panic!("expected SessionExpired, got {other:?}"),
    }
    let (again, summary) = run(
        &ws,
        &s,
        (0..5)
            .map(|i| Item::bytes(name(&format!("late{i}")), body(i)))
            .collect(),
    );
    assert!(
        again
            .iter()
            .all(|r| (r.outcome, r.reason) == (Outcome::Refused, Some(Reason::SessionExpired)))
    );
    assert_eq!(summary.counts.refused, 5);
    assert_eq!(summary.counts.total(), 5);
    assert_eq!(
        ws.session(s.session_id).unwrap().ingestion,
        status(30, 0, 5, 5, 0, bytes)
    );
    assert_eq!(contents(&ws), expected);
}

#[test]
fn open_session_tells_open_expired_closed_and_unknown_apart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let ws = open_ws(dir.path(), &clock, DEFAULT_INLINE_THRESHOLD);
    let s = session(&ws, WriteMode::Keep, Lifetime::Ttl(Duration::minutes(5)));
    let forever = session(&ws, WriteMode::Keep, Lifetime::Forever);
    let default = session(&ws, WriteMode::Keep, Lifetime::Default);
    assert_eq!(default.expires_at, Some(t0() + Duration::hours(24)));
    assert_eq!(forever.expires_at, None);

    clock.set(t0() + Duration::minutes(5) - Duration::microseconds(1));
    assert_eq!(ws.open_session(s.session_id).unwrap(), s);
    clock.set(t0() + Duration::minutes(5));
    match ws.open_session(s.session_id) {
        Err(Error::SessionExpired { id, at }) => {
            assert_eq!((id, at), (s.session_id, t0() + Duration::minutes(5)))
        }
        other => panic!("expected SessionExpired, got {other:?}"),
    }
    assert_eq!(
        ws.session(s.session_id).unwrap().status(clock.now()),
        SessionStatus::Expired
    );

    clock.set(t0() + Duration::days(400));
    assert_eq!(ws.open_session(forever.session_id).unwrap(), forever);
    let closed_at = clock.now();
    let rec = ws.close_session(forever.session_id).unwrap();
    assert_eq!(rec.closed_at, Some(closed_at));
    // Closing again changes nothing.
    clock.advance(Duration::minutes(1));
    assert_eq!(
        ws.close_session(forever.session_id).unwrap().closed_at,
        Some(closed_at)
    );
    match ws.open_session(forever.session_id) {
        Err(Error::SessionClosed { id, at }) => {
            assert_eq!((id, at), (forever.session_id, closed_at))
        }
        other => panic!("expected SessionClosed, got {other:?}"),
    }

    let unknown = Uuid::from_u128(42);
    assert!(matches!(ws.open_session(unknown), Err(Error::SessionNotFound(id)) if id == unknown));
    assert!(matches!(ws.close_session(unknown), Err(Error::SessionNotFound(id)) if id == unknown));
    let ghost = Session {
        session_id: unknown,
        ..forever.clone()
    };
    let ran = ws
        .ingest(&ghost)
        .run(vec![Item::bytes(name("x"), b"x".to_vec())], |_| {});
    assert!(matches!(ran, Err(Error::SessionNotFound(id)) if id == unknown));
    assert_eq!(contents(&ws), BTreeMap::new());
}

#[test]
fn closed_session_refuses_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let ws = open_ws(dir.path(), &clock, DEFAULT_INLINE_THRESHOLD);
    let s = session(&ws, WriteMode::Overwrite, Lifetime::Forever);
    let (first, _) = run(&ws, &s, vec![Item::bytes(name("kept.txt"), b"v1".to_vec())]);
    assert_eq!(
        outcomes(&first),
        expect(&[("kept.txt", Outcome::Ingested, None)])
    );

    clock.advance(Duration::minutes(1));
    ws.close_session(s.session_id).unwrap();
    let src = dir.path().join("src.txt");
    fs::write(&src, b"from disk").unwrap();
    let items = vec![
        Item::bytes(name("kept.txt"), b"v2".to_vec()),
        Item::bytes(name("new.txt"), b"new".to_vec()),
        Item::path(name("disk.txt"), &src),
    ];
    let (reports, summary) = run(&ws, &s, items);
    let refused = Some(Reason::SessionClosed);
    assert_eq!(
        outcomes(&reports),
        expect(&[
            ("kept.txt", Outcome::Refused, refused),
            ("new.txt", Outcome::Refused, refused),
            ("disk.txt", Outcome::Refused, refused),
        ])
    );
    assert_eq!(reports[2].source.as_deref(), Some(src.as_path()));
    assert_eq!(
        summary.counts,
        Counts {
            refused: 3,
            ..Counts::default()
        }
    );
    assert_eq!(
        ws.session(s.session_id).unwrap().ingestion,
        status(1, 0, 0, 0, 0, 2)
    );
    assert_eq!(
        session_files(&ws, s.session_id),
        expect(&[("kept.txt", Outcome::Ingested, None)])
    );
    assert_eq!(contents(&ws), contents_of(&[("kept.txt", b"v1")]));
    assert_eq!(ws.history("kept.txt").unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// 4. verify
// ---------------------------------------------------------------------------

#[test]
fn verify_names_exactly_the_corrupt_and_missing_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    let clock = ManualClock::new(t0());
    let ws = open_ws(&ws_dir, &clock, 0);
    let s = session(&ws, WriteMode::Keep, Lifetime::Forever);
    let files: Vec<(&str, Vec<u8>)> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(|n| (n, format!("the content of {n}, long enough").into_bytes()))
        .collect();
    let items = files
        .iter()
        .map(|(n, c)| Item::bytes(name(n), c.clone()))
        .collect();
    let (reports, _) = run(&ws, &s, items);
    assert!(reports.iter().all(|r| r.outcome == Outcome::Ingested));

    let healthy = ws.verify().unwrap();
    assert_eq!(healthy.defects, vec![]);
    assert_eq!(healthy.blobs, 5);
    assert_eq!(
        healthy.bytes,
        files.iter().map(|(_, c)| c.len() as u64).sum::<u64>()
    );
    assert_eq!(
        blob_files(&ws_dir),
        hex_set(files.iter().map(|(_, c)| &c[..]))
    );

    let hash_b = ws.current("b").unwrap().unwrap().hash;
    let hash_d = ws.current("d").unwrap().unwrap().hash;
    let pb = blob_path(&ws_dir, &hash_b);
    let mut data = fs::read(&pb).unwrap();
    data[7] ^= 0x01;
    fs::write(&pb, &data).unwrap();
    fs::remove_file(blob_path(&ws_dir, &hash_d)).unwrap();

    let report = ws.verify().unwrap();
    assert_eq!(
        report
            .defects
            .iter()
            .map(|d| (d.name.as_deref(), d.hash))
            .collect::<Vec<_>>(),
        vec![(Some("b"), hash_b), (Some("d"), hash_d)]
    );
    assert!(
        report.defects[0].problem.contains("corrupt"),
        "{:?}",
        report.defects[0]
    );
    assert!(
        report.defects[1].problem.contains("missing"),
        "{:?}",
        report.defects[1]
    );
    // The same from a fresh handle.
    assert_eq!(
        defect_names(&Workspace::open(&ws_dir).unwrap()),
        vec![Some("b".to_owned()), Some("d".to_owned())]
    );
}

// ---------------------------------------------------------------------------
// 5. gc
// ---------------------------------------------------------------------------

fn gc_drops_replaced_versions_after_retention(threshold: u64) {
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    let clock = ManualClock::new(t0());
    let ws = open_ws(&ws_dir, &clock, threshold);
    let s = session(&ws, WriteMode::Overwrite, Lifetime::Forever);
    let v1 = b"the first version, a few dozen bytes long".to_vec();
    let v2 = b"the second version, a few dozen bytes too".to_vec();
    let other = b"another name, never replaced".to_vec();
    let (r, _) = run(
        &ws,
        &s,
        vec![
            Item::bytes(name("doc.txt"), v1.clone()),
            Item::bytes(name("other.txt"), other.clone()),
        ],
    );
    assert_eq!(
        outcomes(&r),
        expect(&[
            ("doc.txt", Outcome::Ingested, None),
            ("other.txt", Outcome::Ingested, None)
        ])
    );
    clock.advance(Duration::hours(1));
    let replaced_at = clock.now();
    let (r, _) = run(&ws, &s, vec![Item::bytes(name("doc.txt"), v2.clone())]);
    assert_eq!(
        outcomes(&r),
        expect(&[("doc.txt", Outcome::Overwritten, None)])
    );

    let h = ws.history("doc.txt").unwrap();
    assert_eq!(
        h.iter()
            .map(|e| (e.version, e.hash, e.replaced_at))
            .collect::<Vec<_>>(),
        vec![
            (2, Hash::of(&v2), None),
            (1, Hash::of(&v1), Some(replaced_at))
        ]
    );
    assert_eq!(read_all(ws.read_version("doc.txt", 1).unwrap()), v1);
    assert_eq!(read_all(ws.read_version("doc.txt", 2).unwrap()), v2);
    let external = threshold < v1.len() as u64;
    let all_three = hex_set([&v1[..], &v2[..], &other[..]]);
    let files_before = if external {
        all_three.clone()
    } else {
        BTreeSet::new()
    };
    assert_eq!(blob_files(&ws_dir), files_before);

    // Within retention: nothing goes.
    clock.advance(Duration::days(1));
    assert_eq!(ws.gc(Duration::days(7)).unwrap(), GcReport::default());
    assert_eq!(ws.history("doc.txt").unwrap().len(), 2);
    assert_eq!(read_all(ws.read_version("doc.txt", 1).unwrap()), v1);
    assert_eq!(blob_files(&ws_dir), files_before);
    assert_eq!(ws.verify().unwrap().blobs, 3);

    // Blob files are aged by the real clock: make sure they are in the past.
    std::thread::sleep(StdDuration::from_millis(20));
    assert_eq!(
        ws.gc(Duration::zero()).unwrap(),
        GcReport {
            versions: 1,
            blobs: 1,
            orphans: 0
        }
    );
    let h = ws.history("doc.txt").unwrap();
    assert_eq!(h.iter().map(|e| e.version).collect::<Vec<_>>(), vec![2]);
    assert!(matches!(
        ws.read_version("doc.txt", 1),
        Err(Error::VersionNotFound { version: 1, .. })
    ));
    assert!(ws.open_blob(&Hash::of(&v1)).is_err());
    let files_after = if external {
        hex_set([&v2[..], &other[..]])
    } else {
        BTreeSet::new()
    };
    assert_eq!(blob_files(&ws_dir), files_after);
    let report = ws.verify().unwrap();
    assert_eq!((report.defects, report.blobs), (vec![], 2));
    assert_eq!(
        contents(&ws),
        contents_of(&[("doc.txt", &v2), ("other.txt", &other)])
    );
    // Nothing left to collect.
    assert_eq!(ws.gc(Duration::zero()).unwrap(), GcReport::default());
}

#[test]
fn gc_drops_replaced_inline_versions_after_retention() {
    gc_drops_replaced_versions_after_retention(DEFAULT_INLINE_THRESHOLD);
}

#[test]
fn gc_drops_replaced_external_versions_after_retention() {
    gc_drops_replaced_versions_after_retention(0);
}

#[test]
fn gc_removes_orphan_blob_files_only_after_retention() {
    // KEEP writes a large file's blob before deciding; a kept file leaves its
    // blob unreferenced.
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    let clock = ManualClock::new(t0());
    let ws = open_ws(&ws_dir, &clock, 0);
    let s = session(&ws, WriteMode::Keep, Lifetime::Forever);
    let (r, _) = run(
        &ws,
        &s,
        vec![
            Item::bytes(name("x"), b"first".to_vec()),
            Item::bytes(name("x"), b"second".to_vec()),
        ],
    );
    assert_eq!(
        outcomes(&r),
        expect(&[("x", Outcome::Ingested, None), ("x", Outcome::Kept, None)])
    );
    assert_eq!(
        blob_files(&ws_dir),
        hex_set([&b"first"[..], &b"second"[..]])
    );
    assert_eq!(ws.gc(Duration::days(7)).unwrap(), GcReport::default());
    assert_eq!(
        blob_files(&ws_dir),
        hex_set([&b"first"[..], &b"second"[..]])
    );
    std::thread::sleep(StdDuration::from_millis(20));
    assert_eq!(
        ws.gc(Duration::zero()).unwrap(),
        GcReport {
            versions: 0,
            blobs: 0,
            orphans: 1
        }
    );
    assert_eq!(blob_files(&ws_dir), hex_set([&b"first"[..]]));
    assert_eq!(ws.verify().unwrap().defects, vec![]);
    assert_eq!(contents(&ws), contents_of(&[("x", b"first")]));
}

#[test]
fn gc_never_removes_a_blob_file_younger_than_the_grace_period() {
    // A replaced version's blob loses its row at once with zero retention,
    // but its file stays until it is older than the grace period: a running
    // ingest may have just written the same content again.
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    let clock = ManualClock::new(t0());
    let ws = WorkspaceBuilder::new(&ws_dir)
        .clock(Arc::new(clock.clone()))
        .inline_threshold(0)
        .create()
        .unwrap();
    let s = session(&ws, WriteMode::Overwrite, Lifetime::Forever);
    run(&ws, &s, vec![Item::bytes(name("x"), b"old".to_vec())]);
    run(&ws, &s, vec![Item::bytes(name("x"), b"new".to_vec())]);
    clock.advance(Duration::days(30));
    assert_eq!(
        ws.gc(Duration::zero()).unwrap(),
        GcReport {
            versions: 1,
            blobs: 0,
            orphans: 0
        }
    );
    // The row is gone, the young file stays, and nothing is a defect.
    assert_eq!(blob_files(&ws_dir), hex_set([&b"old"[..], &b"new"[..]]));
    assert_eq!(ws.verify().unwrap().defects, vec![]);
    assert_eq!(contents(&ws), contents_of(&[("x", b"new")]));
}

// ---------------------------------------------------------------------------
// 7. Re-ingesting a source path
// ---------------------------------------------------------------------------

fn set_mtime(path: &Path, secs: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + StdDuration::from_secs(secs))
        .unwrap();
}

#[test]
fn reingesting_a_path_is_unchanged_and_a_modified_file_follows_the_write_mode() {
    let v1: &[u8] = b"the first version";
    let v2: &[u8] = b"the second, longer version";
    for threshold in [0, DEFAULT_INLINE_THRESHOLD] {
        for mode in [WriteMode::Overwrite, WriteMode::Keep, WriteMode::Fail] {
            let ctx = format!("{mode}, threshold {threshold}");
            let dir = tempfile::tempdir().unwrap();
            let ws_dir = dir.path().join("ws");
            let clock = ManualClock::new(t0());
            let ws = open_ws(&ws_dir, &clock, threshold);
            let s = session(&ws, mode, Lifetime::Forever);
            let src = dir.path().join("report.txt");
            fs::write(&src, v1).unwrap();
            set_mtime(&src, 1_700_000_000);
            let item = || vec![Item::path(name("docs/report.txt"), &src)];

            let (r, _) = run(&ws, &s, item());
            assert_eq!(
                outcomes(&r),
                expect(&[("docs/report.txt", Outcome::Ingested, None)]),
                "{ctx}"
            );
            assert_eq!(r[0].source.as_deref(), Some(src.as_path()), "{ctx}");
            assert_eq!(
                (r[0].size, r[0].blake3),
                (Some(v1.len() as u64), Some(Hash::of(v1)))
            );
            let (r, _) = run(&ws, &s, item());
            assert_eq!(
                outcomes(&r),
                expect(&[("docs/report.txt", Outcome::Unchanged, None)]),
                "{ctx}"
            );
            assert_eq!(
                (r[0].size, r[0].blake3),
                (Some(v1.len() as u64), Some(Hash::of(v1)))
            );

            fs::write(&src, v2).unwrap();
            set_mtime(&src, 1_700_000_100);
            let (o, reason, now, versions) = match mode {
                WriteMode::Overwrite => (Outcome::Overwritten, None, v2, 2),
                WriteMode::Keep => (Outcome::Kept, None, v1, 1),
                WriteMode::Fail => (Outcome::Failed, Some(Reason::Conflict), v1, 1),
            };
            let (r, _) = run(&ws, &s, item());
            assert_eq!(
                outcomes(&r),
                expect(&[("docs/report.txt", o, reason)]),
                "{ctx}"
            );
            assert_eq!(
                (r[0].size, r[0].blake3),
                (Some(v2.len() as u64), Some(Hash::of(v2)))
            );
            assert_eq!(
                contents(&ws),
                contents_of(&[("docs/report.txt", now)]),
                "{ctx}"
            );
            assert_eq!(
                ws.history("docs/report.txt").unwrap().len(),
                versions,
                "{ctx}"
            );

            // And once more: OVERWRITE now holds it; the others still differ.
            let (o, reason) = match mode {
                WriteMode::Overwrite => (Outcome::Unchanged, None),
                _ => (o, reason),
            };
            let (r, _) = run(&ws, &s, item());
            assert_eq!(
                outcomes(&r),
                expect(&[("docs/report.txt", o, reason)]),
                "{ctx}"
            );

            let (l1, l2) = (v1.len() as u64, v2.len() as u64);
            let want = match mode {
                WriteMode::Overwrite => status(1, 1, 2, 0, 0, 2 * l1 + 2 * l2),
                WriteMode::Keep => status(1, 0, 1, 2, 0, 2 * l1 + 2 * l2),
                WriteMode::Fail => status(1, 0, 1, 0, 2, 2 * l1),
            };
            assert_eq!(ws.session(s.session_id).unwrap().ingestion, want, "{ctx}");
            assert_eq!(ws.verify().unwrap().defects, vec![], "{ctx}");
            // KEEP and FAIL never store the content they do not keep.
            let files = match (threshold, mode) {
                (0, WriteMode::Overwrite) => hex_set([v1, v2]),
                (0, _) => hex_set([v1]),
                _ => BTreeSet::new(),
            };
            assert_eq!(blob_files(&ws_dir), files, "{ctx}");
        }
    }
}

#[test]
fn quick_check_trusts_size_and_mtime_unless_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let ws = open_ws(&dir.path().join("ws"), &clock, DEFAULT_INLINE_THRESHOLD);
    let s = session(&ws, WriteMode::Overwrite, Lifetime::Forever);
    let src = dir.path().join("same-size.txt");
    fs::write(&src, b"version A").unwrap();
    set_mtime(&src, 1_700_000_000);
    let item = || vec![Item::path(name("same-size.txt"), &src)];
    let (r, _) = run(&ws, &s, item());
    assert_eq!(
        outcomes(&r),
        expect(&[("same-size.txt", Outcome::Ingested, None)])
    );

    // Same size, same mtime: like rsync, the quick check does not read it.
    fs::write(&src, b"version B").unwrap();
    set_mtime(&src, 1_700_000_000);
    let (r, _) = run(&ws, &s, item());
    assert_eq!(
        outcomes(&r),
        expect(&[("same-size.txt", Outcome::Unchanged, None)])
    );
    assert_eq!(r[0].blake3, Some(Hash::of(b"version A")));
    assert_eq!(
        contents(&ws),
        contents_of(&[("same-size.txt", b"version A")])
    );

    // `--checksum`: read everything.
    let mut reports = Vec::new();
    ws.ingest(&s)
        .quick_check(false)
        .run(item(), |r| reports.push(r.clone()))
        .unwrap();
    assert_eq!(
        outcomes(&reports),
        expect(&[("same-size.txt", Outcome::Overwritten, None)])
    );
    assert_eq!(
        contents(&ws),
        contents_of(&[("same-size.txt", b"version B")])
    );

    // Metadata is part of the identity: the quick check does not hide it.
    let with_meta = vec![Item::path(name("same-size.txt"), &src).with_meta(meta(r#"{"k":1}"#))];
    let (r, _) = run(&ws, &s, with_meta);
    assert_eq!(
        outcomes(&r),
        expect(&[("same-size.txt", Outcome::Overwritten, None)])
    );
    assert_eq!(
        ws.current("same-size.txt")
            .unwrap()
            .unwrap()
            .meta
            .as_deref(),
        Some(r#"{"k":1}"#)
    );
    assert_eq!(ws.history("same-size.txt").unwrap().len(), 3);
}

/// A source's quick-check record holds only while its name holds what the
/// source gave it: written from another source (or by another handle on
/// the workspace), the name drops the record, and the first source, though
/// unchanged on disk, is read again and decided by the write mode. Two
/// sources that give a name the same content both keep their records.
#[test]
fn quick_check_record_is_dropped_when_its_name_is_written_from_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let ws_dir = dir.path().join("ws");
    let ws = open_ws(&ws_dir, &clock, DEFAULT_INLINE_THRESHOLD);
    let s = session(&ws, WriteMode::Overwrite, Lifetime::Forever);
    let [a, b, c] = ["a", "b", "c"].map(|d| {
        fs::create_dir(dir.path().join(d)).unwrap();
        dir.path().join(d).join("doc.txt")
    });
    fs::write(&a, b"from a").unwrap();
    fs::write(&b, b"from b").unwrap();
    fs::write(&c, b"from a").unwrap();
    for f in [&a, &b, &c] {
        set_mtime(f, 1_700_000_000);
    }
    let one = |path: &Path, outcome| {
        let (r, _) = run(&ws, &s, vec![Item::path(name("doc.txt"), path)]);
        assert_eq!(
            outcomes(&r),
            expect(&[("doc.txt", outcome, None)]),
            "{}",
            path.display()
        );
    };
    one(&a, Outcome::Ingested);
    one(&a, Outcome::Unchanged);
    one(&b, Outcome::Overwritten);
    one(&a, Outcome::Overwritten);
    assert_eq!(contents(&ws), contents_of(&[("doc.txt", b"from a")]));

    // Another handle (another process, say) writes the name.
    let other = open_ws(&ws_dir, &clock, DEFAULT_INLINE_THRESHOLD);
    let (r, _) = run(
        &other,
        &s,
        vec![Item::bytes(name("doc.txt"), b"from memory".to_vec())],
    );
    assert_eq!(
        outcomes(&r),
        expect(&[("doc.txt", Outcome::Overwritten, None)])
    );
    one(&a, Outcome::Overwritten);
    assert_eq!(contents(&ws), contents_of(&[("doc.txt", b"from a")]));

    // The same content from c: both records hold. A same-size rewrite that
    // keeps the mtime is not even read (as with rsync), which shows it.
    one(&c, Outcome::Unchanged);
    fs::write(&a, b"FROM A").unwrap();
    fs::write(&c, b"FROM C").unwrap();
    set_mtime(&a, 1_700_000_000);
    set_mtime(&c, 1_700_000_000);
    one(&a, Outcome::Unchanged);
    one(&c, Outcome::Unchanged);
    assert_eq!(contents(&ws), contents_of(&[("doc.txt", b"from a")]));

    // New metadata for the same content also drops the records.
    let d = dir.path().join("d.txt");
    fs::write(&d, b"from a").unwrap();
    let (r, _) = run(
        &ws,
        &s,
        vec![Item::path(name("doc.txt"), &d).with_meta(meta(r#"{"k":1}"#))],
    );
    assert_eq!(
        outcomes(&r),
        expect(&[("doc.txt", Outcome::Overwritten, None)])
    );
    one(&c, Outcome::Overwritten);
    assert_eq!(contents(&ws), contents_of(&[("doc.txt", b"FROM C")]));
    assert_eq!(ws.verify().unwrap().defects, vec![]);
}

/// Regression: the quick check looked at the index before earlier files of
/// the same run were committed, and its `unchanged` was reported without
/// looking again, so an OVERWRITE run of `[bytes X -> N, file (C) -> N]`
/// ended with X instead of C (found by the model test).
#[test]
fn quick_check_does_not_hide_an_overwrite_earlier_in_the_same_run() {
    for parallelism in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(t0());
        let ws = open_ws(&dir.path().join("ws"), &clock, 0);
        let s = session(&ws, WriteMode::Overwrite, Lifetime::Forever);
        let src = dir.path().join("doc.txt");
        fs::write(&src, b"from the file").unwrap();
        let (r, _) = run(&ws, &s, vec![Item::path(name("doc.txt"), &src)]);
        assert_eq!(
            outcomes(&r),
            expect(&[("doc.txt", Outcome::Ingested, None)])
        );

        let mut reports = Vec::new();
        ws.ingest(&s)
            .parallelism(parallelism)
            .run(
                vec![
                    Item::bytes(name("doc.txt"), b"from memory".to_vec()),
                    Item::path(name("doc.txt"), &src),
                ],
                |r| reports.push(r.clone()),
            )
            .unwrap();
        assert_eq!(
            outcomes(&reports),
            expect(&[
                ("doc.txt", Outcome::Overwritten, None),
                ("doc.txt", Outcome::Overwritten, None),
            ]),
            "parallelism {parallelism}"
        );
        assert_eq!(contents(&ws), contents_of(&[("doc.txt", b"from the file")]));
        let versions: Vec<(u64, Hash)> = ws
            .history("doc.txt")
            .unwrap()
            .iter()
            .map(|e| (e.version, e.hash))
            .collect();
        let (file, mem) = (Hash::of(b"from the file"), Hash::of(b"from memory"));
        assert_eq!(versions, vec![(3, file), (2, mem), (1, file)]);
        assert_eq!(ws.verify().unwrap().defects, vec![]);
        assert_eq!(
            ws.session(s.session_id).unwrap().ingestion,
            status(1, 2, 0, 0, 0, 13 + 11 + 13)
        );
        // And a third run is a plain quick-checked `unchanged`.
        let (r, _) = run(&ws, &s, vec![Item::path(name("doc.txt"), &src)]);
        assert_eq!(
            outcomes(&r),
            expect(&[("doc.txt", Outcome::Unchanged, None)])
        );
    }
}
