//! Planning a run over folders (SPEC §2, §5, §6): walk each source in order,
//! select files, name them, pair their metadata sidecars, and stream the
//! result into [`crate::IngestRun::run`] as [`crate::Item`]s.
//!
//! The walk is intake's own rather than a generic directory walker's because
//! pairing `X.meta.json` with `X` needs a directory's whole sorted listing
//! while the walk order stays exact: a directory's entries sorted by name,
//! each subdirectory walked where it sorts. Only the listings of the
//! directories on the current path (and of at most 64 listed ahead) are held
//! in memory, so a run of a million files streams.
//!
//! The rooms, in the order a file goes through them: [`options`] (what is
//! asked, what comes out), `filter` (what is taken and how it is named),
//! `listing` (a folder's sorted entries, a sidecar's content), `prefetch`
//! (folders listed ahead), `walk` (the walk itself), `ahead` (the walk on a
//! thread of its own) and `one_path` (the same rules for one path, for a
//! watcher).
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

mod ahead;
mod filter;
mod listing;
mod one_path;
pub mod options;
mod prefetch;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use filter::is_temporary;
pub use options::{PlanError, PlanEvent, PlanOptions, SkipReason};

use ahead::Ahead;
use filter::{Selection, absolute};

/// A streaming plan: an iterator of [`PlanEvent`]s in walk order.
///
/// The walk runs on a thread of its own from the first call to `next`, a
/// few hundred events ahead of the caller, so that listing and stat-ing the
/// tree overlaps whatever the caller does with each event.
pub struct Planner {
    sel: Arc<Selection>,
    /// Every root, absolute, in order (for [`Planner::plan_path`]).
    roots: Vec<PathBuf>,
    /// The walk, once started.
    walk: Option<Ahead>,
    /// The last folder [`Planner::plan_path`] looked at.
    last_folder: one_path::LastFolder,
}

impl Planner {
    /// Checks the options and starts the plan.
    pub fn new(opts: PlanOptions) -> Result<Planner, PlanError> {
        let given = opts.roots.clone();
        let sel = Arc::new(Selection::new(opts)?);
        let roots = given
            .iter()
            .map(|r| absolute(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Planner {
            sel,
            walk: None,
            roots,
            last_folder: one_path::LastFolder::default(),
        })
    }

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
        one_path::plan_path(&self.sel, &self.roots, &self.last_folder, path)
    }

    /// The plan of the regular file at `path` (absolute, under one of the
    /// roots, in a folder the walk enters) as a listing of its folder
    /// found it: its size and mtime, and whether its sidecar is beside it.
    /// The same as [`Planner::plan_path`] without a look at the file
    /// system; `None` for a sidecar, or a file the filters leave out.
    pub fn plan_listed(
        &self,
        path: &Path,
        size: u64,
        mtime_ns: i64,
        has_sidecar: bool,
    ) -> Option<PlanEvent> {
        one_path::plan_listed(&self.sel, &self.roots, path, (size, mtime_ns), has_sidecar)
    }

    /// Whether the walk would descend into the folder `path` (a root, or a
    /// folder under one): not hidden (unless `hidden`), not a temporary
    /// name, not excluded, within `max_depth`, not the workspace, and not a
    /// symbolic link unless `follow_links`.
    pub fn enters_dir(&self, path: &Path) -> bool {
        one_path::enters_dir(&self.sel, &self.roots, path)
    }

    /// [`Planner::enters_dir`] for a folder inside one the walk enters,
    /// with what its parent's listing says: whether it is a symbolic link,
    /// and its device and inode (its target's, for a link).
    pub(crate) fn enters_subdir(&self, path: &Path, link: bool, id: Option<(u64, u64)>) -> bool {
        one_path::enters_subdir(&self.sel, &self.roots, path, link, id)
    }
}

impl Iterator for Planner {
    type Item = PlanEvent;

    fn next(&mut self) -> Option<PlanEvent> {
        let (sel, roots) = (&self.sel, &self.roots);
        self.walk
            .get_or_insert_with(|| Ahead::start(Arc::clone(sel), roots.clone()))
            .next()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::item::Item;

    /// The walk's events, from a [`Planner`] (on its thread, with folders
    /// listed ahead), or in place without any listed ahead.
    fn walk(opts: PlanOptions, ahead: bool) -> Vec<String> {
        let p = Planner::new(opts).unwrap();
        let events: Box<dyn Iterator<Item = PlanEvent>> = if ahead {
            Box::new(p)
        } else {
            let mut walk = walk::Walk::new(p.roots.clone(), &p.sel);
            walk.prefetch = None;
            Box::new(std::iter::from_fn(move || walk.next(&p.sel)))
        };
        events
            .map(|ev| match ev {
                PlanEvent::Item(Item::File { name, .. }) => format!("file {name}"),
                PlanEvent::Item(Item::Failed { name, reason, .. }) => {
                    format!("failed {name} {reason}")
                }
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
        // More subfolders than are listed ahead at a time, in one folder
        // and in a chain deeper than that.
        for n in 0..150 {
            fs::create_dir_all(src.join(format!("many/{n:03}/sub"))).unwrap();
            fs::write(src.join(format!("many/{n:03}/f")), "f").unwrap();
            fs::write(src.join(format!("many/{n:03}/sub/g")), "g").unwrap();
        }
        let mut deep = src.join("deep");
        for n in 0..100 {
            deep.push(format!("{n}"));
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("bottom"), "b").unwrap();
        // A link back up (followed: a loop), and the workspace inside the
        // source: neither is walked into, whatever was listed ahead.
        std::os::unix::fs::symlink(src.join("a"), src.join("a/x/up")).unwrap();
        fs::create_dir_all(src.join("many/077/ws/inner")).unwrap();
        fs::write(src.join("many/077/ws/inner/h"), "h").unwrap();
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
            PlanOptions {
                follow_links: true,
                skip_dirs: vec![src.join("many/077/ws")],
                ..PlanOptions::new(vec![src.clone()])
            },
        ];
        for opts in cases {
            let with = walk(opts.clone(), true);
            assert_eq!(with, walk(opts, false));
            assert!(with.len() > 5, "{with:?}");
        }
        let all = walk(PlanOptions::new(vec![src.clone()]), true);
        assert!(
            all.contains(&format!(
                "file deep/{}/bottom",
                (0..100)
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            )),
            "{all:?}"
        );
        assert_eq!(
            all.iter().filter(|l| l.starts_with("file many/")).count(),
            301,
            "{all:?}"
        );
        let skipping = walk(
            PlanOptions {
                follow_links: true,
                skip_dirs: vec![src.join("many/077/ws")],
                ..PlanOptions::new(vec![src.clone()])
            },
            true,
        );
        assert!(!skipping.iter().any(|l| l.contains("/ws/")), "{skipping:?}");
        assert!(
            skipping.iter().any(|l| l.starts_with("failed a/x/up ")),
            "{skipping:?}"
        );
    }

    /// What a watcher's scan asks with what a listing tells
    /// (`enters_subdir`, `plan_listed`) answers as the questions that look
    /// at the file system (`enters_dir`, `plan_path`) do.
    #[test]
    fn listed_answers_agree_with_looking() {
        use std::os::unix::fs::MetadataExt;

        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for d in ["a/b/c", ".h/x", "t.tmp", "ex/y", "ws/z", "deep/1/2/3"] {
            fs::create_dir_all(src.join(d)).unwrap();
        }
        for f in [
            "a/1",
            "a/b/2",
            "a/b/2.meta.json",
            "a/b/c/3.txt",
            ".h/x/4",
            "t.tmp/5",
            "ex/y/6",
            "ws/z/7",
            "deep/1/2/3/8",
            "a/.hidden",
            "a/c.part",
            "a/orphan.meta.json",
            "n.txt",
        ] {
            fs::write(src.join(f), "{}").unwrap();
        }
        std::os::unix::fs::symlink(src.join("a/b"), src.join("a/link")).unwrap();
        std::os::unix::fs::symlink(src.join("n.txt"), src.join("a/flink")).unwrap();
        let cases = [
            PlanOptions::new(vec![src.clone()]),
            PlanOptions {
                exclude: vec!["ex".into()],
                hidden: true,
                follow_links: true,
                skip_dirs: vec![src.join("ws")],
                ..PlanOptions::new(vec![src.clone()])
            },
            PlanOptions {
                max_depth: Some(2),
                include: vec!["*.txt".into()],
                ..PlanOptions::new(vec![src.clone()])
            },
        ];
        for opts in cases {
            let p = Planner::new(opts).unwrap();
            let mut todo = vec![src.clone()];
            let (mut dirs, mut files) = (0, 0);
            while let Some(d) = todo.pop() {
                for e in fs::read_dir(&d).unwrap() {
                    let e = e.unwrap();
                    let path = e.path();
                    let ty = e.file_type().unwrap();
                    let followed = fs::metadata(&path).ok();
                    if followed.as_ref().is_some_and(|m| m.is_dir()) {
                        let id = followed.map(|m| (m.dev(), m.ino()));
                        assert_eq!(
                            p.enters_subdir(&path, ty.is_symlink(), id),
                            p.enters_dir(&path),
                            "{}",
                            path.display()
                        );
                        dirs += 1;
                        if ty.is_dir() && p.enters_dir(&path) {
                            todo.push(path);
                        }
                    } else if ty.is_file() {
                        let m = e.metadata().unwrap();
                        let sidecar = d.join(crate::meta::sidecar_name(&e.file_name())).exists();
                        let listed =
                            p.plan_listed(&path, m.len(), crate::item::mtime_ns(&m), sidecar);
                        let looked = p.plan_path(&path);
                        let key = |ev: Option<PlanEvent>| {
                            ev.and_then(PlanEvent::into_item).map(|i| match i {
                                Item::File { name, meta, .. } => {
                                    format!("{name} {:?}", meta.map(|m| m.as_str().to_owned()))
                                }
                                Item::Failed { name, reason, .. } => format!("{name} {reason}"),
                            })
                        };
                        // A sidecar plans its file when looked at; listed,
                        // it plans nothing (its file is listed too).
                        if crate::meta::sidecar_of(&e.file_name()).is_none() {
                            assert_eq!(key(listed), key(looked), "{}", path.display());
                        } else {
                            assert!(listed.is_none());
                        }
                        files += 1;
                    }
                }
            }
            assert!(dirs >= 5 && files >= 5, "{dirs} {files}");
        }
    }
}
