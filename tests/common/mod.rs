//! The one home of the integration tests' helpers.
//!
//! - [`dir`]: a source tree and a workspace in a temporary folder, and the
//!   real `intake` binary run against them command by command (`Dir`).
//! - [`ws`]: a workspace on a manual clock driven through the library, and
//!   exact comparisons of outcomes, contents and blob files.
//! - [`seams`]: one delegating [`Index`] and [`BlobStore`] wrapper each,
//!   with hooks for the steps a test intercepts (fault injection, a hook
//!   between the reader's `open` and its first `read`).
//! - [`procs`]: the seeded randomness and the child processes of the crash
//!   and race tests.
//! - [`user`]: the creator of every session.
//!
//! [`Index`]: intake::store::Index
//! [`BlobStore`]: intake::store::BlobStore

// Every test binary that says `mod common;` compiles all of it, and none
// uses every helper.
#![allow(dead_code)]

pub mod dir;
pub mod procs;
pub mod proxy;
pub mod seams;
pub mod serve;
pub mod servers;
pub mod ws;

use std::fs;
use std::path::{Path, PathBuf};

use intake::SessionOauthUser;

/// The creator of every session the tests make.
pub fn user() -> SessionOauthUser {
    SessionOauthUser::from_name("Ada Lovelace")
}

/// Unfinished blob writes left in `<ws>/blobs/tmp/` (none if that folder is
/// not there).
pub fn tmp_files(ws_dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(ws_dir.join("blobs/tmp"))
        .map(|rd| rd.map(|e| e.expect("listing blobs/tmp").path()).collect())
        .unwrap_or_default()
}
