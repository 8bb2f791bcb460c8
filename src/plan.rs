//! Planning a run over folders (SPEC §2, §5, §6): walk each source in order,
//! select files, name them, pair their metadata sidecars, and stream the
//! result into [`crate::IngestRun::run`] as [`Item`]s.
//!
//! The walk is intake's own rather than a generic directory walker's because
//! pairing `X.meta.json` with `X` needs a directory's whole sorted listing
//! while the walk order stays exact: a directory's entries sorted by name,
//! each subdirectory walked where it sorts. Only the listings of the
//! directories on the current path are held in memory, so a run of a million
//! files streams.
//!
//! ```
//! use intake::plan::{PlanOptions, Planner};
//! # let dir = tempfile::tempdir().unwrap();
//! # std::fs::create_dir_all(dir.path().join("src/b")).unwrap();
//! # std::fs::write(dir.path().join("src/b/x.txt"), "x").unwrap();
//! # std::fs::write(dir.path().join("src/a.txt"), "a").unwrap();
//! # std::fs::write(dir.path().join("src/a.txt.meta.json"), r#"{"k":1}"#).unwrap();
//! let opts = PlanOptions::new(vec![dir.path().join("src")]);
//! let names: Vec<String> = Planner::new(opts)
//!     .unwrap()
//!     .filter_map(|ev| ev.into_item())
//!     .map(|item| match item {
//!         intake::Item::File { name, meta: Some(m), .. } => format!("{name} {}", m.as_str()),
//!         intake::Item::File { name, meta: None, .. } => name.to_string(),
//!         intake::Item::Failed { name, reason, .. } => format!("{name} failed: {reason}"),
//!     })
//!     .collect();
//! // The sidecar is attached to its file, never a file of its own.
//! assert_eq!(names, [r#"a.txt {"k":1}"#, "b/x.txt"]);
//! ```

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, FileType};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::item::{Item, Source, mtime_ns};
use crate::meta::{MAX_SIDECAR_BYTES, Meta, SIDECAR_SUFFIX};
use crate::name::{Name, lossy};
use crate::outcome::Reason;

/// What to walk and how to name it. Defaults: recursive, no filters, hidden
/// files skipped, symlinks not followed, names relative to each root.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Sources in order: folders are walked, files taken as they are.
    pub roots: Vec<PathBuf>,
    /// Deepest level to take files from (1: only a folder's own files).
    pub max_depth: Option<usize>,
    /// Extensions to take (without the dot, any case); empty takes all.
    pub extensions: Vec<String>,
    /// Globs a file must match one of (empty: all). A glob without `/`
    /// matches the file name at any depth, one with `/` the path relative to
    /// the root.
    pub include: Vec<String>,
    /// Globs that exclude files and whole folders (same matching).
    pub exclude: Vec<String>,
    /// Take hidden files and folders (names starting with `.`).
    pub hidden: bool,
    /// Follow symbolic links (loops are reported, never followed).
    pub follow_links: bool,
    /// Name every file by its basename only.
    pub flatten: bool,
    /// Put `PREFIX/` in front of every name.
    pub prefix: Option<String>,
    /// Folders never to enter (the workspace itself is added here).
    pub skip_dirs: Vec<PathBuf>,
}

impl PlanOptions {
    /// Options for `roots` with every default.
    pub fn new(roots: Vec<PathBuf>) -> PlanOptions {
        PlanOptions {
            roots,
            ..PlanOptions::default()
        }
    }
}

/// An invalid option.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A glob that does not parse.
    #[error("invalid glob {glob:?}: {message}")]
    Glob {
        /// The glob.
        glob: String,
        /// Why.
        message: String,
    },
    /// A prefix that is not a valid name.
    #[error("invalid --prefix {prefix:?}: {source}")]
    Prefix {
        /// The prefix.
        prefix: String,
        /// Why.
        source: crate::name::NameError,
    },
    /// The current directory is needed and unavailable.
    #[error("cannot resolve {}: {source}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// One step of a plan.
#[derive(Debug)]
pub enum PlanEvent {
    /// Something for the run: a file, or a failure to report in order.
    Item(Item),
    /// A path left out that the user may want to know about (a FIFO, a
    /// socket, a device, a symlink not followed).
    Skipped {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

impl PlanEvent {
    /// The item, if this is one.
    pub fn into_item(self) -> Option<Item> {
        match self {
            PlanEvent::Item(i) => Some(i),
            PlanEvent::Skipped { .. } => None,
        }
    }
}

struct Matcher {
    by_name: GlobSet,
    by_path: GlobSet,
    empty: bool,
}

impl Matcher {
    fn new(globs: &[String]) -> Result<Matcher, PlanError> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for g in globs {
            // `*` and `?` stay within one folder, `**` crosses folders, as
            // in git and rsync: `docs/*.md` does not take `docs/sub/x.md`.
            let glob = GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| PlanError::Glob {
                    glob: g.clone(),
                    message: e.kind().to_string(),
                })?;
            if g.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let err = |e: globset::Error| PlanError::Glob {
            glob: globs.join(","),
            message: e.to_string(),
        };
        Ok(Matcher {
            by_name: by_name.build().map_err(err)?,
            by_path: by_path.build().map_err(err)?,
            empty: globs.is_empty(),
        })
    }

    fn matches(&self, rel: &Path, file_name: &OsStr) -> bool {
        self.by_name.is_match(file_name) || self.by_path.is_match(rel)
    }
}

/// True for the partial and temporary names SPEC §6 always skips.
pub fn is_temporary(name: &OsStr) -> bool {
    let b = name.as_bytes();
    let ends = |s: &[u8]| b.ends_with(s);
    ends(b".part")
        || ends(b".partial")
        || ends(b".tmp")
        || ends(b".crdownload")
        || ends(b"~")
        || (b.len() >= 2 && b[0] == b'#' && ends(b"#"))
        || b.starts_with(b".#")
        || is_vim_swap(b)
}

/// `.*.sw?`: a hidden name ending in `.sw` and one more character.
fn is_vim_swap(b: &[u8]) -> bool {
    b.len() >= 5 && b[0] == b'.' && b[b.len() - 4..b.len() - 1] == *b".sw"
}

#[derive(Debug)]
struct Ent {
    name: OsString,
    ty: FileType,
    /// Size and mtime of a regular file, read with the listing.
    stat: Option<(u64, i64)>,
}

struct Frame {
    dir: PathBuf,
    rel: PathBuf,
    depth: usize,
    entries: Vec<Ent>,
    pos: usize,
}

/// A streaming plan: an iterator of [`PlanEvent`]s in walk order.
pub struct Planner {
    opts: PlanOptions,
    include: Matcher,
    exclude: Matcher,
    extensions: Vec<String>,
    skip: HashSet<(u64, u64)>,
    roots: std::vec::IntoIter<PathBuf>,
    /// Every root, absolute, in order (for [`Planner::plan_path`]).
    all_roots: Vec<PathBuf>,
    stack: Vec<Frame>,
    /// (dev, inode) of the folders on the current path, for loop detection.
    ancestors: Vec<(u64, u64)>,
    queued: std::collections::VecDeque<PlanEvent>,
    /// Lists the next folders ahead of the walk.
    prefetch: Option<Prefetch>,
}

/// Lists (and stats the files of) the folders the walk will enter next, on a
/// thread of its own, so that the walk's system calls overlap the rest of
/// the run. The walk order does not depend on it: a folder is taken from it
/// by path, or listed in place if it was not asked for.
struct Prefetch {
    tx: Option<crossbeam_channel::Sender<PathBuf>>,
    shared: std::sync::Arc<(std::sync::Mutex<Prefetched>, std::sync::Condvar)>,
}

#[derive(Default)]
struct Prefetched {
    /// Folders asked for and not yet taken or forgotten.
    wanted: HashSet<PathBuf>,
    done: std::collections::HashMap<PathBuf, io::Result<Vec<Ent>>>,
}

impl Prefetch {
    /// How many folders may be listed ahead of the walk.
    const AHEAD: usize = 8;
    /// Threads listing: the stat of each file is most of a walk's cost, and
    /// two threads spread it over two cores.
    const LISTERS: usize = 2;

    fn start() -> Option<Prefetch> {
        let (tx, rx) = crossbeam_channel::unbounded::<PathBuf>();
        let shared = std::sync::Arc::new((
            std::sync::Mutex::new(Prefetched::default()),
            std::sync::Condvar::new(),
        ));
        for _ in 0..Self::LISTERS {
            let theirs = std::sync::Arc::clone(&shared);
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name("intake-list".into())
                .spawn(move || {
                    for dir in rx {
                        let listed = read_sorted(&dir);
                        let (lock, cv) = &*theirs;
                        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                        if g.wanted.contains(&dir) {
                            g.done.insert(dir, listed);
                            cv.notify_all();
                        }
                    }
                });
            // One lister is enough to go on with; none, and the walk lists
            // in place.
            if spawned.is_err() && std::sync::Arc::strong_count(&shared) == 1 {
                return None;
            }
        }
        Some(Prefetch {
            tx: Some(tx),
            shared,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Prefetched> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ask(&self, dir: &Path) {
        let mut g = self.lock();
        if g.wanted.len() < Self::AHEAD
            && !g.wanted.contains(dir)
            && let Some(tx) = &self.tx
        {
            g.wanted.insert(dir.to_path_buf());
            if tx.send(dir.to_path_buf()).is_err() {
                g.wanted.remove(dir);
            }
        }
    }

    /// The listing of `dir` if it was asked for (waiting for it).
    fn take(&self, dir: &Path) -> Option<io::Result<Vec<Ent>>> {
        let mut g = self.lock();
        if !g.wanted.contains(dir) {
            return None;
        }
        loop {
            if let Some(listed) = g.done.remove(dir) {
                g.wanted.remove(dir);
                return Some(listed);
            }
            g = self.shared.1.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Drops what was asked for under `parent` and will not be taken.
    fn forget_under(&self, parent: &Path) {
        let mut g = self.lock();
        g.wanted.retain(|d| d.parent() != Some(parent));
        g.done.retain(|d, _| d.parent() != Some(parent));
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its current folder is done.
        self.tx.take();
    }
}

impl Planner {
    /// Checks the options and starts the plan.
    pub fn new(mut opts: PlanOptions) -> Result<Planner, PlanError> {
        if let Some(p) = &opts.prefix {
            let trimmed = p.trim_matches('/').to_owned();
            Name::new(&trimmed).map_err(|source| PlanError::Prefix {
                prefix: p.clone(),
                source,
            })?;
            opts.prefix = Some(trimmed);
        }
        let include = Matcher::new(&opts.include)?;
        let exclude = Matcher::new(&opts.exclude)?;
        let extensions = opts
            .extensions
            .iter()
            .map(|e| e.trim_start_matches('.').to_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        let skip = opts
            .skip_dirs
            .iter()
            .filter_map(|d| fs::metadata(d).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        let mut roots = Vec::with_capacity(opts.roots.len());
        for r in &opts.roots {
            roots.push(std::path::absolute(r).map_err(|source| PlanError::Path {
                path: r.clone(),
                source,
            })?);
        }
        Ok(Planner {
            opts,
            include,
            exclude,
            extensions,
            skip,
            all_roots: roots.clone(),
            roots: roots.into_iter(),
            stack: Vec::new(),
            ancestors: Vec::new(),
            queued: Default::default(),
            prefetch: Prefetch::start(),
        })
    }

    fn failed(
        &self,
        rel_or_name: String,
        path: PathBuf,
        reason: Reason,
        message: String,
    ) -> PlanEvent {
        PlanEvent::Item(Item::Failed {
            name: rel_or_name,
            source: Some(path),
            reason,
            message,
        })
    }

    /// Starts a root given on the command line.
    fn start_root(&mut self, root: PathBuf) {
        let meta = match fs::metadata(&root) {
            Ok(m) => m,
            Err(e) => {
                let name = root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| root.to_string_lossy().into_owned());
                let ev = self.failed(
                    name,
                    root.clone(),
                    Reason::ReadError,
                    format!("cannot read {}: {e}", root.display()),
                );
                self.queued.push_back(ev);
                return;
            }
        };
        if meta.is_dir() {
            if self.skip.contains(&(meta.dev(), meta.ino())) {
                self.queued.push_back(PlanEvent::Skipped {
                    path: root,
                    why: "it is the workspace".into(),
                });
                return;
            }
            self.ancestors.clear();
            self.ancestors.push((meta.dev(), meta.ino()));
            self.push_dir(root, PathBuf::new(), 0);
            return;
        }
        // A file named directly: named by its basename, sidecar beside it.
        let Some(file_name) = root.file_name().map(OsStr::to_owned) else {
            return;
        };
        if !meta.is_file() {
            self.queued.push_back(PlanEvent::Skipped {
                path: root,
                why: special_kind(&meta.file_type()).into(),
            });
            return;
        }
        let sidecar = sidecar_name(&file_name);
        let parent = root.parent().map(Path::to_path_buf).unwrap_or_default();
        let has_sidecar = fs::metadata(parent.join(&sidecar)).is_ok_and(|m| m.is_file());
        let ev = self.file_event(&parent, Path::new(""), &file_name, has_sidecar, None);
        self.queued.push_back(ev);
    }

    fn push_dir(&mut self, dir: PathBuf, rel: PathBuf, depth: usize) {
        let listed = match self.prefetch.as_ref().and_then(|p| p.take(&dir)) {
            Some(listed) => listed,
            None => read_sorted(&dir),
        };
        match listed {
            Ok(entries) => self.stack.push(Frame {
                dir,
                rel,
                depth,
                entries,
                pos: 0,
            }),
            Err(e) => {
                let name = if rel.as_os_str().is_empty() {
                    dir.to_string_lossy().into_owned()
                } else {
                    lossy(&rel, self.opts.prefix.as_deref())
                };
                let ev = self.failed(
                    name,
                    dir.clone(),
                    Reason::ReadError,
                    format!("cannot read folder {}: {e}", dir.display()),
                );
                self.queued.push_back(ev);
                // Keep the ancestor stack aligned with the frames.
                self.ancestors.pop();
            }
        }
    }

    /// Asks the prefetcher for the folders of the top frame from entry `i`
    /// on that the walk will enter: plain folders, not hidden (unless
    /// `hidden`), not temporary, not excluded, within `max_depth`.
    fn ask_ahead(&self, i: usize) {
        let (Some(p), Some(frame)) = (&self.prefetch, self.stack.last()) else {
            return;
        };
        if self.opts.max_depth.is_some_and(|m| frame.depth + 1 >= m) {
            return;
        }
        let mut asked = 0;
        for e in &frame.entries[i..] {
            if asked >= Prefetch::AHEAD {
                break;
            }
            let hidden = e.name.as_bytes().first() == Some(&b'.');
            if !e.ty.is_dir() || (hidden && !self.opts.hidden) || is_temporary(&e.name) {
                continue;
            }
            let rel = frame.rel.join(&e.name);
            if !self.exclude.empty && self.exclude.matches(&rel, &e.name) {
                continue;
            }
            p.ask(&frame.dir.join(&e.name));
            asked += 1;
        }
    }

    /// Whether a file is selected by the filters.
    fn selected(&self, rel: &Path, file_name: &OsStr) -> bool {
        if !self.opts.hidden && file_name.as_bytes().first() == Some(&b'.') {
            return false;
        }
        if is_temporary(file_name) {
            return false;
        }
        if !self.extensions.is_empty() {
            let ext = Path::new(file_name)
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase());
            if !ext.is_some_and(|e| self.extensions.contains(&e)) {
                return false;
            }
        }
        if !self.include.empty && !self.include.matches(rel, file_name) {
            return false;
        }
        self.exclude.empty || !self.exclude.matches(rel, file_name)
    }

    /// The event of the regular file `file_name` in `dir`, whose path
    /// relative to its root is `dir_rel`.
    /// [`Planner::selected`] for `file_name` in the folder `dir_rel`; the
    /// relative path is only built if a pattern needs it.
    fn selected_in(&self, dir_rel: &Path, file_name: &OsStr) -> bool {
        if self.include.empty && self.exclude.empty {
            self.selected(Path::new(""), file_name)
        } else {
            self.selected(&dir_rel.join(file_name), file_name)
        }
    }

    fn file_event(
        &self,
        dir: &Path,
        dir_rel: &Path,
        file_name: &OsStr,
        has_sidecar: bool,
        stat: Option<(u64, i64)>,
    ) -> PlanEvent {
        let path = dir.join(file_name);
        let name_dir = if self.opts.flatten {
            Path::new("")
        } else {
            dir_rel
        };
        let name = match Name::from_parts(self.opts.prefix.as_deref(), name_dir, Some(file_name)) {
            Ok(n) => n,
            Err(e) => {
                let shown = lossy(&name_dir.join(file_name), self.opts.prefix.as_deref());
                return self.failed(shown, path, Reason::InvalidName, e.to_string());
            }
        };
        let meta = if has_sidecar {
            let sc = dir.join(sidecar_name(file_name));
            match read_sidecar(&sc) {
                Ok(m) => m,
                Err(message) => {
                    return self.failed(
                        name.as_str().to_owned(),
                        path,
                        Reason::InvalidMeta,
                        format!("{}: {message}", sc.display()),
                    );
                }
            }
        } else {
            None
        };
        let source = match stat {
            Some((size, mtime_ns)) => Source::Listed {
                path,
                size,
                mtime_ns,
            },
            None => Source::Path(path),
        };
        PlanEvent::Item(Item::File { name, source, meta })
    }

    /// The next event from the frame on top of the stack, if any.
    fn step(&mut self) -> Option<PlanEvent> {
        let frame = self.stack.last_mut()?;
        if frame.pos >= frame.entries.len() {
            if let (Some(done), Some(p)) = (self.stack.pop(), &self.prefetch) {
                p.forget_under(&done.dir);
            }
            self.ancestors.pop();
            return None;
        }
        let i = frame.pos;
        frame.pos += 1;
        let frame = self.stack.last()?;
        let ent = &frame.entries[i];
        let hidden = ent.name.as_bytes().first() == Some(&b'.');
        if hidden && !self.opts.hidden {
            return None;
        }
        if ent.ty.is_file() {
            return self.regular_file(frame, ent);
        }
        let file_name = ent.name.clone();
        let dir = frame.dir.clone();
        let rel = frame.rel.join(&file_name);
        let depth = frame.depth + 1;
        let path = dir.join(&file_name);
        let mut ty = ent.ty;
        if ty.is_symlink() {
            if !self.opts.follow_links {
                return Some(PlanEvent::Skipped {
                    path,
                    why: "symbolic link not followed (use --follow-links)".into(),
                });
            }
            match fs::metadata(&path) {
                Ok(m) => ty = m.file_type(),
                Err(e) => {
                    if !self.selected(&rel, &file_name) {
                        return None;
                    }
                    let shown = lossy(&rel, self.opts.prefix.as_deref());
                    let msg = if e.kind() == io::ErrorKind::NotFound {
                        format!("{} is a dangling symbolic link", path.display())
                    } else if e.raw_os_error() == Some(libc::ELOOP) {
                        format!("{} is a symbolic link loop", path.display())
                    } else {
                        format!("cannot follow {}: {e}", path.display())
                    };
                    return Some(self.failed(shown, path, Reason::ReadError, msg));
                }
            }
        }
        if ty.is_dir() {
            if is_temporary(&file_name)
                || (!self.exclude.empty && self.exclude.matches(&rel, &file_name))
            {
                return None;
            }
            if self.opts.max_depth.is_some_and(|m| depth >= m) {
                return None;
            }
            let id = match fs::metadata(&path) {
                Ok(m) => (m.dev(), m.ino()),
                Err(e) => {
                    let shown = lossy(&rel, self.opts.prefix.as_deref());
                    return Some(self.failed(
                        shown,
                        path.clone(),
                        Reason::ReadError,
                        format!("cannot read folder {}: {e}", path.display()),
                    ));
                }
            };
            if self.skip.contains(&id) {
                return None;
            }
            if self.ancestors.contains(&id) {
                let shown = lossy(&rel, self.opts.prefix.as_deref());
                return Some(self.failed(
                    shown,
                    path.clone(),
                    Reason::ReadError,
                    format!("{} is a symbolic link loop (it leads back to a folder above it); not followed", path.display()),
                ));
            }
            self.ancestors.push(id);
            self.ask_ahead(i);
            self.push_dir(path, rel, depth);
            return None;
        }
        if !ty.is_file() {
            if !self.selected(&rel, &file_name) {
                return None;
            }
            return Some(PlanEvent::Skipped {
                path,
                why: format!("{}; only regular files are ingested", special_kind(&ty)),
            });
        }
        // What the listing called a file and is not one (changed since).
        self.regular_file(frame, ent)
    }

    /// The event of the regular file `ent` listed in `frame`: the common
    /// case, kept free of allocations beyond the event's own.
    fn regular_file(&self, frame: &Frame, ent: &Ent) -> Option<PlanEvent> {
        let file_name: &OsStr = &ent.name;
        if let Some(base) = file_name.as_bytes().strip_suffix(SIDECAR_SUFFIX.as_bytes()) {
            let base = OsStr::from_bytes(base);
            if !base.is_empty() {
                // A sidecar is never a file of its own; it is an orphan only
                // if the file it describes would have been taken.
                if frame.has_file(base) || !self.selected_in(&frame.rel, base) {
                    return None;
                }
                let rel = frame.rel.join(file_name);
                let path = frame.dir.join(file_name);
                let shown = lossy(&rel, self.opts.prefix.as_deref());
                let message = format!(
                    "{} has no file {} beside it",
                    path.display(),
                    base.to_string_lossy()
                );
                return Some(self.failed(shown, path, Reason::OrphanMeta, message));
            }
        }
        let depth = frame.depth + 1;
        if !self.selected_in(&frame.rel, file_name)
            || self.opts.max_depth.is_some_and(|m| depth > m)
        {
            return None;
        }
        let has_sidecar = frame.has_sidecar(file_name);
        // Only a plain file's listing stat is its own; a followed link's is not.
        let stat = ent.stat.filter(|_| ent.ty.is_file());
        Some(self.file_event(&frame.dir, &frame.rel, file_name, has_sidecar, stat))
    }
}

/// Planning one path at a time, for a watcher: the same selection, naming,
/// temporary-name, hidden and sidecar rules as the walk, applied to a path
/// an event names instead of a path the walk reaches.
impl Planner {
    /// The plan of the file at `path` (absolute, under one of the roots) as
    /// the walk would give it: `None` if the walk would leave it out (a
    /// filter, a hidden or temporary name, a folder the walk would not enter,
    /// a folder, a path that no longer exists). The first root, in order,
    /// that contains `path` names it.
    ///
    /// A metadata sidecar `X.meta.json` plans its file `X` (with the
    /// sidecar read afresh), so that a sidecar that appears or changes
    /// (re)ingests `X`; without `X` beside it, a sidecar plans nothing (the
    /// walk would report an orphan).
    pub fn plan_path(&self, path: &Path) -> Option<PlanEvent> {
        let (root, rel) = self.locate(path)?;
        let comps = normal_components(rel)?;
        let (file_name, dirs) = comps.split_last()?;
        if !self.dirs_entered(root, dirs) {
            return None;
        }
        if let Some(base) = file_name.as_bytes().strip_suffix(SIDECAR_SUFFIX.as_bytes())
            && !base.is_empty()
        {
            let base = OsStr::from_bytes(base);
            // A sidecar of a sidecar is never a file of its own either.
            if base.as_bytes().ends_with(SIDECAR_SUFFIX.as_bytes()) {
                return None;
            }
            let base_path = path.with_file_name(base);
            return match fs::symlink_metadata(&base_path) {
                Ok(m) if !m.is_dir() => self.plan_file(root, &base_path),
                _ => None,
            };
        }
        self.plan_file(root, path)
    }

    /// Whether the walk would descend into the folder `path` (a root, or a
    /// folder under one): not hidden (unless `hidden`), not a temporary
    /// name, not excluded, within `max_depth`, not the workspace, and not a
    /// symbolic link unless `follow_links`.
    pub fn enters_dir(&self, path: &Path) -> bool {
        let Some((root, rel)) = self.locate_or_root(path) else {
            return false;
        };
        let Some(comps) = normal_components(rel) else {
            return false;
        };
        if comps.is_empty() {
            return !self.is_skipped(root);
        }
        self.dirs_entered(root, &comps)
    }

    /// The first root that strictly contains `path`, and the relative rest.
    fn locate<'a>(&self, path: &'a Path) -> Option<(&Path, &'a Path)> {
        self.all_roots.iter().find_map(|r| {
            path.strip_prefix(r)
                .ok()
                .filter(|rel| !rel.as_os_str().is_empty())
                .map(|rel| (r.as_path(), rel))
        })
    }

    /// Like `locate`, but a root itself is found too (with an empty rest).
    fn locate_or_root<'a>(&self, path: &'a Path) -> Option<(&Path, &'a Path)> {
        self.all_roots
            .iter()
            .find_map(|r| path.strip_prefix(r).ok().map(|rel| (r.as_path(), rel)))
    }

    fn is_skipped(&self, dir: &Path) -> bool {
        !self.skip.is_empty()
            && fs::metadata(dir).is_ok_and(|m| self.skip.contains(&(m.dev(), m.ino())))
    }

    /// Whether the walk enters every folder of `dirs`, in turn, from `root`.
    fn dirs_entered(&self, root: &Path, dirs: &[&OsStr]) -> bool {
        let mut rel = PathBuf::new();
        let mut abs = root.to_path_buf();
        for (i, name) in dirs.iter().enumerate() {
            rel.push(name);
            abs.push(name);
            let depth = i + 1;
            if (!self.opts.hidden && name.as_bytes().first() == Some(&b'.'))
                || is_temporary(name)
                || (!self.exclude.empty && self.exclude.matches(&rel, name))
                || self.opts.max_depth.is_some_and(|m| depth >= m)
            {
                return false;
            }
            if !self.opts.follow_links
                && fs::symlink_metadata(&abs).is_ok_and(|m| m.file_type().is_symlink())
            {
                return false;
            }
            if self.is_skipped(&abs) {
                return false;
            }
        }
        true
    }

    /// The plan of a file (never a sidecar) whose folders the walk enters.
    fn plan_file(&self, root: &Path, path: &Path) -> Option<PlanEvent> {
        let rel = path.strip_prefix(root).ok()?;
        let file_name = path.file_name()?;
        let dir = path.parent()?;
        let depth = rel.components().count();
        if !self.opts.hidden && file_name.as_bytes().first() == Some(&b'.') {
            return None;
        }
        let mut ty = fs::symlink_metadata(path).ok()?.file_type();
        if ty.is_symlink() {
            if !self.selected(rel, file_name) {
                return None;
            }
            if !self.opts.follow_links {
                return Some(PlanEvent::Skipped {
                    path: path.to_path_buf(),
                    why: "symbolic link not followed (use --follow-links)".into(),
                });
            }
            match fs::metadata(path) {
                Ok(m) => ty = m.file_type(),
                Err(e) => {
                    let shown = lossy(rel, self.opts.prefix.as_deref());
                    let msg = if e.kind() == io::ErrorKind::NotFound {
                        format!("{} is a dangling symbolic link", path.display())
                    } else if e.raw_os_error() == Some(libc::ELOOP) {
                        format!("{} is a symbolic link loop", path.display())
                    } else {
                        format!("cannot follow {}: {e}", path.display())
                    };
                    return Some(self.failed(shown, path.to_path_buf(), Reason::ReadError, msg));
                }
            }
        }
        if ty.is_dir() || !self.selected(rel, file_name) {
            return None;
        }
        if !ty.is_file() {
            return Some(PlanEvent::Skipped {
                path: path.to_path_buf(),
                why: format!("{}; only regular files are ingested", special_kind(&ty)),
            });
        }
        if self.opts.max_depth.is_some_and(|m| depth > m) {
            return None;
        }
        let has_sidecar =
            fs::symlink_metadata(dir.join(sidecar_name(file_name))).is_ok_and(|m| !m.is_dir());
        let dir_rel = rel.parent().unwrap_or(Path::new(""));
        Some(self.file_event(dir, dir_rel, file_name, has_sidecar, None))
    }
}

/// The components of a relative path, if all are plain names.
fn normal_components(rel: &Path) -> Option<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

impl Frame {
    fn has_file(&self, name: &OsStr) -> bool {
        self.has_non_dir(name.as_bytes(), b"")
    }

    /// Whether the sidecar of `name` (`name` + `.meta.json`) is listed.
    fn has_sidecar(&self, name: &OsStr) -> bool {
        self.has_non_dir(name.as_bytes(), SIDECAR_SUFFIX.as_bytes())
    }

    /// Whether an entry other than a folder is named `a` + `b`, found
    /// without building the name.
    fn has_non_dir(&self, a: &[u8], b: &[u8]) -> bool {
        let cmp = |e: &Ent| {
            let n = e.name.as_bytes();
            let k = n.len().min(a.len());
            n[..k].cmp(&a[..k]).then_with(|| {
                if n.len() < a.len() {
                    std::cmp::Ordering::Less
                } else {
                    n[a.len()..].cmp(b)
                }
            })
        };
        self.entries
            .binary_search_by(cmp)
            .is_ok_and(|i| !self.entries[i].ty.is_dir())
    }
}

impl Iterator for Planner {
    type Item = PlanEvent;

    fn next(&mut self) -> Option<PlanEvent> {
        loop {
            if let Some(ev) = self.queued.pop_front() {
                return Some(ev);
            }
            if self.stack.is_empty() {
                let root = self.roots.next()?;
                self.start_root(root);
                continue;
            }
            if let Some(ev) = self.step() {
                return Some(ev);
            }
        }
    }
}

fn sidecar_name(file_name: &OsStr) -> OsString {
    let mut s = file_name.to_owned();
    s.push(SIDECAR_SUFFIX);
    s
}

fn read_sorted(dir: &Path) -> io::Result<Vec<Ent>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let ty = e.file_type()?;
        // A stat relative to the open directory costs no path lookup; the
        // quick check then needs no stat of its own.
        let stat = if ty.is_file() {
            e.metadata().ok().map(|m| (m.len(), mtime_ns(&m)))
        } else {
            None
        };
        v.push(Ent {
            name: e.file_name(),
            ty,
            stat,
        });
    }
    v.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(v)
}

fn read_sidecar(path: &Path) -> Result<Option<Meta>, String> {
    let f = fs::File::open(path).map_err(|e| format!("cannot read the sidecar: {e}"))?;
    let mut data = Vec::new();
    f.take(MAX_SIDECAR_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read the sidecar: {e}"))?;
    if data.len() as u64 > MAX_SIDECAR_BYTES {
        let size = fs::metadata(path).map_or(data.len() as u64, |m| m.len());
        return Err(crate::meta::MetaError::TooLarge(size).to_string());
    }
    Meta::parse(&data).map_err(|e| e.to_string())
}

fn special_kind(ty: &FileType) -> &'static str {
    if ty.is_fifo() {
        "a FIFO"
    } else if ty.is_socket() {
        "a socket"
    } else if ty.is_block_device() {
        "a block device"
    } else if ty.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sidecar lookup that builds no string agrees with the one that
    /// does, on names that sort around each other's sidecars (prefixes of
    /// each other, with and without sidecars), whatever entry a binary
    /// search lands on first.
    #[test]
    fn has_sidecar_agrees_with_looking_up_the_sidecar_name() {
        let dir = tempfile::tempdir().unwrap();
        // Every word of 1 to 4 letters over {a, b}, and a sidecar for every
        // third one; some names that sort between a word and its sidecar.
        let mut words = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..4 {
            words = words
                .iter()
                .flat_map(|w| [format!("{w}a"), format!("{w}b")])
                .collect();
            all.extend(words.iter().cloned());
        }
        for (i, w) in all.iter().enumerate() {
            fs::write(dir.path().join(w), b"x").unwrap();
            if i % 3 == 0 {
                fs::write(dir.path().join(format!("{w}.meta.json")), b"{}").unwrap();
            }
        }
        for odd in ["a.", "a.meta.jso", "a.meta.jsonx", "ab.meta.json.meta.json"] {
            fs::write(dir.path().join(odd), b"x").unwrap();
        }
        fs::create_dir(dir.path().join("bbbbb")).unwrap();
        fs::create_dir(dir.path().join("bbbbb.meta.json")).unwrap();
        let frame = Frame {
            dir: dir.path().to_path_buf(),
            rel: PathBuf::new(),
            depth: 0,
            entries: read_sorted(dir.path()).unwrap(),
            pos: 0,
        };
        let probes =
            all.iter()
                .map(String::as_str)
                .chain(["", "c", "bbbbb", "ab.meta.json", "a.meta.json"]);
        let mut found = 0;
        for name in probes {
            let name = OsStr::new(name);
            let expected = frame.has_file(&sidecar_name(name));
            assert_eq!(frame.has_sidecar(name), expected, "{name:?}");
            found += usize::from(expected);
        }
        // A third of the 30 words, and `ab.meta.json`; not the folder's.
        assert_eq!(found, 11);
    }

    fn walk(opts: PlanOptions, prefetch: bool) -> Vec<String> {
        let mut p = Planner::new(opts).unwrap();
        if !prefetch {
            p.prefetch = None;
        }
        p.map(|ev| match ev {
            PlanEvent::Item(Item::File { name, .. }) => format!("file {name}"),
            PlanEvent::Item(Item::Failed { name, reason, .. }) => format!("failed {name} {reason}"),
            PlanEvent::Skipped { path, .. } => format!("skipped {}", path.display()),
        })
        .collect()
    }

    /// Listing folders ahead of the walk must not change the walk.
    #[test]
    fn prefetching_folders_keeps_the_walk_order() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for d in [
            "a", "a/x", "a/x/y", "b", ".h", "c.tmp", "ex", "d", "d/e", "z",
        ] {
            fs::create_dir_all(src.join(d)).unwrap();
        }
        for f in [
            "a/1", "a/x/2", "a/x/y/3", "b/4", ".h/5", "c.tmp/6", "ex/7", "d/e/8", "z/9", "0", "m",
        ] {
            fs::write(src.join(f), f).unwrap();
        }
        for n in 0..40 {
            fs::create_dir_all(src.join(format!("many/{n:02}"))).unwrap();
            fs::write(src.join(format!("many/{n:02}/f")), "f").unwrap();
        }
        let cases = [
            PlanOptions::new(vec![src.clone()]),
            PlanOptions {
                exclude: vec!["ex".into()],
                hidden: true,
                ..PlanOptions::new(vec![src.clone(), src.join("a")])
            },
            PlanOptions {
                max_depth: Some(2),
                flatten: true,
                ..PlanOptions::new(vec![src.clone()])
            },
        ];
        for opts in cases {
            let with = walk(opts.clone(), true);
            assert_eq!(with, walk(opts, false));
            assert!(with.len() > 5, "{with:?}");
        }
    }

    #[test]
    fn temporary_names() {
        for t in [
            "a.part",
            "a.partial",
            "x.tmp",
            "d.crdownload",
            "notes~",
            ".a.swp",
            ".a.swx",
            "#x#",
            ".#lock",
        ] {
            assert!(is_temporary(OsStr::new(t)), "{t}");
        }
        for t in ["a.txt", "part", "#x", "a.swp", ".swp", "tmp"] {
            assert!(!is_temporary(OsStr::new(t)), "{t}");
        }
    }
}
