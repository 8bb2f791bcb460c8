//! Watching folders (SPEC §8): ingest what is there at start, then every
//! file that appears, is renamed in, or changes, once it is complete.
//!
//! ```
//! use std::time::Duration;
//!
//! use intake::plan::PlanOptions;
//! use intake::watch::{WatchConfig, WatchEvent, WatchSession, Watcher};
//! use intake::{CreateSession, SessionOauthUser, Workspace, WriteMode};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let inbox = dir.path().join("inbox");
//! std::fs::create_dir(&inbox)?;
//! let ws = Workspace::create(dir.path().join("ws"))?;
//! let user = SessionOauthUser::from_name("Inbox Daemon");
//! let config = WatchConfig::new(
//!     PlanOptions::new(vec![inbox.clone()]),
//!     WatchSession::New { request: CreateSession::new(WriteMode::Keep), user },
//! )
//! .settle(Duration::from_millis(500));
//! let watch = Watcher::start(ws, config)?;
//! watch.wait_watching(Duration::from_secs(10));
//!
//! // Ingested once it is closed; its outcome comes as an event.
//! std::fs::write(inbox.join("hello.txt"), "hi")?;
//! match watch.events().recv_timeout(Duration::from_secs(10))? {
//!     WatchEvent::File(report) => assert_eq!(report.name, "hello.txt"),
//!     other => panic!("{other:?}"),
//! }
//!
//! // From another thread, `watch.stopper().stop()` does the same.
//! let summary = watch.stop()?;
//! assert_eq!(summary.counts.ingested, 1);
//! # Ok(()) }
//! ```
//!
//! Inside, four threads and bounded channels:
//!
//! ```text
//! kernel ─▶ notify thread ─raw(bounded, blocking)─▶ tracker ─ready─▶ ingest run ─▶ events
//!                 ▲                                  │  ▲ ▲                │
//!                 └── control thread (every watch()) ◀┘  │ └──── found ──────┘ (scans)
//!                                                        └────── done ◀──────┘ (outcomes)
//! ```
//!
//! - the **control thread** (`backend.rs`) owns the notify watcher and makes
//!   every `watch()` call, watching each folder before listing it;
//! - the **tracker** (`ready.rs`) decides when each file is complete, keeps
//!   one entry per path (so a file named by many events is read once per
//!   readiness), and never blocks: when its ready queue is long it stops
//!   reading events, notify blocks in its handler, the kernel queue fills
//!   and overflows, and the overflow (the only place events are lost, and
//!   always reported) triggers a rescan, which is paced by the queue;
//! - the **committer** (`commit.rs`) runs one ingest run per session and
//!   rotates sessions.
//!
//! The other rooms: `config` (what to watch and how), `event` (what it
//! reports), `error`, `shared` (the threads' common state), `handle`
//! (starting and stopping), `pump` (the tracker's thread) and `known`
//! (what the workspace remembers of a folder, so that a scan knows the
//! files unchanged since their ingest).

mod backend;
mod commit;
mod config;
mod delete;
mod error;
mod event;
mod handle;
mod known;
mod pump;
mod ready;
mod shared;

pub use config::{DEFAULT_SETTLE, MAX_WAIT, WatchConfig, WatchSession};
pub use error::WatchError;
pub use event::{WatchEvent, WatchSummary};
pub use handle::{StopHandle, WatchHandle, Watcher};
