//! Planning one path at a time, for a watcher: the same selection, naming,
//! temporary-name, hidden and sidecar rules as the walk, applied to a path
//! an event names instead of a path the walk reaches.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::filter::{Selection, normal_components};
use super::listing::{follow_error, skipped_link, skipped_special};
use super::options::PlanEvent;
use crate::item::mtime_ns;
use crate::meta::{ends_as_sidecar, sidecar_name, sidecar_of};
use crate::outcome::Reason;

/// The folder whose files were planned last, and whether the walk enters
/// it: the files of one folder come in bursts (a scan, a copy), and each
/// would otherwise look at every folder above it again.
#[derive(Default)]
pub(crate) struct LastFolder(Mutex<Option<(PathBuf, bool, Instant)>>);

impl LastFolder {
    /// How long an answer is trusted.
    const FRESH: Duration = Duration::from_millis(100);

    fn entered(&self, dir: &Path, look: impl FnOnce() -> bool) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, entered, at)) = &*g
            && d == dir
            && at.elapsed() < Self::FRESH
        {
            return *entered;
        }
        let entered = look();
        *g = Some((dir.to_path_buf(), entered, Instant::now()));
        entered
    }
}

/// The plan of the file at `path` (absolute, under one of `roots`); see
/// [`crate::plan::Planner::plan_path`].
pub(crate) fn plan_path(
    sel: &Selection,
    roots: &[PathBuf],
    last: &LastFolder,
    path: &Path,
) -> Option<PlanEvent> {
    let (root, rel) = locate(roots, path)?;
    let comps = normal_components(rel)?;
    let (file_name, dirs) = comps.split_last()?;
    let parent = path.parent()?;
    if !last.entered(parent, || dirs_entered(sel, root, dirs)) {
        return None;
    }
    if let Some(base) = sidecar_of(file_name) {
        // A sidecar of a sidecar is never a file of its own either.
        if ends_as_sidecar(base) {
            return None;
        }
        let base_path = path.with_file_name(base);
        return match fs::symlink_metadata(&base_path) {
            Ok(m) if !m.is_dir() => plan_file(sel, root, &base_path),
            _ => None,
        };
    }
    plan_file(sel, root, path)
}

/// The plan of the regular file at `path` (absolute, under one of
/// `roots`, in a folder the walk enters), as listed: its size and mtime,
/// and whether its sidecar is beside it; see
/// [`crate::plan::Planner::plan_listed`].
pub(crate) fn plan_listed(
    sel: &Selection,
    roots: &[PathBuf],
    path: &Path,
    stat: (u64, i64),
    has_sidecar: bool,
) -> Option<PlanEvent> {
    let (_, rel) = locate(roots, path)?;
    let file_name = path.file_name()?;
    // A sidecar is never a file of its own.
    if sidecar_of(file_name).is_some() || sel.hides(file_name) || !sel.selected(rel, file_name) {
        return None;
    }
    if !sel.within_depth(rel.components().count()) {
        return None;
    }
    let dir = path.parent()?;
    let dir_rel = rel.parent().unwrap_or(Path::new(""));
    Some(sel.file_event(dir, dir_rel, file_name, has_sidecar, Some(stat)))
}

/// Whether the walk would descend into the folder `path`; see
/// [`crate::plan::Planner::enters_dir`].
pub(crate) fn enters_dir(sel: &Selection, roots: &[PathBuf], path: &Path) -> bool {
    let Some((root, rel)) = locate_or_root(roots, path) else {
        return false;
    };
    let Some(comps) = normal_components(rel) else {
        return false;
    };
    if comps.is_empty() {
        return !sel.skips(root);
    }
    dirs_entered(sel, root, &comps)
}

/// Whether the walk would descend into `path`, a folder (`link`: a
/// symbolic link to one) inside a folder it enters, whose device and inode
/// (its target's, for a link) are `id`: `enters_dir` with only the last
/// folder judged, and no look at the file system.
pub(crate) fn enters_subdir(
    sel: &Selection,
    roots: &[PathBuf],
    path: &Path,
    link: bool,
    id: Option<(u64, u64)>,
) -> bool {
    let (Some((_, rel)), Some(name)) = (locate(roots, path), path.file_name()) else {
        return false;
    };
    if sel.hides(name) || !sel.enters_by_name(rel, name, rel.components().count()) {
        return false;
    }
    if link && !sel.opts.follow_links {
        return false;
    }
    !id.is_some_and(|id| sel.skips_id(id))
}

/// The first root that strictly contains `path`, and the relative rest.
fn locate<'a, 'r>(roots: &'r [PathBuf], path: &'a Path) -> Option<(&'r Path, &'a Path)> {
    roots.iter().find_map(|r| {
        path.strip_prefix(r)
            .ok()
            .filter(|rel| !rel.as_os_str().is_empty())
            .map(|rel| (r.as_path(), rel))
    })
}

/// Like `locate`, but a root itself is found too (with an empty rest).
fn locate_or_root<'a, 'r>(roots: &'r [PathBuf], path: &'a Path) -> Option<(&'r Path, &'a Path)> {
    roots
        .iter()
        .find_map(|r| path.strip_prefix(r).ok().map(|rel| (r.as_path(), rel)))
}

/// Whether the walk enters every folder of `dirs`, in turn, from `root`.
fn dirs_entered(sel: &Selection, root: &Path, dirs: &[&OsStr]) -> bool {
    let mut rel = PathBuf::new();
    let mut abs = root.to_path_buf();
    for (i, name) in dirs.iter().enumerate() {
        rel.push(name);
        abs.push(name);
        if sel.hides(name) || !sel.enters_by_name(&rel, name, i + 1) {
            return false;
        }
        // One look at the folder says both whether it is a link and, if it
        // is not, whether it is the workspace.
        match fs::symlink_metadata(&abs) {
            Ok(m) if m.file_type().is_symlink() => {
                if !sel.opts.follow_links || sel.skips(&abs) {
                    return false;
                }
            }
            Ok(m) => {
                if sel.skips_id((m.dev(), m.ino())) {
                    return false;
                }
            }
            // Gone: what is under it is gone too, and its plan says so.
            Err(_) => {}
        }
    }
    true
}

/// The plan of a file (never a sidecar) whose folders the walk enters.
fn plan_file(sel: &Selection, root: &Path, path: &Path) -> Option<PlanEvent> {
    let rel = path.strip_prefix(root).ok()?;
    let file_name = path.file_name()?;
    let dir = path.parent()?;
    let depth = rel.components().count();
    if sel.hides(file_name) {
        return None;
    }
    let m = fs::symlink_metadata(path).ok()?;
    let mut ty = m.file_type();
    // A plain file's size and mtime, for the quick check (not a followed
    // link's: those are the link's).
    let stat = ty.is_file().then(|| (m.len(), mtime_ns(&m)));
    if ty.is_symlink() {
        if !sel.selected(rel, file_name) {
            return None;
        }
        if !sel.opts.follow_links {
            return Some(skipped_link(path.to_path_buf()));
        }
        match fs::metadata(path) {
            Ok(m) => ty = m.file_type(),
            Err(e) => {
                let msg = follow_error(path, &e);
                return Some(PlanEvent::failed(
                    sel.shown(rel),
                    path.to_path_buf(),
                    Reason::ReadError,
                    msg,
                ));
            }
        }
    }
    if ty.is_dir() || !sel.selected(rel, file_name) {
        return None;
    }
    if !ty.is_file() {
        return Some(skipped_special(path.to_path_buf(), &ty));
    }
    if !sel.within_depth(depth) {
        return None;
    }
    let has_sidecar =
        fs::symlink_metadata(dir.join(sidecar_name(file_name))).is_ok_and(|m| !m.is_dir());
    let dir_rel = rel.parent().unwrap_or(Path::new(""));
    Some(sel.file_event(dir, dir_rel, file_name, has_sidecar, stat))
}
