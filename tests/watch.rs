//! The watcher end to end: real files in temp dirs, the real notify
//! backend, the library ([`Running`]) and the `intake watch` binary
//! ([`Daemon`]).
//!
//! Every wait has a deadline and every failure prints what was seen. No
//! test asserts a duration; the measurements for BENCHMARKS.md are the
//! `#[ignore]`d `bench_*` tests at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::user;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use intake::plan::{PlanEvent, PlanOptions, Planner};
use intake::watch::{
    WatchConfig, WatchError, WatchEvent, WatchHandle, WatchSession, WatchSummary, Watcher,
};
use intake::{
    CreateSession, FileReport, Lifetime, ManualClock, Outcome, Workspace, WorkspaceBuilder,
    WriteMode, session::SessionStatus,
};
use serde_json::Value;
use tempfile::TempDir;

/// Longest any wait in these tests may take.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A temp dir with an inbox (`src/`) and a workspace path (`ws/`).
struct Inbox {
    tmp: TempDir,
}

impl Inbox {
    fn new() -> Inbox {
        let tmp = tempfile::Builder::new()
            .prefix("intake-watch-")
            .tempdir()
            .unwrap();
        fs::create_dir(tmp.path().join("src")).unwrap();
        Inbox { tmp }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn src(&self) -> PathBuf {
        self.root().join("src")
    }

    fn ws_dir(&self) -> PathBuf {
        self.root().join("ws")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.src().join(rel)
    }

    /// Writes `src/<rel>` (creating its folders).
    fn write(&self, rel: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(&p, data).unwrap();
        p
    }

    fn workspace(&self) -> Workspace {
        Workspace::create(self.ws_dir()).unwrap()
    }

    fn config(&self, mode: WriteMode) -> WatchConfig {
        WatchConfig::new(
            PlanOptions::new(vec![self.src()]),
            WatchSession::New {
                request: CreateSession::new(mode),
                user: user(),
            },
        )
    }
}

/// Events collected from a running watcher.
#[derive(Default)]
struct Log {
    events: Mutex<Vec<WatchEvent>>,
    cv: Condvar,
}

/// A watcher started through the library, its events collected in the
/// background.
struct Running {
    handle: Option<WatchHandle>,
    log: Arc<Log>,
    reader: Option<JoinHandle<()>>,
}

impl Running {
    fn start(ws: Workspace, config: WatchConfig) -> Running {
        let handle = Watcher::start(ws, config).unwrap();
        let log = Arc::new(Log::default());
        let rx = handle.events().clone();
        let l = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for ev in rx {
                l.events.lock().unwrap().push(ev);
                l.cv.notify_all();
            }
        });
        assert!(
            handle.wait_watching(DEADLINE),
            "the initial scan did not finish"
        );
        Running {
            handle: Some(handle),
            log,
            reader: Some(reader),
        }
    }

    fn handle(&self) -> &WatchHandle {
        self.handle.as_ref().unwrap()
    }

    /// Waits until `pred` holds for the events so far; panics with them if
    /// it does not before the deadline.
    fn wait_for(&self, what: &str, pred: impl Fn(&[WatchEvent]) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        let mut evs = self.log.events.lock().unwrap();
        while !pred(&evs) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out waiting for {what}; {} events:\n{}",
                    evs.len(),
                    show(&evs)
                );
            }
            evs = self.log.cv.wait_timeout(evs, left).unwrap().0;
        }
    }

    /// Waits until `n` file outcomes are in.
    fn wait_files(&self, n: usize) {
        self.wait_for(&format!("{n} files"), |e| files(e).len() >= n);
    }

    fn events(&self) -> Vec<WatchEvent> {
        self.log.events.lock().unwrap().clone()
    }

    fn files(&self) -> Vec<FileReport> {
        files(&self.events())
    }

    /// Stops (letting files in flight finish), and returns the result and
    /// every event.
    fn finish(mut self) -> (Result<WatchSummary, WatchError>, Vec<WatchEvent>) {
        let handle = self.handle.take().unwrap();
        handle.stopper().stop();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let result = handle.stop();
        (result, self.events())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stopper().stop();
            let _ = h.stop();
        }
    }
}

fn files(evs: &[WatchEvent]) -> Vec<FileReport> {
    evs.iter()
        .filter_map(|e| match e {
            WatchEvent::File(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn show(evs: &[WatchEvent]) -> String {
    evs.iter()
        .rev()
        .take(40)
        .rev()
        .map(|e| match e {
            WatchEvent::File(r) => format!(
                "  {} {} {:?}",
                r.outcome,
                r.name,
                r.reason.map(|x| x.as_str())
            ),
            other => format!("  {other:?}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Outcomes per name.
fn by_name(reports: &[FileReport]) -> BTreeMap<String, Vec<Outcome>> {
    let mut m: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    for r in reports {
        m.entry(r.name.clone()).or_default().push(r.outcome);
    }
    m
}

/// Every current name in the workspace with its version number.
fn index(ws: &Workspace) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    ws.list(None, |e| {
        m.insert(e.name, e.version);
        true
    })
    .unwrap();
    m
}

fn content(ws: &Workspace, name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    ws.read(name).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Asserts that `names` are exactly the workspace's names, each written
/// once (version 1).
fn assert_index_exactly_once(ws: &Workspace, names: &[String]) {
    let idx = index(ws);
    let missing: Vec<&String> = names.iter().filter(|n| !idx.contains_key(*n)).collect();
    let extra: Vec<&String> = idx.keys().filter(|n| !names.contains(n)).collect();
    let twice: Vec<(&String, &u64)> = idx.iter().filter(|(_, v)| **v != 1).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && twice.is_empty(),
        "index: {} missing (first {:?}), {} extra (first {:?}), {} written more than once (first {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>()
    );
}

/// Creates `n` files `dir/f00000.txt`… as fast as possible.
fn burst(dir: &Path, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("f{i:05}.txt");
            fs::write(dir.join(&name), format!("file {i}\n")).unwrap();
            name
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The library
// ---------------------------------------------------------------------------

#[test]
fn catch_up_ingests_what_is_there_then_follows_and_a_restart_finds_it_unchanged() {
    let d = Inbox::new();
    d.write("a.txt", "a");
    d.write("sub/b.txt", "b");
    d.write("deep/er/c.txt", "c");
    d.write("m.txt", "m");
    d.write("m.txt.meta.json", r#"{"k": 1}"#);
    d.write(".hidden", "h");
    d.write("x.part", "partial");
    d.write("y.tmp", "tmp");
    d.write("#autosave#", "emacs");
    let ws = d.workspace();
    let w = Running::start(ws.clone(), d.config(WriteMode::Keep));
    w.wait_files(4);
    d.write("new.txt", "new");
    w.wait_files(5);
    let (result, evs) = w.finish();
    let summary = result.unwrap();
    let got = by_name(&files(&evs));
    let want: BTreeMap<String, Vec<Outcome>> =
        ["a.txt", "deep/er/c.txt", "m.txt", "new.txt", "sub/b.txt"]
            .iter()
            .map(|n| (n.to_string(), vec![Outcome::Ingested]))
            .collect();
    assert_eq!(got, want, "{}", show(&evs));
    assert_eq!(summary.counts.ingested, 5);
    assert_eq!(
        ws.current("m.txt").unwrap().unwrap().meta.as_deref(),
        Some(r#"{"k":1}"#)
    );
    let names: Vec<String> = want.keys().cloned().collect();
    assert_index_exactly_once(&ws, &names);
    // The session the watcher opened is closed, with the counts.
    let s = ws.session(summary.sessions[0]).unwrap();
    assert_eq!(s.status(ws.now()), SessionStatus::Closed);
    assert_eq!(s.ingestion.finished_files, 5);

    // A restart: everything is there already, unchanged.
    let w = Running::start(ws.clone(), d.config(WriteMode::Keep));
    w.wait_files(5);
    let (result, evs) = w.finish();
    result.unwrap();
    let outcomes: Vec<Outcome> = files(&evs).iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::Unchanged; 5], "{}", show(&evs));
}

/// On a restart, a file with the size and mtime of its last ingest is
/// `unchanged` at once, even while a writer holds it open (its content is
/// what was ingested); a file or a sidecar changed while the watcher was
/// down is taken as ever.
#[test]
fn a_restart_takes_files_unchanged_since_their_ingest_at_once_and_changed_ones_as_ever() {
    let d = Inbox::new();
    d.write("same.txt", "s");
    d.write("held.txt", "h");
    d.write("deep/er/meta.txt", "m");
    d.write("deep/er/meta.txt.meta.json", r#"{"k": 1}"#);
    d.write("edit.txt", "e");
    let ws = d.workspace();
    let settle = Duration::from_millis(300);
    let w = Running::start(ws.clone(), d.config(WriteMode::Overwrite).settle(settle));
    w.wait_files(4);
    w.finish().0.unwrap();

    d.write("deep/er/meta.txt.meta.json", r#"{"k": 2}"#);
    d.write("edit.txt", "edited");
    let held = fs::OpenOptions::new()
        .append(true)
        .open(d.path("held.txt"))
        .unwrap();
    let w = Running::start(ws.clone(), d.config(WriteMode::Overwrite).settle(settle));
    w.wait_files(4);
    let (result, evs) = w.finish();
    drop(held);
    result.unwrap();
    let want: BTreeMap<String, Vec<Outcome>> = [
        ("deep/er/meta.txt", Outcome::Overwritten),
        ("edit.txt", Outcome::Overwritten),
        ("held.txt", Outcome::Unchanged),
        ("same.txt", Outcome::Unchanged),
    ]
    .into_iter()
    .map(|(n, o)| (n.to_string(), vec![o]))
    .collect();
    assert_eq!(by_name(&files(&evs)), want, "{}", show(&evs));
    assert_eq!(
        ws.current("deep/er/meta.txt")
            .unwrap()
            .unwrap()
            .meta
            .as_deref(),
        Some(r#"{"k":2}"#)
    );
    assert_eq!(ws.current("edit.txt").unwrap().unwrap().version, 2);
}

#[test]
fn a_slow_writer_holding_the_file_open_is_ingested_once_and_complete() {
    let d = Inbox::new();
    let ws = d.workspace();
    let settle = Duration::from_millis(500);
    let w = Running::start(ws.clone(), d.config(WriteMode::Keep).settle(settle));
    let mut f = fs::File::create(d.path("slow.bin")).unwrap();
    let mut written = Vec::new();
    // Four chunks over about three seconds, each pause longer than the
    // settle window, the file open all along.
    for i in 0..4u8 {
        let chunk = vec![b'a' + i; 64 * 1024 + 7];
        f.write_all(&chunk).unwrap();
        f.flush().unwrap();
        written.extend_from_slice(&chunk);
        std::thread::sleep(settle + Duration::from_millis(300));
        assert!(
            w.files().is_empty(),
            "read while still open: {}",
            show(&w.events())
        );
    }
    drop(f);
    w.wait_files(1);
    // Nothing more comes: once.
    std::thread::sleep(settle * 3);
    let (result, evs) = w.finish();
    result.unwrap();
    let reports = files(&evs);
    assert_eq!(reports.len(), 1, "{}", show(&evs));
    assert_eq!(reports[0].name, "slow.bin");
    assert_eq!(reports[0].outcome, Outcome::Ingested);
    assert_eq!(reports[0].size, Some(written.len() as u64));
    assert_eq!(content(&ws, "slow.bin"), written);
}

#[test]
fn write_to_a_temp_name_then_rename_ingests_the_final_name_only() {
    let d = Inbox::new();
    let ws = d.workspace();
    let w = Running::start(ws.clone(), d.config(WriteMode::Keep));

    // Written slowly under a temporary name, closed, renamed.
    let mut f = fs::File::create(d.path("report.pdf.part")).unwrap();
    f.write_all(b"first half, ").unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    f.write_all(b"second half").unwrap();
    drop(f);
    std::thread::sleep(Duration::from_millis(700));
    fs::rename(d.path("report.pdf.part"), d.path("report.pdf")).unwrap();
    w.wait_files(1);

    // Renamed while the writer still has it open: the close, under the
    // new name, tells.
    let mut f = fs::File::create(d.path("movie.crdownload")).unwrap();
    f.write_all(b"begin ").unwrap();
    f.flush().unwrap();
    fs::rename(d.path("movie.crdownload"), d.path("movie.mkv")).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    f.write_all(b"end").unwrap();
    drop(f);
    w.wait_files(2);
    std::thread::sleep(Duration::from_millis(1000));
    let (result, evs) = w.finish();
    result.unwrap();
    let got = by_name(&files(&evs));
    assert_eq!(
        got,
        BTreeMap::from([
            ("movie.mkv".to_string(), vec![Outcome::Ingested]),
            ("report.pdf".to_string(), vec![Outcome::Ingested]),
        ]),
        "{}",
        show(&evs)
    );
    assert_eq!(content(&ws, "report.pdf"), b"first half, second half");
    assert_eq!(content(&ws, "movie.mkv"), b"begin end");
    assert_index_exactly_once(&ws, &["movie.mkv".into(), "report.pdf".into()]);
}

#[test]
fn a_burst_of_20000_files_is_ingested_exactly_once() {
    let d = Inbox::new();
    let ws = d.workspace();
    let w = Running::start(ws.clone(), d.config(WriteMode::Keep));
    let names = burst(&d.src(), 20_000);
    w.wait_files(names.len());
    std::thread::sleep(Duration::from_millis(1500));
    let (result, evs) = w.finish();
    let summary = result.unwrap();
    let got = by_name(&files(&evs));
    let not_once: Vec<_> = got
        .iter()
        .filter(|(_, o)| o.as_slice() != [Outcome::Ingested])
        .take(5)
        .collect();
    assert!(
        not_once.is_empty(),
        "not ingested exactly once: {not_once:?}"
    );
    assert_eq!(got.len(), names.len());
    assert_index_exactly_once(&ws, &names);
    eprintln!(
        "burst: {} files, {} rescans, {:?}",
        names.len(),
        summary.rescans,
        summary.elapsed
    );
}

#[test]
fn files_in_new_nested_folders_right_after_mkdir_p_are_not_missed() {
    let d = Inbox::new();
    let ws = d.workspace();
    let w = Running::start(ws.clone(), d.config(WriteMode::Keep));
    let mut names = Vec::new();
    for i in 0..200 {
        let dir = d.src().join(format!("d{i:03}/x/y"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("f.txt"), format!("{i}")).unwrap();
        names.push(format!("d{i:03}/x/y/f.txt"));
    }
    // A folder moved in from outside, with files already in it.
    let outside = d.root().join("outside/tree/sub");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("deep.txt"), "deep").unwrap();
    fs::write(d.root().join("outside/tree/top.txt"), "top").unwrap();
    fs::rename(d.root().join("outside/tree"), d.src().join("tree")).unwrap();
    names.push("tree/sub/deep.txt".into());
    names.push("tree/top.txt".into());
    // A file linked in: no close event ever comes for it.
    fs::write(d.root().join("outside/linked.txt"), "linked").unwrap();
    fs::hard_link(d.root().join("outside/linked.txt"), d.path("linked.txt")).unwrap();
    names.push("linked.txt".into());
    names.sort();
    w.wait_files(names.len());
    std::thread::sleep(Duration::from_millis(1000));
    let (result, evs) = w.finish();
    result.unwrap();
    let got = by_name(&files(&evs));
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), names);
    assert!(got.values().all(|o| o == &[Outcome::Ingested]), "{got:?}");
    assert_index_exactly_once(&ws, &names);
}

#[test]
fn an_expired_session_rotates_to_a_new_one_with_the_same_settings() {
    let d = Inbox::new();
    let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
    let ws = WorkspaceBuilder::new(d.ws_dir())
        .clock(Arc::new(clock.clone()))
        .create()
        .unwrap();
    let request = CreateSession::new(WriteMode::Overwrite)
        .lifetime(Lifetime::Ttl(chrono::Duration::hours(1)));
    let config = WatchConfig::new(
        PlanOptions::new(vec![d.src()]),
        WatchSession::New {
            request,
            user: user(),
        },
    );
    let w = Running::start(ws.clone(), config);
    let first = w.handle().session();
    d.write("a.txt", "a");
    w.wait_files(1);
    clock.advance(chrono::Duration::hours(2));
    w.wait_for("a rotation", |e| {
        e.iter()
            .any(|e| matches!(e, WatchEvent::SessionRotated { .. }))
    });
    let second = w.handle().session();
    assert_ne!(first.session_id, second.session_id);
    assert_eq!(second.write_mode, WriteMode::Overwrite);
    assert_eq!(
        second.expires_at.unwrap() - second.created_at,
        chrono::Duration::hours(1)
    );
    d.write("b.txt", "b");
    w.wait_files(2);
    let (result, evs) = w.finish();
    let summary = result.unwrap();
    assert_eq!(summary.sessions, vec![first.session_id, second.session_id]);
    let reports = files(&evs);
    assert_eq!(reports[0].session_id, first.session_id);
    assert_eq!(reports[1].session_id, second.session_id);
    let rotated = evs.iter().find_map(|e| match e {
        WatchEvent::SessionRotated { previous, session } => Some((*previous, session.session_id)),
        _ => None,
    });
    assert_eq!(rotated, Some((first.session_id, second.session_id)));
    // Each file counted in its own session.
    let s1 = ws.session(first.session_id).unwrap();
    let s2 = ws.session(second.session_id).unwrap();
    assert_eq!(s1.status(ws.now()), SessionStatus::Expired);
    assert_eq!(s1.ingestion.finished_files, 1);
    assert_eq!(s2.status(ws.now()), SessionStatus::Closed);
    assert_eq!(s2.ingestion.finished_files, 1);
}

#[test]
fn without_rotation_an_expired_session_stops_the_watcher() {
    let d = Inbox::new();
    let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
    let ws = WorkspaceBuilder::new(d.ws_dir())
        .clock(Arc::new(clock.clone()))
        .create()
        .unwrap();
    let request =
        CreateSession::new(WriteMode::Keep).lifetime(Lifetime::Ttl(chrono::Duration::hours(1)));
    let config = WatchConfig::new(
        PlanOptions::new(vec![d.src()]),
        WatchSession::New {
            request,
            user: user(),
        },
    )
    .rotate(false);
    let w = Running::start(ws.clone(), config);
    clock.advance(chrono::Duration::hours(2));
    // The events channel closes on its own.
    let deadline = Instant::now() + DEADLINE;
    while !w.handle().events().is_empty() || w.reader.as_ref().is_some_and(|r| !r.is_finished()) {
        assert!(Instant::now() < deadline, "the watcher did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (result, _) = w.finish();
    match result {
        Err(WatchError::Engine(intake::Error::SessionExpired { .. })) => {}
        other => panic!("expected the session-expired error, got {other:?}"),
    }
}

#[test]
fn a_sidecar_that_appears_later_reingests_its_file_with_the_metadata() {
    let d = Inbox::new();
    let ws = d.workspace();
    let w = Running::start(ws.clone(), d.config(WriteMode::Overwrite));
    d.write("doc.txt", "content");
    w.wait_files(1);
    d.write("doc.txt.meta.json", r#"{"author": "ada"}"#);
    w.wait_files(2);
    let (result, evs) = w.finish();
    result.unwrap();
    let got: Vec<(String, Outcome)> = files(&evs)
        .into_iter()
        .map(|r| (r.name, r.outcome))
        .collect();
    assert_eq!(
        got,
        [
            ("doc.txt".to_string(), Outcome::Ingested),
            ("doc.txt".to_string(), Outcome::Overwritten)
        ]
    );
    assert_eq!(
        ws.current("doc.txt").unwrap().unwrap().meta.as_deref(),
        Some(r#"{"author":"ada"}"#)
    );
}

#[test]
fn a_file_that_changes_while_it_is_read_is_retried_and_never_ingested_torn() {
    let d = Inbox::new();
    let ws = d.workspace();
    let w = Running::start(
        ws.clone(),
        d.config(WriteMode::Keep).settle(Duration::from_millis(100)),
    );
    // Grown through a second name, outside the watched folder: no events
    // come for the writes, only for the link.
    let outside = d.root().join("growing.bin");
    fs::write(&outside, vec![7u8; 8 << 20]).unwrap();
    fs::hard_link(&outside, d.path("growing.bin")).unwrap();
    let writer = {
        let outside = outside.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < until {
                let mut f = fs::OpenOptions::new().append(true).open(&outside).unwrap();
                f.write_all(&[9u8; 4096]).unwrap();
                drop(f);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    writer.join().unwrap();
    let last = fs::read(&outside).unwrap();
    w.wait_for("the final outcome", |e| {
        files(e).iter().any(|r| r.name == "growing.bin")
    });
    let (result, evs) = w.finish();
    let summary = result.unwrap();
    let reports = files(&evs);
    assert_eq!(reports.len(), 1, "{}", show(&evs));
    assert_eq!(reports[0].outcome, Outcome::Ingested, "{}", show(&evs));
    assert_eq!(content(&ws, "growing.bin"), last, "ingested torn");
    // Every retried attempt was a `Retrying` event, never a file outcome.
    let retrying = evs
        .iter()
        .filter(|e| matches!(e, WatchEvent::Retrying { .. }))
        .count();
    assert_eq!(retrying as u64, summary.retries);
    // The session counts the file once: its retried attempts are not
    // failures of the session.
    let s = ws.session(summary.sessions[0]).unwrap();
    assert_eq!(
        (s.ingestion.finished_files, s.ingestion.failed_files),
        (1, 0),
        "retries: {}",
        summary.retries
    );
}

#[test]
fn the_workspace_inside_the_watched_folder_is_never_watched() {
    let d = Inbox::new();
    let ws = Workspace::create(d.path("ws")).unwrap();
    let w = Running::start(ws.clone(), d.config(WriteMode::Keep));
    d.write("a.txt", vec![1u8; 200 * 1024]);
    w.wait_files(1);
    // The blob and index writes it caused bring nothing more.
    std::thread::sleep(Duration::from_millis(1500));
    let (result, evs) = w.finish();
    result.unwrap();
    assert_eq!(
        by_name(&files(&evs)),
        BTreeMap::from([("a.txt".to_string(), vec![Outcome::Ingested])])
    );
}

#[test]
fn poll_mode_ingests_settled_files() {
    let d = Inbox::new();
    let ws = d.workspace();
    let w = Running::start(
        ws.clone(),
        d.config(WriteMode::Keep)
            .poll(Some(Duration::from_millis(200)))
            .settle(Duration::from_millis(300)),
    );
    d.write("a.txt", "a");
    d.write("sub/b.txt", "b");
    w.wait_files(2);
    let (result, evs) = w.finish();
    result.unwrap();
    assert_eq!(by_name(&files(&evs)).len(), 2, "{}", show(&evs));
    assert_index_exactly_once(&ws, &["a.txt".into(), "sub/b.txt".into()]);
}

#[test]
fn bad_roots_are_refused_before_anything_starts() {
    let d = Inbox::new();
    d.write("file.txt", "x");
    let ws = d.workspace();
    let cfg = |roots: Vec<PathBuf>| {
        WatchConfig::new(
            PlanOptions::new(roots),
            WatchSession::New {
                request: CreateSession::new(WriteMode::Keep),
                user: user(),
            },
        )
    };
    let err = Watcher::start(ws.clone(), cfg(vec![d.path("file.txt")])).unwrap_err();
    assert!(err.to_string().contains("not a folder"), "{err}");
    fs::create_dir_all(d.path("inner")).unwrap();
    let err = Watcher::start(ws.clone(), cfg(vec![d.src(), d.path("inner")])).unwrap_err();
    assert!(matches!(err, WatchError::Overlap { .. }), "{err}");
    let err = Watcher::start(ws.clone(), cfg(vec![])).unwrap_err();
    assert!(matches!(err, WatchError::NoFolders), "{err}");
    // No session was left open by the failed starts.
    assert!(ws.sessions().unwrap().is_empty());
}

/// What the walk gives each file, by source path.
fn walk_plan(opts: &PlanOptions) -> BTreeMap<PathBuf, String> {
    Planner::new(opts.clone())
        .unwrap()
        .filter_map(PlanEvent::into_item)
        .filter_map(|i| match i {
            intake::Item::File { name, source, meta } => Some((
                source.path().unwrap().to_path_buf(),
                format!("{name} {meta:?}"),
            )),
            intake::Item::Failed {
                name,
                source,
                reason,
                ..
            } => Some((source?, format!("{name} failed {reason}"))),
        })
        .collect()
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            all_files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

#[test]
fn planning_one_path_agrees_with_the_walk() {
    let d = Inbox::new();
    for f in [
        "a.txt",
        "b.log",
        "c.txt.meta.json",
        "c.txt",
        "orphan.txt.meta.json",
        "bad.txt",
        ".hidden.txt",
        "x.part",
        "sub/d.txt",
        "sub/deeper/e.txt",
        "sub/deeper/e.txt.meta.json",
        "skip/f.txt",
        ".dot/g.txt",
        "tmp.partial/h.txt",
    ] {
        let data = if f.ends_with(".meta.json") {
            r#"{"k": "v"}"#
        } else {
            "x"
        };
        d.write(f, data);
    }
    d.write("bad.txt.meta.json", "not json");
    let mut files = Vec::new();
    all_files(&d.src(), &mut files);
    let base = PlanOptions::new(vec![d.src()]);
    let variants = [
        base.clone(),
        PlanOptions {
            hidden: true,
            ..base.clone()
        },
        PlanOptions {
            extensions: vec!["txt".into()],
            exclude: vec!["skip".into(), "*.log".into()],
            ..base.clone()
        },
        PlanOptions {
            max_depth: Some(2),
            include: vec!["*.txt".into()],
            ..base.clone()
        },
        PlanOptions {
            flatten: true,
            prefix: Some("in/box".into()),
            ..base.clone()
        },
        PlanOptions {
            skip_dirs: vec![d.path("sub")],
            ..base.clone()
        },
    ];
    let plain = walk_plan(&base);
    assert!(plain[&d.path("bad.txt")].contains("failed invalid_meta"));
    assert!(plain[&d.path("c.txt")].contains("Some("), "{plain:#?}");
    assert!(plain[&d.path("orphan.txt.meta.json")].contains("failed orphan_meta"));
    assert_eq!(plain.len(), 8, "{plain:#?}");
    for opts in variants {
        let walk = walk_plan(&opts);
        let planner = Planner::new(opts.clone()).unwrap();
        for f in &files {
            let is_sidecar = f.to_string_lossy().ends_with(".meta.json");
            let one = planner
                .plan_path(f)
                .and_then(PlanEvent::into_item)
                .map(|i| match i {
                    intake::Item::File { name, source, meta } => (
                        source.path().unwrap().to_path_buf(),
                        format!("{name} {meta:?}"),
                    ),
                    intake::Item::Failed {
                        name,
                        source,
                        reason,
                        ..
                    } => (source.unwrap(), format!("{name} failed {reason}")),
                });
            if is_sidecar {
                // A sidecar plans its file, exactly as the walk plans it;
                // an orphan plans nothing (the walk reports it).
                let base_path = PathBuf::from(f.to_string_lossy().trim_end_matches(".meta.json"));
                let want = walk.get(&base_path).map(|w| (base_path.clone(), w.clone()));
                assert_eq!(one, want, "{opts:?}\n{}", f.display());
            } else {
                let want = walk.get(f).map(|w| (f.clone(), w.clone()));
                assert_eq!(one, want, "{opts:?}\n{}", f.display());
            }
            // Folders: entered exactly when the walk reaches files in them.
            let dir = f.parent().unwrap();
            let walked_in = walk.keys().any(|p| p.parent() == Some(dir));
            if walked_in {
                assert!(planner.enters_dir(dir), "{opts:?}\n{}", dir.display());
            }
        }
        assert!(!planner.enters_dir(&d.path(".dot")) || opts.hidden);
        assert!(!planner.enters_dir(&d.path("tmp.partial")));
    }
}

// ---------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------

/// `intake watch` running in the background, its output collected.
struct Daemon {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Starts `intake watch ARGS` in `dir`.
    fn start(dir: &Path, args: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_intake"))
            .current_dir(dir)
            .arg("watch")
            .args(args)
            .env_remove("RUST_LOG")
            .env("INTAKE_USER", "Watch Test")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |r: Box<dyn Read + Send>, into: Arc<Mutex<Vec<String>>>| {
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    into.lock().unwrap().push(line);
                }
            })
        };
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(Box::new(child.stdout.take().unwrap()), Arc::clone(&stdout)),
            collect(Box::new(child.stderr.take().unwrap()), Arc::clone(&stderr)),
        ];
        Daemon {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory effects; the pid is our child's.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The `--json` file lines so far.
    fn files(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `pred` holds for stdout's file lines.
    fn wait_files(&self, what: &str, pred: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if pred(&self.files()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {} lines; stderr:\n{}",
                self.files().len(),
                tail(&self.stderr_text())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_stderr(&self, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.stderr_text().contains(what) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what:?} on stderr:\n{}",
                tail(&self.stderr_text())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit (at most `within`) and returns the code.
    fn wait_exit(mut self, within: Duration) -> (i32, Vec<Value>, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "intake watch did not exit within {within:?}; stderr:\n{}",
                    tail(&self.stderr_text())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let code = status.code().unwrap_or(-1);
        (code, self.files(), self.stderr_text())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn names_of(lines: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines {
        m.entry(l["name"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(l["outcome"].as_str().unwrap_or_default().to_owned());
    }
    m
}

#[test]
fn a_burst_through_a_kernel_queue_overflow_is_rescanned_and_ingested_exactly_once() {
    let d = Inbox::new();
    let daemon = Daemon::start(d.root(), &["src", "-w", "ws", "--json"]);
    daemon.wait_stderr("initial scan done");
    // Stopped, the daemon reads no events: 20,000 files (80,000 events)
    // overflow the kernel queue (fs.inotify.max_queued_events = 16384).
    daemon.signal(libc::SIGSTOP);
    let names = burst(&d.src(), 20_000);
    daemon.signal(libc::SIGCONT);
    daemon.wait_files("every file", |l| l.len() >= names.len());
    std::thread::sleep(Duration::from_millis(1500));
    daemon.signal(libc::SIGTERM);
    let (code, lines, stderr) = daemon.wait_exit(DEADLINE);
    assert_eq!(code, 0, "{}", tail(&stderr));
    assert!(
        stderr.contains("overflowed"),
        "no overflow was reported:\n{}",
        tail(&stderr)
    );
    assert!(stderr.contains("rescan done"), "{}", tail(&stderr));
    let got = names_of(&lines);
    let not_once: Vec<_> = got
        .iter()
        .filter(|(_, o)| o.as_slice() != ["ingested"])
        .take(5)
        .collect();
    assert!(not_once.is_empty(), "not exactly once: {not_once:?}");
    assert_eq!(got.len(), names.len());
    assert_index_exactly_once(&Workspace::open(d.ws_dir()).unwrap(), &names);
}

#[test]
fn sigterm_during_a_burst_loses_nothing() {
    let d = Inbox::new();
    let n = 5_000;
    let daemon = Daemon::start(d.root(), &["src", "-w", "ws", "--json"]);
    daemon.wait_stderr("initial scan done");
    let src = d.src();
    let writer = std::thread::spawn(move || burst(&src, n));
    daemon.wait_files("some files", |l| l.len() >= 500);
    daemon.signal(libc::SIGTERM);
    let (code, first, stderr) = daemon.wait_exit(Duration::from_secs(35));
    assert_eq!(code, 0, "{}", tail(&stderr));
    assert!(stderr.contains("closed session"), "{}", tail(&stderr));
    let names = writer.join().unwrap();
    let committed: Vec<String> = first
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect();
    eprintln!("{} of {n} committed before the stop", committed.len());
    let ws = Workspace::open(d.ws_dir()).unwrap();
    // Everything reported is committed.
    let idx = index(&ws);
    assert!(committed.iter().all(|c| idx.contains_key(c)));

    // The next start's catch-up takes the rest.
    let daemon = Daemon::start(d.root(), &["src", "-w", "ws", "--json"]);
    daemon.wait_files("the rest", |l| l.len() >= n);
    daemon.signal(libc::SIGTERM);
    let (code, second, stderr) = daemon.wait_exit(Duration::from_secs(35));
    assert_eq!(code, 0, "{}", tail(&stderr));
    assert_index_exactly_once(&ws, &names);
    let second = names_of(&second);
    for c in &committed {
        assert_eq!(
            second.get(c).map(Vec::as_slice),
            Some(&["unchanged".to_string()][..]),
            "{c}"
        );
    }
}

#[test]
fn no_rotate_exits_3_when_a_short_session_expires() {
    let d = Inbox::new();
    d.write("a.txt", "a");
    let daemon = Daemon::start(
        d.root(),
        &["src", "-w", "ws", "--json", "--ttl", "2s", "--no-rotate"],
    );
    let (code, lines, stderr) = daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(code, 3, "{}", tail(&stderr));
    assert!(stderr.contains("expired"), "{}", tail(&stderr));
    assert_eq!(names_of(&lines).len(), 1);
}

#[test]
fn a_short_session_rotates_and_each_file_lands_in_its_session() {
    let d = Inbox::new();
    let daemon = Daemon::start(d.root(), &["src", "-w", "ws", "--json", "--ttl", "2s"]);
    daemon.wait_stderr("initial scan done");
    d.write("before.txt", "1");
    daemon.wait_files("before.txt", |l| !l.is_empty());
    let s1 = daemon.files()[0]["session_id"].as_str().unwrap().to_owned();
    daemon.wait_stderr(&format!("session {s1} expired; opened session"));
    d.write("after.txt", "2");
    daemon.wait_files("after.txt", |l| l.len() >= 2);
    daemon.signal(libc::SIGINT);
    let (code, lines, stderr) = daemon.wait_exit(DEADLINE);
    assert_eq!(code, 0, "{}", tail(&stderr));
    let s1 = s1.as_str();
    let s2 = lines[1]["session_id"].as_str().unwrap();
    assert_ne!(s1, s2);
    // `session show` from another process sees each one's count.
    let ws = Workspace::open(d.ws_dir()).unwrap();
    for s in [s1, s2] {
        let r = ws.session(s.parse().unwrap()).unwrap();
        assert_eq!(r.ingestion.finished_files, 1, "{s}");
        assert_eq!(
            r.session.expires_at.unwrap() - r.session.created_at,
            chrono::Duration::seconds(2)
        );
    }
}

#[test]
fn a_config_file_carries_the_options() {
    let d = Inbox::new();
    fs::write(
        d.root().join("watch.toml"),
        r#"
workspace = "ws"
paths = ["src"]
ext = ["txt"]
write-mode = "overwrite"
settle = "200ms"
log_format = "json"
"#,
    )
    .unwrap();
    let daemon = Daemon::start(d.root(), &["--config", "watch.toml"]);
    daemon.wait_stderr("initial scan done");
    d.write("a.txt", "a");
    d.write("b.pdf", "b");
    daemon.wait_stderr("\"name\":\"a.txt\"");
    std::thread::sleep(Duration::from_millis(500));
    daemon.signal(libc::SIGTERM);
    let (code, _, stderr) = daemon.wait_exit(DEADLINE);
    assert_eq!(code, 0, "{stderr}");
    // One JSON object per line, each outcome with its fields.
    let logs: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let outcome = logs
        .iter()
        .find(|l| l["fields"]["name"] == "a.txt")
        .unwrap();
    assert_eq!(outcome["fields"]["outcome"], "ingested");
    assert_eq!(outcome["level"], "INFO");
    let ws = Workspace::open(d.ws_dir()).unwrap();
    assert_eq!(index(&ws).keys().collect::<Vec<_>>(), ["a.txt"]);
    assert_eq!(
        ws.sessions().unwrap()[0].session.write_mode,
        WriteMode::Overwrite
    );

    // An unknown key is a usage error that names it.
    fs::write(
        d.root().join("bad.toml"),
        "paths = [\"src\"]\nsettel = \"1s\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_intake"))
        .current_dir(d.root())
        .args(["watch", "--config", "bad.toml", "-w", "ws"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("settel"));
}

#[test]
fn the_watch_limit_error_names_the_sysctl_and_poll() {
    let d = Inbox::new();
    for i in 0..20 {
        fs::create_dir_all(d.path(&format!("d{i}"))).unwrap();
    }
    // A user namespace has its own copy of the limit (inotify(7)).
    let script = format!(
        "echo 8 > /proc/sys/user/max_inotify_watches && exec {} watch src -w ws",
        env!("CARGO_BIN_EXE_intake")
    );
    let out = Command::new("unshare")
        .args(["-U", "-r", "sh", "-c", &script])
        .current_dir(d.root())
        .output();
    let out = match out {
        Ok(o) if !String::from_utf8_lossy(&o.stderr).contains("max_inotify_watches: ") => o,
        _ => {
            eprintln!("skipped: user namespaces are not available here");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unshare:") {
        eprintln!("skipped: {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("fs.inotify.max_user_watches"), "{stderr}");
    assert!(stderr.contains("--poll"), "{stderr}");
}

// ---------------------------------------------------------------------------
// Measurements for BENCHMARKS.md (run in release, see /tmp/watch-bench.md)
// ---------------------------------------------------------------------------

/// Latency from a file's close to its commit (its report), over 200 files
/// written one after another.
#[test]
#[ignore = "a measurement: cargo test --release --test watch -- --ignored --nocapture bench_"]
fn bench_close_to_commit_latency() {
    let d = Inbox::new();
    let ws = d.workspace();
    let w = Running::start(ws, d.config(WriteMode::Keep));
    // The peer, sampled between the files so that both see the same disk:
    // the floor under any durable commit, a small append made durable
    // (`fdatasync`), as a commit to SQLite's write-ahead log is.
    let mut log = fs::File::create(d.root().join("floor.log")).unwrap();
    let (mut lat, mut floor) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let name = format!("l{i:03}.txt");
        let mut f = fs::File::create(d.path(&name)).unwrap();
        f.write_all(format!("latency sample {i}\n").as_bytes())
            .unwrap();
        drop(f);
        let closed = Instant::now();
        w.wait_files(i + 1);
        lat.push(closed.elapsed());
        std::thread::sleep(Duration::from_millis(5));
        let t = Instant::now();
        log.write_all(format!("latency sample {i}\n").as_bytes())
            .unwrap();
        log.sync_data().unwrap();
        floor.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    lat.sort();
    floor.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (med, p95) = (lat[lat.len() / 2], lat[lat.len() * 95 / 100]);
    let (fmed, fp95) = (floor[floor.len() / 2], floor[floor.len() * 95 / 100]);
    eprintln!(
        "close->commit over {} files: median {:.1} ms, p95 {:.1} ms, max {:.1} ms; \
         append+fdatasync: median {:.1} ms, p95 {:.1} ms (ratio median {:.1}, p95 {:.1})",
        lat.len(),
        ms(med),
        ms(p95),
        ms(lat[lat.len() - 1]),
        ms(fmed),
        ms(fp95),
        med.as_secs_f64() / fmed.as_secs_f64(),
        p95.as_secs_f64() / fp95.as_secs_f64()
    );
}

/// Time to drain a burst of 20,000 files created as fast as possible.
#[test]
#[ignore = "a measurement: cargo test --release --test watch -- --ignored --nocapture bench_"]
fn bench_burst_drain() {
    let d = Inbox::new();
    let ws = d.workspace();
    let w = Running::start(ws, d.config(WriteMode::Keep));
    let start = Instant::now();
    let names = burst(&d.src(), 20_000);
    let created = start.elapsed();
    w.wait_files(names.len());
    let drained = start.elapsed();
    let (result, _) = w.finish();
    let summary = result.unwrap();
    // The peer: the same burst into a folder nobody watches.
    let quiet = d.root().join("unwatched");
    fs::create_dir(&quiet).unwrap();
    let t = Instant::now();
    burst(&quiet, 20_000);
    let unwatched = t.elapsed();
    eprintln!(
        "burst of {}: created in {:.2} s, all committed {:.2} s after the first write ({:.2} s after the last); {} rescans; \
         the same burst unwatched: {:.2} s (ratio {:.2})",
        names.len(),
        created.as_secs_f64(),
        drained.as_secs_f64(),
        (drained - created).as_secs_f64(),
        summary.rescans,
        unwatched.as_secs_f64(),
        drained.as_secs_f64() / unwatched.as_secs_f64()
    );
}

/// Time for `intake watch` to drain 20,000 files created while it was
/// stopped (a kernel queue overflow, then a rescan), from SIGCONT to the
/// last commit; against `intake ingest` of the same tree, in the same run.
#[test]
#[ignore = "a measurement: cargo test --release --test watch -- --ignored --nocapture bench_"]
fn bench_burst_drain_through_overflow() {
    let d = Inbox::new();
    let daemon = Daemon::start(d.root(), &["src", "-w", "ws", "--json"]);
    daemon.wait_stderr("initial scan done");
    daemon.signal(libc::SIGSTOP);
    let names = burst(&d.src(), 20_000);
    let t0 = Instant::now();
    daemon.signal(libc::SIGCONT);
    daemon.wait_files("every file", |l| l.len() >= names.len());
    let drain = t0.elapsed();
    let status = fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_owned();
    daemon.signal(libc::SIGTERM);
    let (code, _, stderr) = daemon.wait_exit(DEADLINE);
    assert_eq!(code, 0);
    assert!(stderr.contains("overflowed"));
    let t1 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_intake"))
        .current_dir(d.root())
        .args(["ingest", "src", "-w", "peer", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let peer = t1.elapsed();
    eprintln!(
        "overflowed burst of {}: drained in {:.2} s after SIGCONT; `intake ingest` of the same tree {:.2} s (ratio {:.2}); daemon {hwm}",
        names.len(),
        drain.as_secs_f64(),
        peer.as_secs_f64(),
        drain.as_secs_f64() / peer.as_secs_f64()
    );
}

/// `--delete`: a file removed from the watched folder (or a folder moved
/// out of it) becomes deletions of what it was ingested as; a file saved
/// by renaming (moved aside, then written again) is not deleted; a name
/// that another file has written since is left alone. Without the option,
/// nothing is deleted.
#[test]
fn with_delete_a_removed_file_is_deleted_and_a_save_by_rename_is_not() {
    let d = Inbox::new();
    d.write("gone.txt", "g");
    d.write("doc.txt", "v1");
    d.write("sub/a.txt", "a");
    d.write("sub/b.txt", "b");
    d.write("kept.txt", "k");
    d.write("other.txt", "from the folder");
    let ws = d.workspace();
    let config = d
        .config(WriteMode::Overwrite)
        .settle(Duration::from_millis(200))
        .delete(true);
    let w = Running::start(ws.clone(), config);
    w.wait_files(6);
    // Another writer replaces what other.txt was ingested as.
    let s = ws
        .create_session(&CreateSession::new(WriteMode::Overwrite), user())
        .unwrap();
    let item = intake::Item::bytes(
        intake::Name::new("other.txt").unwrap(),
        b"elsewhere".to_vec(),
    );
    ws.ingest(&s).run(vec![item], |_| {}).unwrap();

    std::fs::remove_file(d.path("gone.txt")).unwrap();
    std::fs::remove_file(d.path("other.txt")).unwrap();
    // A save by rename, as editors do it.
    std::fs::rename(d.path("doc.txt"), d.path("doc.txt~")).unwrap();
    d.write("doc.txt", "v2");
    // A whole folder moved out.
    std::fs::rename(d.path("sub"), d.root().join("moved-away")).unwrap();
    let deleted = |e: &[WatchEvent]| {
        files(e)
            .iter()
            .filter(|r| r.outcome == Outcome::Deleted)
            .count()
    };
    w.wait_for("3 deletions", |e| deleted(e) >= 3);
    let deleted_now = deleted(&w.events());
    assert_eq!(deleted_now, 3, "{}", show(&w.events()));
    w.wait_for("doc.txt overwritten", |e| {
        files(e)
            .iter()
            .any(|r| r.name == "doc.txt" && r.outcome == Outcome::Overwritten)
    });
    // Moved back, same sizes and mtimes: ingested again, not taken for
    // unchanged by the quick check.
    std::fs::rename(d.root().join("moved-away"), d.path("back")).unwrap();
    let back = |e: &[WatchEvent]| {
        files(e)
            .iter()
            .filter(|r| r.name.starts_with("back/") && r.outcome == Outcome::Ingested)
            .count()
    };
    w.wait_for("back/ ingested", |e| back(e) >= 2);
    std::fs::rename(d.path("back"), d.path("sub")).unwrap();
    w.wait_for("sub/ ingested again", |e| {
        files(e)
            .iter()
            .filter(|r| r.name.starts_with("sub/") && r.outcome == Outcome::Ingested)
            .count()
            >= 4
    });
    w.wait_for("back/ deleted", |e| deleted(e) >= 5);
    let (result, evs) = w.finish();
    let summary = result.unwrap();
    let mut gone: Vec<(String, Option<PathBuf>)> = files(&evs)
        .into_iter()
        .filter(|r| r.outcome == Outcome::Deleted)
        .map(|r| (r.name, r.source))
        .collect();
    gone.sort();
    assert_eq!(
        gone,
        [
            ("back/a.txt".to_owned(), Some(d.path("back/a.txt"))),
            ("back/b.txt".to_owned(), Some(d.path("back/b.txt"))),
            ("gone.txt".to_owned(), Some(d.path("gone.txt"))),
            ("sub/a.txt".to_owned(), Some(d.path("sub/a.txt"))),
            ("sub/b.txt".to_owned(), Some(d.path("sub/b.txt"))),
        ],
        "{}",
        show(&evs)
    );
    assert_eq!(summary.counts.deleted, 5);
    assert_eq!(
        index(&ws).keys().collect::<Vec<_>>(),
        ["doc.txt", "kept.txt", "other.txt", "sub/a.txt", "sub/b.txt"]
    );
    let h = ws.history("sub/a.txt").unwrap();
    assert_eq!(
        h.iter().map(|e| (e.version, e.deleted)).collect::<Vec<_>>(),
        [(3, false), (2, true), (1, false)]
    );
    assert_eq!(content(&ws, "doc.txt"), b"v2");
    assert_eq!(content(&ws, "other.txt"), b"elsewhere");
    let h = ws.history("gone.txt").unwrap();
    assert!(h[0].deleted && h[0].session_id == summary.sessions[0]);

    // A watcher that wrote nothing yet (all unchanged at its catch-up):
    // a folder moved out and back, unchanged, is deleted, then ingested
    // again, not taken for unchanged by the records of its catch-up.
    let w = Running::start(
        ws.clone(),
        d.config(WriteMode::Overwrite)
            .settle(Duration::from_millis(200))
            .delete(true),
    );
    w.wait_files(4);
    std::fs::rename(d.path("sub"), d.root().join("out-again")).unwrap();
    w.wait_for("sub/ deleted", |e| deleted(e) >= 2);
    std::fs::rename(d.root().join("out-again"), d.path("sub")).unwrap();
    w.wait_for("sub/ back", |e| {
        files(e)
            .iter()
            .filter(|r| r.name.starts_with("sub/") && r.outcome == Outcome::Ingested)
            .count()
            >= 2
    });
    let (result, evs) = w.finish();
    assert_eq!(result.unwrap().counts.deleted, 2, "{}", show(&evs));
    assert_eq!(content(&ws, "sub/a.txt"), b"a");

    // Off (the default): a removal changes nothing.
    let w = Running::start(ws.clone(), d.config(WriteMode::Overwrite));
    w.wait_files(4);
    std::fs::remove_file(d.path("kept.txt")).unwrap();
    // (other.txt is gone from the folder: the name stays, as before.)
    d.write("marker.txt", "m");
    w.wait_for("the marker", |e| {
        files(e).iter().any(|r| r.name == "marker.txt")
    });
    std::thread::sleep(Duration::from_millis(700));
    let (result, evs) = w.finish();
    assert_eq!(result.unwrap().counts.deleted, 0, "{}", show(&evs));
    assert!(ws.current("kept.txt").unwrap().is_some());
}
