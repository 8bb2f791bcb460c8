//! The quick check (SPEC §5): a source file ingested before from the same
//! path, with the same size and mtime, whose name still holds that content
//! and the same metadata, is `unchanged` without being opened. Its records
//! are read once per folder and kept, for a while, per folder.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::prepared::{State, store_failed};
use crate::engine::Engine;
use crate::hash::Hash;
use crate::item::{Source, mtime_ns};
use crate::meta::Meta;
use crate::name::Name;
use crate::outcome::Reason;
use crate::store::{KnownSource, SourceRecord, StoreError};

/// The quick-check records of recently seen directories, shared by the
/// workers; a directory's records are loaded with one query, and kept up to
/// date by the committer, so that a run that lasts (a watcher's) never
/// trusts a record older than its own last commit of that file.
#[derive(Default)]
pub(crate) struct QuickCache {
    dirs: Mutex<KnownDirs>,
}

type KnownDir = Mutex<HashMap<OsString, KnownSource>>;

/// Loaded directories (with when, and the engine's removal count then),
/// and their order of loading for eviction.
#[derive(Default)]
struct KnownDirs {
    by_dir: HashMap<PathBuf, (Arc<KnownDir>, Instant, u64)>,
    order: VecDeque<PathBuf>,
    /// Bumped by every update: a load that started before one is used once
    /// but not kept, since it may predate the commit behind the update.
    generation: u64,
}

/// The admission thread's hold on the folder its files come from, so
/// that consecutive files of one folder skip the shared cache.
#[derive(Default)]
pub(crate) struct DirCursor {
    dir: PathBuf,
    /// The folder's records (kept up to date by the committer), when they
    /// were loaded, and the engine's removal count then.
    held: Option<(Arc<KnownDir>, Instant, u64)>,
    /// Files checked, to space out the age checks.
    uses: u32,
}

impl QuickCache {
    const MAX_DIRS: usize = 64;
    /// A folder's records are reloaded after this long, so that a decision
    /// taken from them is never older (a watcher runs for weeks).
    const MAX_AGE: Duration = Duration::from_secs(10);

    /// The records of `dir`, loaded if need be (or if names were removed
    /// since: `removals` is the engine's count now), and when they were
    /// loaded if they are kept (and so kept up to date by the committer).
    fn get(
        &self,
        dir: &Path,
        removals: u64,
        load: impl FnOnce(&Path) -> Result<Vec<KnownSource>, StoreError>,
    ) -> Result<(Arc<KnownDir>, Option<Instant>), StoreError> {
        let generation = {
            let g = self.lock();
            if let Some((k, at, r)) = g.by_dir.get(dir)
                && at.elapsed() < Self::MAX_AGE
                && *r == removals
            {
                return Ok((Arc::clone(k), Some(*at)));
            }
            g.generation
        };
        let known: Arc<KnownDir> = Arc::new(Mutex::new(
            load(dir)?
                .into_iter()
                .map(|mut k| (std::mem::take(&mut k.file), k))
                .collect(),
        ));
        let mut g = self.lock();
        if g.generation != generation {
            return Ok((known, None));
        }
        if g.by_dir.len() >= Self::MAX_DIRS
            && let Some(old) = g.order.pop_front()
        {
            g.by_dir.remove(&old);
        }
        let now = Instant::now();
        if g.by_dir
            .insert(dir.to_path_buf(), (Arc::clone(&known), now, removals))
            .is_none()
        {
            g.order.push_back(dir.to_path_buf());
        }
        Ok((known, Some(now)))
    }

    /// Records a committed source file in its directory's entry, if loaded.
    pub(crate) fn update(&self, rec: &SourceRecord) {
        let (Some(dir), Some(file)) = (rec.path.parent(), rec.path.file_name()) else {
            return;
        };
        let known = {
            let mut g = self.lock();
            g.generation += 1;
            g.by_dir.get(dir).map(|(k, _, _)| Arc::clone(k))
        };
        if let Some(known) = known {
            known.lock().unwrap_or_else(|e| e.into_inner()).insert(
                file.to_owned(),
                KnownSource {
                    file: OsString::new(),
                    size: rec.size,
                    mtime_ns: rec.mtime_ns,
                    name: rec.name.clone(),
                    hash: rec.hash,
                    meta: rec.meta.clone(),
                },
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, KnownDirs> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The quick check at admission, so that a file it vouches for never
    /// travels to a reader: `Some` with the file's final state (unchanged,
    /// or failed to stat), `None` if the file must be read.
    pub(crate) fn state(
        &self,
        engine: &Engine,
        cursor: &mut DirCursor,
        name: &Name,
        source: &Source,
        meta: Option<&Meta>,
    ) -> Option<State> {
        let (path, size, mtime) = match source {
            Source::Bytes(_) | Source::Upload(_) => return None,
            Source::Listed {
                path,
                size,
                mtime_ns,
            } => (path, *size, *mtime_ns),
            // stat only: a file the quick check vouches for is never opened.
            Source::Path(path) => match std::fs::metadata(path) {
                Ok(m) if m.is_file() => (path, m.len(), mtime_ns(&m)),
                Ok(_) => {
                    return Some(State::Failed {
                        reason: Reason::ReadError,
                        message: format!("{} is not a regular file", path.display()),
                    });
                }
                Err(e) => {
                    return Some(State::Failed {
                        reason: Reason::ReadError,
                        message: format!("cannot stat {}: {e}", path.display()),
                    });
                }
            },
        };
        match self.check(engine, cursor, name, path, size, mtime, meta) {
            Ok(Some(hash)) => Some(State::Quick {
                hash,
                size,
                meta: meta.cloned(),
            }),
            Ok(None) => None,
            Err(e) => Some(store_failed(e)),
        }
    }

    /// The hash, if the source is known unchanged: the same size and mtime
    /// as when it was ingested under this name, and the name still holds
    /// that content and this metadata.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        engine: &Engine,
        cursor: &mut DirCursor,
        name: &Name,
        path: &Path,
        size: u64,
        mtime_ns: i64,
        meta: Option<&Meta>,
    ) -> Result<Option<Hash>, StoreError> {
        let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
            return Ok(None);
        };
        cursor.uses = cursor.uses.wrapping_add(1);
        let removals = engine.removals.load(Ordering::Relaxed);
        let known = match &cursor.held {
            // The age is checked every so many files: a clock read costs
            // as much as the rest of the check.
            Some((known, at, r))
                if cursor.dir == dir
                    && *r == removals
                    && (!cursor.uses.is_multiple_of(64) || at.elapsed() < Self::MAX_AGE) =>
            {
                Arc::clone(known)
            }
            _ => {
                let index = &*engine.index;
                let (known, kept) =
                    self.get(dir, removals, |d| engine.retry.run(|| index.sources_in(d)))?;
                cursor.held = kept.map(|at| (Arc::clone(&known), at, removals));
                cursor.dir.clear();
                cursor.dir.push(dir);
                known
            }
        };
        let known = known.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rec) = known.get(file) else {
            return Ok(None);
        };
        let same = rec.size == size
            && rec.mtime_ns == mtime_ns
            && rec.name == name.as_str()
            && rec.meta.as_deref() == meta.map(Meta::as_str);
        Ok(same.then_some(rec.hash))
    }
}
