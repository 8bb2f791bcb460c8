//! What the workspace remembers of a folder's files, for a scan to
//! recognise those unchanged since they were ingested: the same size and
//! mtime as then. Such a file needs no wait for it to settle and no look
//! at who holds it open: whatever a writer may still do to it, its content
//! now is what was ingested, and a later write sends events of its own.
//! The ingest's quick check still has the last word.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::ready::Stat;
use crate::workspace::Workspace;

/// The records of the folder whose files a scan is reporting.
pub(crate) struct Known {
    ws: Workspace,
    dir: PathBuf,
    files: HashMap<OsString, (u64, i64)>,
    at: Option<Instant>,
}

impl Known {
    /// Records are read again after this long, even within one folder.
    const FRESH: Duration = Duration::from_secs(2);

    pub(crate) fn new(ws: Workspace) -> Known {
        Known {
            ws,
            dir: PathBuf::new(),
            files: HashMap::new(),
            at: None,
        }
    }

    /// Whether the regular file at `path`, as `stat` says it is now, has
    /// the size and mtime it was last ingested with. A workspace that
    /// cannot answer at once says no: the file then waits like any other,
    /// and its ingest rides out the outage.
    pub(crate) fn unchanged(&mut self, path: &Path, stat: &Stat) -> bool {
        let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
            return false;
        };
        let fresh = self.at.is_some_and(|at| at.elapsed() < Self::FRESH);
        if self.dir != dir || !fresh {
            self.files = match self.ws.sources_in(dir) {
                Ok(known) => known
                    .into_iter()
                    .map(|k| (k.file, (k.size, k.mtime_ns)))
                    .collect(),
                Err(_) => HashMap::new(),
            };
            self.dir = dir.to_path_buf();
            self.at = Some(Instant::now());
        }
        self.files.get(file) == Some(&(stat.stamp.len, stat.stamp.mtime_ns))
    }
}
