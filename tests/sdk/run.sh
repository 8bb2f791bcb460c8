#!/usr/bin/env bash
# The official deepset SDK and CLI (deepset-cloud-sdk 1.7.8.post0 from PyPI,
# unmodified) uploading into `intake serve`: see acceptance.py.
#
# The SDK is installed into a venv once (SDK_VENV, default
# target/sdk-venv; about 40 s), intake is built, and acceptance.py starts
# its own server on a free port and stops it. Exit 0 when every check
# passes.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=${SDK_VENV:-$PWD/target/sdk-venv}
if [[ ! -x $venv/bin/deepset-cloud ]]; then
  echo "sdk: installing deepset-cloud-sdk==1.7.8.post0 into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check deepset-cloud-sdk==1.7.8.post0
fi
cargo build --locked --quiet --bin intake
work=$(mktemp -d)
cleanup() {
  # A server left behind by an interrupted run is stopped here.
  pkill -TERM -f -- "--root $work/root" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
PATH="$venv/bin:$PATH" "$venv/bin/python" tests/sdk/acceptance.py "$PWD/target/debug/intake" "$work"
