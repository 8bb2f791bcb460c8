//! Helpers for the tests that drive the engine through the library: a
//! workspace on a manual clock, runs, exact comparisons of outcomes and
//! contents, and what the local blob store holds.

// A helper that hits an unexpected error should panic where it happened.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use intake::session::IngestionStatus;
use intake::{
    CreateSession, FileReport, Hash, Item, Lifetime, ManualClock, Meta, Name, Outcome, Reason,
    Session, Summary, Uuid, Workspace, WorkspaceBuilder, WriteMode,
};

use super::user;

/// The instant every manual clock starts at.
pub fn t0() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

pub fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

pub fn meta(json: &str) -> Option<Meta> {
    Meta::parse(json.as_bytes()).unwrap()
}

/// A workspace in `dir` driven by `clock`, with the given inline threshold.
pub fn open_ws(dir: &Path, clock: &ManualClock, threshold: u64) -> Workspace {
    WorkspaceBuilder::new(dir)
        .clock(Arc::new(clock.clone()))
        .inline_threshold(threshold)
        // gc's grace period is tested on its own; elsewhere files may go at once.
        .gc_grace(StdDuration::ZERO)
        .create()
        .unwrap()
}

pub fn session(ws: &Workspace, mode: WriteMode, life: Lifetime) -> Session {
    ws.create_session(&CreateSession::new(mode).lifetime(life), user())
        .unwrap()
}

/// Runs `items` at the default settings and returns every report in order.
pub fn run(ws: &Workspace, s: &Session, items: Vec<Item>) -> (Vec<FileReport>, Summary) {
    let mut reports = Vec::new();
    let summary = ws
        .ingest(s)
        .run(items, |r| reports.push(r.clone()))
        .unwrap();
    (reports, summary)
}

/// `(name, outcome, reason)` of every report, for exact comparison.
pub fn outcomes(reports: &[FileReport]) -> Vec<(String, Outcome, Option<Reason>)> {
    reports
        .iter()
        .map(|r| (r.name.clone(), r.outcome, r.reason))
        .collect()
}

pub fn expect(v: &[(&str, Outcome, Option<Reason>)]) -> Vec<(String, Outcome, Option<Reason>)> {
    v.iter().map(|(n, o, r)| (n.to_string(), *o, *r)).collect()
}

/// Asserts two sequences are equal; on failure prints them line by line,
/// marking the lines that differ.
#[track_caller]
pub fn assert_lines<T: Debug + PartialEq>(what: &str, got: &[T], want: &[T]) {
    if got == want {
        return;
    }
    let mut out = format!("{what}: {} lines, expected {}\n", got.len(), want.len());
    for i in 0..got.len().max(want.len()) {
        match (got.get(i), want.get(i)) {
            (Some(g), Some(w)) if g == w => out += &format!("   {i:4} {g:?}\n"),
            (g, w) => {
                if let Some(w) = w {
                    out += &format!(" - {i:4} {w:?}\n");
                }
                if let Some(g) = g {
                    out += &format!(" + {i:4} {g:?}\n");
                }
            }
        }
    }
    panic!("{out}(- expected, + got)");
}

pub fn read_all(mut r: Box<dyn Read + Send>) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

/// Every name in the workspace, in name order.
pub fn names(ws: &Workspace) -> Vec<String> {
    let mut names = Vec::new();
    ws.list(None, |e| {
        names.push(e.name);
        true
    })
    .unwrap();
    names
}

/// Every name in the workspace with its current content.
pub fn contents(ws: &Workspace) -> BTreeMap<String, Vec<u8>> {
    names(ws)
        .into_iter()
        .map(|n| {
            let c = read_all(ws.read(&n).unwrap());
            (n, c)
        })
        .collect()
}

pub fn contents_of(v: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    v.iter().map(|(n, c)| (n.to_string(), c.to_vec())).collect()
}

/// Where the local blob store keeps an external blob.
pub fn blob_path(ws_dir: &Path, hash: &Hash) -> PathBuf {
    let hex = hash.to_hex();
    ws_dir.join("blobs").join(&hex[..2]).join(hex)
}

/// The hex hashes of every finished blob file under `<ws>/blobs/xx/`.
pub fn blob_files(ws_dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for sub in fs::read_dir(ws_dir.join("blobs")).unwrap() {
        let sub = sub.unwrap();
        let n = sub.file_name().into_string().unwrap();
        if n == "tmp" {
            continue;
        }
        assert_eq!(n.len(), 2, "unexpected entry {n} in the blob store");
        for f in fs::read_dir(sub.path()).unwrap() {
            let f = f.unwrap().file_name().into_string().unwrap();
            assert!(f.starts_with(&n), "blob {f} filed under {n}");
            out.insert(f);
        }
    }
    out
}

pub fn hex_set<'a>(contents: impl IntoIterator<Item = &'a [u8]>) -> BTreeSet<String> {
    contents.into_iter().map(|c| Hash::of(c).to_hex()).collect()
}

pub fn defect_names(ws: &Workspace) -> Vec<Option<String>> {
    ws.verify()
        .unwrap()
        .defects
        .into_iter()
        .map(|d| d.name)
        .collect()
}

pub fn status(
    ingested: u64,
    overwritten: u64,
    unchanged: u64,
    kept: u64,
    failed: u64,
    bytes: u64,
) -> IngestionStatus {
    IngestionStatus {
        finished_files: ingested + overwritten + unchanged + kept,
        failed_files: failed,
        ingested,
        overwritten,
        unchanged,
        kept,
        deleted: 0,
        bytes,
    }
}

/// The per-file records listed in a session: `(name, outcome, reason)`.
pub fn session_files(ws: &Workspace, id: Uuid) -> Vec<(String, Outcome, Option<Reason>)> {
    let mut out = Vec::new();
    ws.session_files(id, |r| {
        out.push((r.name, r.outcome, r.reason));
        true
    })
    .unwrap();
    out
}

/// What a session lists of these outcomes: `unchanged` is only counted.
pub fn listed(v: &[(String, Outcome, Option<Reason>)]) -> Vec<(String, Outcome, Option<Reason>)> {
    v.iter()
        .filter(|(_, o, _)| *o != Outcome::Unchanged)
        .cloned()
        .collect()
}

pub fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// Yields `inner`, moving `clock` to `to` just before it yields item number
/// `after` (0-based): the pull that admits that item sees the new time.
pub struct MoveClockAfter<I> {
    pub inner: I,
    pub yielded: usize,
    pub after: usize,
    pub clock: ManualClock,
    pub to: DateTime<Utc>,
}

impl<I: Iterator> Iterator for MoveClockAfter<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        if self.yielded == self.after {
            self.clock.set(self.to);
        }
        let x = self.inner.next()?;
        self.yielded += 1;
        Some(x)
    }
}
