#!/usr/bin/env bash
# benches/scaleout.sh: a workspace in PostgreSQL + S3 against a local one,
# on the same files in one run; prints medians and ratios.
#
#   S1  first ingest of N x 4 KiB files (100 per folder) from one process:
#       files/s into PostgreSQL + S3 / files/s into a local workspace
#                                                         target >= 0.3
#   S2  the same from two processes at once, each on a tree of its own
#       (N files each) into one PostgreSQL + S3 workspace:
#       total files/s / S1's files/s                      target >= 1.3
#   S3  first ingest of 8 x 64 MiB files into PostgreSQL + S3: throughput
#       / that of object_store's own multipart upload of the same files to
#       the same server (benches/s3_raw.rs)               target >= 0.8
#
# Usage: benches/scaleout.sh            (N=20000 RUNS=3)
#        N=2000 RUNS=1 benches/scaleout.sh
# Uses INTAKE_TEST_PG / INTAKE_TEST_S3 when set, else starts both servers
# (.ci/servers.sh) and stops them at the end. INTAKE: the binary (default:
# a release build).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
RUNS=${RUNS:-3}
if [[ -z "${INTAKE:-}" ]]; then
  cargo build --release --locked -q
  INTAKE="${CARGO_TARGET_DIR:-target}/release/intake"
fi
if [[ -z "${INTAKE_TEST_PG:-}" || -z "${INTAKE_TEST_S3:-}" ]]; then
  # shellcheck source=.ci/servers.sh
  source .ci/servers.sh
  trap stop_servers EXIT
  start_servers
fi
WORK=$(mktemp -d /tmp/intake-scaleout.XXXXXX)
trap 'rm -rf "$WORK"; declare -F stop_servers >/dev/null && stop_servers' EXIT

make_tree() { # DIR COUNT SIZE_KIB FILES_PER_FOLDER
  python3 - "$@" <<'PY'
import os, sys
root, n, kib, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    d = os.path.join(root, f"f{i // per:05d}")
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{i:07d}.bin"), "wb") as f:
        f.write(os.urandom(kib * 1024))
PY
}

echo "generating $N x 4 KiB twice, and 8 x 64 MiB, under $WORK"
make_tree "$WORK/t1" "$N" 4 100
make_tree "$WORK/t2" "$N" 4 100
make_tree "$WORK/big" 8 65536 8

fresh_pg() { # prints a new workspace's address, initialised (runs in a subshell)
  local name="bench_$$_$(date +%s%N)"
  local url="$INTAKE_TEST_PG?schema=$name"
  "$INTAKE" --quiet --workspace "$url" init --blobs "$INTAKE_TEST_S3/$name"
  echo "$url"
}

secs() { # run the command, print its wall time in seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$WORK/last.log" 2>&1 || { echo "failed: $*" >&2; cat "$WORK/last.log" >&2; return 1; }
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}

both() { # two ingests at once into one workspace
  local url=$1
  "$INTAKE" --quiet --workspace "$url" ingest "$WORK/t1" & local a=$!
  "$INTAKE" --quiet --workspace "$url" ingest "$WORK/t2" & local b=$!
  wait "$a" && wait "$b"
}

cargo bench -q --bench s3_raw --no-run --locked 2>/dev/null
raw() { cargo bench -q --bench s3_raw --locked -- "$WORK/big/f00000" 2>/dev/null | awk '/ s for /{print $1}'; }

declare -a LOCAL ONE TWO BIGL BIGR RAW
for r in $(seq "$RUNS"); do
  rm -rf "$WORK/ws"
  LOCAL+=("$(secs "$INTAKE" --quiet --workspace "$WORK/ws" ingest "$WORK/t1")")
  ONE+=("$(secs "$INTAKE" --quiet --workspace "$(fresh_pg)" ingest "$WORK/t1")")
  TWO+=("$(secs both "$(fresh_pg)")")
  rm -rf "$WORK/wsb"
  BIGL+=("$(secs "$INTAKE" --quiet --workspace "$WORK/wsb" ingest "$WORK/big")")
  BIGR+=("$(secs "$INTAKE" --quiet --workspace "$(fresh_pg)" ingest "$WORK/big")")
  RAW+=("$(raw)")
  echo "run $r: local ${LOCAL[-1]} s, pg+s3 ${ONE[-1]} s, two processes ${TWO[-1]} s; 512 MiB local ${BIGL[-1]} s, pg+s3 ${BIGR[-1]} s, object_store alone ${RAW[-1]} s"
done
rm -rf "$WORK/ws" "$WORK/wsb"

python3 - "$N" "${LOCAL[*]}" "${ONE[*]}" "${TWO[*]}" "${BIGL[*]}" "${BIGR[*]}" "${RAW[*]}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
local, one, two, bigl, bigr, raw = (statistics.median(map(float, a.split())) for a in sys.argv[2:8])
fl, f1, f2 = n / local, n / one, 2 * n / two
def verdict(ok): return "PASS" if ok else "MISS"
print(f"S1 local {fl:,.0f} files/s; PostgreSQL + S3, one process {f1:,.0f} files/s: ratio {f1 / fl:.2f} (target >= 0.3) {verdict(f1 / fl >= 0.3)}")
print(f"S2 two processes {f2:,.0f} files/s: {f2 / f1:.2f}x one process (target >= 1.3) {verdict(f2 / f1 >= 1.3)}")
print(f"S3 8 x 64 MiB into PostgreSQL + S3 {512 / bigr:,.0f} MiB/s, object_store alone {512 / raw:,.0f} MiB/s: ratio {raw / bigr:.2f} (target >= 0.8) {verdict(raw / bigr >= 0.8)}; a local workspace {512 / bigl:,.0f} MiB/s")
PY
