//! Races between real processes of the real binary (SPEC §3, "Concurrency
//! across processes"): several `intake ingest` runs on the same names at the
//! same time, in FAIL, OVERWRITE and KEEP mode, and readers beside a long
//! ingest.
//!
//! Decisions are atomic per name: whatever the interleaving, each name's
//! reported outcomes and its version chain (`files history`) must be those
//! of some serial order of the attempts. [`serial_order`] finds that order
//! by replaying every permutation through a small model of the write-mode
//! table; a name no order explains fails the test.
//!
//! Everything random comes from one seed (`INTAKE_TEST_SEED` overrides the
//! default). The default tests run a few trials; the long variants are
//! `#[ignore]`d:
//!
//! ```text
//! cargo test --release --test race -- --ignored --nocapture
//! ```

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::dir::{Dir, str_field};
use common::procs::{self, Rng};
use serde_json::Value;

/// The default seed of every test here.
const SEED: u64 = 0x7ace_5eed_0000_0001;

/// Content above this size goes to an external blob file.
const INLINE_MAX: u64 = 64 * 1024;

/// Names every racer ingests.
const NAMES: usize = 1000;

/// Longest a racer may run before the test gives up on it.
const CHILD_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Source trees
// ---------------------------------------------------------------------------

/// The racers' names, in walk order (fixed width: sorted strings sort as the
/// walk does).
fn names() -> Vec<String> {
    (0..NAMES)
        .map(|i| format!("r{:02}/n{i:04}.txt", i % 10))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Deterministic content for `key`: small, or with probability
/// `large / 1000` above the inline threshold, so both blob paths race.
fn content(seed: u64, key: &str, large: u64) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes()).update(key.as_bytes());
    let mut xof = h.finalize_xof();
    let mut head = [0u8; 8];
    xof.fill(&mut head);
    let mut rng = Rng::new(u64::from_le_bytes(head));
    let size = if rng.chance(large) {
        rng.range(INLINE_MAX + 1, 192 * 1024)
    } else {
        rng.range(1, 2048)
    };
    let mut data = vec![0u8; size as usize];
    xof.fill(&mut data);
    data
}

fn hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// How often racer `k` brings a large file for the `i`-th name: often in
/// its own quarter of the names, rarely elsewhere. Racers that are slow in
/// different places overtake each other, so every racer wins some names.
fn pace(k: usize, i: usize) -> u64 {
    if i * 4 / NAMES == k { 350 } else { 30 }
}

/// Writes `names` under `root`, each with the content of `key(i, name)` and
/// large with probability `large(i) / 1000`; returns `name -> blake3`.
fn write_tree(
    root: &Path,
    names: &[String],
    seed: u64,
    key: impl Fn(usize, &str) -> String,
    large: impl Fn(usize) -> u64,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let data = content(seed, &key(i, name), large(i));
        let path = root.join(name);
        fs::create_dir_all(path.parent().expect("a name has a parent folder"))
            .expect("creating source folders");
        fs::write(&path, &data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        out.insert(name.clone(), hex(&data));
    }
    out
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A child `intake` whose output is collected by threads.
struct Running {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
    args: Vec<String>,
    started: Instant,
}

/// How a child ended and what it printed.
struct Ended {
    status: ExitStatus,
    lines: Vec<Value>,
    stdout: String,
    stderr: String,
    args: Vec<String>,
    started: Instant,
    ended: Instant,
}

impl Ended {
    fn files(&self) -> Vec<&Value> {
        self.lines.iter().filter(|v| v["type"] == "file").collect()
    }

    fn summary(&self) -> &Value {
        let s = self.lines.last().expect("a summary line");
        assert_eq!(s["type"], "summary", "{}", self.context());
        s
    }

    fn context(&self) -> String {
        format!(
            "\nintake {}\nstatus {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// Starts `intake --workspace WS ARGS…` from the temp dir.
fn spawn(d: &Dir, args: &[&str]) -> Running {
    start(procs::intake(d.root(), &d.ws(), args), args)
}

/// Like [`spawn`], but run through `flock -s GATE`: while the test holds
/// `gate` locked, the children wait, so that children started one after the
/// other begin at the same moment when it is let go.
fn spawn_gated(d: &Dir, args: &[&str], gate: &Path) -> Running {
    let inner = procs::intake(d.root(), &d.ws(), args);
    let mut cmd = std::process::Command::new("flock");
    cmd.arg("-s")
        .arg(gate)
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.current_dir(d.root())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    start(cmd, args)
}

fn start(mut cmd: std::process::Command, args: &[&str]) -> Running {
    let started = Instant::now();
    let mut child = cmd.spawn().expect("starting intake");
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let stdout = procs::read_to_end(out);
    let stderr = procs::read_to_end(err);
    Running {
        child,
        stdout,
        stderr,
        args: args.iter().map(|s| s.to_string()).collect(),
        started,
    }
}

impl Running {
    /// Waits for the child to end on its own (killing it and failing the
    /// test after `timeout`).
    fn wait(mut self, timeout: Duration) -> Ended {
        while self.child.try_wait().expect("waiting for intake").is_none() {
            if self.started.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "intake {} did not finish within {timeout:?}",
                    self.args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let ended = Instant::now();
        let status = self.child.wait().expect("waiting for intake");
        let stdout = self.stdout.join().expect("the stdout reader panicked");
        let stderr = self.stderr.join().expect("the stderr reader panicked");
        let lines = procs::json_lines(stdout.lines(), &stderr);
        Ended {
            status,
            lines,
            stdout,
            stderr,
            args: self.args,
            started: self.started,
            ended,
        }
    }
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// A write mode, as the model knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Keep,
    Overwrite,
    Fail,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Keep => "keep",
            Mode::Overwrite => "overwrite",
            Mode::Fail => "fail",
        }
    }
}

/// One version of a name: its content and the session that wrote it.
type Version = (String, String);

/// One process's attempt at one name, with what it reported.
#[derive(Debug, Clone)]
struct Attempt {
    mode: Mode,
    blake3: String,
    session: String,
    /// `"ingested"`, `"failed conflict"`, …
    outcome: String,
}

/// The write-mode table (SPEC §3) for a name with no metadata: the outcome
/// and whether it writes a version.
fn table(mode: Mode, existing: Option<&str>, new: &str) -> (&'static str, bool) {
    match (existing, mode) {
        (None, _) => ("ingested", true),
        (Some(e), _) if e == new => ("unchanged", false),
        (Some(_), Mode::Keep) => ("kept", false),
        (Some(_), Mode::Overwrite) => ("overwritten", true),
        (Some(_), Mode::Fail) => ("failed conflict", false),
    }
}

/// Replays `order` from the version chain `initial`: each attempt's outcome,
/// and the chain at the end.
fn replay(
    initial: &[Version],
    attempts: &[Attempt],
    order: &[usize],
) -> (Vec<&'static str>, Vec<Version>) {
    let mut chain = initial.to_vec();
    let mut outcomes = vec![""; attempts.len()];
    for &i in order {
        let a = &attempts[i];
        let existing = chain.last().map(|(h, _)| h.as_str());
        let (outcome, writes) = table(a.mode, existing, &a.blake3);
        outcomes[i] = outcome;
        if writes {
            chain.push((a.blake3.clone(), a.session.clone()));
        }
    }
    (outcomes, chain)
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn go(rest: &mut Vec<usize>, prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if rest.is_empty() {
            out.push(prefix.clone());
            return;
        }
        for k in 0..rest.len() {
            let x = rest.remove(k);
            prefix.push(x);
            go(rest, prefix, out);
            prefix.pop();
            rest.insert(k, x);
        }
    }
    let mut out = Vec::new();
    go(&mut (0..n).collect(), &mut Vec::new(), &mut out);
    out
}

/// A serial order of `attempts` that, from `initial`, gives exactly the
/// reported outcomes and exactly the version chain `end`.
fn serial_order(
    initial: &[Version],
    attempts: &[Attempt],
    end: &[Version],
    perms: &[Vec<usize>],
) -> Option<Vec<usize>> {
    perms
        .iter()
        .find(|order| {
            let (outcomes, chain) = replay(initial, attempts, order);
            chain == end && outcomes.iter().zip(attempts).all(|(o, a)| *o == a.outcome)
        })
        .cloned()
}

#[test]
fn model_accepts_only_serial_histories() {
    let a = |mode, h: &str, s: &str, o: &str| Attempt {
        mode,
        blake3: h.into(),
        session: s.into(),
        outcome: o.into(),
    };
    let v = |h: &str, s: &str| (h.to_owned(), s.to_owned());
    let perms = permutations(2);
    // Two FAIL attempts on a new name: one ingested, one conflict.
    let fail = [
        a(Mode::Fail, "x", "s1", "ingested"),
        a(Mode::Fail, "y", "s2", "failed conflict"),
    ];
    assert_eq!(
        serial_order(&[], &fail, &[v("x", "s1")], &perms),
        Some(vec![0, 1])
    );
    // Not if the conflict's content won, nor if both ingested.
    assert_eq!(serial_order(&[], &fail, &[v("y", "s2")], &perms), None);
    let both = [
        a(Mode::Fail, "x", "s1", "ingested"),
        a(Mode::Fail, "y", "s2", "ingested"),
    ];
    assert_eq!(serial_order(&[], &both, &[v("x", "s1")], &perms), None);
    // KEEP ingested, OVERWRITE overwritten: OVERWRITE came second and won.
    let ko = [
        a(Mode::Keep, "k", "s1", "ingested"),
        a(Mode::Overwrite, "o", "s2", "overwritten"),
    ];
    let end = [v("k", "s1"), v("o", "s2")];
    assert_eq!(serial_order(&[], &ko, &end, &perms), Some(vec![0, 1]));
    assert_eq!(serial_order(&[], &ko, &end[..1], &perms), None);
    // A lost update: both OVERWRITE attempts say they wrote, one version.
    let lost = [
        a(Mode::Overwrite, "p", "s1", "overwritten"),
        a(Mode::Overwrite, "q", "s2", "overwritten"),
    ];
    let init = [v("i", "s0")];
    assert_eq!(
        serial_order(&init, &lost, &[v("i", "s0"), v("q", "s2")], &perms),
        None
    );
    assert_eq!(permutations(4).len(), 24);
}

// ---------------------------------------------------------------------------
// Running a race and checking it
// ---------------------------------------------------------------------------

/// One racer: a source folder under the temp dir, a mode, and the content
/// of every name in it.
struct Racer {
    dir: String,
    mode: Mode,
    tree: BTreeMap<String, String>,
}

/// What a race showed, for the figures printed at the end.
#[derive(Debug, Default)]
struct Figures {
    /// How many names each racer's attempt came first for.
    first: Vec<usize>,
    /// How many names ended with a version written by each racer.
    last: Vec<usize>,
    /// Outcome counts over every racer.
    outcomes: BTreeMap<String, usize>,
    /// Wall time of the race.
    elapsed: Duration,
}

/// Every name's version chain (oldest first) through the library, checking
/// that versions count 1, 2, … and only the newest is current.
fn chains(d: &Dir, names: &[String]) -> BTreeMap<String, Vec<Version>> {
    if !d.ws().join(intake::workspace::INDEX_FILE).exists() {
        return names.iter().map(|n| (n.clone(), Vec::new())).collect();
    }
    let ws = intake::Workspace::open(d.ws()).expect("opening the workspace");
    names
        .iter()
        .map(|n| {
            let mut h = match ws.history(n) {
                Ok(h) => h,
                Err(intake::Error::NameNotFound(_)) => Vec::new(),
                Err(e) => panic!("history of {n}: {e}"),
            };
            h.reverse();
            for (i, e) in h.iter().enumerate() {
                assert_eq!(e.version, i as u64 + 1, "{n}: versions not 1..k: {h:?}");
                assert_eq!(
                    e.replaced_at.is_none(),
                    i + 1 == h.len(),
                    "{n}: only the newest version may be current: {h:?}"
                );
            }
            let chain = h
                .iter()
                .map(|e| (e.hash.to_hex(), e.session_id.to_string()))
                .collect();
            (n.clone(), chain)
        })
        .collect()
}

/// `intake verify --json` exits 0 and reports no defect.
fn assert_verify_clean(d: &Dir, context: &str) {
    let r = d.verify_without_defects(context);
    assert_eq!(
        r.lines.last().map(|v| v["defects"].clone()),
        Some(Value::from(0)),
        "{context}{}",
        r.context()
    );
}

/// Starts every racer at once, waits for all, and checks everything a race
/// must give: each racer's lines, exit code and session counters; for every
/// name a serial order explaining its outcomes and its version chain; the
/// listing, `files history` for a sample, and `verify`.
fn run_race(d: &Dir, racers: &[Racer], names: &[String], context: &str) -> Figures {
    let before = chains(d, names);
    let started = Instant::now();
    let running: Vec<Running> = racers
        .iter()
        .map(|r| {
            spawn(
                d,
                &["--json", "ingest", &r.dir, "--write-mode", r.mode.arg()],
            )
        })
        .collect();
    let ended: Vec<Ended> = running.into_iter().map(|r| r.wait(CHILD_TIMEOUT)).collect();
    let mut figures = Figures {
        first: vec![0; racers.len()],
        last: vec![0; racers.len()],
        elapsed: started.elapsed(),
        ..Figures::default()
    };

    // Each racer: one line per name, in walk order, with its own content.
    let mut attempts: BTreeMap<String, Vec<Attempt>> = BTreeMap::new();
    let mut sessions = Vec::new();
    for (k, (racer, e)) in racers.iter().zip(&ended).enumerate() {
        let ctx = format!("{context}, racer {k} ({:?})", racer.mode);
        let files = e.files();
        let got: Vec<String> = files.iter().map(|f| str_field(f, "name")).collect();
        common::dir::assert_lines(&format!("file lines ({ctx})"), names, &got, &e.context());
        let session = str_field(e.summary(), "session_id");
        let mut failed = 0;
        for f in &files {
            let name = str_field(f, "name");
            let outcome = match f["reason"].as_str() {
                Some(r) => format!("{} {r}", str_field(f, "outcome")),
                None => str_field(f, "outcome"),
            };
            failed += usize::from(outcome.starts_with("failed"));
            *figures.outcomes.entry(outcome.clone()).or_default() += 1;
            assert_eq!(
                f["blake3"], racer.tree[&name],
                "{ctx}: {name}: the reported hash is not this racer's content"
            );
            assert_eq!(f["session_id"], session.as_str(), "{ctx}: {name}");
            let blake3 = racer.tree[&name].clone();
            attempts.entry(name).or_default().push(Attempt {
                mode: racer.mode,
                blake3,
                session: session.clone(),
                outcome,
            });
        }
        let code = if failed > 0 { 1 } else { 0 };
        assert_eq!(e.status.code(), Some(code), "{ctx}{}", e.context());
        // The session saw what the racer reported.
        let s = d.run(&["--json", "session", "show", &session]);
        s.assert_code(0);
        let st = &s.lines[0];
        assert_eq!(st["status"], "CLOSED", "{ctx}{}", s.context());
        let counts = &e.summary()["counts"];
        for o in ["ingested", "overwritten", "unchanged", "kept"] {
            assert_eq!(
                st["ingestion_status"][o],
                counts[o],
                "{ctx}: session counter {o}{}",
                s.context()
            );
        }
        assert_eq!(
            st["ingestion_status"]["failed_files"],
            failed,
            "{ctx}{}",
            s.context()
        );
        sessions.push(session);
    }

    // Every name: some serial order explains the outcomes and the chain.
    let after = chains(d, names);
    let perms = permutations(racers.len());
    for name in names {
        let a = &attempts[name];
        let writes = a
            .iter()
            .filter(|a| a.outcome == "ingested" || a.outcome == "overwritten")
            .count();
        assert_eq!(
            after[name].len(),
            before[name].len() + writes,
            "{context}: {name}: one new version per ingested or overwritten"
        );
        let order = serial_order(&before[name], a, &after[name], &perms).unwrap_or_else(|| {
            panic!(
                "{context}: no serial order explains {name}:\nbefore {:?}\nattempts {a:#?}\nafter {:?}",
                before[name], after[name]
            )
        });
        figures.first[order[0]] += 1;
        if let Some((_, s)) = after[name].last()
            && let Some(k) = sessions.iter().position(|x| x == s)
        {
            figures.last[k] += 1;
        }
    }

    // The listing is the chains' newest versions, nothing more.
    let listed: BTreeMap<String, (String, String, u64)> = d
        .files()
        .iter()
        .map(|v| {
            let version = v["version"].as_u64().expect("a version");
            let entry = (str_field(v, "blake3"), str_field(v, "session_id"), version);
            (str_field(v, "name"), entry)
        })
        .collect();
    let want: BTreeMap<String, (String, String, u64)> = after
        .iter()
        .filter_map(|(n, c)| {
            let (h, s) = c.last()?;
            Some((n.clone(), (h.clone(), s.clone(), c.len() as u64)))
        })
        .collect();
    assert!(
        listed == want,
        "{context}: files list differs from the chains"
    );

    // `files history --json` (newest first) agrees, for a sample.
    let mut rng = Rng::new(context.bytes().fold(procs::seed(SEED), |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }));
    for name in names.iter().filter(|_| rng.chance(15)) {
        let r = d.run(&["--json", "files", "history", name]);
        r.assert_code(0);
        let got: Vec<(String, String, u64)> = r
            .lines
            .iter()
            .map(|v| {
                let version = v["version"].as_u64().expect("a version");
                (str_field(v, "blake3"), str_field(v, "session_id"), version)
            })
            .collect();
        let mut want: Vec<(String, String, u64)> = after[name]
            .iter()
            .zip(1..)
            .map(|((h, s), v)| (h.clone(), s.clone(), v))
            .collect();
        want.reverse();
        assert_eq!(got, want, "{context}: files history {name}");
    }
    assert_verify_clean(d, context);
    figures
}

// ---------------------------------------------------------------------------
// 0. Processes creating one workspace at once
// ---------------------------------------------------------------------------

/// Regression: when processes create (and migrate) one workspace at the same
/// moment, SQLite sometimes answers "database is locked" at once, without
/// waiting, to one of them: about one process in a thousand failed that way
/// before opening retried it. Every process must succeed, with its file
/// ingested or found unchanged. The short variant runs 240 processes and so
/// catches a regression only now and then; the long one, 6,000.
fn creation_race(rounds: usize) {
    const PROCS: usize = 6;
    for round in 0..rounds {
        let d = Dir::new();
        fs::create_dir(d.root().join("in")).expect("creating in/");
        fs::write(d.root().join("in/a.txt"), b"same for all").expect("writing a.txt");
        let gate_path = d.root().join("gate");
        let gate = fs::File::create(&gate_path).expect("creating the gate");
        gate.lock().expect("closing the gate");
        let running: Vec<Running> = (0..PROCS)
            .map(|_| spawn_gated(&d, &["--json", "ingest", "in"], &gate_path))
            .collect();
        // Let the children reach the gate, then open it for all at once.
        std::thread::sleep(Duration::from_millis(20));
        gate.unlock().expect("opening the gate");
        let ended: Vec<Ended> = running.into_iter().map(|r| r.wait(CHILD_TIMEOUT)).collect();
        let mut outcomes = BTreeMap::<String, usize>::new();
        for e in &ended {
            assert!(e.status.success(), "round {round}:{}", e.context());
            for f in e.files() {
                *outcomes.entry(str_field(f, "outcome")).or_default() += 1;
            }
        }
        let want: BTreeMap<String, usize> = [
            ("ingested".to_owned(), 1),
            ("unchanged".to_owned(), PROCS - 1),
        ]
        .into();
        assert_eq!(outcomes, want, "round {round}");
        assert_verify_clean(&d, &format!("round {round}"));
    }
}

#[test]
fn creation_race_short() {
    creation_race(40);
}

#[test]
#[ignore = "long: cargo test --release --test race -- --ignored creation_race_long"]
fn creation_race_long() {
    creation_race(1_000);
}

// ---------------------------------------------------------------------------
// 1. FAIL racing FAIL on 1,000 new names
// ---------------------------------------------------------------------------

fn fail_race(trials: usize) {
    let seed = procs::seed(SEED);
    let names = names();
    let started = Instant::now();
    let mut spread = Vec::new();
    for trial in 0..trials {
        let ctx = format!("seed {seed}, FAIL race trial {trial}");
        let d = Dir::new();
        let racers: Vec<Racer> = (0..4)
            .map(|k| {
                let dir = format!("p{k}");
                let tree = write_tree(
                    &d.root().join(&dir),
                    &names,
                    seed,
                    |_, n| format!("fail {trial} racer {k} {n}"),
                    |i| pace(k, i),
                );
                Racer {
                    dir,
                    mode: Mode::Fail,
                    tree,
                }
            })
            .collect();
        // In even trials the racers also race to create the workspace.
        if trial % 2 == 1 {
            d.run(&["init"]).assert_code(0);
        }
        let f = run_race(&d, &racers, &names, &ctx);
        // The model already holds each name to one ingested and three
        // conflicts; say it in numbers too.
        let want: BTreeMap<String, usize> = [
            ("failed conflict".to_owned(), 3 * NAMES),
            ("ingested".to_owned(), NAMES),
        ]
        .into();
        assert_eq!(f.outcomes, want, "{ctx}");
        assert_eq!(f.last, f.first, "{ctx}: the first attempt's content stays");
        eprintln!(
            "{ctx}: names won per racer {:?} in {:?}",
            f.first, f.elapsed
        );
        spread.push(f.first);
    }
    eprintln!(
        "FAIL race: {trials} trials in {:?}; names won per racer: {spread:?}",
        started.elapsed()
    );
}

#[test]
fn fail_race_short() {
    fail_race(3);
}

#[test]
#[ignore = "long: cargo test --release --test race -- --ignored fail_race_long"]
fn fail_race_long() {
    fail_race(20);
}

// ---------------------------------------------------------------------------
// 2. OVERWRITE racing OVERWRITE
// ---------------------------------------------------------------------------

/// Half the names exist before the race. For some names two racers bring
/// the same content, or a racer brings the content already there, so that
/// `unchanged` depends on the order too.
fn key_for(trial: usize, k: usize, i: usize, name: &str) -> String {
    let owner = match (k, i % 6) {
        (1, 0) => 0, // racer 1 brings racer 0's content
        (3, 1) => 2, // racer 3 brings racer 2's content
        _ => k,
    };
    if i % 10 == 3 && i % 2 == 1 && k == 2 {
        return format!("initial {trial} {name}");
    }
    format!("racer {trial} {owner} {name}")
}

/// Ingests the initial content of every other name.
fn seed_half(d: &Dir, names: &[String], seed: u64, trial: usize) {
    let half: Vec<String> = names.iter().skip(1).step_by(2).cloned().collect();
    write_tree(
        &d.root().join("initial"),
        &half,
        seed,
        |_, n| format!("initial {trial} {n}"),
        |_| 0,
    );
    let r = d.ingest(&["initial"]);
    r.assert_code(0);
    assert_eq!(r.files.len(), half.len(), "{}", r.context());
}

fn mixed_race(trials: usize, modes: [Mode; 4], what: &str) {
    let seed = procs::seed(SEED);
    let names = names();
    let started = Instant::now();
    for trial in 0..trials {
        let ctx = format!("seed {seed}, {what} race trial {trial}");
        let d = Dir::new();
        seed_half(&d, &names, seed, trial);
        let racers: Vec<Racer> = modes
            .iter()
            .enumerate()
            .map(|(k, &mode)| {
                let dir = format!("p{k}");
                let tree = write_tree(
                    &d.root().join(&dir),
                    &names,
                    seed,
                    |i, n| key_for(trial, k, i, n),
                    |i| pace(k, i),
                );
                Racer { dir, mode, tree }
            })
            .collect();
        let f = run_race(&d, &racers, &names, &ctx);
        // Some racer brings other content than the initial one for every
        // name, in an OVERWRITE racer or to a new name: every name ends with
        // one of the racers' contents.
        assert_eq!(f.last.iter().sum::<usize>(), NAMES, "{ctx}: {:?}", f.last);
        eprintln!(
            "{ctx}: first per racer {:?}, last writer per racer {:?}, outcomes {:?}, in {:?}",
            f.first, f.last, f.outcomes, f.elapsed
        );
    }
    eprintln!("{what} race: {trials} trials in {:?}", started.elapsed());
}

#[test]
fn overwrite_race_short() {
    mixed_race(1, [Mode::Overwrite; 4], "OVERWRITE");
}

#[test]
#[ignore = "long: cargo test --release --test race -- --ignored overwrite_race_long"]
fn overwrite_race_long() {
    mixed_race(20, [Mode::Overwrite; 4], "OVERWRITE");
}

// ---------------------------------------------------------------------------
// 3. KEEP racing OVERWRITE
// ---------------------------------------------------------------------------

const KEEP_OVERWRITE: [Mode; 4] = [Mode::Keep, Mode::Overwrite, Mode::Keep, Mode::Overwrite];

#[test]
fn keep_overwrite_race_short() {
    mixed_race(1, KEEP_OVERWRITE, "KEEP/OVERWRITE");
}

#[test]
#[ignore = "long: cargo test --release --test race -- --ignored keep_overwrite_race_long"]
fn keep_overwrite_race_long() {
    mixed_race(20, KEEP_OVERWRITE, "KEEP/OVERWRITE");
}

// ---------------------------------------------------------------------------
// 4. Readers beside a long ingest
// ---------------------------------------------------------------------------

/// The longest a reader command may take while an ingest runs.
const READER_BOUND: Duration = Duration::from_secs(10);

/// What one reader command showed.
struct Observed {
    started: Instant,
    ended: Instant,
    /// `files list`: the number of names; `session show`: finished files.
    count: u64,
}

/// Runs `args` in a loop until `stop`, and once more after it (so the last
/// run sees the writer's final state), checking each run.
fn reader_loop(
    d: &Dir,
    args: &[&str],
    stop: &std::sync::atomic::AtomicBool,
    count: impl Fn(&[Value]) -> u64,
) -> Vec<Observed> {
    let mut reads = Vec::new();
    loop {
        let last = stop.load(std::sync::atomic::Ordering::SeqCst);
        let e = spawn(d, args).wait(READER_BOUND * 3);
        let took = e.ended - e.started;
        assert!(
            took < READER_BOUND,
            "intake {} took {took:?} beside an ingest",
            args.join(" ")
        );
        assert_eq!(e.status.code(), Some(0), "{}", e.context());
        reads.push(Observed {
            started: e.started,
            ended: e.ended,
            count: count(&e.lines),
        });
        if last {
            return reads;
        }
    }
}

#[test]
fn readers_never_wait_for_a_long_ingest() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let seed = procs::seed(SEED);
    let d = Dir::new();
    // 4,000 names, four times over in one open session: the first run
    // ingests, the next three overwrite.
    let names: Vec<String> = (0..4000)
        .map(|i| format!("q{:02}/m{i:05}.txt", i % 40))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let trees: Vec<BTreeMap<String, String>> = (0..2)
        .map(|v| {
            write_tree(
                &d.root().join(format!("v{v}")),
                &names,
                seed,
                |_, n| format!("reader {v} {n}"),
                |_| 100,
            )
        })
        .collect();
    let s = d.run(&[
        "--json",
        "session",
        "create",
        "--write-mode",
        "overwrite",
        "--no-expiry",
    ]);
    s.assert_code(0);
    let session = str_field(&s.lines[0], "session_id");
    let stop = AtomicBool::new(false);
    let (writer, lists, shows) = std::thread::scope(|sc| {
        let lists =
            sc.spawn(|| reader_loop(&d, &["--json", "files", "list"], &stop, |l| l.len() as u64));
        let shows = sc.spawn(|| {
            reader_loop(&d, &["--json", "session", "show", &session], &stop, |l| {
                l[0]["ingestion_status"]["finished_files"]
                    .as_u64()
                    .expect("finished_files")
            })
        });
        let mut runs = Vec::new();
        for round in 0..4 {
            let dir = format!("v{}", round % 2);
            let e =
                spawn(&d, &["--json", "ingest", &dir, "--session", &session]).wait(CHILD_TIMEOUT);
            runs.push(e);
        }
        stop.store(true, Ordering::SeqCst);
        let lists = lists.join().expect("the list reader panicked");
        let shows = shows.join().expect("the show reader panicked");
        (runs, lists, shows)
    });
    // The writer: every run finished every name.
    for (round, e) in writer.iter().enumerate() {
        assert_eq!(e.status.code(), Some(0), "round {round}{}", e.context());
        let outcome = if round == 0 {
            "ingested"
        } else {
            "overwritten"
        };
        let files = e.files();
        assert_eq!(files.len(), names.len(), "round {round}");
        for f in files {
            let n = str_field(f, "name");
            assert!(
                f["outcome"] == outcome && f["blake3"] == trees[round % 2][&n],
                "round {round}: {f}"
            );
        }
    }
    let (first, last) = (writer[0].started, writer.last().expect("four rounds").ended);
    // The readers: counters never go back, and they ran while the writer
    // did (a reader that had to wait for the writer would show here as a
    // slow command, or as no overlap at all).
    for (what, reads) in [("files list", &lists), ("session show", &shows)] {
        for w in reads.windows(2) {
            assert!(
                w[0].count <= w[1].count,
                "{what} went back from {} to {}",
                w[0].count,
                w[1].count
            );
        }
        let during = reads
            .iter()
            .filter(|r| r.started > first && r.ended < last)
            .count();
        let slowest = reads
            .iter()
            .map(|r| r.ended - r.started)
            .max()
            .unwrap_or_default();
        eprintln!(
            "{what}: {} runs, {during} during the ingest ({:?}), slowest {slowest:?}",
            reads.len(),
            last - first
        );
        assert!(during >= 5, "{what}: only {during} reads during the ingest");
    }
    assert_eq!(
        lists.last().map(|r| r.count),
        Some(names.len() as u64),
        "the last listing"
    );
    assert_eq!(
        shows.last().map(|r| r.count),
        Some(4 * names.len() as u64),
        "the last session show"
    );
    assert_verify_clean(&d, "after the readers");
}

// ---------------------------------------------------------------------------
// A revert racing an ingest of the same names
// ---------------------------------------------------------------------------

/// `session revert S2` and an OVERWRITE ingest of the same names, started
/// at the same moment in two processes, after S1 created the names and S2
/// overwrote them. For every name, one of the two serial orders explains
/// what happened:
///
/// - revert first: the revert brings back S1's content (`overwritten`),
///   then the ingest overwrites it; the chain ends S1, S2, revert, ingest;
/// - ingest first: the ingest overwrites S2's version, so the revert finds
///   the name changed since and leaves it (`failed conflict`); the chain
///   ends S1, S2, ingest.
fn revert_race(rounds: usize) {
    const N: usize = 1500;
    let names: Vec<String> = (0..N)
        .map(|i| format!("d{:02}/f{i:04}.txt", i % 17))
        .collect();
    for round in 0..rounds {
        let d = Dir::new();
        let seed = procs::seed(SEED) ^ round as u64;
        let large = |i: usize| if i % 50 == 7 { INLINE_MAX + 1 } else { 0 };
        let t1 = write_tree(
            &d.root().join("v1"),
            &names,
            seed,
            |_, n| format!("1{n}"),
            large,
        );
        let t2 = write_tree(
            &d.root().join("v2"),
            &names,
            seed,
            |_, n| format!("2{n}"),
            large,
        );
        let t3 = write_tree(
            &d.root().join("v3"),
            &names,
            seed,
            |_, n| format!("3{n}"),
            large,
        );
        let run = |args: &[&str]| {
            let e = spawn(&d, args).wait(CHILD_TIMEOUT);
            assert!(e.status.success(), "round {round}: {}", e.context());
            str_field(e.summary(), "session_id")
        };
        let s1 = run(&["--json", "ingest", "v1"]);
        let s2 = run(&["--json", "ingest", "v2", "--write-mode", "overwrite"]);

        // The revert starts a little later each round, so that it lands
        // before, inside and after the ingest's batches.
        let ingest = spawn(&d, &["--json", "ingest", "v3", "--write-mode", "overwrite"]);
        std::thread::sleep(Duration::from_millis((round as u64 * 4) % 30));
        let revert = spawn(&d, &["--json", "session", "revert", &s2]);
        let revert = revert.wait(CHILD_TIMEOUT);
        let ingest = ingest.wait(CHILD_TIMEOUT);
        let (r_id, i_id) = (
            str_field(revert.summary(), "session_id"),
            str_field(ingest.summary(), "session_id"),
        );
        let outcome = |e: &Ended, name: &str| -> String {
            let f = e
                .files()
                .into_iter()
                .find(|f| f["name"] == name)
                .unwrap_or_else(|| panic!("round {round}: no line for {name}{}", e.context()));
            match f["reason"].as_str() {
                Some(r) => format!("{} {r}", str_field(f, "outcome")),
                None => str_field(f, "outcome"),
            }
        };
        let after = chains(&d, &names);
        let mut revert_first = 0;
        for name in &names {
            let (r, i) = (outcome(&revert, name), outcome(&ingest, name));
            assert_eq!(
                i, "overwritten",
                "round {round}: {name}: the ingest always writes"
            );
            let base = vec![
                (t1[name].clone(), s1.clone()),
                (t2[name].clone(), s2.clone()),
            ];
            let want = if r == "overwritten" {
                revert_first += 1;
                [
                    base,
                    vec![
                        (t1[name].clone(), r_id.clone()),
                        (t3[name].clone(), i_id.clone()),
                    ],
                ]
                .concat()
            } else {
                assert_eq!(r, "failed conflict", "round {round}: {name}");
                [base, vec![(t3[name].clone(), i_id.clone())]].concat()
            };
            assert_eq!(
                after[name], want,
                "round {round}: {name}: no serial order explains it"
            );
        }
        let conflicts = N - revert_first;
        assert_eq!(
            revert.status.code(),
            Some(i32::from(conflicts > 0)),
            "{}",
            revert.context()
        );
        assert_eq!(ingest.status.code(), Some(0), "{}", ingest.context());
        eprintln!("round {round}: the revert came first for {revert_first} of {N} names");
        assert_verify_clean(&d, &format!("round {round}"));
    }
}

#[test]
fn revert_racing_an_ingest_short() {
    revert_race(3);
}

#[test]
#[ignore = "long: cargo test --release --test race -- --ignored revert_racing_an_ingest_long"]
fn revert_racing_an_ingest_long() {
    revert_race(30);
}
