//! A file in flight: what admission or a reader knows of it when it reaches
//! the committer, which decides it.

use std::path::PathBuf;

use uuid::Uuid;

use crate::decide::{Decision, Identity};
use crate::hash::Hash;
use crate::item::Item;
use crate::meta::Meta;
use crate::outcome::{FileReport, Outcome, Reason};
use crate::store::{OutcomeRecord, SourceRecord, StoreError};

/// A file read and hashed (or known without reading), waiting for its
/// decision.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Its place in the run: reports leave in this order.
    pub(crate) seq: u64,
    pub(crate) name: String,
    pub(crate) source: Option<PathBuf>,
    pub(crate) state: State,
}

#[derive(Debug)]
pub(crate) enum State {
    /// The session was over when the file was admitted.
    Refused { reason: Reason, message: String },
    /// The file failed before its decision.
    Failed { reason: Reason, message: String },
    /// Known unchanged by the quick check; not read.
    Quick {
        hash: Hash,
        size: u64,
        meta: Option<Meta>,
    },
    /// Read and hashed.
    Read {
        hash: Hash,
        size: u64,
        meta: Option<Meta>,
        blob: Blob,
        /// Boxed: most files in flight are quick-checked and small.
        source: Option<Box<SourceRecord>>,
    },
}

/// Where a read file's content is.
#[derive(Debug)]
pub(crate) enum Blob {
    /// Small enough to go into the index with the row.
    Inline(Vec<u8>),
    /// In the blob store (durable after the store's sync).
    Stored,
    /// Not kept: the decision should not need it.
    NotStored,
}

/// The state of a file that failed because the store did.
pub(crate) fn store_failed(e: StoreError) -> State {
    State::Failed {
        reason: Reason::StoreError,
        message: format!("could not store the file: {e}"),
    }
}

impl Prepared {
    /// A file of `item` refused because the session is over.
    pub(crate) fn refused(seq: u64, item: Item, reason: Reason, message: String) -> Prepared {
        let (name, source) = match item {
            Item::File { name, source, .. } => (name.into_string(), source.into_path()),
            Item::Failed { name, source, .. } => (name, source),
        };
        Prepared {
            seq,
            name,
            source,
            state: State::Refused { reason, message },
        }
    }

    /// A file already known to have failed.
    pub(crate) fn failed(
        seq: u64,
        name: String,
        source: Option<PathBuf>,
        reason: Reason,
        message: String,
    ) -> Prepared {
        Prepared {
            seq,
            name,
            source,
            state: State::Failed { reason, message },
        }
    }

    /// What the write-mode table compares, for a file that has content.
    pub(crate) fn identity(&self) -> Option<Identity<'_>> {
        match &self.state {
            State::Quick { hash, meta, .. } | State::Read { hash, meta, .. } => {
                Some(Identity::new(hash, meta.as_ref()))
            }
            State::Refused { .. } | State::Failed { .. } => None,
        }
    }

    pub(crate) fn inline_bytes(&self) -> u64 {
        match &self.state {
            State::Read {
                blob: Blob::Inline(d),
                ..
            } => d.len() as u64,
            _ => 0,
        }
    }

    pub(crate) fn stored_externally(&self) -> bool {
        matches!(
            self.state,
            State::Read {
                blob: Blob::Stored,
                ..
            }
        )
    }

    /// The report of this file, but for its name and source: those are
    /// moved in by [`Prepared::name_report`] once the report is final, so
    /// that a file costs no copies of them.
    pub(crate) fn report(
        &self,
        session_id: Uuid,
        outcome: Outcome,
        reason: Option<Reason>,
        message: Option<String>,
    ) -> FileReport {
        let (size, blake3) = match &self.state {
            State::Quick { hash, size, .. } | State::Read { hash, size, .. } => {
                (Some(*size), Some(*hash))
            }
            _ => (None, None),
        };
        FileReport {
            name: String::new(),
            source: None,
            outcome,
            reason,
            message,
            size,
            blake3,
            session_id,
        }
    }

    /// The report of a file whose state settled it before any decision
    /// (refused or failed), if it did.
    pub(crate) fn settled(&self, session_id: Uuid) -> Option<FileReport> {
        match &self.state {
            State::Refused { reason, message } => Some(self.report(
                session_id,
                Outcome::Refused,
                Some(*reason),
                Some(message.clone()),
            )),
            State::Failed { reason, message } => Some(self.report(
                session_id,
                Outcome::Failed,
                Some(*reason),
                Some(message.clone()),
            )),
            State::Quick { .. } | State::Read { .. } => None,
        }
    }

    /// The report of this file once `decision` is taken.
    pub(crate) fn decided(&self, session_id: Uuid, decision: Decision) -> FileReport {
        let (outcome, reason) = decision.outcome();
        let message = (decision == Decision::Conflict).then(|| {
            format!(
                "{} already exists with other content (write mode FAIL)",
                self.name
            )
        });
        self.report(session_id, outcome, reason, message)
    }

    /// Moves this file's name and source into its report `r`.
    pub(crate) fn name_report(self, r: &mut FileReport) {
        r.name = self.name;
        r.source = self.source;
    }

    /// The session record of this file's report `r`.
    pub(crate) fn record(&self, r: &FileReport) -> OutcomeRecord {
        OutcomeRecord {
            session_id: r.session_id,
            name: self.name.clone(),
            source: self.source.clone(),
            outcome: r.outcome,
            reason: r.reason,
            message: r.message.clone(),
            size: r.size,
            hash: r.blake3,
        }
    }
}
