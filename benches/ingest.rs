//! Ingest throughput through the library, with [`Item::path`] on files
//! generated once in a temporary directory.
//!
//! - `ingest/small`: 2,000 files of 4 KiB in 20 folders (inline in SQLite).
//! - `ingest/large`: 2 files of 64 MiB (in the blob store).
//!
//! For each tree:
//!
//! - `fresh`: a first ingest into a new, empty workspace (created in the
//!   untimed setup); every file must come out `ingested`.
//! - `rerun`: the same tree again, in a new session, into a workspace that
//!   already holds it; every file must come out `unchanged` (by the quick
//!   check, without reading it).
//! - `fresh_peer_copy` and `rerun_peer_stat`: a peer measured in the same
//!   run. `fresh_peer_copy` copies the tree with [`std::fs::copy`] (like
//!   `rsync -a` for the small tree, and with an fsync per file for the large
//!   one, like `cp -r && sync`); `rerun_peer_stat` stats every source file,
//!   the least any quick check can do.
//!
//! Throughput is the tree's size in bytes per run, also for re-runs that
//! read none of them. The outcome counts are asserted after every run, so a
//! broken run cannot produce a fast number. At the end it prints the median
//! time per run and the ratio to the peer.
//!
//! ```text
//! cargo bench --bench ingest
//! cargo bench --bench ingest -- small/
//! ```

mod support;

use std::cell::{OnceCell, RefCell};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use intake::outcome::Counts;
use intake::{CreateSession, Item, Name, SessionOauthUser, Workspace, WriteMode};
use support::median_ns;
use tempfile::TempDir;

/// A generated source tree.
struct Tree {
    label: &'static str,
    root: PathBuf,
    /// Names and paths, in the order a run takes them.
    files: Vec<(Name, PathBuf)>,
    bytes: u64,
    /// Whether the copy peer syncs each file (as `cp -r && sync` would).
    peer_syncs: bool,
    measurement: Duration,
}

impl Tree {
    fn items(&self) -> Vec<Item> {
        self.files
            .iter()
            .map(|(n, p)| Item::path(n.clone(), p))
            .collect()
    }

    fn n(&self) -> u64 {
        self.files.len() as u64
    }
}

/// xorshift64*: fast, dependency-free pseudo-random bytes.
struct Rng(u64);

impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `files` files of `size` random bytes, spread over `dirs` folders.
fn generate(
    base: &Path,
    label: &'static str,
    files: usize,
    dirs: usize,
    size: usize,
    measurement: Duration,
) -> Tree {
    let root = base.join(label);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ size as u64);
    let mut buf = vec![0u8; size.min(1 << 20)];
    let mut out = Vec::with_capacity(files);
    for i in 0..files {
        let rel = format!("d{:03}/f{:05}", i % dirs, i);
        let path = root.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        let mut f =
            fs::File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let mut left = size;
        while left > 0 {
            let k = left.min(buf.len());
            rng.fill(&mut buf[..k]);
            f.write_all(&buf[..k])
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            left -= k;
        }
        let name = Name::new(&rel).unwrap_or_else(|e| panic!("{e}"));
        out.push((name, path));
    }
    // The order of a planned run: by name, as the walk would give it.
    out.sort();
    // Flush the generated pages now, so that their writeback does not land
    // in the first measured runs.
    let _ = std::process::Command::new("sync").status();
    Tree {
        label,
        root,
        files: out,
        bytes: (files * size) as u64,
        peer_syncs: size > 1 << 20,
        measurement,
    }
}

fn user() -> SessionOauthUser {
    SessionOauthUser {
        user_id: uuid::Uuid::nil(),
        given_name: "Bench".into(),
        family_name: "Mark".into(),
    }
}

fn session(ws: &Workspace) -> intake::Session {
    ws.create_session(&CreateSession::new(WriteMode::Keep), user())
        .unwrap_or_else(|e| panic!("creating a session: {e}"))
}

/// Ingests the whole tree in a new session and returns the counts.
fn ingest(ws: &Workspace, s: &intake::Session, items: Vec<Item>) -> Counts {
    ws.ingest(s)
        .run(items, |_| {})
        .unwrap_or_else(|e| panic!("ingest run: {e}"))
        .counts
}

fn expect_counts(t: &Tree, what: &str, got: Counts, ingested: u64, unchanged: u64) {
    let want = Counts {
        ingested,
        unchanged,
        bytes: t.bytes,
        ..Counts::default()
    };
    assert_eq!(got, want, "{} {what}: unexpected outcomes", t.label);
}

fn bench_tree(c: &mut Criterion, scratch: &Path, t: &Tree) {
    let mut g = c.benchmark_group(format!("ingest/{}", t.label));
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(t.measurement)
        .throughput(Throughput::Bytes(t.bytes));

    g.bench_function("fresh", |b| {
        b.iter_batched(
            || {
                let dir = TempDir::new_in(scratch).unwrap_or_else(|e| panic!("tempdir: {e}"));
                let ws = Workspace::create(dir.path().join("ws"))
                    .unwrap_or_else(|e| panic!("creating a workspace: {e}"));
                let s = session(&ws);
                (dir, ws, s, t.items())
            },
            |(dir, ws, s, items)| {
                let counts = ingest(&ws, &s, items);
                expect_counts(t, "fresh", counts, t.n(), 0);
                // Dropped (the workspace removed) outside the timing.
                (ws, dir)
            },
            BatchSize::PerIteration,
        );
    });

    // Small copies are kept until the end of the group: removing thousands
    // of files between runs makes ext4 skip the recently freed inodes when
    // it allocates new ones (`recently_deleted` in `find_inode_bit`), which
    // tripled the copy's time and measured the benchmark, not the peer.
    let copies = RefCell::new(Vec::new());
    g.bench_function("fresh_peer_copy", |b| {
        b.iter_batched(
            || TempDir::new_in(scratch).unwrap_or_else(|e| panic!("tempdir: {e}")),
            |dir| {
                for (name, src) in &t.files {
                    let dst = dir.path().join(name.as_str());
                    if let Some(parent) = dst.parent() {
                        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
                    }
                    let n = fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy: {e}"));
                    assert_eq!(n, t.bytes / t.n(), "copy of {}", src.display());
                    if t.peer_syncs {
                        fs::File::open(&dst)
                            .and_then(|f| f.sync_all())
                            .unwrap_or_else(|e| panic!("sync: {e}"));
                    }
                }
                if t.n() > 100 {
                    copies.borrow_mut().push(dir);
                    None
                } else {
                    // A few large files: removed (outside the timing) now.
                    Some(dir)
                }
            },
            BatchSize::PerIteration,
        );
    });
    drop(copies);

    // Primed on first use, so that a filter that skips `rerun` skips this too.
    let primed: OnceCell<(TempDir, Workspace)> = OnceCell::new();
    g.bench_function("rerun", |b| {
        let (_, ws) = primed.get_or_init(|| {
            let dir = TempDir::new_in(scratch).unwrap_or_else(|e| panic!("tempdir: {e}"));
            let ws = Workspace::create(dir.path().join("ws"))
                .unwrap_or_else(|e| panic!("creating a workspace: {e}"));
            let first = ingest(&ws, &session(&ws), t.items());
            expect_counts(t, "priming run", first, t.n(), 0);
            (dir, ws)
        });
        b.iter_batched(
            || (session(ws), t.items()),
            |(s, items)| {
                let counts = ingest(ws, &s, items);
                expect_counts(t, "rerun", counts, 0, t.n());
            },
            BatchSize::PerIteration,
        );
    });

    g.bench_function("rerun_peer_stat", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for (_, src) in &t.files {
                let m = fs::metadata(src).unwrap_or_else(|e| panic!("stat: {e}"));
                assert!(m.is_file());
                bytes += m.len();
            }
            assert_eq!(bytes, t.bytes);
        });
    });
    g.finish();
}

/// Prints each run's median, its throughput and the ratio to its peer.
fn summary(trees: &[Tree], since: SystemTime) {
    let mut lines = Vec::new();
    for t in trees {
        let group = format!("ingest/{}", t.label);
        for (run, peer) in [("fresh", "fresh_peer_copy"), ("rerun", "rerun_peer_stat")] {
            let (Some(a), p) = (
                median_ns(&[&group, run], since),
                median_ns(&[&group, peer], since),
            ) else {
                continue;
            };
            let mib_s = |ns: f64| t.bytes as f64 / (1 << 20) as f64 / (ns / 1e9);
            let peer_text = match p {
                Some(p) => format!(
                    "{peer} {:.1} ms ({:.0} MiB/s), ratio intake/peer {:.2}",
                    p / 1e6,
                    mib_s(p),
                    a / p
                ),
                None => format!("{peer} not run"),
            };
            lines.push(format!(
                "{group}/{run:<6} {:>9.1} ms {:>7.0} MiB/s {:>9.0} files/s | {peer_text}",
                a / 1e6,
                mib_s(a),
                t.n() as f64 / (a / 1e9),
            ));
        }
    }
    if !lines.is_empty() {
        println!();
        println!("ingest: criterion's median time per run");
        for l in lines {
            println!("{l}");
        }
    }
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    let base = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let sources = base.path().join("src");
    let scratch = base.path().join("runs");
    fs::create_dir_all(&scratch).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let trees = [
        generate(
            &sources,
            "small",
            2_000,
            20,
            4 << 10,
            Duration::from_secs(4),
        ),
        generate(&sources, "large", 2, 1, 64 << 20, Duration::from_secs(8)),
    ];
    for t in &trees {
        eprintln!(
            "ingest: {} tree: {} files, {} bytes in {}",
            t.label,
            t.n(),
            t.bytes,
            t.root.display()
        );
        bench_tree(&mut c, &scratch, t);
    }
    c.final_summary();
    summary(&trees, since);
}
