//! Readiness: when a file that an event or a scan names is complete enough
//! to read. A pure state machine over paths: events, scan results and
//! ingest outcomes go in; paths ready to ingest come out of a queue, each
//! once per readiness. The file system is reached only through [`Probe`],
//! and time is passed in, so tests drive it with synthetic events.
//!
//! The rules (SPEC §8):
//!
//! - **inotify**: a file is ready when it is closed after writing
//!   (`IN_CLOSE_WRITE`) or renamed in. A file being written waits for its
//!   close however long the writer pauses. A hard link (`nlink > 1`) never
//!   gets a close of its own, so it is ready when it appears, unless some
//!   process still holds it open for writing.
//! - **settle**: a file found by a scan, every file in poll mode, and every
//!   file whose close may have been lost in a queue overflow is ready once
//!   its size, mtime and ctime have stayed the same for the settle window
//!   and no process holds it open for writing (when that can be known: a
//!   read lease, see [`FsProbe`]).
//! - A file that changed while it was read (or that the workspace failed
//!   to store) is retried after a growing settle window; one that changes
//!   while queued or in flight is read again once more, not once per event.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind};

use crate::meta::{ends_as_sidecar, sidecar_of};

/// How long a rename's first half waits for its second.
const RENAME_PAIRING: Duration = Duration::from_secs(2);
/// Longest wait between retries of a file that keeps changing while read.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);
/// Shortest settle window used for retries, whatever `settle` is.
const MIN_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Where events come from, which decides the readiness rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// inotify: close and rename events tell.
    Inotify,
    /// A poll watcher: only the settle window tells.
    Poll,
}

/// What a path is, from `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file.
    File,
    /// A folder.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// The `lstat` facts the tracker needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// What it is.
    pub kind: Kind,
    /// Hard links.
    pub nlink: u64,
    /// Whether a followed symbolic link leads to a folder.
    pub link_to_dir: bool,
    /// Identity and change marks.
    pub stamp: Stamp,
}

/// What says a file has not changed: same inode, size, mtime and ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// The file-system seam.
pub(crate) trait Probe {
    /// `lstat`, `None` if the path is gone.
    fn stat(&self, path: &Path) -> Option<Stat>;
    /// Whether some process holds the file open for writing: `None` when
    /// that cannot be known here.
    fn open_for_writing(&self, path: &Path) -> Option<bool>;
}

/// The real file system.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FsProbe {
    /// Whether symbolic links to folders count as folders.
    pub follow_links: bool,
}

impl Probe for FsProbe {
    fn stat(&self, path: &Path) -> Option<Stat> {
        let m = std::fs::symlink_metadata(path).ok()?;
        let ft = m.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        let link_to_dir = kind == Kind::Symlink
            && self.follow_links
            && std::fs::metadata(path).is_ok_and(|t| t.is_dir());
        Some(Stat {
            kind,
            nlink: m.nlink(),
            link_to_dir,
            stamp: stamp_of(&m),
        })
    }

    fn open_for_writing(&self, path: &Path) -> Option<bool> {
        open_for_writing(path)
    }
}

/// The stat of a regular file from its `lstat`.
pub(crate) fn file_stat(m: &std::fs::Metadata) -> Stat {
    Stat {
        kind: Kind::File,
        nlink: m.nlink(),
        link_to_dir: false,
        stamp: stamp_of(m),
    }
}

fn stamp_of(m: &std::fs::Metadata) -> Stamp {
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
    }
}

/// Whether any process has `path` open for writing, asked of the kernel
/// with a read lease: `F_SETLEASE F_RDLCK` fails with `EAGAIN` exactly
/// when the file is open for writing somewhere. Leases need the caller to
/// own the file (or `CAP_LEASE`) and a local file system; anywhere else
/// the answer is `None` and the settle window alone decides.
///
/// The lease is dropped at once. Should a writer open the file in the
/// instant it is held, the kernel signals the holder: `F_SETSIG` makes that
/// `SIGURG`, which is ignored by default, instead of `SIGIO`, which would
/// end the process.
#[allow(unsafe_code)] // two fcntl calls on a descriptor held open; see SAFETY
fn open_for_writing(path: &Path) -> Option<bool> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    /// `F_SETSIG` from `<fcntl.h>` (the same number on every Linux
    /// architecture; the libc crate does not export it for glibc).
    const F_SETSIG: libc::c_int = 10;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let fd = f.as_raw_fd();
    // SAFETY: `fd` is a valid descriptor owned by `f` for the whole block;
    // these fcntl commands take an int argument and touch no memory.
    unsafe {
        if libc::fcntl(fd, F_SETSIG, libc::SIGURG) != 0 {
            return None;
        }
        if libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) == 0 {
            libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK);
            return Some(false);
        }
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Some(true),
        _ => None,
    }
}

/// What the tracker needs done that it cannot do itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Watch this new folder (and everything under it), then scan it.
    Scan(PathBuf),
    /// Events were lost: watch and scan every root again.
    Rescan,
    /// A watched root was removed or moved away.
    RootGone(PathBuf),
}

/// The end of one file's trip through the ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Done {
    /// A final outcome; `read_failed` if it was a read error (a later
    /// permission change retries it).
    Final { path: PathBuf, read_failed: bool },
    /// It changed while it was read, or the workspace failed: try again
    /// later (`attempt` from 1).
    Retry { path: PathBuf, attempt: u32 },
    /// Refused at a session boundary: first in line for the next session.
    Requeue(PathBuf),
}

/// The delay before retry `attempt` (1, 2, …) of a file that changed while
/// it was read: the settle window, doubling, at most a minute.
pub(crate) fn retry_delay(settle: Duration, attempt: u32) -> Duration {
    let base = settle.max(MIN_RETRY_DELAY);
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

/// What comes after a file in flight, once its outcome is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Nothing happened meanwhile.
    Nothing,
    /// It became ready again: read it again.
    Ready,
    /// It is being written again: wait for the close.
    Open,
    /// It may have changed (a rescan found it): settle it unless unchanged.
    Settle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum St {
    /// Being written: waiting for the close. `last` is the last sign of
    /// life (an event, or a changed stamp); `timer` the live timer's id.
    Open {
        last: Instant,
        stamp: Option<Stamp>,
        timer: u64,
    },
    /// Waiting for the stamp to hold still until `due`; `found` if a scan
    /// found it (rather than an event naming it).
    Settle {
        stamp: Stamp,
        due: Instant,
        timer: u64,
        found: bool,
    },
    /// Ready, in the queue, with its stamp if it was just seen.
    Queued(Option<Stamp>),
    /// Handed to the ingest.
    InFlight { stamp: Option<Stamp>, then: Then },
}

/// A path recently ingested, to recognise it unchanged in a rescan.
#[derive(Debug, Clone, Copy)]
struct Mark {
    stamp: Option<Stamp>,
    read_failed: bool,
}

/// Paths recently finished, in two generations so memory stays bounded:
/// when the current one is full it becomes the old one. Only an
/// optimisation: a path forgotten here is re-ingested as `unchanged`.
#[derive(Debug, Default)]
struct Seen {
    cur: HashMap<PathBuf, Mark>,
    old: HashMap<PathBuf, Mark>,
    cap: usize,
}

impl Seen {
    fn get(&self, p: &Path) -> Option<&Mark> {
        self.cur.get(p).or_else(|| self.old.get(p))
    }

    fn insert(&mut self, p: PathBuf, m: Mark) {
        if self.cur.len() >= self.cap {
            self.old = std::mem::take(&mut self.cur);
        }
        self.cur.insert(p, m);
    }

    fn remove(&mut self, p: &Path) {
        self.cur.remove(p);
        self.old.remove(p);
    }

    /// Forgets `p` and everything under it.
    fn forget_under(&mut self, p: &Path) {
        self.cur.retain(|q, _| !q.starts_with(p));
        self.old.retain(|q, _| !q.starts_with(p));
    }
}

/// The first half of a rename, waiting for the second.
#[derive(Debug)]
struct Rename {
    was_open: bool,
    at: Instant,
}

/// The tracker's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub mode: Mode,
    pub settle: Duration,
    /// How long an open file may go without a sign of life, when no lease
    /// can tell whether a writer still has it, before it is taken anyway.
    pub open_timeout: Duration,
    /// Paths remembered as finished (two generations of this many).
    pub seen_capacity: usize,
    /// Whether a path removed (or moved away) and not back within the
    /// settle window is reported by [`Tracker::pop_deleted`].
    pub deletions: bool,
}

/// The readiness state of every path in play.
pub(crate) struct Tracker<P> {
    rules: Rules,
    probe: P,
    states: HashMap<PathBuf, St>,
    queue: VecDeque<PathBuf>,
    timers: BinaryHeap<Reverse<(Instant, u64, PathBuf)>>,
    next_timer: u64,
    renames: HashMap<usize, Rename>,
    seen: Seen,
    /// Watched roots and their identity at start.
    roots: Vec<(PathBuf, Option<(u64, u64)>)>,
    /// Paths removed, waiting out the settle window (with their timer).
    gone: HashMap<PathBuf, u64>,
    /// Paths removed for good: files or folders to delete from the
    /// workspace.
    deleted: VecDeque<PathBuf>,
}

impl<P: Probe> Tracker<P> {
    pub(crate) fn new(rules: Rules, probe: P, roots: &[PathBuf]) -> Tracker<P> {
        let roots = roots
            .iter()
            .map(|r| {
                let id = probe.stat(r).map(|s| (s.stamp.dev, s.stamp.ino));
                (r.clone(), id)
            })
            .collect();
        Tracker {
            rules,
            probe,
            states: HashMap::new(),
            queue: VecDeque::new(),
            timers: BinaryHeap::new(),
            next_timer: 1,
            renames: HashMap::new(),
            seen: Seen {
                cap: rules.seen_capacity.max(1),
                ..Seen::default()
            },
            roots,
            gone: HashMap::new(),
            deleted: VecDeque::new(),
        }
    }

    /// The next path removed for good (only with [`Rules::deletions`]).
    pub(crate) fn pop_deleted(&mut self) -> Option<PathBuf> {
        self.deleted.pop_front()
    }

    /// A path removed or moved away: unless it is back within the settle
    /// window (a save by rename), it is deleted.
    fn gone(&mut self, path: &Path, now: Instant) {
        if self.rules.deletions {
            let id = self.timer(now + self.rules.settle, path);
            self.gone.insert(path.to_path_buf(), id);
        }
    }

    /// Paths waiting in the ready queue (an upper bound).
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// When the next timer is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    /// One event from the watcher.
    pub(crate) fn on_event(&mut self, ev: &Event, now: Instant, out: &mut Vec<Action>) {
        // A rescan event has no paths: look at the flag first.
        if ev.need_rescan() {
            self.overflowed(now, out);
            return;
        }
        let Some(path) = ev.paths.first() else {
            return;
        };
        match self.rules.mode {
            Mode::Inotify => self.on_inotify(ev, path, now, out),
            Mode::Poll => self.on_poll(ev, path, now, out),
        }
    }

    fn on_inotify(&mut self, ev: &Event, path: &Path, now: Instant, out: &mut Vec<Action>) {
        match &ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => self.ready(path, false),
            // Opens come from our own reads and scans as much as from
            // writers; a writer's data shows up as Modify.
            EventKind::Access(_) => {}
            EventKind::Create(CreateKind::Folder) => out.push(Action::Scan(path.to_path_buf())),
            EventKind::Create(_) => self.created(path, now, out),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                self.renamed_from(path, ev.tracker(), now, out)
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                self.renamed_to(path, ev.tracker(), now, out)
            }
            // `Both` repeats the `From` and `To` just seen.
            EventKind::Modify(ModifyKind::Name(_)) => {}
            EventKind::Modify(ModifyKind::Metadata(_)) => self.attrib(path),
            EventKind::Modify(_) => self.written(path, now),
            EventKind::Remove(kind) => self.removed(path, *kind == RemoveKind::Folder, now, out),
            EventKind::Any | EventKind::Other => {}
        }
    }

    fn on_poll(&mut self, ev: &Event, path: &Path, now: Instant, out: &mut Vec<Action>) {
        match &ev.kind {
            EventKind::Remove(_) => self.removed(path, true, now, out),
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any => {
                match self.probe.stat(path) {
                    // The poll watcher walks new folders by itself.
                    Some(s) if s.kind == Kind::Dir => {}
                    Some(s) => self.changed(path, s.stamp, now),
                    None => {}
                }
            }
            EventKind::Access(_) | EventKind::Other => {}
        }
    }

    /// A file found by a scan (the start, a new folder, a rescan), with
    /// its stat if the scan had it, and whether it has the size and mtime
    /// it was last ingested with (it is then ready at once, unless events
    /// are telling about it).
    pub(crate) fn on_found(
        &mut self,
        path: PathBuf,
        stat: Option<Stat>,
        unchanged: bool,
        now: Instant,
    ) {
        let Some(s) = stat.or_else(|| self.probe.stat(&path)) else {
            return;
        };
        if matches!(s.kind, Kind::Dir) {
            return;
        }
        match self.states.get_mut(&path) {
            // Events are telling about it already (after an overflow, open
            // files were moved to settling).
            Some(St::Open { .. } | St::Settle { .. } | St::Queued(_)) => {}
            Some(St::InFlight { then, .. }) => {
                if *then == Then::Nothing {
                    *then = Then::Settle;
                }
            }
            None => {
                if self
                    .seen
                    .get(&path)
                    .is_some_and(|m| m.stamp == Some(s.stamp))
                {
                    return;
                }
                // A sidecar whose file is tracked: the scan listed both
                // before the file is planned, so that plan reads it; a
                // timer of its own could fire after the file was done and
                // read it twice.
                if let Some(base) = sidecar_base(&path)
                    && self.states.contains_key(&base)
                {
                    let mark = Mark {
                        stamp: Some(s.stamp),
                        read_failed: false,
                    };
                    self.seen.insert(path, mark);
                    return;
                }
                if unchanged {
                    self.ready_as(&path, true, Some(s.stamp));
                    return;
                }
                let due = match self.rules.mode {
                    // Local clocks: a file last modified longer ago than the
                    // settle window has already held still that long.
                    Mode::Inotify => now + self.rules.settle.saturating_sub(age(s.stamp.mtime_ns)),
                    // Network file systems: the server's clock may be off.
                    Mode::Poll => now + self.rules.settle,
                };
                self.settle_found(path, s.stamp, due);
            }
        }
    }

    /// A file a scan found with the size and mtime it was last ingested
    /// with (`stamp`), and planned: in flight at once, unless events are
    /// telling about it or it was just done with that stamp; then `false`,
    /// and the caller hands it to [`Tracker::on_found`] instead.
    pub(crate) fn found_unchanged(&mut self, path: &Path, stamp: Stamp) -> bool {
        if self.states.contains_key(path)
            || self.seen.get(path).is_some_and(|m| m.stamp == Some(stamp))
        {
            return false;
        }
        self.states.insert(
            path.to_path_buf(),
            St::InFlight {
                stamp: Some(stamp),
                then: Then::Nothing,
            },
        );
        true
    }

    /// The ingest is done with a path.
    pub(crate) fn on_done(&mut self, done: Done, now: Instant) {
        let path = match &done {
            Done::Final { path, .. } | Done::Retry { path, .. } | Done::Requeue(path) => path,
        };
        // An outcome for a path no longer in flight (removed, renamed
        // away, re-created meanwhile) changes nothing.
        let Some(St::InFlight { stamp, then }) = self.states.get(path).cloned() else {
            return;
        };
        match done {
            Done::Requeue(path) => {
                self.states.insert(path.clone(), St::Queued(None));
                self.queue.push_front(path);
            }
            Done::Retry { path, attempt } => {
                if then == Then::Open {
                    self.open(path, now);
                    return;
                }
                match self.probe.stat(&path) {
                    Some(s) => {
                        let due = now + retry_delay(self.rules.settle, attempt);
                        self.settle(path, s.stamp, due);
                    }
                    None => {
                        self.states.remove(&path);
                    }
                }
            }
            Done::Final { path, read_failed } => {
                self.seen.insert(path.clone(), Mark { stamp, read_failed });
                match then {
                    Then::Nothing => {
                        self.states.remove(&path);
                    }
                    Then::Ready => {
                        self.states.remove(&path);
                        self.ready(&path, false);
                    }
                    Then::Open => self.open(path, now),
                    Then::Settle => match self.probe.stat(&path) {
                        Some(s) if Some(s.stamp) != stamp => {
                            self.settle(path, s.stamp, now + self.rules.settle);
                        }
                        _ => {
                            self.states.remove(&path);
                        }
                    },
                }
            }
        }
    }

    /// The next ready path, now in flight. The caller plans it and hands
    /// it to the ingest, or calls [`Tracker::forget`] if the plan leaves it
    /// out.
    pub(crate) fn pop_ready(&mut self) -> Option<PathBuf> {
        while let Some(p) = self.queue.pop_front() {
            if let Some(st) = self.states.get_mut(&p)
                && let St::Queued(known) = *st
            {
                *st = St::InFlight {
                    stamp: known.or_else(|| self.probe.stat(&p).map(|s| s.stamp)),
                    then: Then::Nothing,
                };
                return Some(p);
            }
        }
        None
    }

    /// Drops a path the plan leaves out (a temporary name, a filter…).
    pub(crate) fn forget(&mut self, path: &Path) {
        self.states.remove(path);
    }

    /// Makes `path` ready from outside (a plan that named another path).
    pub(crate) fn make_ready(&mut self, path: &Path) {
        self.ready(path, false);
    }

    /// Fires due timers.
    pub(crate) fn tick(&mut self, now: Instant) {
        while let Some(Reverse((due, id, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let id = *id;
            let Some(Reverse((_, _, path))) = self.timers.pop() else {
                break;
            };
            if self.gone.get(&path) == Some(&id) {
                self.gone.remove(&path);
                // Back meanwhile: its events tell what to do with it.
                if self.probe.stat(&path).is_none() {
                    // What it held is deleted: if it comes back, even
                    // unchanged, it is to be ingested again.
                    self.seen.forget_under(&path);
                    self.deleted.push_back(path);
                }
                continue;
            }
            match self.states.get(&path) {
                Some(St::Settle { timer, .. } | St::Open { timer, .. }) if *timer == id => {
                    self.fire(path, now);
                }
                _ => {}
            }
        }
        self.renames
            .retain(|_, r| now.saturating_duration_since(r.at) < RENAME_PAIRING);
    }

    fn fire(&mut self, path: PathBuf, now: Instant) {
        let Some(st) = self.states.get(&path).cloned() else {
            return;
        };
        let stat = self.probe.stat(&path);
        match (st, stat) {
            (_, None) => {
                self.states.remove(&path);
            }
            (St::Settle { stamp, found, .. }, Some(s)) => {
                if s.stamp != stamp || self.probe.open_for_writing(&path) == Some(true) {
                    self.settle_as(path, s.stamp, now + self.rules.settle, found);
                } else {
                    self.states.remove(&path);
                    self.ready_as(&path, found, Some(s.stamp));
                }
            }
            (St::Open { last, stamp, .. }, Some(s)) => {
                let quiet = now.saturating_duration_since(last);
                if quiet < self.rules.settle {
                    self.arm_open(path, last, stamp, last + self.rules.settle);
                } else if stamp != Some(s.stamp) {
                    self.arm_open(path, now, Some(s.stamp), now + self.rules.settle);
                } else {
                    match self.probe.open_for_writing(&path) {
                        // Still open: the close will tell.
                        Some(true) => self.arm_open(path, last, stamp, now + self.rules.settle),
                        // Closed, and the close was not seen (a file
                        // linked in with O_TMPFILE, say).
                        Some(false) => {
                            self.states.remove(&path);
                            self.ready(&path, false);
                        }
                        None if quiet >= self.rules.open_timeout => {
                            tracing::info!(
                                path = %path.display(),
                                "no close seen after {:?} without change; taking the file",
                                self.rules.open_timeout
                            );
                            self.states.remove(&path);
                            self.ready(&path, false);
                        }
                        None => {
                            let next =
                                (now + self.rules.settle).min(last + self.rules.open_timeout);
                            self.arm_open(path, last, stamp, next);
                        }
                    }
                }
            }
            (St::Queued(_) | St::InFlight { .. }, Some(_)) => {}
        }
    }

    /// The kernel queue overflowed: events were lost. Files waiting for a
    /// close may have lost it, so they settle instead; the caller rescans.
    fn overflowed(&mut self, now: Instant, out: &mut Vec<Action>) {
        let open: Vec<PathBuf> = self
            .states
            .iter()
            .filter(|(_, st)| matches!(st, St::Open { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        for p in open {
            match self.probe.stat(&p) {
                Some(s) => self.settle(p, s.stamp, now + self.rules.settle),
                None => {
                    self.states.remove(&p);
                }
            }
        }
        self.renames.clear();
        out.push(Action::Rescan);
    }

    fn created(&mut self, path: &Path, now: Instant, out: &mut Vec<Action>) {
        let Some(s) = self.probe.stat(path) else {
            return;
        };
        match s.kind {
            Kind::Dir => out.push(Action::Scan(path.to_path_buf())),
            Kind::Symlink if s.link_to_dir => out.push(Action::Scan(path.to_path_buf())),
            // A hard link to existing content: no close will come.
            Kind::File if s.nlink > 1 => {
                if self.probe.open_for_writing(path) == Some(true) {
                    self.changed(path, s.stamp, now);
                } else {
                    self.ready(path, false);
                }
            }
            Kind::File => self.open(path.to_path_buf(), now),
            // The plan reports or skips what is not a regular file.
            Kind::Symlink | Kind::Other => self.ready(path, false),
        }
    }

    fn written(&mut self, path: &Path, now: Instant) {
        match self.states.get_mut(path) {
            Some(St::Open { last, .. }) => *last = now,
            Some(St::InFlight { then, .. }) => *then = Then::Open,
            _ => self.open(path.to_path_buf(), now),
        }
    }

    fn attrib(&mut self, path: &Path) {
        // A file that could not be read may have been made readable.
        if self.seen.get(path).is_some_and(|m| m.read_failed) && !self.states.contains_key(path) {
            self.seen.remove(path);
            self.ready(path, false);
        }
    }

    fn renamed_from(
        &mut self,
        path: &Path,
        cookie: Option<usize>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(cookie) = cookie else {
            // A watched folder moved (IN_MOVE_SELF): its parent's event,
            // with a cookie, tells the rest; a root has no watched parent.
            self.check_root(path, out);
            return;
        };
        let was_open = matches!(self.states.remove(path), Some(St::Open { .. }));
        self.forget_under(path);
        self.seen.remove(path);
        self.renames.insert(cookie, Rename { was_open, at: now });
        self.gone(path, now);
    }

    fn renamed_to(
        &mut self,
        path: &Path,
        cookie: Option<usize>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let was_open = cookie
            .and_then(|c| self.renames.remove(&c))
            .is_some_and(|r| r.was_open);
        let Some(s) = self.probe.stat(path) else {
            return;
        };
        match s.kind {
            Kind::Dir => out.push(Action::Scan(path.to_path_buf())),
            Kind::Symlink if s.link_to_dir => out.push(Action::Scan(path.to_path_buf())),
            // Renamed while its writer still has it open: the close comes
            // under the new name.
            Kind::File if was_open || self.probe.open_for_writing(path) == Some(true) => {
                self.open(path.to_path_buf(), now);
            }
            _ => {
                // A file renamed over one in flight replaces it.
                if let Some(St::Open { .. } | St::Settle { .. }) = self.states.get(path) {
                    self.states.remove(path);
                }
                self.ready(path, false);
            }
        }
    }

    fn removed(&mut self, path: &Path, maybe_dir: bool, now: Instant, out: &mut Vec<Action>) {
        self.check_root(path, out);
        self.states.remove(path);
        self.seen.remove(path);
        if maybe_dir {
            self.forget_under(path);
        }
        self.gone(path, now);
    }

    /// A root removed or moved away ends the watch: nothing more would be
    /// seen there.
    fn check_root(&self, path: &Path, out: &mut Vec<Action>) {
        for (root, id) in &self.roots {
            if root == path {
                let now_id = self
                    .probe
                    .stat(root)
                    .filter(|s| s.kind == Kind::Dir || s.link_to_dir)
                    .map(|s| (s.stamp.dev, s.stamp.ino));
                if now_id.is_none() || now_id != *id {
                    out.push(Action::RootGone(root.clone()));
                }
            }
        }
    }

    fn forget_under(&mut self, dir: &Path) {
        if self.states.keys().any(|p| p.starts_with(dir) && p != dir) {
            self.states.retain(|p, _| !(p.starts_with(dir) && p != dir));
        }
    }

    /// `path` is complete (`found`: by a scan): queue it (once).
    fn ready(&mut self, path: &Path, found: bool) {
        self.ready_as(path, found, None);
    }

    /// Like `ready`, with the stamp `path` was just seen with, which
    /// then needs no look of its own when it goes in flight.
    fn ready_as(&mut self, path: &Path, found: bool, stamp: Option<Stamp>) {
        if let Some(base) = sidecar_base(path) {
            // A sidecar is read with its file: (re)ingest the file, unless
            // the file is still on its way (then it reads the sidecar when
            // it is ready itself). A sidecar a scan found was on disk before
            // its file, found by the same scan, was planned: that plan read
            // it.
            self.states.remove(path);
            let stamp = self.probe.stat(path).map(|s| s.stamp);
            self.seen.insert(
                path.to_path_buf(),
                Mark {
                    stamp,
                    read_failed: false,
                },
            );
            match self.states.get_mut(&base) {
                Some(St::Open { .. } | St::Settle { .. } | St::Queued(_)) => {}
                Some(St::InFlight { .. }) if found => {}
                Some(St::InFlight { then, .. }) => *then = Then::Ready,
                None => {
                    self.states.insert(base.clone(), St::Queued(None));
                    self.queue.push_back(base);
                }
            }
            return;
        }
        match self.states.get_mut(path) {
            Some(St::Queued(_)) => {}
            Some(St::InFlight { then, .. }) => *then = Then::Ready,
            _ => {
                self.states.insert(path.to_path_buf(), St::Queued(stamp));
                self.queue.push_back(path.to_path_buf());
            }
        }
    }

    /// Something changed that only the settle window can judge.
    fn changed(&mut self, path: &Path, stamp: Stamp, now: Instant) {
        match self.states.get_mut(path) {
            Some(St::InFlight { then, .. }) => {
                if *then != Then::Open {
                    *then = Then::Settle;
                }
            }
            // Inotify: an open file waits for its close.
            Some(St::Open { last, .. }) => *last = now,
            _ => self.settle(path.to_path_buf(), stamp, now + self.rules.settle),
        }
    }

    fn open(&mut self, path: PathBuf, now: Instant) {
        let stamp = self.probe.stat(&path).map(|s| s.stamp);
        self.arm_open(path, now, stamp, now + self.rules.settle);
    }

    fn arm_open(&mut self, path: PathBuf, last: Instant, stamp: Option<Stamp>, due: Instant) {
        let timer = self.timer(due, &path);
        self.states.insert(path, St::Open { last, stamp, timer });
    }

    fn settle(&mut self, path: PathBuf, stamp: Stamp, due: Instant) {
        self.settle_as(path, stamp, due, false);
    }

    fn settle_found(&mut self, path: PathBuf, stamp: Stamp, due: Instant) {
        self.settle_as(path, stamp, due, true);
    }

    fn settle_as(&mut self, path: PathBuf, stamp: Stamp, due: Instant, found: bool) {
        let timer = self.timer(due, &path);
        self.states.insert(
            path,
            St::Settle {
                stamp,
                due,
                timer,
                found,
            },
        );
    }

    fn timer(&mut self, due: Instant, path: &Path) -> u64 {
        let id = self.next_timer;
        self.next_timer += 1;
        self.timers.push(Reverse((due, id, path.to_path_buf())));
        id
    }
}

/// How long ago an mtime was, by the local clock (zero if in the future).
fn age(mtime_ns: i64) -> Duration {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let m = u128::try_from(mtime_ns).unwrap_or(0);
    Duration::from_nanos(u64::try_from(now.saturating_sub(m)).unwrap_or(u64::MAX))
}

/// `dir/X` for a sidecar `dir/X.meta.json` (not for a sidecar's sidecar,
/// which the walk never takes either).
fn sidecar_base(path: &Path) -> Option<PathBuf> {
    let base = sidecar_of(path.file_name()?)?;
    if ends_as_sidecar(base) {
        return None;
    }
    Some(path.with_file_name(base))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::RefCell;
    use std::collections::HashSet;

    use notify::event::{DataChange, MetadataKind};

    use super::*;

    /// A file system in memory: stamps by path, and which are open for
    /// writing.
    #[derive(Default)]
    struct Fake {
        files: RefCell<HashMap<PathBuf, Stat>>,
        writing: RefCell<HashSet<PathBuf>>,
        leases: bool,
        next_ino: RefCell<u64>,
    }

    impl Probe for &Fake {
        fn stat(&self, path: &Path) -> Option<Stat> {
            self.files.borrow().get(path).copied()
        }
        fn open_for_writing(&self, path: &Path) -> Option<bool> {
            self.leases.then(|| self.writing.borrow().contains(path))
        }
    }

    impl Fake {
        fn put(&self, p: &str, kind: Kind, len: u64, mtime_ns: i64, nlink: u64) {
            let mut ino = self.next_ino.borrow_mut();
            *ino += 1;
            let stat = Stat {
                kind,
                nlink,
                link_to_dir: false,
                stamp: Stamp {
                    dev: 1,
                    ino: *ino,
                    len,
                    mtime_ns,
                    ctime_ns: mtime_ns,
                },
            };
            self.files.borrow_mut().insert(PathBuf::from(p), stat);
        }
        fn file(&self, p: &str, len: u64) {
            // mtime: now, by the local clock.
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64;
            self.put(p, Kind::File, len, now, 1);
        }
        fn old_file(&self, p: &str, len: u64) {
            self.put(p, Kind::File, len, 1_000_000_000, 1);
        }
        fn grow(&self, p: &str) {
            let mut files = self.files.borrow_mut();
            let s = files.get_mut(Path::new(p)).unwrap();
            s.stamp.len += 1;
            s.stamp.mtime_ns += 1;
        }
        fn rename(&self, from: &str, to: &str) {
            let mut files = self.files.borrow_mut();
            let s = files.remove(Path::new(from)).unwrap();
            files.insert(PathBuf::from(to), s);
        }
    }

    const SETTLE: Duration = Duration::from_millis(500);

    fn rules(mode: Mode) -> Rules {
        Rules {
            mode,
            settle: SETTLE,
            open_timeout: Duration::from_secs(300),
            seen_capacity: 1000,
            deletions: false,
        }
    }

    fn tracker(fs: &Fake) -> Tracker<&Fake> {
        fs.put("/r", Kind::Dir, 0, 0, 2);
        Tracker::new(rules(Mode::Inotify), fs, &[PathBuf::from("/r")])
    }

    fn ev(kind: EventKind, p: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(p))
    }

    const CREATE: EventKind = EventKind::Create(CreateKind::File);
    const OPEN: EventKind = EventKind::Access(AccessKind::Open(AccessMode::Any));
    const WRITE: EventKind = EventKind::Modify(ModifyKind::Data(DataChange::Any));
    const CLOSE: EventKind = EventKind::Access(AccessKind::Close(AccessMode::Write));

    fn drain<P: Probe>(t: &mut Tracker<P>) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(p) = t.pop_ready() {
            v.push(p.to_string_lossy().into_owned());
        }
        v
    }

    fn feed<P: Probe>(t: &mut Tracker<P>, now: Instant, evs: &[Event]) -> Vec<Action> {
        let mut out = Vec::new();
        for e in evs {
            t.on_event(e, now, &mut out);
        }
        out
    }

    #[test]
    fn a_written_file_is_ready_at_its_close_however_long_the_pauses() {
        let fs = Fake {
            leases: true,
            ..Fake::default()
        };
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.file("/r/f", 0);
        fs.writing.borrow_mut().insert("/r/f".into());
        feed(
            &mut t,
            t0,
            &[ev(CREATE, "/r/f"), ev(OPEN, "/r/f"), ev(WRITE, "/r/f")],
        );
        // A pause far longer than the settle window: the writer holds it.
        for s in 1..20 {
            t.tick(t0 + Duration::from_secs(s));
            assert_eq!(drain(&mut t), Vec::<String>::new());
        }
        fs.grow("/r/f");
        let t1 = t0 + Duration::from_secs(30);
        feed(&mut t, t1, &[ev(WRITE, "/r/f")]);
        fs.writing.borrow_mut().clear();
        feed(&mut t, t1, &[ev(CLOSE, "/r/f")]);
        assert_eq!(drain(&mut t), ["/r/f"]);
        assert_eq!(drain(&mut t), Vec::<String>::new());
    }

    #[test]
    fn without_leases_an_open_file_waits_for_the_open_timeout() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.file("/r/f", 3);
        feed(&mut t, t0, &[ev(CREATE, "/r/f"), ev(WRITE, "/r/f")]);
        t.tick(t0 + Duration::from_secs(299));
        assert!(drain(&mut t).is_empty());
        t.tick(t0 + Duration::from_secs(301));
        assert_eq!(drain(&mut t), ["/r/f"]);
    }

    #[test]
    fn a_lost_close_is_noticed_by_the_lease() {
        let fs = Fake {
            leases: true,
            ..Fake::default()
        };
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.file("/r/f", 3);
        feed(&mut t, t0, &[ev(CREATE, "/r/f")]);
        t.tick(t0 + Duration::from_millis(400));
        assert!(drain(&mut t).is_empty());
        t.tick(t0 + Duration::from_millis(600));
        assert_eq!(drain(&mut t), ["/r/f"]);
    }

    #[test]
    fn temp_name_renamed_to_final_queues_the_final_name() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.file("/r/x.part", 0);
        feed(
            &mut t,
            t0,
            &[
                ev(CREATE, "/r/x.part"),
                ev(WRITE, "/r/x.part"),
                ev(CLOSE, "/r/x.part"),
            ],
        );
        // Queued under its temporary name: the plan leaves it out.
        assert_eq!(drain(&mut t), ["/r/x.part"]);
        t.forget(Path::new("/r/x.part"));
        fs.rename("/r/x.part", "/r/x");
        let from = ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            "/r/x.part",
        )
        .set_tracker(7);
        let to = ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), "/r/x").set_tracker(7);
        feed(&mut t, t0, &[from, to]);
        assert_eq!(drain(&mut t), ["/r/x"]);
    }

    #[test]
    fn renamed_while_open_waits_for_the_close_under_the_new_name() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.file("/r/y.part", 0);
        feed(
            &mut t,
            t0,
            &[ev(CREATE, "/r/y.part"), ev(WRITE, "/r/y.part")],
        );
        fs.rename("/r/y.part", "/r/y");
        let from = ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            "/r/y.part",
        )
        .set_tracker(9);
        let to = ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), "/r/y").set_tracker(9);
        feed(&mut t, t0, &[from, to]);
        assert!(drain(&mut t).is_empty());
        feed(&mut t, t0, &[ev(WRITE, "/r/y"), ev(CLOSE, "/r/y")]);
        assert_eq!(drain(&mut t), ["/r/y"]);
    }

    #[test]
    fn moved_in_from_outside_is_ready_at_once() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        fs.old_file("/r/in.bin", 10);
        let to = ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/r/in.bin",
        )
        .set_tracker(3);
        feed(&mut t, Instant::now(), &[to]);
        assert_eq!(drain(&mut t), ["/r/in.bin"]);
    }

    #[test]
    fn a_hard_link_is_ready_at_once_unless_open_for_writing() {
        let fs = Fake {
            leases: true,
            ..Fake::default()
        };
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.put("/r/h", Kind::File, 5, 1_000_000_000, 2);
        feed(&mut t, t0, &[ev(CREATE, "/r/h")]);
        assert_eq!(drain(&mut t), ["/r/h"]);

        fs.put("/r/w", Kind::File, 5, 1_000_000_000, 2);
        fs.writing.borrow_mut().insert("/r/w".into());
        feed(&mut t, t0, &[ev(CREATE, "/r/w")]);
        t.tick(t0 + Duration::from_secs(1));
        assert!(drain(&mut t).is_empty());
        fs.writing.borrow_mut().clear();
        t.tick(t0 + Duration::from_secs(2));
        assert_eq!(drain(&mut t), ["/r/w"]);
    }

    /// A file a scan finds with the size and mtime it was ingested with
    /// is ready at once: held open for writing or young, its content now
    /// is what was ingested. Events telling about it still come first.
    #[test]
    fn found_files_unchanged_since_their_ingest_are_ready_at_once() {
        let fs = Fake {
            leases: true,
            ..Fake::default()
        };
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.file("/r/held", 1);
        fs.writing.borrow_mut().insert("/r/held".into());
        let held = (&fs).stat(Path::new("/r/held"));
        t.on_found("/r/held".into(), held, true, t0);
        assert_eq!(drain(&mut t), ["/r/held"]);

        // Written to since: its events decide, not the scan.
        fs.file("/r/open", 1);
        feed(&mut t, t0, &[ev(CREATE, "/r/open")]);
        let open = (&fs).stat(Path::new("/r/open"));
        t.on_found("/r/open".into(), open, true, t0);
        assert!(drain(&mut t).is_empty());
        // Not unchanged: it waits its settle time like any other.
        fs.file("/r/new", 1);
        let new = (&fs).stat(Path::new("/r/new"));
        t.on_found("/r/new".into(), new, false, t0);
        t.tick(t0);
        assert!(drain(&mut t).is_empty());
    }

    /// A file a scan found unchanged and planned itself goes in flight at
    /// once; a change while it is in flight reads it again after its
    /// outcome, and one done with that stamp is not taken twice.
    #[test]
    fn found_unchanged_files_go_in_flight_at_once() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.old_file("/r/u", 1);
        let stamp = (&fs).stat(Path::new("/r/u")).unwrap().stamp;
        assert!(t.found_unchanged(Path::new("/r/u"), stamp));
        // Already in flight: not queued, and not taken again.
        assert!(drain(&mut t).is_empty());
        assert!(!t.found_unchanged(Path::new("/r/u"), stamp));
        feed(&mut t, t0, &[ev(CLOSE, "/r/u")]);
        let done = || Done::Final {
            path: "/r/u".into(),
            read_failed: false,
        };
        t.on_done(done(), t0);
        assert_eq!(drain(&mut t), ["/r/u"]);
        t.on_done(done(), t0);
        // Done with this stamp: a rescan finding it again leaves it.
        assert!(!t.found_unchanged(Path::new("/r/u"), stamp));
        t.tick(t0 + Duration::from_secs(5));
        assert!(drain(&mut t).is_empty());
    }

    #[test]
    fn found_files_settle_by_their_mtime() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.old_file("/r/old", 1);
        fs.file("/r/new", 1);
        t.on_found("/r/old".into(), None, false, t0);
        t.on_found("/r/new".into(), None, false, t0);
        t.tick(t0);
        assert_eq!(drain(&mut t), ["/r/old"]);
        t.tick(t0 + Duration::from_millis(300));
        fs.grow("/r/new");
        t.tick(t0 + Duration::from_millis(600));
        // It changed: the window starts again.
        assert!(drain(&mut t).is_empty());
        t.tick(t0 + Duration::from_millis(1200));
        assert_eq!(drain(&mut t), ["/r/new"]);
    }

    #[test]
    fn ready_many_times_while_queued_is_one_ingest_and_once_more_if_in_flight() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.file("/r/f", 1);
        for _ in 0..5 {
            feed(&mut t, t0, &[ev(CLOSE, "/r/f")]);
        }
        assert_eq!(drain(&mut t), ["/r/f"]);
        // In flight: two more closes mean one more read, after the outcome.
        feed(&mut t, t0, &[ev(CLOSE, "/r/f"), ev(CLOSE, "/r/f")]);
        assert!(drain(&mut t).is_empty());
        t.on_done(
            Done::Final {
                path: "/r/f".into(),
                read_failed: false,
            },
            t0,
        );
        assert_eq!(drain(&mut t), ["/r/f"]);
        t.on_done(
            Done::Final {
                path: "/r/f".into(),
                read_failed: false,
            },
            t0,
        );
        assert!(drain(&mut t).is_empty());
    }

    #[test]
    fn overflow_settles_open_files_and_asks_for_a_rescan() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.file("/r/a", 1);
        feed(&mut t, t0, &[ev(CREATE, "/r/a")]);
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        let out = feed(&mut t, t0, &[overflow]);
        assert_eq!(out, [Action::Rescan]);
        t.tick(t0 + Duration::from_millis(600));
        assert_eq!(drain(&mut t), ["/r/a"]);
    }

    #[test]
    fn a_rescan_skips_what_was_ingested_unchanged() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.old_file("/r/a", 1);
        feed(&mut t, t0, &[ev(CLOSE, "/r/a")]);
        assert_eq!(drain(&mut t), ["/r/a"]);
        t.on_done(
            Done::Final {
                path: "/r/a".into(),
                read_failed: false,
            },
            t0,
        );
        t.on_found("/r/a".into(), None, false, t0);
        t.tick(t0 + Duration::from_secs(1));
        assert!(drain(&mut t).is_empty());
        // Changed since: taken again.
        fs.grow("/r/a");
        t.on_found("/r/a".into(), None, false, t0 + Duration::from_secs(1));
        t.tick(t0 + Duration::from_secs(2));
        assert_eq!(drain(&mut t), ["/r/a"]);
    }

    #[test]
    fn changed_while_reading_is_retried_after_a_growing_delay() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.old_file("/r/f", 1);
        feed(&mut t, t0, &[ev(CLOSE, "/r/f")]);
        assert_eq!(drain(&mut t), ["/r/f"]);
        t.on_done(
            Done::Retry {
                path: "/r/f".into(),
                attempt: 3,
            },
            t0,
        );
        t.tick(t0 + Duration::from_millis(1900));
        assert!(drain(&mut t).is_empty());
        t.tick(t0 + Duration::from_millis(2100));
        assert_eq!(drain(&mut t), ["/r/f"]);
        assert_eq!(retry_delay(SETTLE, 1), SETTLE);
        assert_eq!(retry_delay(SETTLE, 30), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(Duration::ZERO, 1), MIN_RETRY_DELAY);
    }

    #[test]
    fn refused_at_a_session_boundary_goes_first_in_line() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.old_file("/r/a", 1);
        fs.old_file("/r/b", 1);
        feed(&mut t, t0, &[ev(CLOSE, "/r/a"), ev(CLOSE, "/r/b")]);
        assert_eq!(t.pop_ready().unwrap(), Path::new("/r/a"));
        t.on_done(Done::Requeue("/r/a".into()), t0);
        assert_eq!(drain(&mut t), ["/r/a", "/r/b"]);
    }

    #[test]
    fn a_sidecar_reingests_its_file_unless_the_file_is_on_its_way() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.old_file("/r/x", 1);
        fs.file("/r/x.meta.json", 1);
        feed(&mut t, t0, &[ev(CLOSE, "/r/x.meta.json")]);
        assert_eq!(drain(&mut t), ["/r/x"]);
        t.on_done(
            Done::Final {
                path: "/r/x".into(),
                read_failed: false,
            },
            t0,
        );
        // The file is being written: the sidecar waits for it.
        feed(
            &mut t,
            t0,
            &[ev(WRITE, "/r/x"), ev(CLOSE, "/r/x.meta.json")],
        );
        assert!(drain(&mut t).is_empty());
        feed(&mut t, t0, &[ev(CLOSE, "/r/x")]);
        assert_eq!(drain(&mut t), ["/r/x"]);
        assert_eq!(sidecar_base(Path::new("/r/a.meta.json.meta.json")), None);
        assert_eq!(sidecar_base(Path::new("/r/.meta.json")), None);
    }

    #[test]
    fn a_sidecar_found_with_its_file_by_a_scan_does_not_read_the_file_twice() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.old_file("/r/m", 1);
        fs.old_file("/r/m.meta.json", 1);
        t.on_found("/r/m".into(), None, false, t0);
        t.tick(t0);
        assert_eq!(drain(&mut t), ["/r/m"]);
        t.on_found("/r/m.meta.json".into(), None, false, t0);
        t.tick(t0);
        t.on_done(
            Done::Final {
                path: "/r/m".into(),
                read_failed: false,
            },
            t0,
        );
        assert!(drain(&mut t).is_empty());
        // A rescan finds both unchanged: nothing to do.
        t.on_found("/r/m".into(), None, false, t0);
        t.on_found("/r/m.meta.json".into(), None, false, t0);
        t.tick(t0 + SETTLE);
        assert!(drain(&mut t).is_empty());
        // The sidecar changed (its events lost): its file is read again.
        fs.grow("/r/m.meta.json");
        t.on_found("/r/m.meta.json".into(), None, false, t0 + SETTLE);
        t.tick(t0 + SETTLE * 3);
        assert_eq!(drain(&mut t), ["/r/m"]);
    }

    /// Both young: the file settles first and is done before the
    /// sidecar's settle window would end; it is read once.
    #[test]
    fn a_young_sidecar_found_with_its_file_does_not_read_the_file_twice() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.file("/r/m", 1);
        fs.file("/r/m.meta.json", 1);
        t.on_found("/r/m".into(), None, false, t0);
        t.on_found("/r/m.meta.json".into(), None, false, t0 + SETTLE / 2);
        t.tick(t0 + SETTLE + SETTLE / 4);
        assert_eq!(drain(&mut t), ["/r/m"]);
        t.on_done(
            Done::Final {
                path: "/r/m".into(),
                read_failed: false,
            },
            t0 + SETTLE + SETTLE / 4,
        );
        t.tick(t0 + SETTLE * 3);
        assert!(drain(&mut t).is_empty());
    }

    #[test]
    fn new_folders_are_scanned_and_removed_roots_reported() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        let out = feed(
            &mut t,
            t0,
            &[ev(EventKind::Create(CreateKind::Folder), "/r/d")],
        );
        assert_eq!(out, [Action::Scan("/r/d".into())]);
        fs.files.borrow_mut().remove(Path::new("/r"));
        let out = feed(
            &mut t,
            t0,
            &[ev(EventKind::Remove(RemoveKind::Folder), "/r")],
        );
        assert_eq!(out, [Action::RootGone("/r".into())]);
    }

    #[test]
    fn a_read_error_is_retried_when_permissions_change() {
        let fs = Fake::default();
        let mut t = tracker(&fs);
        let t0 = Instant::now();
        fs.old_file("/r/f", 1);
        feed(&mut t, t0, &[ev(CLOSE, "/r/f")]);
        assert_eq!(drain(&mut t), ["/r/f"]);
        t.on_done(
            Done::Final {
                path: "/r/f".into(),
                read_failed: true,
            },
            t0,
        );
        let chmod = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions));
        feed(&mut t, t0, &[ev(chmod, "/r/f")]);
        assert_eq!(drain(&mut t), ["/r/f"]);
    }

    #[test]
    fn poll_mode_settles_every_change() {
        let fs = Fake::default();
        fs.put("/r", Kind::Dir, 0, 0, 2);
        let mut t = Tracker::new(rules(Mode::Poll), &fs, &[PathBuf::from("/r")]);
        let t0 = Instant::now();
        fs.old_file("/r/f", 1);
        feed(
            &mut t,
            t0,
            &[ev(EventKind::Create(CreateKind::Any), "/r/f")],
        );
        t.tick(t0 + Duration::from_millis(400));
        assert!(drain(&mut t).is_empty());
        t.tick(t0 + Duration::from_millis(600));
        assert_eq!(drain(&mut t), ["/r/f"]);
    }

    fn deleted<P: Probe>(t: &mut Tracker<P>) -> Vec<String> {
        std::iter::from_fn(|| t.pop_deleted())
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    /// With deletions on: a file removed, or moved away, and not back
    /// within the settle window is deleted; one saved by renaming (moved
    /// aside, written again under its name) is not; without deletions,
    /// nothing is.
    #[test]
    fn a_path_gone_for_the_settle_window_is_deleted_and_a_save_by_rename_is_not() {
        let fs = Fake::default();
        fs.put("/r", Kind::Dir, 0, 0, 2);
        let mut t = Tracker::new(
            Rules {
                deletions: true,
                ..rules(Mode::Inotify)
            },
            &fs,
            &[PathBuf::from("/r")],
        );
        let t0 = Instant::now();
        let from = |p: &str, c| {
            ev(EventKind::Modify(ModifyKind::Name(RenameMode::From)), p).set_tracker(c)
        };
        let to =
            |p: &str, c| ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), p).set_tracker(c);
        let removed = EventKind::Remove(RemoveKind::File);

        // Removed for good.
        fs.file("/r/gone", 1);
        fs.files.borrow_mut().remove(Path::new("/r/gone"));
        feed(&mut t, t0, &[ev(removed, "/r/gone")]);
        // Saved by rename: moved aside, then written again.
        fs.file("/r/doc", 1);
        fs.rename("/r/doc", "/r/doc~");
        feed(&mut t, t0, &[from("/r/doc", 1), to("/r/doc~", 1)]);
        fs.file("/r/doc", 2);
        feed(
            &mut t,
            t0 + Duration::from_millis(100),
            &[ev(CREATE, "/r/doc")],
        );
        // Moved out of the watched folders.
        fs.file("/r/away", 1);
        fs.files.borrow_mut().remove(Path::new("/r/away"));
        feed(&mut t, t0, &[from("/r/away", 2)]);

        t.tick(t0 + SETTLE - Duration::from_millis(1));
        assert!(deleted(&mut t).is_empty(), "not before the window ends");
        t.tick(t0 + SETTLE + Duration::from_millis(100));
        let mut got = deleted(&mut t);
        got.sort();
        assert_eq!(got, ["/r/away", "/r/gone"].map(String::from));
        t.tick(t0 + SETTLE * 4);
        assert!(deleted(&mut t).is_empty(), "each path once");

        // Off by default.
        let fs = Fake::default();
        let mut t = tracker(&fs);
        fs.file("/r/gone", 1);
        fs.files.borrow_mut().remove(Path::new("/r/gone"));
        feed(&mut t, t0, &[ev(removed, "/r/gone")]);
        t.tick(t0 + SETTLE * 4);
        assert!(deleted(&mut t).is_empty());
    }
}
