//! The PostgreSQL index: one schema per workspace, shared by any number of
//! intake processes on any number of machines.
//!
//! The pipeline is made of threads, and the client is async: the backend
//! owns a small multi-thread tokio runtime, and every call blocks the
//! calling thread on it. A batch costs a handful of
//! statements, sent pipelined: arrays through `unnest`, never one
//! statement per file.
//!
//! Names are decided atomically across processes optimistically, under
//! READ COMMITTED: a batch looks its names up without locking them, and
//! guards what it writes. A name absent when looked up is claimed by its
//! `INSERT` (a racing insert of the same name fails with a unique
//! violation); a version is replaced by `UPDATE … WHERE version = was`
//! (one that changed fewer rows lost a race). Either fails the batch with
//! `Conflict`, and the engine redoes it against the new state. Writes are
//! sorted by name, so two batches never wait on each other in a circle. Versions refer to their blob rows by foreign key, so no
//! version can ever point at a blob row that a concurrent `gc` removed.

mod address;
mod conn;
mod index;
mod rows;
mod schema;
mod write;

pub(crate) use address::redact;
pub use address::{DEFAULT_POOL_MAX, DEFAULT_SCHEMA, PgAddress};
pub use conn::Pg;
#[cfg(feature = "s3")]
pub(crate) use conn::db_err;
pub use index::PgIndex;
#[cfg(feature = "s3")]
pub(crate) use rows::col;
