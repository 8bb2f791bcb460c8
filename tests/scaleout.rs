//! One workspace across machines: `intake` processes that share nothing but
//! a PostgreSQL server and an S3-compatible store, each with its own
//! source folder, racing over the same names.
//!
//! Needs `INTAKE_TEST_PG` and `INTAKE_TEST_S3` (`.ci/servers.sh` starts both
//! servers and sets them); without them every test says so and passes.
//! The long variants: `cargo test --release --test scaleout -- --ignored`.

// A test that hits an unexpected error should panic where it happened.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Output};

use common::procs::{Rng, intake, json_lines, seed};
use common::servers::{addresses, fresh_schema};
use intake::Workspace;

/// A new workspace in a schema (and bucket prefix) of its own: its address.
fn workspace() -> Option<String> {
    let (pg, bucket) = addresses(true)?;
    let schema = fresh_schema();
    let url = format!("{pg}?schema={schema}");
    let blobs = format!("{}/{schema}", bucket.unwrap());
    let out = run(Path::new("/"), &url, &["init", "--blobs", &blobs]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    Some(url)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run(root: &Path, url: &str, args: &[&str]) -> Output {
    intake(root, Path::new(url), args).output().unwrap()
}

fn spawn(root: &Path, url: &str, args: &[&str]) -> Child {
    intake(root, Path::new(url), args).spawn().unwrap()
}

/// `n` files `d/NNNN.txt` whose contents say `tag`; every 40th is 100 KiB,
/// so that it goes to the object store rather than inline.
fn tree(n: usize, tag: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    for i in 0..n {
        let mut body = format!("{tag} {i}\n").into_bytes();
        if i % 40 == 0 {
            body.resize(100 * 1024, b'x');
        }
        std::fs::write(dir.path().join(format!("d/{i:04}.txt")), body).unwrap();
    }
    dir
}

/// One file's report: (name, outcome, reason, hash).
type Report = (String, String, Option<String>, String);

/// Runs one `intake --json ingest d` per (tree, write mode), all at once;
/// each one's per-file reports.
fn race(url: &str, runs: &[(&Path, &str)]) -> Vec<Vec<Report>> {
    let children: Vec<Child> = runs
        .iter()
        .map(|(root, mode)| spawn(root, url, &["--json", "ingest", "d", "--write-mode", mode]))
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "exit {:?}: {}",
                out.status.code(),
                stderr(&out)
            );
            json_lines(text.lines(), &stderr(&out))
                .into_iter()
                .filter(|v| v["type"] == "file")
                .map(|v| {
                    let s = |k: &str| v[k].as_str().map(str::to_owned);
                    (
                        s("name").unwrap(),
                        s("outcome").unwrap(),
                        s("reason"),
                        s("blake3").unwrap_or_default(),
                    )
                })
                .collect()
        })
        .collect()
}

fn open(url: &str) -> Workspace {
    Workspace::open(url).unwrap()
}

fn assert_sound(url: &str) {
    let out = run(Path::new("/"), url, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "verify: {}", stderr(&out));
}

fn fail_race(names: usize) {
    let Some(url) = workspace() else { return };
    let trees: Vec<_> = (0..4)
        .map(|p| tree(names, &format!("process {p}")))
        .collect();
    let runs: Vec<(&Path, &str)> = trees.iter().map(|t| (t.path(), "fail")).collect();
    let reports = race(&url, &runs);
    let mut winners: BTreeMap<String, String> = BTreeMap::new();
    let (mut ingested, mut conflicts) = (0, 0);
    for r in reports.iter().flatten() {
        match (r.1.as_str(), r.2.as_deref()) {
            ("ingested", None) => {
                ingested += 1;
                assert!(
                    winners.insert(r.0.clone(), r.3.clone()).is_none(),
                    "{} won twice",
                    r.0
                );
            }
            ("failed", Some("conflict")) => conflicts += 1,
            other => panic!("{}: unexpected {other:?}", r.0),
        }
    }
    assert_eq!((ingested, conflicts), (names, 3 * names));
    // The workspace holds exactly the winners, each at version 1.
    let ws = open(&url);
    let mut held = BTreeMap::new();
    ws.list(None, |e| {
        assert_eq!(e.version, 1, "{}", e.name);
        held.insert(e.name, e.hash.to_hex());
        true
    })
    .unwrap();
    assert_eq!(held, winners);
    assert_sound(&url);
}

/// 4 processes, FAIL, the same new names: each name is ingested exactly
/// once, every other attempt fails with `conflict`.
#[test]
fn fail_race_across_processes_has_one_winner_per_name() {
    fail_race(1000);
}

#[test]
#[ignore = "long: 20 trials"]
fn fail_race_across_processes_long() {
    for _ in 0..20 {
        fail_race(1000);
    }
}

/// Every name's versions, oldest first, as content hashes.
fn chains(ws: &Workspace) -> BTreeMap<String, Vec<String>> {
    common::ws::names(ws)
        .into_iter()
        .map(|n| {
            let mut h = ws.history(&n).unwrap();
            h.reverse();
            let versions: Vec<u64> = h.iter().map(|e| e.version).collect();
            let want: Vec<u64> = (1..=h.len() as u64).collect();
            assert_eq!(versions, want, "{n}: versions without gaps");
            (n, h.into_iter().map(|e| e.hash.to_hex()).collect())
        })
        .collect()
}

/// OVERWRITE from 4 processes: each name's history is the 4 contents in
/// some order (a serial order of the writes): no write lost, none twice;
/// its first writer reports `ingested`, the others `overwritten`.
#[test]
fn overwrite_race_across_processes_is_serial() {
    let Some(url) = workspace() else { return };
    let names = 300;
    let trees: Vec<_> = (0..4)
        .map(|p| tree(names, &format!("writer {p}")))
        .collect();
    let runs: Vec<(&Path, &str)> = trees.iter().map(|t| (t.path(), "overwrite")).collect();
    let reports = race(&url, &runs);
    let chains = chains(&open(&url));
    assert_eq!(chains.len(), names);
    for (name, chain) in &chains {
        let mine: Vec<&Report> = reports.iter().flatten().filter(|r| &r.0 == name).collect();
        let written: BTreeSet<&str> = mine.iter().map(|r| r.3.as_str()).collect();
        let held: BTreeSet<&str> = chain.iter().map(String::as_str).collect();
        assert_eq!(chain.len(), 4, "{name}: {chain:?}");
        assert_eq!(held, written, "{name}");
        let first = mine.iter().find(|r| r.3 == chain[0]).unwrap();
        assert_eq!(first.1, "ingested", "{name}");
        for r in &mine {
            if r.3 != chain[0] {
                assert_eq!(r.1, "overwritten", "{name}");
            }
        }
    }
    assert_sound(&url);
}

/// KEEP against OVERWRITE: a name's versions are exactly the writes that
/// reported `ingested` or `overwritten`, in an order where every `kept`
/// came after some version and every KEEP write was the first.
#[test]
fn keep_against_overwrite_across_processes() {
    let Some(url) = workspace() else { return };
    let names = 300;
    let trees: Vec<_> = (0..4).map(|p| tree(names, &format!("mixed {p}"))).collect();
    let modes = ["keep", "overwrite", "keep", "overwrite"];
    let runs: Vec<(&Path, &str)> = trees
        .iter()
        .zip(modes)
        .map(|(t, m)| (t.path(), m))
        .collect();
    let reports = race(&url, &runs);
    let chains = chains(&open(&url));
    assert_eq!(chains.len(), names);
    for (name, chain) in &chains {
        let mine: Vec<(usize, &Report)> = reports
            .iter()
            .enumerate()
            .flat_map(|(p, rs)| rs.iter().filter(|r| &r.0 == name).map(move |r| (p, r)))
            .collect();
        let wrote: Vec<&str> = mine
            .iter()
            .filter(|(_, r)| r.1 == "ingested" || r.1 == "overwritten")
            .map(|(_, r)| r.3.as_str())
            .collect();
        let held: BTreeSet<&str> = chain.iter().map(String::as_str).collect();
        assert_eq!(held, wrote.iter().copied().collect(), "{name}");
        assert_eq!(chain.len(), wrote.len(), "{name}");
        for (p, r) in &mine {
            match (modes[*p], r.1.as_str()) {
                // A KEEP write is only ever the first version.
                ("keep", "ingested") => assert_eq!(r.3, chain[0], "{name}"),
                ("keep", "kept") | ("overwrite", "overwritten") => {}
                ("overwrite", "ingested") => assert_eq!(r.3, chain[0], "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
    assert_sound(&url);
}

/// kill -9 at random moments of an ingest (inline and large blobs): after
/// each kill `verify` passes, and a last run converges on every name.
fn crash_loop(kills: usize) {
    let Some(url) = workspace() else { return };
    let names = 400;
    let src = tree(names, "crash");
    let mut rng = Rng::new(seed(11));
    for _ in 0..kills {
        let mut child = spawn(
            src.path(),
            &url,
            &["ingest", "d", "--write-mode", "overwrite"],
        );
        std::thread::sleep(std::time::Duration::from_millis(rng.range(20, 400)));
        let _ = child.kill();
        let _ = child.wait();
        assert_sound(&url);
    }
    let out = run(
        src.path(),
        &url,
        &["ingest", "d", "--write-mode", "overwrite"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ws = open(&url);
    let mut n = 0;
    ws.list(None, |e| {
        let body = std::fs::read(src.path().join("d").join(&e.name)).unwrap();
        assert_eq!(e.hash, intake::Hash::of(&body), "{}", e.name);
        n += 1;
        true
    })
    .unwrap();
    assert_eq!(n, names);
    let s = ws.sessions().unwrap();
    let last = s.last().unwrap();
    assert_eq!(last.ingestion.failed_files, 0);
    assert_eq!(
        last.ingestion.finished_files, names as u64,
        "every file is accounted for in the last run"
    );
    assert_sound(&url);
}

#[test]
fn killed_ingests_leave_a_sound_workspace_that_converges() {
    crash_loop(3);
}

#[test]
#[ignore = "long: 200 kills"]
fn killed_ingests_long() {
    crash_loop(200);
}

/// The library opens a PostgreSQL workspace by its address alone, as the
/// commands do; one never made is `NotAWorkspace`, and a password in the
/// address is refused without being echoed.
#[test]
fn the_library_opens_by_address() {
    let Some(url) = workspace() else { return };
    let ws = open(&url);
    assert_eq!(ws.dir(), None);
    assert!(ws.label().starts_with("postgresql://"), "{}", ws.label());
    let (pg, _) = addresses(false).unwrap();
    let missing = format!("{pg}?schema={}", fresh_schema());
    assert!(matches!(
        Workspace::open(missing.as_str()),
        Err(intake::Error::NotAWorkspace(_))
    ));
    let secret = pg.replacen("postgres@", "postgres:hunter2@", 1);
    let e = Workspace::open(secret.as_str()).unwrap_err().to_string();
    assert!(e.contains("PGPASSWORD") && !e.contains("hunter2"), "{e}");
}

/// (version, hash, metadata, deleted, session, written/replaced).
type Version = (u64, String, Option<String>, bool, String, String);

/// Everything `intake copy` must carry, per name and per session, in a
/// form two workspaces can be compared by.
#[derive(Debug, PartialEq)]
struct Everything {
    names: BTreeMap<String, Vec<Version>>,
    contents: BTreeMap<String, Vec<u8>>,
    sessions: Vec<String>,
    outcomes: Vec<Vec<String>>,
}

fn everything(ws: &Workspace) -> Everything {
    let ix = ws.sessions().unwrap();
    // Every name: those listed, and the one the history deleted.
    let mut all = vec!["gone.txt".to_owned()];
    ws.list(None, |e| {
        all.push(e.name);
        true
    })
    .unwrap();
    let mut names = BTreeMap::new();
    let mut contents = BTreeMap::new();
    for n in &all {
        let h = ws.history(n).unwrap();
        for e in &h {
            let mut body = Vec::new();
            if !e.deleted {
                use std::io::Read;
                ws.read_version(n, e.version)
                    .unwrap()
                    .read_to_end(&mut body)
                    .unwrap();
                contents.insert(format!("{n}@{}", e.version), body);
            }
        }
        names.insert(
            n.clone(),
            h.into_iter()
                .map(|e| {
                    (
                        e.version,
                        e.hash.to_hex(),
                        e.meta,
                        e.deleted,
                        e.session_id.to_string(),
                        format!("{:?}/{:?}", e.ingested_at, e.replaced_at),
                    )
                })
                .collect(),
        );
    }
    let sessions = ix.iter().map(|s| format!("{s:?}")).collect();
    let outcomes = ix
        .iter()
        .map(|s| {
            let mut v = Vec::new();
            ws.session_files(s.session.session_id, |r| {
                v.push(format!("{r:?}"));
                true
            })
            .unwrap();
            v
        })
        .collect();
    Everything {
        names,
        contents,
        sessions,
        outcomes,
    }
}

/// A local workspace with history: overwrites, metadata, a deletion, a
/// large blob, a failed file, closed sessions.
fn local_with_history(dir: &Path) -> std::path::PathBuf {
    let ws = dir.join("ws");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let ingest = |mode: &str| {
        let out = intake(dir, &ws, &["ingest", "src", "--write-mode", mode])
            .output()
            .unwrap();
        assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    };
    for i in 0..1200 {
        std::fs::write(src.join(format!("n{i:04}.txt")), format!("one {i}")).unwrap();
    }
    std::fs::write(src.join("big.bin"), vec![7u8; 300 * 1024]).unwrap();
    std::fs::write(src.join("gone.txt"), "soon deleted").unwrap();
    std::fs::write(src.join("n0001.txt.meta.json"), r#"{"k": 1}"#).unwrap();
    std::fs::write(src.join("bad.txt"), "x").unwrap();
    std::fs::write(src.join("bad.txt.meta.json"), "{nope").unwrap();
    ingest("keep");
    for i in (0..1200).step_by(3) {
        std::fs::write(src.join(format!("n{i:04}.txt")), format!("two {i}")).unwrap();
    }
    std::fs::write(src.join("big.bin"), vec![8u8; 300 * 1024]).unwrap();
    ingest("overwrite");
    let out = intake(dir, &ws, &["files", "rm", "gone.txt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    ws
}

/// Fails the target's `fail_at`-th durable commit.
#[derive(Default)]
struct FailCommit {
    commits: std::sync::atomic::AtomicU32,
    fail_at: u32,
}

impl common::seams::IndexHooks for FailCommit {
    type Txn = ();
    fn commit(
        &self,
        _txn: (),
        run: impl FnOnce() -> Result<(), intake::store::StoreError>,
    ) -> Result<(), intake::store::StoreError> {
        let n = self
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if n == self.fail_at {
            return Err(intake::store::StoreError::unavailable(
                "commit (injected)",
                "connection reset by peer",
            ));
        }
        run()
    }
}

/// `intake --json copy --from FROM --to TO`.
fn copy(from: &str, to: &str) -> Output {
    let args = ["--json", "copy", "--from", from, "--to", to];
    intake(Path::new("/"), Path::new(to), &args[..])
        .output()
        .unwrap()
}

/// `intake copy` local → PostgreSQL + S3 → local: names, versions,
/// metadata, deletions, contents, sessions with their counts and outcomes
/// all equal; a copy cut short by a failed commit is finished by a second
/// one that copies nothing twice.
#[test]
fn copy_round_trip_and_resume() {
    let Some(url) = workspace() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let local = local_with_history(tmp.path());
    let source = Workspace::open(&local).unwrap();
    let want = everything(&source);
    assert!(want.names["gone.txt"][0].3, "the deletion is there to copy");

    // Cut short at the target's third commit, then resumed.
    let hooks = std::sync::Arc::new(FailCommit {
        fail_at: 3,
        ..FailCommit::default()
    });
    let remote = open(&url);
    let (index, blobs) = {
        use intake::store::{PgAddress, PgIndex, S3BlobStore};
        let index = PgIndex::open(PgAddress::parse(&url).unwrap(), false, None).unwrap();
        let blobs = S3BlobStore::open(index.blobs_at().unwrap(), index.pool().clone()).unwrap();
        (index, blobs)
    };
    let hooked = intake::WorkspaceBuilder::from_backends(
        "hooked",
        std::sync::Arc::new(common::seams::HookedIndex::wrap(
            std::sync::Arc::new(index),
            hooks,
        )),
        std::sync::Arc::new(blobs),
    )
    .open()
    .unwrap();
    let first = intake::copy::copy(&source, &hooked, &mut |_| {});
    assert!(first.is_err(), "the injected failure stops the copy");
    let before: usize = everything(&remote).names.values().map(Vec::len).sum();
    let versions: usize = want.names.values().map(Vec::len).sum();
    assert!(before > 0 && before < versions, "{before} of {versions}");
    let out = copy(local.to_str().unwrap(), &url);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        before + second["versions"].as_u64().unwrap() as usize,
        versions,
        "every version copied exactly once"
    );
    assert_eq!(second["sound"], true);
    assert_eq!(everything(&remote), want, "local → PostgreSQL + S3");

    // And back, into a new folder.
    let back = tmp.path().join("back");
    let out = copy(&url, back.to_str().unwrap());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        everything(&Workspace::open(&back).unwrap()),
        want,
        "and back"
    );
    // A third run copies nothing.
    let out = copy(&url, back.to_str().unwrap());
    let third: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            third["versions"].as_u64(),
            third["blobs"].as_u64(),
            third["outcomes"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
}

/// The host:port of a `postgresql://` or `http://` address.
fn host_port(url: &str) -> std::net::SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hp = rest.split(['/', '?']).next().unwrap();
    hp.parse().unwrap()
}

/// An ingest through a proxy that cuts PostgreSQL (or the S3 server) off
/// after 300 reports, for `outage`; see [`interrupted_ingest`].
fn outage(s3: bool, outage: std::time::Duration) -> (usize, usize) {
    let Some(url) = workspace() else {
        return (0, 0);
    };
    let target = if s3 {
        host_port(&std::env::var("AWS_ENDPOINT_URL").unwrap())
    } else {
        host_port(&url)
    };
    let proxy = common::proxy::Proxy::start(target);
    let (via, endpoint) = if s3 {
        (url.clone(), Some(format!("http://{}", proxy.addr())))
    } else {
        let real = host_port(&url).to_string();
        (url.replace(&real, &proxy.addr().to_string()), None)
    };
    interrupted_ingest(&url, &via, endpoint, || {
        proxy.cut();
        std::thread::sleep(outage);
        proxy.restore();
    })
}

/// Ingests 2,000 files (every 40th in the blob store) into the workspace
/// at `url`, the child reaching it at `via` (and the S3 server at
/// `endpoint`), and runs `interrupt` after its 300th report: every file is
/// reported once, ingested or `failed (store_error)`; the workspace holds
/// exactly the ingested ones and `verify` is clean; a re-run ingests
/// exactly the rest. Returns how many were ingested and failed.
fn interrupted_ingest(
    url: &str,
    via: &str,
    endpoint: Option<String>,
    interrupt: impl FnOnce(),
) -> (usize, usize) {
    use std::io::BufRead;
    let url = url.to_owned();
    let names = 2000;
    let src = tree(names, "outage");
    let mut cmd = intake(src.path(), Path::new(via), &["--json", "ingest", "d"]);
    if let Some(e) = endpoint {
        cmd.env("AWS_ENDPOINT_URL", e);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let err = common::procs::read_to_end(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    let mut interrupt = Some(interrupt);
    for line in std::io::BufReader::new(stdout).lines() {
        lines.push(line.unwrap());
        if lines.len() == 300
            && let Some(f) = interrupt.take()
        {
            f();
        }
    }
    let status = child.wait().unwrap();
    let err = err.join().unwrap();
    assert!(matches!(status.code(), Some(0 | 1)), "{status:?}: {err}");
    let mut ingested = BTreeSet::new();
    let mut failed = BTreeSet::new();
    for v in json_lines(lines.iter().map(String::as_str), &err) {
        if v["type"] != "file" {
            continue;
        }
        let name = v["name"].as_str().unwrap().to_owned();
        match (v["outcome"].as_str(), v["reason"].as_str()) {
            (Some("ingested"), None) => assert!(ingested.insert(name)),
            (Some("failed"), Some("store_error")) => {
                if failed.is_empty() {
                    eprintln!("first failure: {}", v["message"]);
                }
                assert!(failed.insert(name));
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(
        ingested.len() + failed.len(),
        names,
        "every file reported once"
    );
    assert_eq!(status.code(), Some(if failed.is_empty() { 0 } else { 1 }));
    let mut held = BTreeSet::new();
    open(&url)
        .list(None, |e| {
            held.insert(e.name);
            true
        })
        .unwrap();
    assert_eq!(
        held, ingested,
        "the workspace holds what was reported ingested"
    );
    assert_sound(&url);
    // The server is back: a re-run ingests the rest, and only the rest.
    let out = run(src.path(), &url, &["--json", "ingest", "d"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut again = BTreeSet::new();
    for v in json_lines(text.lines(), &stderr(&out)) {
        if v["type"] == "file" && v["outcome"] == "ingested" {
            again.insert(v["name"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(again, failed, "the re-run ingests exactly what failed");
    assert_sound(&url);
    (ingested.len(), failed.len())
}

#[test]
fn postgres_going_away_mid_ingest_fails_cleanly_and_recovers() {
    let (ok, failed) = outage(false, std::time::Duration::from_secs(8));
    eprintln!("PostgreSQL away for 8 s: {ok} ingested, {failed} failed (store_error)");
}

#[test]
fn postgres_away_briefly_is_ridden_out() {
    let (ok, failed) = outage(false, std::time::Duration::from_millis(500));
    assert_eq!(failed, 0, "{ok} ingested");
}

/// PostgreSQL itself stopped (`pg_ctl stop -m fast`, its sessions
/// terminated) and started again 2 s later, in the middle of an ingest,
/// on a cluster of this test's own.
#[test]
fn postgres_restarted_mid_ingest_fails_cleanly_and_recovers() {
    let Some(pg) = common::servers::PrivatePg::start() else {
        return;
    };
    let url = format!("{}?schema=restart", pg.url());
    let blobs = tempfile::tempdir().unwrap();
    let out = run(
        Path::new("/"),
        &url,
        &["init", "--blobs", blobs.path().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (ok, failed) = interrupted_ingest(&url, &url, None, || {
        pg.stop();
        std::thread::sleep(std::time::Duration::from_secs(2));
        pg.start_again();
    });
    eprintln!("PostgreSQL restarted: {ok} ingested, {failed} failed (store_error)");
}

#[test]
fn s3_going_away_mid_ingest_fails_cleanly_and_recovers() {
    let (ok, failed) = outage(true, std::time::Duration::from_secs(8));
    eprintln!("S3 away for 8 s: {ok} ingested, {failed} failed (store_error)");
}

/// `gc` with no retention and no grace, looping in its own processes,
/// while another process ingests the same large contents again and again
/// (and deletes them between rounds, so that gc has them to take): every
/// file reported `ingested` can be read back whole, and `verify` is clean
/// after every round. A file whose blob gc took in the middle fails
/// `store_error`; a version never points at a missing object.
#[test]
fn gc_racing_ingests_never_loses_a_referenced_blob() {
    gc_race(10);
}

#[test]
#[ignore = "long: 100 rounds"]
fn gc_racing_ingests_long() {
    gc_race(100);
}

fn gc_race(rounds: usize) {
    let Some(url) = workspace() else { return };
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("d")).unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("{i:02}.bin")).collect();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(src.path().join("d").join(n), vec![i as u8; 100 * 1024]).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (url, stop) = (url.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = run(
                    Path::new("/"),
                    &url,
                    &["gc", "--retention", "0s", "--grace", "0s"],
                );
                assert_eq!(out.status.code(), Some(0), "gc: {}", stderr(&out));
                runs += 1;
            }
            runs
        })
    };
    let ws = open(&url);
    let (mut ingested, mut failed) = (0, 0);
    for round in 0..rounds {
        let mut present = Vec::new();
        let out = run(
            src.path(),
            &url,
            &["--json", "ingest", "d", "--write-mode", "overwrite"],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for v in json_lines(text.lines(), &stderr(&out)) {
            if v["type"] != "file" {
                continue;
            }
            let name = v["name"].as_str().unwrap();
            match (v["outcome"].as_str(), v["reason"].as_str()) {
                (Some("ingested"), None) => {
                    ingested += 1;
                    present.push(name.to_owned());
                    let mut body = Vec::new();
                    use std::io::Read;
                    ws.read(name).unwrap().read_to_end(&mut body).unwrap();
                    let i: u8 = name[..2].parse().unwrap();
                    assert_eq!(body, vec![i; 100 * 1024], "round {round}: {name}");
                }
                (Some("failed"), Some("store_error")) => failed += 1,
                other => panic!("round {round}: {name}: {other:?}"),
            }
        }
        assert_sound(&url);
        if !present.is_empty() {
            let mut rm = vec!["files", "rm"];
            rm.extend(present.iter().map(String::as_str));
            let out = run(Path::new("/"), &url, &rm);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let gc_runs = gc.join().unwrap();
    eprintln!("{gc_runs} gc runs; {ingested} ingested, {failed} failed (store_error)");
    assert!(
        gc_runs > 0 && ingested > 0,
        "{gc_runs} gc runs, {ingested} ingested"
    );
    assert_sound(&url);
}

/// Two watchers on different folders (machines of their own) into one
/// workspace, with PostgreSQL cut off for 5 s while files keep coming:
/// both ride it out (a file that failed `store_error` is tried again), and
/// in the end the workspace holds every file of both folders, each with
/// its content; both stop with exit 0 on SIGTERM.
#[test]
fn two_watchers_into_one_workspace_ride_out_an_outage() {
    let Some(url) = workspace() else { return };
    let proxy = common::proxy::Proxy::start(host_port(&url));
    let via = url.replace(&host_port(&url).to_string(), &proxy.addr().to_string());
    let roots: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for r in &roots {
        std::fs::create_dir(r.path().join("in")).unwrap();
    }
    let mut watchers: Vec<Child> = roots
        .iter()
        .map(|r| {
            intake(
                r.path(),
                Path::new(&via),
                &["watch", "in", "--settle", "100ms"],
            )
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    let logs: Vec<_> = watchers
        .iter_mut()
        .map(|c| common::procs::read_to_end(c.stderr.take().unwrap()))
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let write = |from: usize, to: usize| {
        for (w, r) in roots.iter().enumerate() {
            for i in from..to {
                let body = format!("watcher {w} file {i}\n").repeat(1 + i % 3);
                std::fs::write(r.path().join(format!("in/w{w}-{i:03}.txt")), body).unwrap();
            }
        }
    };
    write(0, 100);
    std::thread::sleep(std::time::Duration::from_millis(500));
    proxy.cut();
    write(100, 150);
    std::thread::sleep(std::time::Duration::from_secs(5));
    // Through the real address: the watchers got none of the files written
    // during the outage in.
    let mut during = 0;
    open(&url)
        .list(None, |e| {
            during += usize::from(e.name[3..6].parse::<usize>().is_ok_and(|i| i >= 100));
            true
        })
        .unwrap();
    assert_eq!(during, 0, "the outage held the watchers back");
    proxy.restore();
    write(150, 200);
    // Every file, with its content, within a minute.
    let ws = open(&url);
    let want = 400;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let held = loop {
        let mut held = BTreeMap::new();
        ws.list(None, |e| {
            held.insert(e.name, e.hash);
            true
        })
        .unwrap();
        if held.len() == want || std::time::Instant::now() > deadline {
            break held;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(held.len(), want, "every file of both folders");
    for (w, r) in roots.iter().enumerate() {
        for i in 0..200 {
            let name = format!("w{w}-{i:03}.txt");
            let body = std::fs::read(r.path().join("in").join(&name)).unwrap();
            assert_eq!(held[&name], intake::Hash::of(&body), "{name}");
        }
    }
    for c in &mut watchers {
        // SAFETY: a plain signal to a child of this test.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    for c in &mut watchers {
        assert_eq!(c.wait().unwrap().code(), Some(0));
    }
    for l in logs {
        l.join().unwrap();
    }
    assert_sound(&url);
}

/// A schema newer than this build is refused with a clear message, by
/// every command, and nothing is written.
#[test]
fn a_newer_schema_is_refused() {
    let Some(url) = workspace() else { return };
    let schema = url.rsplit_once("schema=").unwrap().1;
    let (pg, _) = addresses(false).unwrap();
    let out = std::process::Command::new("psql")
        .arg(&pg)
        .args([
            "-qAtc",
            &format!("UPDATE {schema}.settings SET value = '99' WHERE key = 'schema_version'"),
        ])
        .output();
    let Ok(out) = out else {
        eprintln!("skipped: psql is not installed");
        return;
    };
    assert!(out.status.success(), "{}", stderr(&out));
    let src = tree(3, "refused");
    for args in [&["files", "list"][..], &["ingest", "d"][..]] {
        let out = run(src.path(), &url, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let e = stderr(&out);
        assert!(
            e.contains("schema version 99, newer than this intake understands (1); upgrade intake"),
            "{e}"
        );
    }
}
