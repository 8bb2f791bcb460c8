//! The walk: each root in order, a folder's entries sorted by name, each
//! subfolder walked where it sorts. Only the listings of the folders on the
//! current path (and of at most 64 listed ahead) are held, so a run of a
//! million files streams.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::filter::Selection;
use super::listing::{
    Ent, Frame, follow_error, read_sorted, skipped_link, skipped_special, special_kind,
};
use super::options::{PlanEvent, SkipReason};
use super::prefetch::Prefetch;
use crate::meta::{sidecar_name, sidecar_of};
use crate::outcome::Reason;

/// Where the walk is.
pub(crate) struct Walk {
    roots: std::vec::IntoIter<PathBuf>,
    stack: Vec<Frame>,
    /// (dev, inode) of the folders on the current path, for loop detection.
    ancestors: Vec<(u64, u64)>,
    queued: VecDeque<PlanEvent>,
    /// Lists the next folders ahead of the walk.
    pub(crate) prefetch: Option<Prefetch>,
}

impl Walk {
    /// A walk of `roots` (absolute), in order, by the rules of `sel`
    /// (for the folders listed ahead).
    pub(crate) fn new(roots: Vec<PathBuf>, sel: &Arc<Selection>) -> Walk {
        Walk {
            roots: roots.into_iter(),
            stack: Vec::new(),
            ancestors: Vec::new(),
            queued: VecDeque::new(),
            prefetch: Prefetch::start(Arc::clone(sel)),
        }
    }

    /// The next event of the walk, by the rules of `sel`.
    pub(crate) fn next(&mut self, sel: &Selection) -> Option<PlanEvent> {
        loop {
            if let Some(ev) = self.queued.pop_front() {
                return Some(ev);
            }
            if self.stack.is_empty() {
                let root = self.roots.next()?;
                self.start_root(sel, root);
                continue;
            }
            if let Some(ev) = self.step(sel) {
                return Some(ev);
            }
        }
    }

    /// Starts a root given on the command line.
    fn start_root(&mut self, sel: &Selection, root: PathBuf) {
        let meta = match fs::metadata(&root) {
            Ok(m) => m,
            Err(e) => {
                let name = root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| root.to_string_lossy().into_owned());
                let message = format!("cannot read {}: {e}", root.display());
                let ev = PlanEvent::failed(name, root, Reason::ReadError, message);
                self.queued.push_back(ev);
                return;
            }
        };
        if meta.is_dir() {
            if sel.skips_id((meta.dev(), meta.ino())) {
                self.queued.push_back(PlanEvent::Skipped {
                    path: root,
                    reason: SkipReason::Workspace,
                    why: "it is the workspace".into(),
                });
                return;
            }
            self.ancestors.clear();
            self.ancestors.push((meta.dev(), meta.ino()));
            self.push_dir(sel, root, PathBuf::new(), 0);
            return;
        }
        // A file named directly: named by its basename, sidecar beside it.
        let Some(file_name) = root.file_name().map(OsStr::to_owned) else {
            return;
        };
        if !meta.is_file() {
            self.queued.push_back(PlanEvent::Skipped {
                path: root,
                reason: SkipReason::SpecialFile,
                why: special_kind(&meta.file_type()).into(),
            });
            return;
        }
        let parent = root.parent().map(Path::to_path_buf).unwrap_or_default();
        let has_sidecar =
            fs::metadata(parent.join(sidecar_name(&file_name))).is_ok_and(|m| m.is_file());
        let ev = sel.file_event(&parent, Path::new(""), &file_name, has_sidecar, None);
        self.queued.push_back(ev);
    }

    fn push_dir(&mut self, sel: &Selection, dir: PathBuf, rel: PathBuf, depth: usize) {
        let (listed, asked) = match self.prefetch.as_ref().and_then(|p| p.take(&dir)) {
            Some(taken) => taken,
            None => (read_sorted(&dir), 0),
        };
        match listed {
            Ok(entries) => {
                let asked = match &self.prefetch {
                    Some(p) => p.ask_under(&dir, &rel, depth, &entries, asked),
                    None => entries.len(),
                };
                self.stack.push(Frame {
                    dir,
                    rel,
                    depth,
                    entries,
                    pos: 0,
                    asked,
                });
            }
            Err(e) => {
                let name = if rel.as_os_str().is_empty() {
                    dir.to_string_lossy().into_owned()
                } else {
                    sel.shown(&rel)
                };
                let message = format!("cannot read folder {}: {e}", dir.display());
                let ev = PlanEvent::failed(name, dir, Reason::ReadError, message);
                self.queued.push_back(ev);
                // Keep the ancestor stack aligned with the frames.
                self.ancestors.pop();
            }
        }
    }

    /// The next event from the frame on top of the stack, if any.
    fn step(&mut self, sel: &Selection) -> Option<PlanEvent> {
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
        if sel.hides(&ent.name) {
            return None;
        }
        if ent.ty.is_file() {
            return regular_file(sel, frame, ent);
        }
        let file_name = ent.name.clone();
        let dir = frame.dir.clone();
        let rel = frame.rel.join(&file_name);
        let depth = frame.depth + 1;
        let path = dir.join(&file_name);
        let mut ty = ent.ty;
        if ty.is_symlink() {
            if !sel.opts.follow_links {
                return Some(skipped_link(path));
            }
            match fs::metadata(&path) {
                Ok(m) => ty = m.file_type(),
                Err(e) => {
                    if !sel.selected(&rel, &file_name) {
                        return None;
                    }
                    let msg = follow_error(&path, &e);
                    return Some(PlanEvent::failed(
                        sel.shown(&rel),
                        path,
                        Reason::ReadError,
                        msg,
                    ));
                }
            }
        }
        if ty.is_dir() {
            if !sel.enters_by_name(&rel, &file_name, depth) {
                return None;
            }
            // A plain folder's id came with the listing; a followed link's
            // is its target's.
            let id = match ent.id.filter(|_| ent.ty.is_dir()) {
                Some(id) => Ok(id),
                None => fs::metadata(&path).map(|m| (m.dev(), m.ino())),
            };
            let id = match id {
                Ok(id) => id,
                Err(e) => {
                    let msg = format!("cannot read folder {}: {e}", path.display());
                    return Some(PlanEvent::failed(
                        sel.shown(&rel),
                        path,
                        Reason::ReadError,
                        msg,
                    ));
                }
            };
            if sel.skips_id(id) {
                return None;
            }
            if self.ancestors.contains(&id) {
                let msg = format!(
                    "{} is a symbolic link loop (it leads back to a folder above it); not followed",
                    path.display()
                );
                return Some(PlanEvent::failed(
                    sel.shown(&rel),
                    path,
                    Reason::ReadError,
                    msg,
                ));
            }
            self.ancestors.push(id);
            // The folders after this one are asked for as the walk comes
            // to them (those that did not fit before). This one is listed
            // here unless a lister has it already or is at it: waiting for
            // a lister to start on it would cost a handoff to a listing
            // thread and back, which is more than a folder of a few files
            // takes to list.
            if let (Some(p), Some(top)) = (&self.prefetch, self.stack.last_mut())
                && top.asked < top.entries.len()
            {
                let from = top.asked.max(i + 1);
                top.asked = p.ask_under(&top.dir, &top.rel, top.depth, &top.entries, from);
            }
            self.push_dir(sel, path, rel, depth);
            return None;
        }
        if !ty.is_file() {
            if !sel.selected(&rel, &file_name) {
                return None;
            }
            return Some(skipped_special(path, &ty));
        }
        // What the listing called a file and is not one (changed since).
        regular_file(sel, frame, ent)
    }
}

/// The event of the regular file `ent` listed in `frame`: the common case,
/// kept free of allocations beyond the event's own.
fn regular_file(sel: &Selection, frame: &Frame, ent: &Ent) -> Option<PlanEvent> {
    let file_name: &OsStr = &ent.name;
    if let Some(base) = sidecar_of(file_name) {
        // A sidecar is never a file of its own; it is an orphan only if
        // the file it describes would have been taken.
        if frame.has_file(base) || !sel.selected_in(&frame.rel, base) {
            return None;
        }
        let path = frame.dir.join(file_name);
        let message = format!(
            "{} has no file {} beside it",
            path.display(),
            base.to_string_lossy()
        );
        let shown = sel.shown(&frame.rel.join(file_name));
        return Some(PlanEvent::failed(shown, path, Reason::OrphanMeta, message));
    }
    if !sel.selected_in(&frame.rel, file_name) || !sel.within_depth(frame.depth + 1) {
        return None;
    }
    let has_sidecar = frame.has_sidecar(file_name);
    // Only a plain file's listing stat is its own; a followed link's is not.
    let stat = ent.stat.filter(|_| ent.ty.is_file());
    Some(sel.file_event(&frame.dir, &frame.rel, file_name, has_sidecar, stat))
}
