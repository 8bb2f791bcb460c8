#!/usr/bin/env bash
# benches/compare.sh: compare `intake` against rsync / cp on the same generated
# trees in a single invocation, and print medians, ratios and PASS/MISS against
# the performance targets.
#
# Usage:
#   benches/compare.sh [A] [B] [C] [D] [E] [R1] [R2] [R3] [L1] [L2]
#                                            # default: A-E; always run in this order
#   SCALE=0.01 RUNS=3 benches/compare.sh A B # quick smoke test
#
# Scenarios:
#   A  first ingest of 100,000 x 4 KiB random files in 1,000 folders
#      vs `rsync -a src/ dst/` into an empty folder           target ratio <= 1.0
#   B  re-run over the unchanged tree of A (intake: all unchanged)
#      vs rsync's quick check `rsync -a src/ dst/`            target ratio <= 0.5
#   C  first ingest of 4 x 128 MiB random files
#      vs `cp -r src dst && sync`                             target ratio <= 1.25
#   D  first ingest of 1,000,000 empty files in 1,000 folders: peak RSS
#      (GNU time -v), one run; rsync is measured too, for context
#                                                             target <= 256 MiB
#   E  export of the workspace of A into a folder that already holds it
#      (`intake export`, all unchanged) vs an rsync re-run of the same
#      files `rsync -a src/ dst/`                             target ratio <= 1.0
#
# Realistic trees (asked for by name only):
#   R1 first ingest of a generated tree with a real shape (about 30,000
#      files in about 5,000 folders nested up to 8 deep, 2-30 files per
#      folder, log-normal sizes with a median of 4 KiB, a few per cent over
#      64 KiB and a tail to 64 MiB; fixed seed) vs `rsync -a`  target <= 0.7
#   R2 unchanged re-run over it vs `rsync -a`                 target <= 0.5
#   R3 re-run after 1% of its files were rewritten (a different 1% before
#      each run; each tool has its own copy of the tree, changed alike)
#      vs `rsync -a`                                          target <= 0.6
#   L1 first ingest of /usr/lib (read-only source) vs `rsync -a`  target <= 0.8
#   L2 unchanged re-run over /usr/lib vs `rsync -a`           target <= 0.5
#
# Environment:
#   INTAKE      path of the intake binary. When unset, the script runs
#               `cargo build --release --locked` and uses target/release/intake
#               (under CARGO_TARGET_DIR if that is set).
#   RUNS        timed runs per command for A, B and C (default 5).
#   SCALE       multiplies file counts (and C's file size) for smoke tests,
#               e.g. SCALE=0.01: A uses 1,000 files in 10 folders (default 1).
#   BENCH_DIR   work directory; source trees and destinations all live here, so
#               they share one filesystem. Default: mktemp -d /var/tmp/intake-bench.XXXX
#   KEEP=1      keep the work directory (trees, workspaces, JSON) at exit.
#               Trees left in a kept BENCH_DIR are reused by the next run.
#   INTERLEAVE=1  run hyperfine once per round (--runs 1, both commands), so the
#               two tools alternate run by run. By default one hyperfine
#               invocation does all runs of intake, then all runs of the peer.
#
# No page-cache dropping is done anywhere: the source tree is warm for both
# tools. Before each timed run of A and C, hyperfine --prepare removes that
# command's destination and runs `sync`, which drops nothing: it only flushes
# what earlier runs left dirty, so no run pays for another's writeback (and C's
# `cp -r src dst && sync` flushes only its own writes).
set -euo pipefail
export LC_ALL=C # stable number formats and tool output for parsing

# ---------------------------------------------------------------- helpers ---
log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '\ncompare.sh: ERROR: %s\n' "$*" >&2
    exit 1
}
q() { printf '%q' "$1"; } # quote one word for the shell hyperfine spawns
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

# The exact command line, with the settings that came from the environment.
CMDLINE=""
for v in INTAKE RUNS SCALE BENCH_DIR KEEP INTERLEAVE CARGO_TARGET_DIR; do
    if [[ -n ${!v:-} ]]; then CMDLINE+="$v=$(q "${!v}") "; fi
done
CMDLINE+="$(q "$0")"
for a in "$@"; do CMDLINE+=" $(q "$a")"; done

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
RUNS=${RUNS:-5}
SCALE=${SCALE:-1}
KEEP=${KEEP:-0}
INTERLEAVE=${INTERLEAVE:-0}

# ---------------------------------------------------------- arguments -----
declare -A WANT=()
for arg in "$@"; do
    case "${arg^^}" in
        -H | --HELP) usage; exit 0 ;;
        A | B | C | D | E | R1 | R2 | R3 | L1 | L2) WANT[${arg^^}]=1 ;;
        *) die "unknown scenario '$arg' (expected A, B, C, D, E, R1, R2, R3, L1 or L2; see --help)" ;;
    esac
done
if ((${#WANT[@]} == 0)); then WANT=([A]=1 [B]=1 [C]=1 [D]=1 [E]=1); fi
SCENARIOS=()
for s in A B C D E R1 R2 R3 L1 L2; do if [[ -n ${WANT[$s]:-} ]]; then SCENARIOS+=("$s"); fi; done

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"

# ---------------------------------------------------------- tools ---------
ensure_tools() {
    local -a missing=()
    command -v rsync >/dev/null || missing+=(rsync)
    command -v hyperfine >/dev/null || missing+=(hyperfine)
    [[ -x /usr/bin/time ]] || missing+=(time)
    command -v python3 >/dev/null || missing+=(python3)
    if ((${#missing[@]})); then
        command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
        log "installing ${missing[*]} with apt-get"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
}
ensure_tools

# Scaled sizes: A_FILES A_DIRS C_SIZE D_FILES D_DIRS (validates SCALE too).
sizes=$(python3 - "$SCALE" <<'PY'
import sys
try:
    s = float(sys.argv[1])
except ValueError:
    s = -1.0
if not s > 0:
    sys.exit(f"SCALE must be a positive number (got {sys.argv[1]!r})")
n = lambda x, lo=1: max(lo, round(x * s))
a_files = n(100_000)
d_files = n(1_000_000)
print(a_files, min(a_files, n(1_000)), n(128 << 20, 4096), d_files, min(d_files, n(1_000)))
PY
) || die "bad SCALE"
read -r A_FILES A_DIRS C_SIZE D_FILES D_DIRS <<<"$sizes"
A_SIZE=4096
C_FILES=4

# ---------------------------------------------------------- intake binary --
if [[ -n ${INTAKE:-} ]]; then
    if [[ $INTAKE != */* ]]; then
        INTAKE=$(command -v "$INTAKE") || die "INTAKE: '$INTAKE' not found in PATH"
    elif [[ $INTAKE != /* ]]; then
        INTAKE="$PWD/$INTAKE"
    fi
else
    log "building intake (cargo build --release --locked)"
    (cd "$REPO_ROOT" && cargo build --release --locked) || die "cargo build --release --locked failed"
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir="$REPO_ROOT/$target_dir"
    INTAKE="$target_dir/release/intake"
fi
[[ -x $INTAKE ]] || die "intake binary not found or not executable: $INTAKE"

# ---------------------------------------------------------- work dir ------
CREATED_WORK=0
if [[ -n ${BENCH_DIR:-} ]]; then
    if [[ ! -d $BENCH_DIR ]]; then
        mkdir -p -- "$BENCH_DIR"
        CREATED_WORK=1
    fi
    WORK=$(cd -- "$BENCH_DIR" && pwd)
else
    WORK=$(mktemp -d /var/tmp/intake-bench.XXXX)
    CREATED_WORK=1
fi
TREES="$WORK/trees"     # generated sources, reusable across scenarios
RUNS_DIR="$WORK/runs"   # destinations and workspaces
RESULTS="$WORK/results" # hyperfine JSON, GNU time output

cleanup() {
    local rc=$?
    if [[ $KEEP == 1 ]]; then
        log "KEEP=1: leaving $WORK"
    elif ((CREATED_WORK)); then
        rm -rf -- "$WORK"
    else # a BENCH_DIR we did not create: remove only what we put there
        rm -rf -- "$TREES" "$RUNS_DIR" "$RESULTS"
    fi
    exit "$rc"
}
trap cleanup EXIT
HINT=""
[[ $KEEP == 1 ]] || HINT=" (the work dir is removed at exit; rerun with KEEP=1 to inspect it)"
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p -- "$TREES" "$RUNS_DIR" "$RESULTS"

# ---------------------------------------------------------- machine -------
echo "# intake vs rsync/cp, $(date -u '+%Y-%m-%d %H:%M:%SZ')"
echo "command:   $CMDLINE"
echo "scenarios: ${SCENARIOS[*]}   RUNS=$RUNS SCALE=$SCALE INTERLEAVE=$INTERLEAVE"
intake_version=$("$INTAKE" --version 2>/dev/null || true)
echo "intake:    $INTAKE (${intake_version:-no --version output})"
echo "peers:     $(rsync --version | head -n1); $(cp --version | head -n1); $(hyperfine --version)"
echo "nproc:     $(nproc)"
echo "kernel:    $(uname -srmv)"
echo "memory (free -g):"
free -g | sed 's/^/  /'
echo "bench dir: $WORK (df -T):"
df -T "$WORK" | sed 's/^/  /'
echo

# Rough space check: a warning only, as intake's workspace overhead is unknown.
check_space() {
    local bytes=0 inodes=0 avail iavail
    if [[ -n ${WANT[A]:-}${WANT[B]:-}${WANT[E]:-} ]]; then
        bytes=$((bytes + 3 * A_FILES * (A_SIZE + 4096)))
        inodes=$((inodes + 3 * (A_FILES + A_DIRS)))
    fi
    [[ -z ${WANT[C]:-} ]] || bytes=$((bytes + 3 * C_FILES * C_SIZE))
    [[ -z ${WANT[D]:-} ]] || inodes=$((inodes + 3 * (D_FILES + D_DIRS)))
    read -r avail iavail < <(df --output=avail,iavail -B1 "$WORK" | tail -n1)
    if ((bytes > avail)); then
        log "WARNING: may need ~$((bytes >> 20)) MiB, $((avail >> 20)) MiB free on $WORK"
    fi
    if [[ $iavail =~ ^[0-9]+$ ]] && ((inodes > iavail)); then
        log "WARNING: may need ~$inodes inodes, $iavail free on $WORK"
    fi
}
check_space

# ---------------------------------------------------------- generation ----
# tree_reusable NAME SPEC: whether $TREES/NAME is complete and made with
# SPEC; otherwise clears it for a new one.
tree_reusable() {
    local dir="$TREES/$1"
    if [[ -f "$dir.done" && $(<"$dir.done") == "$2" ]]; then
        log "reusing tree $1 ($2)"
        return 0
    fi
    rm -rf -- "$dir" "$dir.done"
    log "generating tree $1 ($2)"
    return 1
}

# ensure_tree NAME FILES DIRS SIZE: random-content files (empty when SIZE=0)
# spread round-robin over DIRS folders in $TREES/NAME. Reused when a previous
# (KEEP=1) run left a complete tree with the same parameters.
ensure_tree() {
    local dir="$TREES/$1" spec="$2 files, $3 dirs, $4 bytes"
    tree_reusable "$1" "$spec" && return
    local t0=$SECONDS
    python3 - "$dir" "$2" "$3" "$4" <<'PY'
import os, sys
root, nfiles, ndirs, size = sys.argv[1], *map(int, sys.argv[2:5])
dirs = [os.path.join(root, f"d{i:04d}") for i in range(ndirs)]
for d in dirs:
    os.makedirs(d)
flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
for i in range(nfiles):
    fd = os.open(os.path.join(dirs[i % ndirs], f"f{i:07d}"), flags, 0o644)
    try:
        left = size
        while left:
            buf = memoryview(os.urandom(min(left, 1 << 20)))
            while buf:
                buf = buf[os.write(fd, buf):]
            left -= min(left, 1 << 20)
    finally:
        os.close(fd)
PY
    sync # no dirty pages from generation leak into the timings
    printf '%s\n' "$spec" >"$dir.done"
    log "tree $1 ready in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------- measuring -----
# run_pair TAG PEER INTAKE_PREP INTAKE_CMD PEER_PREP PEER_CMD
# Times both commands with hyperfine (shell: bash) and sets MED_INTAKE and
# MED_PEER (seconds). Empty PREPs mean: no --prepare.
run_pair() {
    local tag=$1 peer=$2 iprep=$3 icmd=$4 pprep=$5 pcmd=$6
    local -a opts=(--shell=bash --style=basic -n intake "$icmd" -n "$peer" "$pcmd")
    local -a jsons=()
    if [[ -n $iprep ]]; then opts=(--prepare "$iprep" --prepare "$pprep" "${opts[@]}"); fi
    log "$tag: intake: $icmd"
    log "$tag: $peer:  $pcmd"
    if [[ $INTERLEAVE == 1 ]]; then
        local r
        for ((r = 1; r <= RUNS; r++)); do
            log "$tag: round $r/$RUNS"
            hyperfine --runs 1 --export-json "$RESULTS/$tag.r$r.json" "${opts[@]}" >&2 ||
                die "$tag: hyperfine failed (a command exited non-zero; see above)$HINT"
            jsons+=("$RESULTS/$tag.r$r.json")
        done
    else
        hyperfine --runs "$RUNS" --export-json "$RESULTS/$tag.json" "${opts[@]}" >&2 ||
            die "$tag: hyperfine failed (a command exited non-zero; see above)$HINT"
        jsons+=("$RESULTS/$tag.json")
    fi
    local meds
    meds=$(python3 - "${jsons[@]}" <<'PY'
import json, statistics, sys
times = {}
for path in sys.argv[1:]:
    for i, res in enumerate(json.load(open(path))["results"]):
        times.setdefault(i, []).extend(res["times"])
print(*(f"{statistics.median(times[i]):.6f}" for i in sorted(times)))
PY
    ) || die "$tag: could not read medians from ${jsons[*]}"
    read -r MED_INTAKE MED_PEER <<<"$meds"
}

verify_ws() { # verify_ws TAG WS
    [[ -d $2 ]] || die "$1: intake ingest exited 0 but created no workspace at $2"
    log "$1: intake verify --workspace $2"
    if ! "$INTAKE" verify --workspace "$2"; then
        die "$1: intake verify FAILED: workspace $2 is not healthy$HINT"
    fi
}

# ---------------------------------------------------------- reporting -----
SUMMARY=()
ratio_verdict() { # ratio_verdict NUM DEN TARGET -> "RATIO PASS|MISS"
    python3 -c 'import sys
a, b, t = map(float, sys.argv[1:])
r = a / b if b > 0 else float("inf")
print(f"{r:.3f}", "PASS" if r <= t else "MISS")' "$1" "$2" "$3"
}

# report TAG TITLE PEER INTAKE_S PEER_S TARGET_RATIO
report() {
    local tag=$1 title=$2 peer=$3 i=$4 p=$5 target=$6 ratio verdict row
    read -r ratio verdict < <(ratio_verdict "$i" "$p" "$target")
    row=$(printf '%-3s %16.3f  %-6s %14.3f  %9s  %-13s %s' "$tag" "$i" "$peer" "$p" "$ratio" "ratio <= $target" "$verdict")
    SUMMARY+=("$row")
    echo
    echo "Scenario $tag: $title"
    printf '%-3s %16s  %-6s %14s  %9s  %-13s %s\n' "" "intake median s" "peer" "peer median s" "ratio" "target" "result"
    echo "$row"
}

clean_runs() { [[ $KEEP == 1 ]] || rm -rf -- "$@"; }

# ---------------------------------------------------------- scenarios -----
# The commands of a first ingest or a re-run of SRC: intake's and rsync's.
# With LENIENT=1 (a source not made for the benchmark, such as /usr/lib),
# both tools take what they can read and skip the rest alike: exit codes 1
# (intake: a file failed) and 23/24 (rsync: partial transfer) are accepted,
# not hidden.
intake_cmd() { # intake_cmd SRC WS LENIENT
    local c
    c="$(q "$INTAKE") ingest $(q "$1") --workspace $(q "$2") -q"
    if [[ $3 == 1 ]]; then c+="; [[ \$? -le 1 ]]"; fi
    printf '%s' "$c"
}
rsync_cmd() { # rsync_cmd SRC DST LENIENT
    local c
    c="rsync -a $(q "$1/") $(q "$2/")"
    if [[ $3 == 1 ]]; then c+="; rc=\$?; [[ \$rc -eq 0 || \$rc -eq 23 || \$rc -eq 24 ]]"; fi
    printf '%s' "$c"
}

# first_ingest TAG SRC TITLE TARGET [LENIENT]: intake ingest into a fresh
# workspace vs rsync -a into an empty folder.
first_ingest() {
    local tag=$1 src=$2 title=$3 target=$4 lenient=${5:-0}
    local ws="$RUNS_DIR/$tag/ws" dst="$RUNS_DIR/$tag/dst"
    mkdir -p -- "$RUNS_DIR/$tag"
    run_pair "$tag" rsync \
        "rm -rf $(q "$ws") && sync" "$(intake_cmd "$src" "$ws" "$lenient")" \
        "rm -rf $(q "$dst") && mkdir $(q "$dst") && sync" "$(rsync_cmd "$src" "$dst" "$lenient")"
    verify_ws "$tag" "$ws"
    report "$tag" "$title" rsync "$MED_INTAKE" "$MED_PEER" "$target"
    clean_runs "$RUNS_DIR/$tag"
}

# unchanged_rerun TAG SRC TITLE TARGET [LENIENT]: after one ingest and one
# rsync, both again over the unchanged source.
unchanged_rerun() {
    local tag=$1 src=$2 title=$3 target=$4 lenient=${5:-0}
    local ws="$RUNS_DIR/$tag/ws" dst="$RUNS_DIR/$tag/dst"
    rm -rf -- "$RUNS_DIR/$tag"
    mkdir -p -- "$dst"
    log "$tag: priming (one intake ingest, one rsync)"
    bash -c "$(intake_cmd "$src" "$ws" "$lenient")" || die "$tag: priming intake ingest failed$HINT"
    bash -c "$(rsync_cmd "$src" "$dst" "$lenient")" || die "$tag: priming rsync failed"
    run_pair "$tag" rsync "" "$(intake_cmd "$src" "$ws" "$lenient")" "" "$(rsync_cmd "$src" "$dst" "$lenient")"
    verify_ws "$tag" "$ws"
    report "$tag" "$title" rsync "$MED_INTAKE" "$MED_PEER" "$target"
    clean_runs "$RUNS_DIR/$tag"
}

scenario_A() {
    ensure_tree small "$A_FILES" "$A_DIRS" "$A_SIZE"
    first_ingest A "$TREES/small" \
        "first ingest, $A_FILES x $A_SIZE B random files in $A_DIRS folders, $RUNS runs" 1.0
}

scenario_B() {
    ensure_tree small "$A_FILES" "$A_DIRS" "$A_SIZE"
    unchanged_rerun B "$TREES/small" \
        "unchanged re-run over the tree of A ($A_FILES files), $RUNS runs" 0.5
}

scenario_C() {
    ensure_tree large "$C_FILES" 1 "$C_SIZE"
    local src="$TREES/large" ws="$RUNS_DIR/C/ws" dst="$RUNS_DIR/C/dst"
    mkdir -p -- "$RUNS_DIR/C"
    run_pair C cp \
        "rm -rf $(q "$ws") && sync" \
        "$(q "$INTAKE") ingest $(q "$src") --workspace $(q "$ws") -q" \
        "rm -rf $(q "$dst") && sync" \
        "cp -r $(q "$src") $(q "$dst") && sync"
    verify_ws C "$ws"
    report C "first ingest, $C_FILES x $((C_SIZE >> 20)) MiB ($C_SIZE B) random files, $RUNS runs" \
        cp "$MED_INTAKE" "$MED_PEER" 1.25
    clean_runs "$RUNS_DIR/C"
}

# gnu_time OUT CMD...: run CMD under /usr/bin/time -v, sets ELAPSED_S, RSS_MIB
gnu_time() {
    local out=$1
    shift
    if ! /usr/bin/time -v -o "$out" "$@"; then
        cat -- "$out" >&2 || true
        die "command failed: $*$HINT"
    fi
    local parsed
    parsed=$(python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
wall = re.search(r"Elapsed \(wall clock\) time.*\): ([\d:.]+)", text).group(1)
secs = 0.0
for part in wall.split(":"):
    secs = secs * 60 + float(part)
print(f"{secs:.3f} {rss_kb / 1024:.1f}")
PY
    ) || die "could not parse GNU time output in $out"
    read -r ELAPSED_S RSS_MIB <<<"$parsed"
}

scenario_D() {
    ensure_tree empty "$D_FILES" "$D_DIRS" 0
    local src="$TREES/empty" ws="$RUNS_DIR/D/ws" dst="$RUNS_DIR/D/dst"
    local i_s i_rss p_s p_rss verdict row
    rm -rf -- "$RUNS_DIR/D"
    mkdir -p -- "$dst"
    sync
    log "D: intake ingest under /usr/bin/time -v"
    gnu_time "$RESULTS/D.intake.time" "$INTAKE" ingest "$src" --workspace "$ws" -q
    i_s=$ELAPSED_S i_rss=$RSS_MIB
    verify_ws D "$ws"
    log "D: rsync -a under /usr/bin/time -v (context)"
    gnu_time "$RESULTS/D.rsync.time" rsync -a "$src/" "$dst/"
    p_s=$ELAPSED_S p_rss=$RSS_MIB
    verdict=$(python3 -c 'import sys; print("PASS" if float(sys.argv[1]) <= 256 else "MISS")' "$i_rss")
    row=$(printf '%-3s %16s  %-6s %14s  %9s  %-13s %s' D "$i_rss MiB" rsync "$p_rss MiB" "-" "RSS <= 256" "$verdict")
    SUMMARY+=("$row")
    echo
    echo "Scenario D: first ingest, $D_FILES empty files in $D_DIRS folders, 1 run"
    printf '%-8s %14s %12s\n' "" "peak RSS MiB" "elapsed s"
    printf '%-8s %14s %12s\n' intake "$i_rss" "$i_s" rsync "$p_rss" "$p_s"
    printf 'elapsed ratio intake/rsync: %s (no target)\n' "$(ratio_verdict "$i_s" "$p_s" 1 | cut -d' ' -f1)"
    printf 'target: intake peak RSS <= 256 MiB: %s\n' "$verdict"
    clean_runs "$RUNS_DIR/D"
}

# ensure_real_tree NAME: the realistic tree (see R1 above) in $TREES/NAME,
# from a fixed seed; reused like ensure_tree.
ensure_real_tree() {
    local dir="$TREES/$1" spec="realistic, seed 1, scale $SCALE"
    tree_reusable "$1" "$spec" && return
    python3 - "$dir" "$SCALE" <<'PY'
import math, os, random, sys
root, scale = sys.argv[1], float(sys.argv[2])
rng = random.Random(1)
nfiles = max(10, round(30_000 * scale))
# Folders: each hangs under a random earlier one, at most 8 deep.
dirs, depth = [root], [0]
while len(dirs) < max(2, round(5_000 * scale)):
    p = rng.randrange(len(dirs))
    if depth[p] >= 8:
        continue
    dirs.append(os.path.join(dirs[p], f"d{len(dirs):05d}"))
    depth.append(depth[p] + 1)
for d in dirs:
    os.makedirs(d, exist_ok=True)
def size():
    if rng.random() < 0.0005:  # the tail: 1 to 64 MiB, log-uniform
        return int(math.exp(rng.uniform(math.log(1 << 20), math.log(64 << 20))))
    return min(64 << 20, int(rng.lognormvariate(math.log(4096), 1.8)))
made, total, big = 0, 0, 0
while made < nfiles:
    for d in dirs:
        if made >= nfiles:
            break
        for _ in range(min(rng.randint(2, 30), rng.randint(2, 30))):
            if made >= nfiles:
                break
            n = size()
            with open(os.path.join(d, f"f{made:06d}.dat"), "wb") as f:
                left = n
                while left:
                    f.write(os.urandom(min(left, 1 << 20)))
                    left -= min(left, 1 << 20)
            made, total, big = made + 1, total + n, big + (n > 65536)
print(f"{made} files in {len(dirs)} folders, {total >> 20} MiB, {big} over 64 KiB", file=sys.stderr)
PY
    sync
    printf '%s\n' "$spec" >"$dir.done"
}

# rewrite_share TREE K: rewrites 1% of TREE's files (the K-th 1%, in sorted
# order, a different share for each K) with new random bytes of the same
# size, and sets their mtime to now.
rewrite_share() {
    python3 - "$1" "$2" <<'PY'
import os, sys
root, k = sys.argv[1], int(sys.argv[2])
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
for p in files[k % 100::100]:
    n = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.write(os.urandom(n))
PY
}

scenario_R1() {
    ensure_real_tree real
    first_ingest R1 "$TREES/real" "first ingest of the realistic tree, $RUNS runs" 0.7
}

scenario_R2() {
    ensure_real_tree real
    unchanged_rerun R2 "$TREES/real" "unchanged re-run over the realistic tree, $RUNS runs" 0.5
}

scenario_R3() {
    ensure_real_tree real
    local base="$RUNS_DIR/R3" ws="$RUNS_DIR/R3/ws" dst="$RUNS_DIR/R3/dst"
    rm -rf -- "$base"
    mkdir -p -- "$dst"
    log "R3: a copy of the tree for each tool, then priming"
    cp -a "$TREES/real" "$base/src-intake"
    cp -a "$TREES/real" "$base/src-rsync"
    "$INTAKE" ingest "$base/src-intake" --workspace "$ws" -q || die "R3: priming intake ingest failed$HINT"
    rsync -a "$base/src-rsync/" "$dst/" || die "R3: priming rsync failed"
    echo 0 >"$base/k-intake"
    echo 0 >"$base/k-rsync"
    # Before each run, the next 1% of that tool's copy is rewritten.
    local script
    script=$(declare -f rewrite_share)
    local prep_i="$script; k=\$((\$(<$(q "$base/k-intake")) + 1)); echo \$k >$(q "$base/k-intake"); rewrite_share $(q "$base/src-intake") \$k && sync"
    local prep_r="$script; k=\$((\$(<$(q "$base/k-rsync")) + 1)); echo \$k >$(q "$base/k-rsync"); rewrite_share $(q "$base/src-rsync") \$k && sync"
    run_pair R3 rsync "$prep_i" \
        "$(q "$INTAKE") ingest $(q "$base/src-intake") --workspace $(q "$ws") --write-mode overwrite -q" \
        "$prep_r" \
        "rsync -a $(q "$base/src-rsync/") $(q "$dst/")"
    verify_ws R3 "$ws"
    report R3 "re-run after 1% of the realistic tree was rewritten, $RUNS runs" rsync "$MED_INTAKE" "$MED_PEER" 0.6
    clean_runs "$base"
}

scenario_L1() {
    log "L1: /usr/lib holds $(find /usr/lib -type f | wc -l) files"
    first_ingest L1 /usr/lib "first ingest of /usr/lib, $RUNS runs" 0.8 1
}

scenario_L2() {
    unchanged_rerun L2 /usr/lib "unchanged re-run over /usr/lib, $RUNS runs" 0.5 1
}

scenario_E() {
    ensure_tree small "$A_FILES" "$A_DIRS" "$A_SIZE"
    local src="$TREES/small" ws="$RUNS_DIR/E/ws" out="$RUNS_DIR/E/out" dst="$RUNS_DIR/E/dst"
    rm -rf -- "$RUNS_DIR/E"
    mkdir -p -- "$dst"
    log "E: priming (one intake ingest and export, one rsync)"
    "$INTAKE" ingest "$src" --workspace "$ws" -q || die "E: priming intake ingest failed$HINT"
    "$INTAKE" export "$out" --workspace "$ws" -q || die "E: priming intake export failed$HINT"
    rsync -a "$src/" "$dst/" || die "E: priming rsync failed"
    run_pair E rsync "" \
        "$(q "$INTAKE") export $(q "$out") --workspace $(q "$ws") -q" "" \
        "rsync -a $(q "$src/") $(q "$dst/")"
    # The export is the workspace, file for file.
    if ! diff -rq --exclude='.intake-export*' "$src" "$out" >/dev/null; then
        die "E: the exported folder differs from the source tree$HINT"
    fi
    report E "export into a folder holding it already ($A_FILES files), $RUNS runs" \
        rsync "$MED_INTAKE" "$MED_PEER" 1.0
    clean_runs "$RUNS_DIR/E"
}

for s in "${SCENARIOS[@]}"; do
    "scenario_$s"
done

echo
echo "Summary (ratio = intake/peer; D compares peak RSS)"
printf '%-3s %16s  %-6s %14s  %9s  %-13s %s\n' "" "intake" "peer" "peer" "ratio" "target" "result"
printf '%s\n' "${SUMMARY[@]}"
