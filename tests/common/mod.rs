//! Helpers shared by the integration tests that drive the engine through
//! its seams or run the binary as separate processes (`tests/util/` holds
//! the helpers for running the binary command by command, with `Dir`).
//!
//! - [`seams`]: one delegating [`Index`] and [`BlobStore`] wrapper each,
//!   with hooks for the steps a test intercepts (fault injection, a hook
//!   between the reader's `open` and its first `read`).
//! - [`procs`]: the seeded randomness and the child processes of the crash
//!   and race tests.
//!
//! [`Index`]: intake::store::Index
//! [`BlobStore`]: intake::store::BlobStore

// Every test binary that says `mod common;` compiles all of it, and none
// uses every helper.
#![allow(dead_code)]

pub mod procs;
pub mod seams;

use std::fs;
use std::path::{Path, PathBuf};

/// Unfinished blob writes left in `<ws>/blobs/tmp/` (none if that folder is
/// not there).
pub fn tmp_files(ws_dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(ws_dir.join("blobs/tmp"))
        .map(|rd| rd.map(|e| e.expect("listing blobs/tmp").path()).collect())
        .unwrap_or_default()
}
