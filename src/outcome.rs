//! Per-file outcomes (SPEC §3) and the report a run yields for each file.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use uuid::Uuid;

use crate::hash::Hash;

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A new name was stored.
    Ingested,
    /// The name was replaced (OVERWRITE).
    Overwritten,
    /// The name already held the same content and metadata.
    Unchanged,
    /// The name held something else, which was kept (KEEP).
    Kept,
    /// The name was deleted (a deletion version was written; SPEC §10).
    Deleted,
    /// The file failed; see the reason.
    Failed,
    /// The session was expired or closed; the file was never attempted.
    Refused,
}

impl Outcome {
    /// Every outcome, in the order summaries list them.
    pub const ALL: [Outcome; 7] = [
        Outcome::Ingested,
        Outcome::Overwritten,
        Outcome::Unchanged,
        Outcome::Kept,
        Outcome::Deleted,
        Outcome::Failed,
        Outcome::Refused,
    ];

    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ingested => "ingested",
            Outcome::Overwritten => "overwritten",
            Outcome::Unchanged => "unchanged",
            Outcome::Kept => "kept",
            Outcome::Deleted => "deleted",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
        }
    }

    /// Parses the wire form.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether the file finished: everything but `failed` and `refused`.
    pub fn is_finished(self) -> bool {
        !matches!(self, Outcome::Failed | Outcome::Refused)
    }

    /// Whether the file's bytes count in its session's `bytes`: a finished
    /// file's, but for a deletion's (which brings no content).
    pub fn counts_bytes(self) -> bool {
        self.is_finished() && self != Outcome::Deleted
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a file failed (or was refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// FAIL mode: the name holds something else.
    Conflict,
    /// The source could not be read.
    ReadError,
    /// The metadata sidecar is invalid.
    InvalidMeta,
    /// The file's name breaks the naming rules.
    InvalidName,
    /// A sidecar without its file.
    OrphanMeta,
    /// The file changed while it was read.
    ChangedWhileReading,
    /// The blob store or the index failed.
    StoreError,
    /// The session is expired.
    SessionExpired,
    /// The session is closed.
    SessionClosed,
    /// The name (or the version asked for) is not in the workspace.
    NotFound,
}

impl Reason {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Conflict => "conflict",
            Reason::ReadError => "read_error",
            Reason::InvalidMeta => "invalid_meta",
            Reason::InvalidName => "invalid_name",
            Reason::OrphanMeta => "orphan_meta",
            Reason::ChangedWhileReading => "changed_while_reading",
            Reason::StoreError => "store_error",
            Reason::SessionExpired => "session_expired",
            Reason::SessionClosed => "session_closed",
            Reason::NotFound => "not_found",
        }
    }

    /// Parses the wire form.
    pub fn parse(s: &str) -> Option<Reason> {
        use Reason::*;
        [
            Conflict,
            ReadError,
            InvalidMeta,
            InvalidName,
            OrphanMeta,
            ChangedWhileReading,
            StoreError,
            SessionExpired,
            SessionClosed,
            NotFound,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

impl Reason {
    /// Whether a file that failed for this reason may pass if it is tried
    /// again later (a watcher retries it).
    pub fn is_retryable(self) -> bool {
        matches!(self, Reason::ChangedWhileReading | Reason::StoreError)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The report for one file of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The workspace name (for an invalid name, its lossy printable form).
    pub name: String,
    /// Where the file came from, if it came from a path.
    pub source: Option<PathBuf>,
    /// What happened.
    pub outcome: Outcome,
    /// Why, for `failed` and `refused`.
    pub reason: Option<Reason>,
    /// A human explanation for failures.
    pub message: Option<String>,
    /// Content size in bytes, when known.
    pub size: Option<u64>,
    /// Content hash, when known.
    pub blake3: Option<Hash>,
    /// The session the file was attempted in.
    pub session_id: Uuid,
}

impl FileReport {
    /// The stable `--json` form of SPEC §9.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "file",
            "name": self.name,
            "source": self.source.as_ref().map(|p| p.to_string_lossy().into_owned()),
            "outcome": self.outcome.as_str(),
            "reason": self.reason.map(Reason::as_str),
            "message": self.message,
            "size": self.size,
            "blake3": self.blake3.map(|h| h.to_hex()),
            "session_id": self.session_id.to_string(),
        })
    }
}

/// Counts per outcome over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// New names.
    pub ingested: u64,
    /// Replaced names.
    pub overwritten: u64,
    /// Already there.
    pub unchanged: u64,
    /// Kept (KEEP mode).
    pub kept: u64,
    /// Deleted names.
    pub deleted: u64,
    /// Failed.
    pub failed: u64,
    /// Refused.
    pub refused: u64,
    /// Bytes of the files that finished (not failed, not refused).
    pub bytes: u64,
}

impl Counts {
    /// The counts of one report.
    pub fn of(r: &FileReport) -> Counts {
        let mut c = Counts::default();
        c.add(r);
        c
    }

    /// Adds one report.
    pub fn add(&mut self, r: &FileReport) {
        match r.outcome {
            Outcome::Ingested => self.ingested += 1,
            Outcome::Overwritten => self.overwritten += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Kept => self.kept += 1,
            Outcome::Deleted => self.deleted += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Refused => self.refused += 1,
        }
        if r.outcome.counts_bytes() {
            self.bytes += r.size.unwrap_or(0);
        }
    }

    /// The count of one outcome.
    pub fn get(&self, o: Outcome) -> u64 {
        match o {
            Outcome::Ingested => self.ingested,
            Outcome::Overwritten => self.overwritten,
            Outcome::Unchanged => self.unchanged,
            Outcome::Kept => self.kept,
            Outcome::Deleted => self.deleted,
            Outcome::Failed => self.failed,
            Outcome::Refused => self.refused,
        }
    }

    /// Files that finished: everything not failed and not refused.
    pub fn finished(&self) -> u64 {
        self.ingested + self.overwritten + self.unchanged + self.kept + self.deleted
    }

    /// Total files reported.
    pub fn total(&self) -> u64 {
        self.finished() + self.failed + self.refused
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}
