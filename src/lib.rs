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
//! let user = SessionOauthUser::from_name("Ada Lovelace");
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

#![deny(unsafe_code)]

mod change;
pub mod clock;
pub mod copy;
pub mod decide;
pub mod duration;
mod engine;
mod error;
pub mod export;
pub mod hash;
mod ingest;
pub mod item;
pub mod meta;
pub mod name;
pub mod outcome;
pub mod plan;
#[cfg(feature = "serve")]
pub mod serve;
pub mod session;
pub mod store;
pub mod watch;
pub mod workspace;

/// The crates whose types intake's API takes and returns (ids, instants),
/// so that an embedder names them without depending on them.
pub use {chrono, uuid};

pub use chrono::{DateTime, Utc};
pub use clock::{Clock, ManualClock};
pub use error::{Error, Result};
pub use hash::Hash;
pub use ingest::{IngestRun, Summary};
pub use item::Item;
pub use meta::Meta;
pub use name::Name;
pub use outcome::{FileReport, Outcome, Reason};
pub use session::{CreateSession, Lifetime, Session, SessionOauthUser, SessionRecord, WriteMode};
pub use uuid::Uuid;
pub use workspace::{Workspace, WorkspaceBuilder};

/// The README's Rust examples, compiled (and run, unless marked `no_run`)
/// as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;
