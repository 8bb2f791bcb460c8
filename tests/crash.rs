//! Crash safety of the real binary (SPEC §7): `kill -9` an ingest, a `gc`
//! and an OVERWRITE run at random moments, then check that the workspace
//! opens, `verify` finds no defect, nothing that was reported is lost,
//! no content is ever torn, and running again converges.
//!
//! Everything random comes from one seed (`INTAKE_TEST_SEED` overrides the
//! default), and every failure message names the seed and the iteration, so
//! a failure can be replayed. The default tests are short; the long variants
//! are `#[ignore]`d:
//!
//! ```text
//! cargo test --release --test crash -- --ignored --nocapture
//! ```

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::dir::{Dir, str_field};
use common::procs::{self, Rng};
use common::tmp_files;
use serde_json::Value;

/// The default seed of every test here.
const SEED: u64 = 0x1a7a_6e5e_ed5e_ed01;

/// Content above this size goes to an external blob file (the engine's
/// default inline threshold, 64 KiB).
const INLINE_MAX: u64 = 64 * 1024;

/// Longest a child may run before the test gives up on it.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// `gc` with zero retention and no grace for young blob files: nothing runs
/// beside it here, so it may take everything unreferenced, and has the most
/// to do.
const GC: [&str; 6] = ["--json", "gc", "--retention", "0s", "--grace", "0s"];

// ---------------------------------------------------------------------------
// Deterministic randomness and source trees
// ---------------------------------------------------------------------------

/// One source file as the test expects to find it in the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    size: u64,
    blake3: String,
}

impl Expected {
    fn external(&self) -> bool {
        self.size > INLINE_MAX
    }
}

/// How big the files of a tree are.
#[derive(Clone, Copy)]
enum Sizes {
    /// ~2,000 files, mostly small, ~8 % above 64 KiB, a few up to 8 MiB:
    /// about 150 MiB in all.
    Mixed,
    /// Small or a few hundred KiB, for trees that are rewritten often.
    Moderate,
}

/// The size of file `i` of tree `variant`, drawn from `rng`. The first
/// files sit on the boundaries (empty, one byte, around the inline
/// threshold), rotated by variant so that two variants never give one name
/// the same (empty) content; other files are never empty for the same
/// reason.
fn size_of(i: usize, variant: u64, sizes: Sizes, rng: &mut Rng) -> u64 {
    const BOUNDARIES: [u64; 5] = [0, 1, INLINE_MAX - 1, INLINE_MAX, INLINE_MAX + 1];
    if i < BOUNDARIES.len() {
        return BOUNDARIES[(i + variant as usize) % BOUNDARIES.len()];
    }
    match sizes {
        Sizes::Mixed if i == BOUNDARIES.len() => 8 << 20,
        Sizes::Mixed => {
            let r = rng.next() % 1000;
            if r < 800 {
                rng.range(1, 4096)
            } else if r < 920 {
                rng.range(4097, INLINE_MAX)
            } else if r < 991 {
                rng.range(INLINE_MAX + 1, 1 << 20)
            } else {
                rng.range((1 << 20) + 1, 8 << 20)
            }
        }
        Sizes::Moderate => {
            if rng.chance(650) {
                rng.range(1, 8192)
            } else {
                rng.range(INLINE_MAX + 1, 320 * 1024)
            }
        }
    }
}

/// `n` relative names: most two folders deep, some at the top, in walk
/// order (fixed-width, so sorting the strings sorts them as the walk does).
fn names(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed ^ 0x6e61_6d65);
    let mut v: Vec<String> = (0..n)
        .map(|i| {
            if rng.chance(50) {
                format!("top{i:05}.dat")
            } else {
                format!("d{:02}/s{}/f{i:05}.bin", rng.range(0, 19), rng.range(0, 4))
            }
        })
        .collect();
    v.sort();
    v
}

/// Writes `names` under `root` with content and sizes drawn from
/// (`seed`, `variant`): the same names with another variant get other
/// content (and mostly other sizes). Returns what the workspace should hold.
fn write_tree(
    root: &Path,
    names: &[String],
    sizes: Sizes,
    seed: u64,
    variant: u64,
) -> BTreeMap<String, Expected> {
    let mut rng = Rng::new(seed ^ variant.wrapping_mul(0x5851_f42d_4c95_7f2d));
    let mut out = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let size = size_of(i, variant, sizes, &mut rng);
        // BLAKE3's extendable output is a fast deterministic stream, even in
        // a debug build.
        let mut key = blake3::Hasher::new();
        key.update(&seed.to_le_bytes())
            .update(&variant.to_le_bytes())
            .update(name.as_bytes());
        let mut data = vec![0u8; size as usize];
        key.finalize_xof().fill(&mut data);
        let path = root.join(name);
        fs::create_dir_all(path.parent().expect("a name has a parent folder"))
            .expect("creating source folders");
        fs::write(&path, &data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let expected = Expected {
            size,
            blake3: blake3::hash(&data).to_hex().to_string(),
        };
        assert!(
            out.insert(name.clone(), expected).is_none(),
            "duplicate name {name}"
        );
    }
    out
}

// ---------------------------------------------------------------------------
// Children that can be killed
// ---------------------------------------------------------------------------

/// When to send SIGKILL.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the spawn.
    Delay(Duration),
    /// After this many `"type":"file"` lines arrived on stdout.
    Lines(usize),
}

/// A child `intake` whose stdout lines arrive on a channel as they are
/// printed.
struct Running {
    child: Child,
    lines: Receiver<String>,
    stdout: JoinHandle<()>,
    stderr: JoinHandle<String>,
    args: Vec<String>,
}

/// How a child ended and what it printed.
struct Ended {
    status: ExitStatus,
    /// Every complete stdout line, parsed (a line cut by the kill is left
    /// out: it was never fully reported).
    lines: Vec<Value>,
    stderr: String,
    args: Vec<String>,
}

impl Ended {
    fn killed(&self) -> bool {
        self.status.signal() == Some(libc::SIGKILL)
    }

    fn files(&self) -> impl Iterator<Item = &Value> {
        self.lines.iter().filter(|v| v["type"] == "file")
    }

    fn context(&self) -> String {
        format!(
            "\nintake {}\nstatus {:?}\n--- stdout (complete lines) ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.lines
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            self.stderr
        )
    }

    /// Killed, or finished on its own with exit code 0.
    fn assert_killed_or_ok(&self, what: &str) {
        assert!(
            self.killed() || self.status.code() == Some(0),
            "{what}: neither killed nor exit code 0{}",
            self.context()
        );
    }
}

/// Starts `intake --workspace WS ARGS…` from the temp dir.
fn spawn(d: &Dir, args: &[&str]) -> Running {
    let mut cmd = procs::intake(d.root(), &d.ws(), args);
    let mut child = cmd.spawn().expect("starting intake");
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let (tx, lines) = mpsc::channel();
    let stdout = std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                // A line without its newline was cut by the kill.
                Ok(0) | Err(_) => return,
                Ok(_) if buf.last() != Some(&b'\n') => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stderr = procs::read_to_end(err);
    Running {
        child,
        lines,
        stdout,
        stderr,
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

impl Running {
    /// Sends SIGKILL at `at` (unless the child ended before), then collects
    /// everything.
    fn kill_at(mut self, at: KillAt) -> Ended {
        let mut received = Vec::new();
        match at {
            KillAt::Delay(d) => std::thread::sleep(d),
            KillAt::Lines(n) => {
                let deadline = Instant::now() + CHILD_TIMEOUT;
                let mut files = 0;
                while files < n {
                    match self
                        .lines
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    {
                        Ok(l) => {
                            files += usize::from(l.contains(r#""type":"file""#));
                            received.push(l);
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => {
                            let _ = self.child.kill();
                            panic!("intake {} hung", self.args.join(" "));
                        }
                    }
                }
            }
        }
        // The child may have exited already; it is not reaped yet, so this
        // cannot hit another process.
        let _ = self.child.kill();
        self.finish(received)
    }

    /// Sends SIGKILL as soon as one of `paths` is gone (or the child ended),
    /// then collects everything.
    fn kill_when_gone(mut self, paths: &[PathBuf]) -> Ended {
        let deadline = Instant::now() + CHILD_TIMEOUT;
        while self.child.try_wait().expect("polling intake").is_none()
            && paths.iter().all(|p| p.exists())
        {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("intake {} hung", self.args.join(" "));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        let _ = self.child.kill();
        self.finish(Vec::new())
    }

    fn finish(mut self, mut received: Vec<String>) -> Ended {
        let status = self.child.wait().expect("waiting for intake");
        self.stdout.join().expect("the stdout reader panicked");
        received.extend(self.lines.try_iter());
        let stderr = self.stderr.join().expect("the stderr reader panicked");
        let lines = procs::json_lines(received.iter().map(String::as_str), &stderr);
        Ended {
            status,
            lines,
            stderr,
            args: self.args,
        }
    }
}

// ---------------------------------------------------------------------------
// Views of the workspace
// ---------------------------------------------------------------------------

/// A name as `files list --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    size: u64,
    blake3: String,
    version: u64,
}

fn u64_field(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key:?} is not a number in {v}"))
}

/// `files list --json` as `name -> Listed`.
fn listed(d: &Dir) -> BTreeMap<String, Listed> {
    d.files()
        .iter()
        .map(|v| {
            let l = Listed {
                size: u64_field(v, "size"),
                blake3: str_field(v, "blake3"),
                version: u64_field(v, "version"),
            };
            (str_field(v, "name"), l)
        })
        .collect()
}

/// `intake verify --json` exits 0 and reports no defect.
fn assert_verify_clean(d: &Dir, context: &str) {
    let r = d.verify_without_defects(context);
    let last = r.lines.last().expect("verify prints a summary line");
    assert_eq!(last["type"], "verify", "{context}{}", r.context());
    assert_eq!(last["defects"], 0, "{context}{}", r.context());
}

/// The external blob files, as hex hashes.
fn blob_files(d: &Dir) -> BTreeSet<String> {
    d.blob_files()
        .iter()
        .map(|p| {
            p.file_name()
                .expect("a blob file has a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// The workspace opened through the library, for checks over every name
/// that would take a process per name through the command line.
fn library(d: &Dir) -> intake::Workspace {
    intake::Workspace::open(d.ws()).expect("opening the workspace through the library")
}

/// `(version, blake3)` of every version of `name`, oldest first, checking
/// that the version numbers are consecutive (gc drops the oldest ones) and
/// only the newest is current.
fn chain(ws: &intake::Workspace, name: &str, context: &str) -> Vec<(u64, String)> {
    let mut h = ws
        .history(name)
        .unwrap_or_else(|e| panic!("history of {name} ({context}): {e}"));
    h.reverse();
    for (i, e) in h.iter().enumerate() {
        assert_eq!(
            e.version,
            h[0].version + i as u64,
            "{name}: version numbers are not consecutive ({context}): {h:?}"
        );
        assert_eq!(
            e.replaced_at.is_none(),
            i + 1 == h.len(),
            "{name}: only the newest version may be current ({context}): {h:?}"
        );
    }
    h.iter().map(|e| (e.version, e.hash.to_hex())).collect()
}

/// A name's current content read through the library, hashed.
fn content_hash(ws: &intake::Workspace, name: &str, context: &str) -> String {
    let mut r = ws
        .read(name)
        .unwrap_or_else(|e| panic!("{context}: reading {name}: {e}"));
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut r, &mut h).unwrap_or_else(|e| panic!("{context}: reading {name}: {e}"));
    h.finalize().to_hex().to_string()
}

/// At most the first 20 of `items`, for a readable failure message.
fn some<T: std::fmt::Debug>(items: &[T]) -> String {
    let shown: Vec<&T> = items.iter().take(20).collect();
    if items.len() > shown.len() {
        format!("{shown:?} (first 20 of {})", items.len())
    } else {
        format!("{shown:?}")
    }
}

/// The command line's walk order is the sorted order of these names; the
/// file lines of a run must come in it, each name once.
fn assert_walk_order(lines: &[&Value], context: &str) {
    let got: Vec<String> = lines.iter().map(|v| str_field(v, "name")).collect();
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert!(
        got == sorted,
        "file lines not in walk order or repeated ({context})"
    );
}

// ---------------------------------------------------------------------------
// 1. kill -9 during a fresh ingest, again and again, then converge
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct LoopStats {
    runs: usize,
    killed: usize,
    finished: usize,
    before_workspace: usize,
    reported_ingested: usize,
}

/// `epochs` times: a fresh workspace, `kills` ingest runs each killed at a
/// random moment (each followed by `verify` and a look at the index), then
/// one run that must converge exactly.
fn crash_loop(epochs: usize, kills: usize) {
    let seed = procs::seed(SEED);
    let d = Dir::new();
    let names = names(2000, seed);
    let started = Instant::now();
    let tree = write_tree(&d.src(), &names, Sizes::Mixed, seed, 0);
    let total: u64 = tree.values().map(|e| e.size).sum();
    let external: BTreeSet<String> = tree
        .values()
        .filter(|e| e.external())
        .map(|e| e.blake3.clone())
        .collect();
    eprintln!(
        "crash loop: seed {seed}, {} files, {:.1} MiB ({} external blobs), generated in {:?}",
        tree.len(),
        total as f64 / (1 << 20) as f64,
        external.len(),
        started.elapsed()
    );
    let mut rng = Rng::new(seed ^ 0x6b69_6c6c);
    let mut stats = LoopStats::default();
    for epoch in 0..epochs {
        if d.ws().exists() {
            fs::remove_dir_all(d.ws()).expect("removing the workspace");
        }
        // Names the index holds, as seen after the last kill.
        let mut committed: BTreeSet<String> = BTreeSet::new();
        // Names some run reported ingested or overwritten: durable by
        // contract.
        let mut reported: BTreeSet<String> = BTreeSet::new();
        for it in 0..kills {
            let ctx = format!("seed {seed}, epoch {epoch}, kill {it}");
            let at = if rng.chance(500) {
                KillAt::Delay(Duration::from_millis(rng.range(0, 400)))
            } else {
                KillAt::Lines(rng.range(0, 2000) as usize)
            };
            let run = spawn(
                &d,
                &["--json", "ingest", "src", "--write-mode", "overwrite"],
            )
            .kill_at(at);
            let ctx = format!("{ctx}, {at:?}");
            run.assert_killed_or_ok(&ctx);
            stats.runs += 1;
            if run.killed() {
                stats.killed += 1;
            } else {
                stats.finished += 1;
            }
            let files: Vec<&Value> = run.files().collect();
            assert_walk_order(&files, &ctx);
            let mut now_reported = BTreeSet::new();
            for f in &files {
                let name = str_field(f, "name");
                let want = tree
                    .get(&name)
                    .unwrap_or_else(|| panic!("{ctx}: reported unknown name {name}"));
                let outcome = if committed.contains(&name) {
                    "unchanged"
                } else {
                    "ingested"
                };
                assert!(
                    f["outcome"] == outcome
                        && f["reason"].is_null()
                        && f["blake3"] == want.blake3.as_str()
                        && f["size"] == want.size,
                    "{ctx}: {name} should be {outcome} with {want:?}: {f}{}",
                    run.context()
                );
                if outcome == "ingested" {
                    now_reported.insert(name);
                }
            }
            if !run.killed() {
                assert_eq!(files.len(), tree.len(), "{ctx}{}", run.context());
                let summary = run.lines.last().expect("a summary");
                assert_eq!(summary["type"], "summary", "{ctx}{}", run.context());
            }
            stats.reported_ingested += now_reported.len();
            reported.extend(now_reported);

            if !d.ws().join(intake::workspace::INDEX_FILE).exists() {
                // Killed before it created the workspace: nothing to check
                // but that nothing was reported and nothing pretends to be a
                // workspace.
                assert!(files.is_empty() && run.killed(), "{ctx}{}", run.context());
                let v = d.run(&["verify"]);
                v.assert_code(2);
                stats.before_workspace += 1;
                continue;
            }
            assert_verify_clean(&d, &ctx);
            let now = listed(&d);
            for (name, l) in &now {
                let want = tree
                    .get(name)
                    .unwrap_or_else(|| panic!("{ctx}: the workspace holds unknown name {name}"));
                assert_eq!(
                    (l.size, l.blake3.as_str(), l.version),
                    (want.size, want.blake3.as_str(), 1),
                    "{ctx}: {name}"
                );
            }
            let now: BTreeSet<String> = now.into_keys().collect();
            let lost: Vec<&String> = reported.difference(&now).collect();
            assert!(
                lost.is_empty(),
                "{ctx}: reported ingested, then lost: {}",
                some(&lost)
            );
            let gone: Vec<&String> = committed.difference(&now).collect();
            assert!(
                gone.is_empty(),
                "{ctx}: in the index, then lost: {}",
                some(&gone)
            );
            committed = now;
        }

        // The run that must converge: what the index held comes out
        // unchanged (every reported name among it), the rest ingested.
        let ctx = format!("seed {seed}, epoch {epoch}, final run");
        let r = d.ingest(&["src", "--write-mode", "overwrite"]);
        r.assert_code(0);
        let want: Vec<(String, String)> = tree
            .keys()
            .map(|n| {
                let o = if committed.contains(n) {
                    "unchanged"
                } else {
                    "ingested"
                };
                (n.clone(), o.to_owned())
            })
            .collect();
        let want: Vec<(&str, &str)> = want.iter().map(|(n, o)| (n.as_str(), o.as_str())).collect();
        r.assert_outcomes(&want);
        for n in &reported {
            assert_eq!(r.file(n)["outcome"], "unchanged", "{ctx}: {n}");
        }
        assert_eq!(u64_field(r.summary(), "bytes"), total, "{ctx}");
        let got: BTreeMap<String, Listed> = listed(&d);
        let expected: BTreeMap<String, Listed> = tree
            .iter()
            .map(|(n, e)| {
                let l = Listed {
                    size: e.size,
                    blake3: e.blake3.clone(),
                    version: 1,
                };
                (n.clone(), l)
            })
            .collect();
        assert_same_listing(&expected, &got, &ctx);
        assert_verify_clean(&d, &ctx);

        // Killed runs leave blob files nothing refers to; gc (with no grace:
        // nothing runs beside it) takes exactly those and leaves one file
        // per external content.
        let orphans = blob_files(&d).difference(&external).count() + tmp_files(&d.ws()).len();
        let g = d.run(&GC);
        g.assert_code(0);
        assert_eq!(
            gc_counts(&g.lines[0]),
            (0, 0, orphans as u64),
            "{ctx}{}",
            g.context()
        );
        assert_eq!(blob_files(&d), external, "{ctx}: blob files after gc");
        assert_eq!(
            tmp_files(&d.ws()),
            Vec::<PathBuf>::new(),
            "{ctx}: blobs/tmp after gc"
        );
        assert_verify_clean(&d, &format!("{ctx}, after gc"));
        assert_same_listing(&expected, &listed(&d), &format!("{ctx}, after gc"));
    }
    eprintln!("crash loop: {stats:?} in {:?}", started.elapsed());
}

fn assert_same_listing(
    expected: &BTreeMap<String, Listed>,
    got: &BTreeMap<String, Listed>,
    context: &str,
) {
    let show = |m: &BTreeMap<String, Listed>| -> Vec<String> {
        m.iter()
            .map(|(n, l)| format!("{n} {} {} v{}", l.size, l.blake3, l.version))
            .collect()
    };
    common::dir::assert_lines(
        &format!("workspace listing ({context})"),
        &show(expected),
        &show(got),
        "",
    );
}

#[test]
fn crash_loop_short() {
    crash_loop(1, 5);
}

/// 200 kills: 40 fresh workspaces, 5 kills each, each converging.
#[test]
#[ignore = "long: cargo test --release --test crash -- --ignored crash_loop_long"]
fn crash_loop_long() {
    crash_loop(40, 5);
}

// ---------------------------------------------------------------------------
// 2. kill -9 during gc
// ---------------------------------------------------------------------------

/// Every name's version chain (oldest first), through the library.
fn chains(d: &Dir, names: &[String], context: &str) -> BTreeMap<String, Vec<(u64, String)>> {
    let ws = library(d);
    names
        .iter()
        .map(|n| (n.clone(), chain(&ws, n, context)))
        .collect()
}

/// Ingests `tree` (written under `dir`) in OVERWRITE mode to the end and
/// checks every outcome.
fn ingest_generation(d: &Dir, dir: &str, first: bool, context: &str) {
    let r = d.ingest(&[dir, "--write-mode", "overwrite"]);
    r.assert_code(0);
    let outcome = if first { "ingested" } else { "overwritten" };
    for f in &r.files {
        assert_eq!(f["outcome"], outcome, "{context}{}", r.context());
    }
}

/// What a `gc` that runs to the end must do, from the state before it.
struct GcExpect {
    /// Every name's version chain now.
    before: BTreeMap<String, Vec<(u64, String)>>,
    /// The chains with only the current version left.
    collapsed: BTreeMap<String, Vec<(u64, String)>>,
    /// The `versions`, `blobs` and `orphans` it reports: every old version;
    /// every content only old versions refer to; every blob file nothing
    /// refers to (left by a gc killed after its index commit) and every
    /// unfinished write.
    counts: (u64, u64, u64),
}

fn gc_expect(d: &Dir, names: &[String], context: &str) -> GcExpect {
    let before = chains(d, names, context);
    let collapsed: BTreeMap<String, Vec<(u64, String)>> = before
        .iter()
        .map(|(n, c)| (n.clone(), c[c.len() - 1..].to_vec()))
        .collect();
    let old_versions: usize = before.values().map(|c| c.len() - 1).sum();
    let referenced: BTreeSet<&String> = before.values().flatten().map(|(_, h)| h).collect();
    let current: BTreeSet<&String> = collapsed.values().flatten().map(|(_, h)| h).collect();
    let dead = referenced.difference(&current).count();
    let orphans = blob_files(d)
        .iter()
        .filter(|h| !referenced.contains(h))
        .count()
        + tmp_files(&d.ws()).len();
    GcExpect {
        before,
        collapsed,
        counts: (old_versions as u64, dead as u64, orphans as u64),
    }
}

/// `(versions, blobs, orphans)` of a `gc --json` line.
fn gc_counts(line: &Value) -> (u64, u64, u64) {
    assert_eq!(line["type"], "gc", "not a gc line: {line}");
    (
        u64_field(line, "versions"),
        u64_field(line, "blobs"),
        u64_field(line, "orphans"),
    )
}

fn gc_kill(iterations: usize) {
    let base = procs::seed(SEED);
    let seed = base ^ 0x6763;
    let d = Dir::new();
    let names = names(300, seed);
    let mut rng = Rng::new(seed);
    let mut generation = 0u64;
    let mut current: BTreeMap<String, Expected> = BTreeMap::new();
    let (mut killed, mut finished, mut index_done) = (0, 0, 0);
    let mut next_generation = |d: &Dir, current: &mut BTreeMap<String, Expected>, ctx: &str| {
        let dir = format!("g{generation}");
        let tree = write_tree(
            &d.root().join(&dir),
            &names,
            Sizes::Moderate,
            seed,
            generation,
        );
        ingest_generation(d, &dir, generation == 0, ctx);
        fs::remove_dir_all(d.root().join(&dir)).expect("removing a generation");
        *current = tree;
        generation += 1;
    };
    for it in 0..iterations {
        let ctx = format!("seed {base}, gc kill {it}");
        // Two more versions of every name, so gc has work whether or not
        // the last one finished.
        next_generation(&d, &mut current, &ctx);
        next_generation(&d, &mut current, &ctx);
        let GcExpect {
            before,
            collapsed,
            counts,
        } = gc_expect(&d, &names, &ctx);

        // In turn: a kill early in the run (before or around the index
        // commit), one at any moment, and one as soon as gc has removed its
        // first blob file, that is after its index commit and before it is
        // done with the files.
        let dead_files: Vec<PathBuf> = d
            .blob_files()
            .into_iter()
            .filter(|p| {
                let hex = p.file_name().expect("a name").to_string_lossy();
                !collapsed.values().flatten().any(|(_, h)| *h == hex)
            })
            .collect();
        let (run, ctx) = match it % 3 {
            0 | 1 => {
                let window = if it % 3 == 0 { 20 } else { 250 };
                let at = KillAt::Delay(Duration::from_millis(rng.range(0, window)));
                (spawn(&d, &GC).kill_at(at), format!("{ctx}, {at:?}"))
            }
            _ => (
                spawn(&d, &GC).kill_when_gone(&dead_files),
                format!("{ctx}, when a blob file is gone"),
            ),
        };
        run.assert_killed_or_ok(&ctx);
        let after = chains(&d, &names, &ctx);
        if run.killed() {
            killed += 1;
            // The index part is one transaction: all old versions or none.
            assert!(
                after == before || after == collapsed,
                "{ctx}: gc killed half-way through the index{}",
                run.context()
            );
            index_done += usize::from(after == collapsed);
        } else {
            finished += 1;
            assert_eq!(after, collapsed, "{ctx}{}", run.context());
            let line = run.lines.last().expect("gc prints a line");
            assert_eq!(gc_counts(line), counts, "{ctx}{}", run.context());
        }
        assert_verify_clean(&d, &ctx);
        let want: BTreeMap<String, Listed> = current
            .iter()
            .map(|(n, e)| {
                let l = Listed {
                    size: e.size,
                    blake3: e.blake3.clone(),
                    version: before[n][before[n].len() - 1].0,
                };
                (n.clone(), l)
            })
            .collect();
        assert_same_listing(&want, &listed(&d), &ctx);
        // Surviving versions are still readable, whole.
        for (n, c) in &after {
            for (v, h) in c {
                if rng.chance(970) {
                    continue; // a sample is enough
                }
                let out = d
                    .cmd()
                    .args(["files", "cat", n, "--version", &v.to_string()])
                    .output()
                    .expect("running files cat");
                assert_eq!(out.status.code(), Some(0), "{ctx}: cat {n} v{v}");
                assert_eq!(
                    blake3::hash(&out.stdout).to_hex().as_str(),
                    h.as_str(),
                    "{ctx}: cat {n} v{v}"
                );
            }
        }
    }
    // A gc that is not killed finishes the work; verify still passes.
    let ctx = format!("seed {base}, final gc");
    let expect = gc_expect(&d, &names, &ctx);
    let g = d.run(&GC);
    g.assert_code(0);
    assert_eq!(
        gc_counts(&g.lines[0]),
        expect.counts,
        "{ctx}{}",
        g.context()
    );
    let after = chains(&d, &names, &ctx);
    assert_eq!(after, expect.collapsed, "{ctx}");
    for (n, c) in &after {
        assert_eq!(
            c[..],
            [(2 * iterations as u64, current[n].blake3.clone())],
            "{ctx}: {n}"
        );
    }
    assert_verify_clean(&d, &ctx);
    let external: BTreeSet<String> = current
        .values()
        .filter(|e| e.external())
        .map(|e| e.blake3.clone())
        .collect();
    assert_eq!(blob_files(&d), external, "{ctx}: blob files");
    eprintln!(
        "gc kill: seed {base}, {iterations} gc runs: {} killed before the index commit, {index_done} after it, {finished} finished",
        killed - index_done
    );
}

#[test]
fn gc_kill_short() {
    gc_kill(4);
}

#[test]
#[ignore = "long: cargo test --release --test crash -- --ignored gc_kill_long"]
fn gc_kill_long() {
    gc_kill(50);
}

// ---------------------------------------------------------------------------
// 3. kill -9 during an OVERWRITE run: never torn
// ---------------------------------------------------------------------------

fn overwrite_kill(iterations: usize) {
    let base = procs::seed(SEED);
    let seed = base ^ 0x6f76;
    let d = Dir::new();
    let names = names(400, seed);
    let trees = [
        write_tree(&d.root().join("a"), &names, Sizes::Mixed, seed, 1),
        write_tree(&d.root().join("b"), &names, Sizes::Mixed, seed, 2),
    ];
    for n in &names {
        assert_ne!(trees[0][n], trees[1][n], "{n}: a and b must differ");
    }
    let mut rng = Rng::new(seed);
    let r = d.ingest(&["a", "--write-mode", "overwrite"]);
    r.assert_code(0);
    // Every name's version chain, as the test expects it.
    let mut chains_now: BTreeMap<String, Vec<String>> = names
        .iter()
        .map(|n| (n.clone(), vec![trees[0][n].blake3.clone()]))
        .collect();
    let (mut killed, mut changed_total) = (0, 0);
    for it in 0..iterations {
        let target = (it + 1) % 2;
        let dir = ["a", "b"][target];
        let at = if rng.chance(500) {
            KillAt::Delay(Duration::from_millis(rng.range(0, 300)))
        } else {
            KillAt::Lines(rng.range(0, names.len() as u64) as usize)
        };
        let ctx = format!("seed {base}, overwrite kill {it} towards {dir}/, {at:?}");
        let run = spawn(&d, &["--json", "ingest", dir, "--write-mode", "overwrite"]).kill_at(at);
        run.assert_killed_or_ok(&ctx);
        killed += usize::from(run.killed());
        let mut reported = BTreeMap::new();
        for f in run.files() {
            let name = str_field(f, "name");
            let was = chains_now[&name].last().expect("a current version").clone();
            let new = &trees[target][&name];
            let outcome = if was == new.blake3 {
                "unchanged"
            } else {
                "overwritten"
            };
            assert!(
                f["outcome"] == outcome && f["blake3"] == new.blake3.as_str(),
                "{ctx}: {name} should be {outcome}: {f}"
            );
            reported.insert(name, outcome);
        }
        assert_verify_clean(&d, &ctx);
        let ws = library(&d);
        let listing = listed(&d);
        let mut changed = 0;
        for n in &names {
            let old = chains_now[n].last().expect("a current version").clone();
            let new = trees[target][n].blake3.clone();
            // The content as read, whole.
            let got = content_hash(&ws, n, &ctx);
            assert!(
                got == old || got == new,
                "{ctx}: {n} is torn: neither the old nor the new content"
            );
            assert_eq!(listing[n].blake3, got, "{ctx}: {n}: listing vs content");
            if reported.get(n) == Some(&"overwritten") {
                assert_eq!(got, new, "{ctx}: {n} was reported overwritten, then lost");
            }
            if got != old {
                chains_now.get_mut(n).expect("a chain").push(got);
                changed += 1;
            }
            let want: Vec<(u64, String)> = (1..).zip(chains_now[n].iter().cloned()).collect();
            assert_eq!(chain(&ws, n, &ctx), want, "{ctx}: {n} history");
            assert_eq!(listing[n].version, chains_now[n].len() as u64, "{ctx}: {n}");
        }
        changed_total += changed;
        // And through `files cat`, byte for byte, for a sample of names.
        for n in names.iter().filter(|_| rng.chance(60)) {
            let data = d.cat(n);
            let current = chains_now[n].last().expect("a current version");
            let source = if *current == trees[target][n].blake3 {
                target
            } else {
                1 - target
            };
            let want = fs::read(d.root().join(["a", "b"][source]).join(n)).expect("a source");
            assert!(
                data == want,
                "{ctx}: files cat {n} differs from {}/{n}",
                ["a", "b"][source]
            );
        }
    }
    eprintln!(
        "overwrite kill: seed {base}, {iterations} runs, {killed} killed, {changed_total} names changed"
    );
}

#[test]
fn overwrite_kill_short() {
    overwrite_kill(4);
}

#[test]
#[ignore = "long: cargo test --release --test crash -- --ignored overwrite_kill_long"]
fn overwrite_kill_long() {
    overwrite_kill(60);
}

// ---------------------------------------------------------------------------
// 4. kill -9 during a revert and during an export
// ---------------------------------------------------------------------------

/// Every file under `dir` (the export's own files aside), with its BLAKE3.
fn exported(dir: &Path) -> BTreeMap<String, String> {
    common::dir::export_folder(dir)
        .into_iter()
        .map(|(p, data)| {
            let data = data.unwrap_or_else(|| panic!("{p} is a link"));
            (p, blake3::hash(&data).to_hex().to_string())
        })
        .collect()
}

/// A revert killed at a random moment leaves each name with the content it
/// had or the one the revert brings back, never anything else, with the
/// names it reported done; `verify` is clean; a forced re-run finishes it.
/// An export killed at a random moment leaves every file in the folder
/// whole (the old or the new content of its name); a re-run makes the
/// folder exactly the workspace.
fn revert_and_export_kill(iterations: usize) {
    let base = procs::seed(SEED);
    let seed = base ^ 0x7265;
    let d = Dir::new();
    let names = names(300, seed);
    let trees = [
        write_tree(&d.root().join("a"), &names, Sizes::Mixed, seed, 1),
        write_tree(&d.root().join("b"), &names, Sizes::Mixed, seed, 2),
    ];
    let mut rng = Rng::new(seed);
    d.ingest(&["a"]).assert_code(0);
    let out = d.root().join("out");
    let (mut killed, mut torn_checks) = (0, 0);
    for it in 0..iterations {
        let ctx = format!("seed {base}, revert/export kill {it}");
        // The session to revert: everything to b.
        let r = d.ingest(&["b", "--write-mode", "overwrite"]);
        r.assert_code(0);
        let bad = str_field(r.summary(), "session_id");

        // An export of the b state, killed.
        let at = KillAt::Delay(Duration::from_millis(rng.range(0, 120)));
        let run = spawn(&d, &["--json", "export", "out"]).kill_at(at);
        run.assert_killed_or_ok(&ctx);
        killed += usize::from(run.killed());
        for (name, hash) in exported(&out) {
            let ok = [&trees[0], &trees[1]]
                .iter()
                .any(|t| t.get(&name).is_some_and(|e| e.blake3 == hash));
            assert!(ok, "{ctx}: exported {name} is torn");
            torn_checks += 1;
        }

        // The revert, killed.
        let at = if rng.chance(500) {
            KillAt::Delay(Duration::from_millis(rng.range(0, 150)))
        } else {
            KillAt::Lines(rng.range(0, names.len() as u64) as usize)
        };
        let run = spawn(&d, &["--json", "session", "revert", &bad]).kill_at(at);
        run.assert_killed_or_ok(&format!("{ctx}: revert"));
        killed += usize::from(run.killed());
        let reported: BTreeSet<String> = run
            .files()
            .filter(|f| f["outcome"] == "overwritten")
            .map(|f| str_field(f, "name"))
            .collect();
        assert_verify_clean(&d, &ctx);
        let ws = library(&d);
        for n in &names {
            let got = content_hash(&ws, n, &ctx);
            assert!(
                got == trees[0][n].blake3 || got == trees[1][n].blake3,
                "{ctx}: {n} holds neither its old nor its reverted content"
            );
            if reported.contains(n) {
                assert_eq!(
                    got, trees[0][n].blake3,
                    "{ctx}: {n} reported reverted, then lost"
                );
            }
        }
        // A forced re-run converges: every name back to a.
        let r = d.run(&["--json", "session", "revert", &bad, "--force"]);
        r.assert_code(0);
        for f in &r.files {
            let n = str_field(f, "name");
            let outcome = str_field(f, "outcome");
            let want = if reported.contains(&n) {
                "unchanged"
            } else {
                "overwritten"
            };
            // A name the killed run reverted without printing it is unchanged too.
            assert!(
                outcome == want || outcome == "unchanged",
                "{ctx}: {n}: {outcome}"
            );
        }
        let listing = listed(&d);
        for n in &names {
            assert_eq!(
                listing[n].blake3, trees[0][n].blake3,
                "{ctx}: {n} after the re-run"
            );
        }
        // The export, run to its end: the folder is the workspace.
        let r = d.run(&["--json", "export", "out"]);
        r.assert_code(0);
        let want: BTreeMap<String, String> = names
            .iter()
            .map(|n| (n.clone(), trees[0][n].blake3.clone()))
            .collect();
        assert_eq!(exported(&out), want, "{ctx}: the export after its re-run");
        assert!(!out.join(".intake-export.tmp").exists(), "{ctx}");
    }
    eprintln!(
        "revert/export kill: seed {base}, {iterations} rounds, {killed} killed, {torn_checks} exported files checked whole"
    );
}

#[test]
fn revert_and_export_kill_short() {
    revert_and_export_kill(3);
}

#[test]
#[ignore = "long: cargo test --release --test crash -- --ignored revert_and_export_kill_long"]
fn revert_and_export_kill_long() {
    revert_and_export_kill(60);
}
