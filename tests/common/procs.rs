//! For the tests that run the binary as processes they race or kill
//! (`tests/crash.rs`, `tests/race.rs`): the seed every random choice comes
//! from, a small deterministic generator, and the child's command line.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use serde_json::Value;

/// The seed of a test: `INTAKE_TEST_SEED` if set, else `default`.
pub fn seed(default: u64) -> u64 {
    match std::env::var("INTAKE_TEST_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("INTAKE_TEST_SEED={s:?} is not a u64: {e}")),
        Err(_) => default,
    }
}

/// SplitMix64: small, fast, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

/// `intake --workspace WS ARGS…` run from `root`, with a fixed user, no
/// inherited workspace or log filter, no stdin, and stdout and stderr piped
/// for the caller to collect.
pub fn intake(root: &Path, ws: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_intake"));
    cmd.current_dir(root)
        .env_remove("INTAKE_WORKSPACE")
        .env_remove("RUST_LOG")
        .env("INTAKE_USER", "Ada Lovelace")
        .arg("--workspace")
        .arg(ws)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A thread that reads `r` to its end (a child's piped output) and returns
/// what it read.
pub fn read_to_end(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// A child's stdout lines, each parsed as JSON (panicking, with `stderr`,
/// on one that is not).
pub fn json_lines<'a>(lines: impl IntoIterator<Item = &'a str>, stderr: &str) -> Vec<Value> {
    lines
        .into_iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| {
                panic!("intake printed a line that is not JSON ({e}): {l:?}\n{stderr}")
            })
        })
        .collect()
}
