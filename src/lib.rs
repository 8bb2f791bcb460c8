//! intake brings files from source folders into a *workspace*, inside a
//! *session* whose *write mode* decides what happens when a file of the same
//! name is already there.
//!
//! A workspace is a directory holding a SQLite index (`intake.db`) and a
//! content-addressed blob store: identical contents are stored once, every
//! overwritten version stays recoverable until [`Workspace::gc`], and
//! [`Workspace::verify`] re-hashes everything.
//!
//! ```
//! use intake::{CreateSession, Item, Name, SessionOauthUser, Workspace, WriteMode};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let ws = Workspace::create(dir.path().join("ws"))?;
//! let user = SessionOauthUser {
//!     user_id: uuid::Uuid::new_v4(),
//!     given_name: "Ada".into(),
//!     family_name: "Lovelace".into(),
//! };
//! let session = ws.create_session(&CreateSession::new(WriteMode::Fail), user)?;
//!
//! let items = vec![
//!     Item::bytes(Name::new("notes/a.txt")?, b"first".to_vec()),
//!     Item::bytes(Name::new("notes/a.txt")?, b"second".to_vec()),
//! ];
//! let summary = ws.ingest(&session).run(items, |r| {
//!     println!("{} {} {:?}", r.name, r.outcome, r.reason);
//! })?;
//! // FAIL mode: the first is ingested, the second fails with `conflict`.
//! assert_eq!((summary.counts.ingested, summary.counts.failed), (1, 1));
//!
//! let mut content = String::new();
//! ws.read("notes/a.txt")?.read_to_string(&mut content)?;
//! assert_eq!(content, "first");
//! # use std::io::Read;
//! # Ok(()) }
//! ```
//!
//! Planning a run over folders (walking, filters, names, sidecars) is
//! [`plan`]; watching folders is [`watch`].

mod clock;
mod decide;
mod duration;
mod error;
mod hash;
mod ingest;
mod meta;
mod name;
mod outcome;
pub mod plan;
mod session;
pub mod store;
pub mod watch;
mod workspace;

pub use clock::{Clock, ManualClock, SystemClock};
pub use decide::{Decision, Identity, decide};
pub use duration::{BadDuration, parse_duration};
pub use error::{Error, Result};
pub use hash::Hash;
pub use ingest::{IngestRun, Item, Source, Summary};
pub use meta::{MAX_SIDECAR_BYTES, Meta, MetaError, SIDECAR_SUFFIX};
pub use name::{MAX_COMPONENT_BYTES, MAX_NAME_BYTES, Name, NameError};
pub use outcome::{Counts, FileReport, Outcome, Reason};
pub use session::{
    CreateSession, DEFAULT_TTL, IngestionStatus, Lifetime, Session, SessionOauthUser,
    SessionRecord, SessionStatus, UnknownWriteMode, WriteMode, format_ts,
};
pub use workspace::{
    BLOB_DIR, DEFAULT_GC_GRACE, DEFAULT_INLINE_THRESHOLD, Defect, GcReport, INDEX_FILE, Snapshot,
    VerifyReport, Workspace, WorkspaceBuilder,
};
