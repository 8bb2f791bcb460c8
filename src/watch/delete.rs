//! Deletions from the watcher (`--delete`, SPEC §10): a path the tracker
//! says is gone for good becomes deletions of the names its files were
//! ingested as, in the current session.
//!
//! Only a name that still holds what the removed file was ingested with is
//! deleted (the index remembers that per source file, and the check is
//! made inside the transaction that writes the deletion): a name another
//! file or process has written since is left alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::event::WatchEvent;
use super::shared::Shared;
use crate::outcome::Outcome;
use crate::workspace::Workspace;

/// Turns removed paths into deletions; run by the tracker's thread.
pub(crate) struct Deleter {
    pub(crate) ws: Workspace,
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: Sender<WatchEvent>,
    /// Paths whose deletions were refused at a session boundary or failed
    /// to reach the workspace: tried again with the next batch.
    pub(crate) again: Vec<PathBuf>,
}

impl Deleter {
    /// Deletes what `paths` (and the paths waiting to be tried again)
    /// were ingested as.
    pub(crate) fn delete(&mut self, mut paths: Vec<PathBuf>) {
        if self.shared.stopping() {
            return;
        }
        paths.append(&mut self.again);
        if paths.is_empty() {
            return;
        }
        let mut sources = Vec::new();
        for p in &paths {
            match self.ws.sources_under(p) {
                Ok(found) => sources.extend(found),
                Err(e) => {
                    tracing::warn!(path = %p.display(), "cannot look up what {} was ingested as: {e}; trying again", p.display());
                    self.again.push(p.clone());
                }
            }
        }
        if sources.is_empty() {
            return;
        }
        let session = self.shared.current_session();
        let reports = match self.ws.delete_sources(&session, &sources) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    "cannot delete what removed files were ingested as: {e}; trying again"
                );
                self.again.extend(sources.into_iter().map(|s| s.path));
                return;
            }
        };
        let path_of: HashMap<&str, &Path> = sources
            .iter()
            .map(|s| (s.name.as_str(), s.path.as_path()))
            .collect();
        for mut r in reports {
            let source = path_of.get(r.name.as_str()).map(|p| p.to_path_buf());
            if r.outcome == Outcome::Refused {
                // The session is over: the next one takes it.
                self.again.extend(source);
                continue;
            }
            r.source = source;
            self.shared.add_deletion(&r);
            let _ = self.events.send(WatchEvent::File(r));
        }
    }
}
