//! The engine: the storage backends, the clock and the settings that every
//! operation on a workspace shares. [`crate::Workspace`] is its public face;
//! an ingest run holds it directly.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::error::Error;
use crate::outcome::Counts;
pub use crate::store::RetryPolicy;
use crate::store::{BlobStore, Index, OutcomeRecord, StoreError, Writes};

/// The backends, the clock and the settings of one workspace.
pub(crate) struct Engine {
    /// How errors name the workspace (its folder, or its index's address).
    pub(crate) label: String,
    pub(crate) index: Arc<dyn Index>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) inline_threshold: u64,
    pub(crate) gc_grace: Duration,
    pub(crate) retry: RetryPolicy,
    /// Bumped after every committed change that removes a name (a
    /// deletion), so that the quick check loads again the source records
    /// it loaded before: a deleted name's file must be read again, even if
    /// it comes back with the same size and mtime.
    pub(crate) removals: std::sync::atomic::AtomicU64,
}

impl Engine {
    /// The clock's current time.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A store error as the library reports it.
    pub(crate) fn err(&self, source: StoreError) -> Error {
        Error::Store {
            workspace: self.label.clone(),
            source,
        }
    }

    /// Records one file's outcome in its session, in a transaction of its
    /// own that need not be durable: `counts` into its counters, and `rec`
    /// into its file list if `list`.
    pub(crate) fn record_outcome(
        &self,
        rec: OutcomeRecord,
        counts: Counts,
        list: bool,
    ) -> Result<(), StoreError> {
        let writes = Writes {
            at: self.now(),
            counts: vec![(rec.session_id, counts)],
            outcomes: if list { vec![rec] } else { Vec::new() },
            ..Writes::default()
        };
        self.retry.run(|| {
            let mut txn = self.index.begin(false)?;
            txn.write(&writes)?;
            txn.commit()
        })
    }
}
