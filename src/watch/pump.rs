//! The tracker's thread: events, scan results and outcomes in, ready
//! items out.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender};

use super::backend::{self, Ctl, Found, Raw, ScanKind};
use super::delete::Deleter;
use super::error::WatchError;
use super::known::Known;
use super::ready::{Action, Done, FsProbe, Stat, Tracker};
use super::shared::Shared;
use crate::item::Item;
use crate::plan::{PlanEvent, Planner};

/// How long the tracker sleeps at most between looks at its timers.
const TICK: Duration = Duration::from_millis(100);
/// Queue length beyond which scans wait (they are paced by the ingest).
const FOUND_HIGH_WATER: usize = 4096;
/// Events taken in one go before looking at the other channels.
const BATCH: usize = 1024;

/// The tracker's thread: events, scan results and outcomes in, ready
/// items out. It never blocks on anything but its select.
pub(crate) struct Pump {
    pub(crate) tracker: Tracker<FsProbe>,
    pub(crate) planner: Planner,
    pub(crate) raw: Receiver<Raw>,
    pub(crate) found: Receiver<Found>,
    pub(crate) done: Receiver<Done>,
    pub(crate) ready: Sender<Item>,
    pub(crate) ctl: Sender<Ctl>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) max_queued: usize,
    pub(crate) deleter: Deleter,
    pub(crate) known: Known,
    /// Files a scan found unchanged, planned and in flight, to hand on.
    pub(crate) planned: VecDeque<Item>,
}

impl Pump {
    pub(crate) fn run(mut self) {
        let mut pending: Option<Item> = None;
        let mut actions = Vec::new();
        let (mut raw_open, mut found_open) = (true, true);
        loop {
            if self.shared.is_shutdown() {
                return;
            }
            let now = Instant::now();
            self.tracker.tick(now);
            let gone: Vec<_> = std::iter::from_fn(|| self.tracker.pop_deleted()).collect();
            if !gone.is_empty() || !self.deleter.again.is_empty() {
                self.deleter.delete(gone);
            }
            if pending.is_none() {
                pending = self.next_item();
            }
            let queued = self.tracker.queued() + self.planned.len();
            let mut sel = Select::new();
            let raw_i = (raw_open && queued < self.max_queued).then(|| sel.recv(&self.raw));
            let found_i = (found_open && queued < FOUND_HIGH_WATER).then(|| sel.recv(&self.found));
            let done_i = sel.recv(&self.done);
            let ready_i = pending.is_some().then(|| sel.send(&self.ready));
            let timeout = self
                .tracker
                .next_due()
                .map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
            let Ok(op) = sel.select_timeout(timeout) else {
                continue;
            };
            let i = op.index();
            if Some(i) == raw_i {
                match op.recv(&self.raw) {
                    Ok(r) => {
                        self.on_raw(r, &mut actions);
                        for _ in 0..BATCH {
                            let Ok(r) = self.raw.try_recv() else { break };
                            self.on_raw(r, &mut actions);
                        }
                    }
                    Err(_) => raw_open = false,
                }
            } else if Some(i) == found_i {
                match op.recv(&self.found) {
                    Ok(f) => {
                        self.on_found(f);
                        for _ in 0..BATCH {
                            let Ok(f) = self.found.try_recv() else { break };
                            self.on_found(f);
                        }
                    }
                    Err(_) => found_open = false,
                }
            } else if i == done_i {
                match op.recv(&self.done) {
                    Ok(d) => self.tracker.on_done(d, Instant::now()),
                    // The committer is gone.
                    Err(_) => return,
                }
            } else if Some(i) == ready_i
                // The send was offered only with an item pending.
                && let Some(item) = pending.take()
                && op.send(&self.ready, item).is_err()
            {
                return;
            }
            for a in actions.drain(..) {
                match a {
                    Action::Scan(dir) => {
                        let _ = self.ctl.send(Ctl::Scan(dir));
                    }
                    Action::Rescan => {
                        let _ = self.ctl.send(Ctl::Rescan);
                    }
                    Action::RootGone(root) => self.shared.fail(WatchError::FolderGone(root)),
                }
            }
        }
    }

    fn on_raw(&mut self, r: Raw, actions: &mut Vec<Action>) {
        match r {
            Ok(ev) => {
                if ev.need_rescan() {
                    self.shared.rescans.fetch_add(1, Ordering::SeqCst);
                    tracing::warn!(
                        "the kernel's event queue overflowed (fs.inotify.max_queued_events); \
                         events were lost: rescanning every folder"
                    );
                }
                self.tracker.on_event(&ev, Instant::now(), actions);
            }
            Err(e) => match backend::limit_error(&e) {
                Some(fatal) => self.shared.fail(fatal),
                None => tracing::warn!("file watching: {e}"),
            },
        }
    }

    fn on_found(&mut self, f: Found) {
        match f {
            Found::File(p, stat, has_sidecar) => self.on_found_file(p, stat, has_sidecar),
            Found::Done { what, files, dirs } => match what {
                ScanKind::Initial => {
                    tracing::info!(
                        "initial scan done: {files} files in {dirs} folders; watching for changes"
                    );
                    self.shared.set_watching();
                }
                ScanKind::Rescan => {
                    tracing::info!("rescan done: {files} files in {dirs} folders");
                    // A rescan queued during the catch-up replaced it.
                    self.shared.set_watching();
                }
                ScanKind::Folder => {
                    tracing::debug!("new folders scanned: {files} files in {dirs} folders")
                }
            },
        }
    }

    /// A file a scan found. One with the size and mtime of its last
    /// ingest is planned from the scan's listing and goes in flight at
    /// once, unless events are telling about it; any other waits in the
    /// tracker.
    fn on_found_file(&mut self, path: PathBuf, stat: Option<Stat>, has_sidecar: bool) {
        let now = Instant::now();
        let Some(s) = stat.filter(|s| self.known.unchanged(&path, s)) else {
            self.tracker.on_found(path, stat, false, now);
            return;
        };
        let (len, mtime) = (s.stamp.len, s.stamp.mtime_ns);
        if let Some(PlanEvent::Item(item)) =
            self.planner.plan_listed(&path, len, mtime, has_sidecar)
            && self.tracker.found_unchanged(&path, s.stamp)
        {
            self.planned.push_back(item);
            return;
        }
        self.tracker.on_found(path, stat, true, now);
    }

    /// The next ready file, planned: its item, or `None` if nothing is
    /// ready.
    fn next_item(&mut self) -> Option<Item> {
        if let Some(item) = self.planned.pop_front() {
            return Some(item);
        }
        loop {
            let path = self.tracker.pop_ready()?;
            match self.planner.plan_path(&path) {
                Some(PlanEvent::Item(item)) => {
                    let source = match &item {
                        Item::File { source, .. } => source.path().map(Path::to_path_buf),
                        Item::Failed { source, .. } => source.clone(),
                    };
                    if source.as_deref() == Some(path.as_path()) {
                        return Some(item);
                    }
                    // Planned under another path: track it under that one.
                    self.tracker.forget(&path);
                    if let Some(s) = source {
                        self.tracker.make_ready(&s);
                    }
                }
                Some(PlanEvent::Skipped { path: p, why, .. }) => {
                    tracing::info!(path = %p.display(), "skipped {}: {why}", p.display());
                    self.tracker.forget(&path);
                }
                None => self.tracker.forget(&path),
            }
        }
    }
}
