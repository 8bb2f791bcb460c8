"""The official deepset SDK uploading through `intake serve`, against
`intake ingest` of the same files, in one run: wall times and ratios.

    bash tests/sdk/run.sh          # once: installs the SDK into target/sdk-venv
    cargo build --release
    target/sdk-venv/bin/python benches/serve_sdk.py [INTAKE] [BENCH_DIR]

S1: 2,000 files of 4 KiB (the session path: create, 2,000 uploads, close,
    poll until committed). S2: 4 files of 128 MiB (the direct path:
    POST files, one request per file). Each is timed from the CLI's start
    to its exit (`deepset-cloud upload`, which waits for the commit), and
    `intake ingest` of the same folder into a fresh workspace.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INTAKE = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/intake")
BENCH = Path(sys.argv[2] if len(sys.argv) > 2 else "/var/tmp")
VENV_BIN = Path(sys.executable).parent


def intake(*args):
    out = subprocess.run([INTAKE, "--json", *args], capture_output=True, text=True, check=True)
    return [json.loads(l) for l in out.stdout.splitlines() if l.strip()]


def folder(path, n, size, prefix):
    path.mkdir(parents=True)
    for i in range(n):
        data = (f"{i:08d}" * (size // 8 + 1)).encode()[:size]
        (path / f"{prefix}{i:05d}.txt").write_bytes(data)


def timed(cmd, **kw):
    t = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    took = time.monotonic() - t
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {out.returncode}: {out.stderr[-500:]}")
    return took


def main():
    work = Path(tempfile.mkdtemp(prefix="intake-sdk-bench-", dir=BENCH))
    try:
        root = work / "root"
        root.mkdir()
        ws = root / "ws"
        intake("init", "--workspace", str(ws))
        key = intake("keys", "create", "--workspace", str(ws), "--name", "bench")[0]["key"]
        server = subprocess.Popen(
            [INTAKE, "--json", "-q", "serve", "--listen", "127.0.0.1:0", "--root", str(root)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        base = json.loads(server.stdout.readline())["address"]
        env = dict(os.environ, HOME=str(work), API_KEY=key, API_URL=f"{base}/api/v1",
                   DEFAULT_WORKSPACE_NAME="ws", NO_PROXY="127.0.0.1,localhost")
        try:
            for label, n, size, prefix in [("S1 2,000 files of 4 KiB", 2000, 4096, "small"),
                                           ("S2 4 files of 128 MiB", 4, 128 << 20, "large")]:
                src = work / f"src-{n}"
                folder(src, n, size, prefix)
                subprocess.run(["sync"], check=False)
                sdk = timed([str(VENV_BIN / "deepset-cloud"), "upload", str(src), "--write-mode",
                             "OVERWRITE", "--no-show-progress", "--timeout-s", "600"],
                            env=env, cwd=str(work))
                count = len(intake("files", "list", prefix, "--workspace", str(ws)))
                subprocess.run(["sync"], check=False)
                other = work / f"ws-ingest-{n}"
                ing = timed([INTAKE, "-q", "ingest", str(src), "--workspace", str(other),
                             "--write-mode", "overwrite"])
                print(f"{label}: SDK through intake serve {sdk:6.2} s, intake ingest {ing:6.2} s, "
                      f"ratio {sdk / ing:.1f} ({count} of {n} names in the served workspace)", flush=True)
                shutil.rmtree(src)
                shutil.rmtree(other)
        finally:
            server.terminate()
            server.wait(timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
