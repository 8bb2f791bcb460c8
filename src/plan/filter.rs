//! What a plan takes and how it names it (SPEC §2, §5, §6): the filters,
//! the hidden and temporary names, the folders never entered, and a taken
//! file's name and metadata. The walk and the one-path planner both ask
//! here, so a file is taken and named the same way by either.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::listing::read_sidecar;
use super::options::{PlanError, PlanEvent, PlanOptions};
use crate::item::{Item, Source};
use crate::meta::sidecar_name;
use crate::name::{Name, lossy};
use crate::outcome::Reason;

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

/// Whether a name is hidden (starts with `.`).
pub(crate) fn is_hidden(name: &OsStr) -> bool {
    name.as_bytes().first() == Some(&b'.')
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

/// The plan's rules, compiled from its options.
pub(crate) struct Selection {
    /// The options (the prefix trimmed of slashes).
    pub(crate) opts: PlanOptions,
    include: Matcher,
    exclude: Matcher,
    extensions: Vec<String>,
    /// (dev, inode) of the folders never entered.
    skip: HashSet<(u64, u64)>,
}

impl Selection {
    /// Checks and compiles the options.
    pub(crate) fn new(mut opts: PlanOptions) -> Result<Selection, PlanError> {
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
        Ok(Selection {
            opts,
            include,
            exclude,
            extensions,
            skip,
        })
    }

    /// Whether the folder with this (dev, inode) is never entered.
    pub(crate) fn skips_id(&self, id: (u64, u64)) -> bool {
        self.skip.contains(&id)
    }

    /// Whether the folder at `dir` is never entered (the workspace).
    pub(crate) fn skips(&self, dir: &Path) -> bool {
        !self.skip.is_empty()
            && fs::metadata(dir).is_ok_and(|m| self.skip.contains(&(m.dev(), m.ino())))
    }

    /// Whether the hidden-name rule leaves `name` out.
    pub(crate) fn hides(&self, name: &OsStr) -> bool {
        !self.opts.hidden && is_hidden(name)
    }

    /// Whether the walk enters the folder `name`, at `rel` from its root
    /// and `depth` below it, by name alone (no file system look): not a
    /// temporary name, not excluded, within `max_depth`. (Hidden names and
    /// links are the caller's.)
    pub(crate) fn enters_by_name(&self, rel: &Path, name: &OsStr, depth: usize) -> bool {
        !is_temporary(name)
            && (self.exclude.empty || !self.exclude.matches(rel, name))
            && self.opts.max_depth.is_none_or(|m| depth < m)
    }

    /// Whether a file at `depth` below its root is within `max_depth`.
    pub(crate) fn within_depth(&self, depth: usize) -> bool {
        self.opts.max_depth.is_none_or(|m| depth <= m)
    }

    /// Whether a file is selected by the filters.
    pub(crate) fn selected(&self, rel: &Path, file_name: &OsStr) -> bool {
        if self.hides(file_name) || is_temporary(file_name) {
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

    /// [`Selection::selected`] for `file_name` in the folder `dir_rel`; the
    /// relative path is only built if a pattern needs it.
    pub(crate) fn selected_in(&self, dir_rel: &Path, file_name: &OsStr) -> bool {
        if self.include.empty && self.exclude.empty {
            self.selected(Path::new(""), file_name)
        } else {
            self.selected(&dir_rel.join(file_name), file_name)
        }
    }

    /// How a path relative to its root is shown when it has no valid name.
    pub(crate) fn shown(&self, rel: &Path) -> String {
        lossy(rel, self.opts.prefix.as_deref())
    }

    /// The event of the regular file `file_name` in `dir`, whose path
    /// relative to its root is `dir_rel`: its name, and its metadata if
    /// `has_sidecar`.
    pub(crate) fn file_event(
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
                let shown = self.shown(&name_dir.join(file_name));
                return PlanEvent::failed(shown, path, Reason::InvalidName, e.to_string());
            }
        };
        let meta = if has_sidecar {
            let sc = dir.join(sidecar_name(file_name));
            match read_sidecar(&sc) {
                Ok(m) => m,
                Err(message) => {
                    return PlanEvent::failed(
                        name.into_string(),
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
}

/// The components of a relative path, if all are plain names.
pub(crate) fn normal_components(rel: &Path) -> Option<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// A root as the plan holds it: absolute.
pub(crate) fn absolute(root: &Path) -> Result<PathBuf, PlanError> {
    std::path::absolute(root).map_err(|source| PlanError::Path {
        path: root.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
