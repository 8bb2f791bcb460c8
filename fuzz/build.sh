#!/usr/bin/env bash
# Builds every fuzz target and runs none: CI can call this to keep the
# targets compiling as the library changes.
#
#   bash fuzz/build.sh                 # plain build with the machine's toolchain
#   bash fuzz/build.sh --instrumented  # what `cargo fuzz run` builds
#
# The plain build needs only cargo (stable is enough): it compiles and links
# each target against libFuzzer, without the sanitizer and coverage flags.
# It shares the main crate's target folder and takes its versions from the
# main Cargo.lock, so after `cargo test` only intake and the targets are
# compiled. The instrumented build needs cargo-fuzz (`cargo install
# cargo-fuzz --locked`) and a nightly toolchain, or the stable one with
# RUSTC_BOOTSTRAP=1 (which this script sets when there is no nightly).
#
# To fuzz: cargo +nightly fuzz run name -- -max_total_time=180
# (targets: name, sidecar, session_json).
set -euo pipefail
cd "$(dirname "$0")"

# The fuzz crate is its own workspace; seed its lock file from the main one
# so that intake's dependencies resolve to the same versions (and compiled
# artifacts are shared), and a new dependency of intake never leaves a
# stale lock file here.
cp ../Cargo.lock Cargo.lock

if [[ "${1:-}" == "--instrumented" ]]; then
  if cargo +nightly --version >/dev/null 2>&1; then
    exec cargo +nightly fuzz build
  fi
  RUSTC_BOOTSTRAP=1 exec cargo fuzz build
fi
exec cargo build --bins --target-dir ../target
