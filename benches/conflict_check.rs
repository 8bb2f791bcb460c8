//! The conflict check: from "here is a candidate name with its hash (and
//! metadata)" to the write-mode decision, against an index of 10^4, 10^5,
//! 10^6 and 10^7 names.
//!
//! Three paths are measured, per name:
//!
//! - `txn_hit_same|txn_hit_diff|txn_miss/<MODE>`: inside a write transaction
//!   ([`Index::begin`]), `txn.current(name)` and then `decide`, which is what
//!   the committer of an ingest does. A transaction serves [`TXN_BATCH`]
//!   names (the committer's default group commit) and is then dropped
//!   (rolled back); its begin and rollback are part of the time, amortized
//!   over the batch. `txn_begin_rollback` is that overhead alone, per
//!   transaction.
//! - `snap_hit_same|snap_hit_diff|snap_miss/<MODE>`: in a read transaction
//!   ([`Workspace::snapshot`]) of [`TXN_BATCH`] names, `snap.current(name)`
//!   and then [`intake::decide::decide`]; what a dry run does for each batch.
//! - `hit_same|hit_diff|miss/<MODE>`: [`Workspace::current`] alone and then
//!   `decide`: one lookup in a read transaction of its own (what `intake
//!   files show` does), for comparison; no batch of checks takes this path.
//!
//! `hit_same` is a candidate with the content the name holds (`Unchanged`),
//! `hit_diff` one with other content (`Keep`, `Overwrite` or `Conflict` by
//! mode), `miss` a name that is not in the index (`Ingest`). Every decision
//! is checked against the table, so a broken lookup cannot give a fast
//! number. Candidates are a fixed pseudo-random sample of [`SAMPLE`] names,
//! visited round-robin, one name per criterion iteration: the reported time
//! is the time per name. The sample is small enough to stay in SQLite's page
//! cache after the warm-up, so this is the hot-cache cost.
//!
//! The indexes are built once through the public library (a KEEP session
//! ingesting `d0000/f0000000`, … with small unique contents, all inline in
//! SQLite) and kept under `target/bench-data/conflict_check/` keyed by size,
//! so later runs start at once. Delete that directory to rebuild them.
//!
//! ```text
//! cargo bench --bench conflict_check                 # everything
//! cargo bench --bench conflict_check -- 1e4/         # one size
//! ```
//!
//! `bare_hit_same|bare_miss/pk` is the floor: the same names looked up by
//! the primary key with SQLite alone (rusqlite, a read transaction per
//! batch), in the same index.
//!
//! At the end it prints the median per name at each size, the ratios of
//! 10^6 and 10^7 to 10^4, and 10^7 against the bare lookup, against the
//! targets (≤ 2 µs per name at 10^6; ≤ 2× the cost at 10^4; ≤ 1.5× the bare
//! lookup at 10^7).

mod support;

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput};
use intake::store::{Entry, Index, SqliteIndex, SqliteOptions};
use intake::{
    CreateSession, Hash, Item, Name, SessionOauthUser, Workspace, WorkspaceBuilder, WriteMode,
    decide::Decision, decide::Identity, decide::decide, workspace::INDEX_FILE,
};
use rusqlite::OptionalExtension;
use support::{median_ns, target_dir};

/// Index sizes, with the label used in benchmark ids and directory names.
const SIZES: [(u64, &str); 4] = [
    (10_000, "1e4"),
    (100_000, "1e5"),
    (1_000_000, "1e6"),
    (10_000_000, "1e7"),
];
/// Candidates per benchmark, visited round-robin.
const SAMPLE: usize = 1_000;
/// Names looked up per write transaction (the committer's default batch).
const TXN_BATCH: u64 = 1_024;
/// Bump when the content of the cached indexes changes.
const LAYOUT: &str = "v1";
const MODES: [WriteMode; 3] = [WriteMode::Keep, WriteMode::Overwrite, WriteMode::Fail];

/// The targets: at most 2 µs per name at 10^6 names; at 10^7 names, at
/// most twice the per-name cost at 10^4, and at most 1.5× a bare SQLite
/// primary-key lookup of the same names in the same index (the floor for
/// an SQLite-backed index), measured in the same run.
const TARGET_NS_AT_1E6: f64 = 2_000.0;
const TARGET_RATIO: f64 = 2.0;
const TARGET_OVER_BARE: f64 = 1.5;

fn name_of(i: u64) -> String {
    format!("d{:04}/f{:07}", i / 1000, i)
}

/// A name that is not in the index but sorts right after `name_of(i)`, so a
/// miss walks to a random leaf like a hit does (a miss past the last name
/// would only touch the B-tree's right edge).
fn missing_name_of(i: u64) -> String {
    format!("d{:04}/f{:07}.new", i / 1000, i)
}

fn content_of(i: u64) -> Vec<u8> {
    format!("intake conflict_check content {i}\n").into_bytes()
}

fn other_content_of(i: u64) -> Vec<u8> {
    format!("intake conflict_check other content {i}\n").into_bytes()
}

/// splitmix64: a fixed, dependency-free pseudo-random sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The name exists with the candidate's content.
    HitSame,
    /// The name exists with other content.
    HitDiff,
    /// The name does not exist.
    Miss,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::HitSame, Kind::HitDiff, Kind::Miss];

    fn label(self) -> &'static str {
        match self {
            Kind::HitSame => "hit_same",
            Kind::HitDiff => "hit_diff",
            Kind::Miss => "miss",
        }
    }

    fn expected(self, mode: WriteMode) -> Decision {
        match (self, mode) {
            (Kind::HitSame, _) => Decision::Unchanged,
            (Kind::Miss, _) => Decision::Ingest,
            (Kind::HitDiff, WriteMode::Keep) => Decision::Keep,
            (Kind::HitDiff, WriteMode::Overwrite) => Decision::Overwrite,
            (Kind::HitDiff, WriteMode::Fail) => Decision::Conflict,
        }
    }
}

/// A candidate: a name with the hash of the file that would go there.
struct Candidate {
    name: String,
    hash: Hash,
}

fn candidates(n: u64, kind: Kind) -> Vec<Candidate> {
    let mut rng = Rng(0x1A7A_CE00 ^ n);
    (0..SAMPLE)
        .map(|_| {
            let i = rng.next() % n;
            match kind {
                Kind::HitSame => Candidate {
                    name: name_of(i),
                    hash: Hash::of(&content_of(i)),
                },
                Kind::HitDiff => Candidate {
                    name: name_of(i),
                    hash: Hash::of(&other_content_of(i)),
                },
                Kind::Miss => Candidate {
                    name: missing_name_of(i),
                    hash: Hash::of(&content_of(i)),
                },
            }
        })
        .collect()
}

fn identity(e: &Entry) -> Identity<'_> {
    Identity {
        hash: &e.hash,
        meta: e.meta.as_deref(),
    }
}

/// An index of `n` names: the workspace, and the index itself for the
/// write-transaction path.
struct Fixture {
    ws: Workspace,
    index: Arc<SqliteIndex>,
    /// The index file, for the bare SQLite lookups.
    db: std::path::PathBuf,
}

fn open(dir: &Path) -> Fixture {
    let index = Arc::new(
        SqliteIndex::open(
            &dir.join(INDEX_FILE),
            &SqliteOptions {
                create: true,
                ..SqliteOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("opening the index in {}: {e}", dir.display())),
    );
    let ws = WorkspaceBuilder::new(dir)
        .index(index.clone())
        .create()
        .unwrap_or_else(|e| panic!("opening the workspace {}: {e}", dir.display()));
    Fixture {
        ws,
        index,
        db: dir.join(INDEX_FILE),
    }
}

/// Opens the cached index of `n` names, building it first if it is not
/// there (or was left incomplete by an interrupted build).
fn fixture(n: u64, label: &str) -> Fixture {
    let dir = target_dir()
        .join("bench-data/conflict_check")
        .join(format!("{LAYOUT}-{label}"));
    let marker = dir.join("complete");
    let complete = fs::read_to_string(&marker).is_ok_and(|s| s.trim() == n.to_string());
    if !complete {
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .unwrap_or_else(|e| panic!("removing the stale {}: {e}", dir.display()));
        }
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        eprintln!(
            "conflict_check: building the index of {n} names in {}",
            dir.display()
        );
        let started = Instant::now();
        let f = open(&dir);
        let user = SessionOauthUser {
            user_id: uuid::Uuid::nil(),
            given_name: "Bench".into(),
            family_name: "Mark".into(),
        };
        let session =
            f.ws.create_session(&CreateSession::new(WriteMode::Keep), user)
                .unwrap_or_else(|e| panic!("creating a session: {e}"));
        let items = (0..n).map(|i| {
            let name = Name::new(&name_of(i)).unwrap_or_else(|e| panic!("{e}"));
            Item::bytes(name, content_of(i))
        });
        let summary =
            f.ws.ingest(&session)
                .batch(8192, 64 << 20)
                .run(items, |_| {})
                .unwrap_or_else(|e| panic!("building the index: {e}"));
        assert_eq!(
            (summary.counts.ingested, summary.counts.total()),
            (n, n),
            "building the index: {:?}",
            summary.counts
        );
        f.ws.close_session(session.session_id)
            .unwrap_or_else(|e| panic!("closing the session: {e}"));
        drop(f);
        fs::write(&marker, n.to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", marker.display()));
        eprintln!(
            "conflict_check: built {n} names in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let f = open(&dir);
    for i in [0, n / 2, n - 1] {
        let e =
            f.ws.current(&name_of(i))
                .unwrap_or_else(|e| panic!("looking up {}: {e}", name_of(i)));
        assert_eq!(
            e.map(|e| e.hash),
            Some(Hash::of(&content_of(i))),
            "{} in {}: delete the directory to rebuild it",
            name_of(i),
            dir.display()
        );
    }
    f
}

/// Runs `iters` candidates (round-robin) through `batch` in batches of
/// [`TXN_BATCH`], one transaction each, and returns the time it took.
fn in_batches(
    iters: u64,
    cands: &[Candidate],
    mut batch: impl FnMut(&mut dyn Iterator<Item = &Candidate>),
) -> Duration {
    let mut next = cands.iter().cycle();
    let mut left = iters;
    let start = Instant::now();
    while left > 0 {
        let chunk = left.min(TXN_BATCH);
        left -= chunk;
        batch(&mut next.by_ref().take(chunk as usize));
    }
    start.elapsed()
}

/// Whether criterion will measure (`cargo bench`), rather than run each
/// benchmark once as a test (`cargo test --benches`) or list them.
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}

fn bench(c: &mut Criterion) {
    for (n, label) in SIZES {
        if n > SIZES[0].0 && !measuring() {
            // As a test, the smallest index shows that every path works;
            // building 10^6 names would only make `cargo test` slow.
            eprintln!("conflict_check: skipping {label} outside `cargo bench`");
            continue;
        }
        let f = fixture(n, label);
        let mut g = c.benchmark_group(format!("conflict_check/{label}"));
        g.throughput(Throughput::Elements(1));
        for kind in Kind::ALL {
            let cands = candidates(n, kind);
            for mode in MODES {
                let expected = kind.expected(mode);
                let check = |c: &Candidate, existing: Option<Entry>| {
                    let new = Identity {
                        hash: &c.hash,
                        meta: None,
                    };
                    let d = decide(mode, existing.as_ref().map(identity), new);
                    assert_eq!(d, expected, "{}", c.name);
                    d
                };
                let id = BenchmarkId::new(kind.label(), mode.as_str());
                g.bench_function(id, |b| {
                    let mut k = 0usize;
                    b.iter(|| {
                        let c = &cands[k % SAMPLE];
                        k += 1;
                        let existing =
                            f.ws.current(black_box(&c.name))
                                .unwrap_or_else(|e| panic!("looking up {}: {e}", c.name));
                        check(c, existing)
                    });
                });
                let id = BenchmarkId::new(format!("snap_{}", kind.label()), mode.as_str());
                g.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        in_batches(iters, &cands, |batch| {
                            let snap =
                                f.ws.snapshot()
                                    .unwrap_or_else(|e| panic!("taking a snapshot: {e}"));
                            for c in batch {
                                let existing = snap
                                    .current(black_box(&c.name))
                                    .unwrap_or_else(|e| panic!("looking up {}: {e}", c.name));
                                black_box(check(c, existing));
                            }
                        })
                    });
                });
                let id = BenchmarkId::new(format!("txn_{}", kind.label()), mode.as_str());
                g.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        in_batches(iters, &cands, |batch| {
                            let mut txn = f
                                .index
                                .begin(false)
                                .unwrap_or_else(|e| panic!("beginning a transaction: {e}"));
                            // As the committer does: the batch's names,
                            // sorted, locked with one call.
                            let mut sorted: Vec<_> = batch.collect();
                            sorted.sort_by(|a, b| a.name.cmp(&b.name));
                            let names: Vec<&str> = sorted.iter().map(|c| c.name.as_str()).collect();
                            let found = txn
                                .lock(black_box(&names))
                                .unwrap_or_else(|e| panic!("looking up a batch: {e}"));
                            for (c, existing) in sorted.into_iter().zip(found) {
                                black_box(check(c, existing));
                            }
                        })
                    });
                });
            }
        }
        // The floor: the same names looked up by their primary key with
        // SQLite alone, a read transaction per batch (as the committer's
        // path), the row's columns read as the index needs them.
        let bare = rusqlite::Connection::open_with_flags(
            &f.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap_or_else(|e| panic!("opening {}: {e}", f.db.display()));
        // The page cache the index's own connections have.
        bare.execute_batch("PRAGMA cache_size=-32768")
            .unwrap_or_else(|e| panic!("cache_size: {e}"));
        for kind in [Kind::HitSame, Kind::Miss] {
            let cands = candidates(n, kind);
            let id = BenchmarkId::new(format!("bare_{}", kind.label()), "pk");
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    in_batches(iters, &cands, |batch| {
                        let mut sorted: Vec<_> = batch.collect();
                        sorted.sort_by(|a, b| a.name.cmp(&b.name));
                        bare.execute_batch("BEGIN")
                            .unwrap_or_else(|e| panic!("begin: {e}"));
                        {
                            let mut st = bare
                                .prepare_cached(
                                    "SELECT hash, size, meta, session_id, ingested_at, version
                                     FROM entries WHERE name = ?1",
                                )
                                .unwrap_or_else(|e| panic!("prepare: {e}"));
                            for c in sorted {
                                let found = st
                                    .query_row([black_box(&c.name)], |r| {
                                        let hash = r.get_ref(0)?.as_blob()?;
                                        let mut h = [0u8; 32];
                                        h.copy_from_slice(&hash[..32.min(hash.len())]);
                                        Ok((
                                            h,
                                            r.get::<_, i64>(1)?,
                                            r.get::<_, Option<String>>(2)?,
                                            r.get::<_, String>(3)?,
                                            r.get::<_, i64>(4)?,
                                            r.get::<_, i64>(5)?,
                                        ))
                                    })
                                    .optional()
                                    .unwrap_or_else(|e| panic!("looking up {}: {e}", c.name));
                                assert_eq!(found.is_some(), kind == Kind::HitSame, "{}", c.name);
                                black_box(found);
                            }
                        }
                        bare.execute_batch("COMMIT")
                            .unwrap_or_else(|e| panic!("commit: {e}"));
                    })
                });
            });
        }
        g.bench_function("txn_begin_rollback", |b| {
            b.iter(|| {
                let txn = f
                    .index
                    .begin(false)
                    .unwrap_or_else(|e| panic!("beginning a transaction: {e}"));
                drop(black_box(txn));
            });
        });
        g.finish();
    }
}

fn fmt_ns(ns: Option<f64>) -> String {
    match ns {
        Some(ns) if ns >= 1_000.0 => format!("{:.2} µs", ns / 1_000.0),
        Some(ns) => format!("{ns:.0} ns"),
        None => "-".into(),
    }
}

/// Prints the medians per name, the 10^6 and 10^7 : 10^4 ratios, and the
/// committer's path against the bare lookup, against the targets.
fn summary(since: SystemTime) {
    let median = |label: &str, function: &str, param: &str| {
        median_ns(
            &[&format!("conflict_check/{label}"), function, param],
            since,
        )
    };
    let mut rows = Vec::new();
    for prefix in ["txn_", "snap_", ""] {
        for kind in Kind::ALL {
            for mode in MODES {
                let function = format!("{prefix}{}", kind.label());
                let m: Vec<Option<f64>> = SIZES
                    .iter()
                    .map(|(_, l)| median(l, &function, mode.as_str()))
                    .collect();
                // The bare lookup of the same kind of name (hits with the
                // same or other content read the same row).
                let bare_kind = if kind == Kind::Miss {
                    "miss"
                } else {
                    "hit_same"
                };
                let bare = median("1e7", &format!("bare_{bare_kind}"), "pk");
                rows.push((format!("{function}/{}", mode.as_str()), m, bare));
            }
        }
    }
    if rows.iter().all(|(_, m, _)| m.iter().all(Option::is_none)) {
        return;
    }
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    };
    let fmt_x = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
    println!();
    println!("conflict_check: criterion's median time per name");
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9}  result",
        "benchmark", "1e4", "1e5", "1e6", "1e7", "1e6/1e4", "1e7/1e4", "1e7/bare"
    );
    for (id, m, bare) in rows {
        let (r6, r7) = (ratio(m[0], m[2]), ratio(m[0], m[3]));
        let over_bare = ratio(bare, m[3]);
        let checked = id.starts_with("txn_") || id.starts_with("snap_");
        let verdict = match (m[2], r6, r7, over_bare) {
            // A lookup alone is shown for comparison, not a check path.
            _ if !checked => "info",
            (Some(t), Some(r6), Some(r7), Some(b)) => {
                if t <= TARGET_NS_AT_1E6
                    && r6 <= TARGET_RATIO
                    && r7 <= TARGET_RATIO
                    && b <= TARGET_OVER_BARE
                {
                    "PASS"
                } else {
                    "MISS"
                }
            }
            _ => "-",
        };
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9}  {verdict}",
            id,
            fmt_ns(m[0]),
            fmt_ns(m[1]),
            fmt_ns(m[2]),
            fmt_ns(m[3]),
            fmt_x(r6),
            fmt_x(r7),
            fmt_x(over_bare),
        );
    }
    println!(
        "targets: <= 2 µs at 1e6; 1e6/1e4 and 1e7/1e4 <= {TARGET_RATIO}x; 1e7 <= {TARGET_OVER_BARE}x a bare SQLite primary-key lookup"
    );
    for kind in ["hit_same", "miss"] {
        let bare: Vec<String> = SIZES
            .iter()
            .map(|(_, l)| format!("{l}: {}", fmt_ns(median(l, &format!("bare_{kind}"), "pk"))))
            .collect();
        println!("bare SQLite lookup, {kind}: {}", bare.join(", "));
    }
    let txn: Vec<String> = SIZES
        .iter()
        .map(|(_, l)| {
            let ns = median_ns(
                &[&format!("conflict_check/{l}"), "txn_begin_rollback"],
                since,
            );
            format!("{l}: {}", fmt_ns(ns))
        })
        .collect();
    println!("txn_begin_rollback (per transaction): {}", txn.join(", "));
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    summary(since);
}
