#!/usr/bin/env python3
"""How long `intake watch` takes to catch up on a tree it has ingested
before (every file `unchanged`), against an `rsync -a` re-run of the same
tree, in one run, alternating.

Usage: benches/watch_catchup.py INTAKE TREE WORKSPACE RSYNC_DST [RUNS]

The workspace must already hold the tree (`intake ingest TREE -w WORKSPACE`)
and RSYNC_DST a copy of it (`rsync -a TREE/ RSYNC_DST/`). The watcher's time
runs from its start to its last file outcome (one per file of the tree, as
counted from its JSON log); it is then stopped with SIGINT. The tree must
hold no file the watcher leaves out (hidden, temporary), or the count is
never reached.
"""
import os
import signal
import statistics
import subprocess
import sys
import time


def watch_once(intake, tree, ws, n):
    t0 = time.monotonic()
    p = subprocess.Popen(
        [intake, "watch", tree, "-w", ws, "--log-format", "json"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = 0
    for line in p.stderr:
        if '"outcome":' in line:
            seen += 1
            if seen >= n:
                break
    t = time.monotonic() - t0
    p.send_signal(signal.SIGINT)
    p.wait()
    if seen < n:
        sys.exit(f"the watcher ended after {seen} of {n} outcomes")
    return t


def rsync_once(tree, dst):
    t0 = time.monotonic()
    subprocess.run(["rsync", "-a", tree.rstrip("/") + "/", dst.rstrip("/") + "/"], check=True)
    return time.monotonic() - t0


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    intake, tree, ws, dst = sys.argv[1:5]
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    n = sum(len(fs) for _, _, fs in os.walk(tree))
    w, r = [], []
    for _ in range(runs):
        w.append(watch_once(intake, tree, ws, n))
        r.append(rsync_once(tree, dst))
    mw, mr = statistics.median(w), statistics.median(r)
    print(f"{n} files, {runs} runs each, alternating")
    print(f"intake watch catch-up median {mw:.3f} s  ({' '.join(f'{x:.3f}' for x in w)})")
    print(f"rsync -a re-run       median {mr:.3f} s  ({' '.join(f'{x:.3f}' for x in r)})")
    print(f"ratio {mw / mr:.3f} (target <= 0.6)")


main()
