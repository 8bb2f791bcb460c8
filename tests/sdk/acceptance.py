"""The official deepset SDK and CLI, unmodified, uploading into `intake serve`.

Run by tests/sdk/run.sh (which installs the SDK into a venv and builds
intake). For each write mode it uploads a folder of more than 20 files with
`.meta.json` sidecars through the `deepset-cloud upload` CLI (the session
path) and a folder of 20 or fewer through the Python `upload()` function
(the direct path), then uploads changed content again; then it lists and
gets sessions with the CLI. After each step it checks, through the intake
command line, exactly which names, contents, metadata and counts the
workspace holds.

Usage: python acceptance.py INTAKE_BINARY WORK_DIR
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deepset_cloud_sdk.workflows.sync_client.files import WriteMode, upload

INTAKE = sys.argv[1]
WORK = Path(sys.argv[2])
MODES = ["KEEP", "OVERWRITE", "FAIL"]
BIG = 24  # files in the session-path folder (plus 2 sidecars: 26 > 20 paths)
SMALL = 5  # files in the direct-path folder (plus 1 sidecar: 6 <= 20)
failures = []


def check(cond, what):
    status = "ok  " if cond else "FAIL"
    print(f"  {status} {what}", flush=True)
    if not cond:
        failures.append(what)


def intake(*args, ws=None):
    cmd = [INTAKE, "--json"]
    if ws is not None:
        cmd += ["--workspace", str(ws)]
    out = subprocess.run(cmd + list(args), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"intake {' '.join(args)}: exit {out.returncode}: {out.stderr}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def cat(ws, name):
    out = subprocess.run(
        [INTAKE, "--workspace", str(ws), "files", "cat", name], capture_output=True, check=True
    )
    return out.stdout.decode()


def workspace(ws):
    """name -> (content, meta) for every name in the workspace."""
    return {f["name"]: (cat(ws, f["name"]), f["meta"]) for f in intake("files", "list", ws=ws)}


def session_counts(ws, sid):
    s = intake("session", "show", sid, ws=ws)[0]
    return s["status"], s["ingestion_status"]


def make_folder(path, n, prefix, text, metas):
    path.mkdir(parents=True)
    for i in range(n):
        # A space and an `#` that the SDK turns into `_` in the name it sends.
        (path / f"{prefix} {i:02d}#.txt").write_text(f"{text} {i}")
    for i in metas:
        (path / f"{prefix} {i:02d}#.txt.meta.json").write_text(json.dumps({"n": i, "via": prefix}))


def expected(prefix, n, text, metas, hash_as):
    """What the folder's files become; `hash_as`: what the name's `#` is on
    the wire (the session path sends S3-safe names, `#` as `_`; the direct
    path sends the basename as it is)."""
    return {
        f"{prefix} {i:02d}{hash_as}.txt": (
            f"{text} {i}", {"n": i, "via": prefix} if i in metas else None
        )
        for i in range(n)
    }


def sdk_env(key, url, ws):
    env = dict(os.environ)
    env.update(
        HOME=tempfile.mkdtemp(), API_KEY=key, API_URL=url, DEFAULT_WORKSPACE_NAME=ws,
        NO_PROXY="127.0.0.1,localhost",
    )
    for v in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"]:
        env.pop(v, None)
    return env


def cli_upload(key, url, ws, folder, mode):
    started = time.monotonic()
    out = subprocess.run(
        ["deepset-cloud", "upload", str(folder), "--write-mode", mode, "--no-show-progress",
         "--timeout-s", "120"],
        env=sdk_env(key, url, ws), cwd=tempfile.mkdtemp(), capture_output=True, text=True,
        timeout=300,
    )
    return out, time.monotonic() - started


def newest_session(ws):
    return intake("session", "list", ws=ws)[-1]["session_id"]


def main():
    root = WORK / "root"
    root.mkdir(parents=True)
    keys = {}
    for mode in MODES:
        ws = root / mode.lower()
        intake("init", ws=ws)
        keys[mode] = intake("keys", "create", "--name", "sdk", "--user", "Sdk Client", ws=ws)[0]["key"]
    server = subprocess.Popen(
        [INTAKE, "--json", "serve", "--listen", "127.0.0.1:0", "--root", str(root)],
        stdout=subprocess.PIPE, stderr=open(WORK / "serve.log", "w"), text=True,
    )
    try:
        line = server.stdout.readline()
        base = json.loads(line)["address"]
        url = f"{base}/api/v1"
        print(f"intake serve at {base}", flush=True)
        for mode in MODES:
            run_mode(mode, root / mode.lower(), keys[mode], url)
        sessions_by_cli(root / "fail", keys["FAIL"], url)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = None
        check(code == 0, f"intake serve exits 0 on SIGTERM (got {code})")
    if failures:
        print(f"\n{len(failures)} check(s) failed; the server's log: {WORK / 'serve.log'}")
        sys.exit(1)
    print("\nall checks passed")


def run_mode(mode, ws, key, url):
    name = mode.lower()
    print(f"\n== {mode}: the CLI, {BIG} files + 2 sidecars (session path)", flush=True)
    big = WORK / f"big-{name}"
    make_folder(big, BIG, "doc", "first", [3, 7])
    out, took = cli_upload(key, url, name, big, mode)
    check(out.returncode == 0, f"deepset-cloud upload exits 0 ({took:.1f} s): {out.stderr[-400:]}")
    want = expected("doc", BIG, "first", [3, 7], "_")
    check(workspace(ws) == want, f"the workspace holds exactly the {BIG} files with their metadata")
    sid = newest_session(ws)
    status, counts = session_counts(ws, sid)
    check((status, counts["ingested"], counts["failed_files"]) == ("CLOSED", BIG, 0),
          f"its session is CLOSED with {BIG} ingested: {status} {counts}")

    print(f"== {mode}: upload() of {SMALL} files + 1 sidecar (direct path)", flush=True)
    small = WORK / f"small-{name}"
    make_folder(small, SMALL, "note", "small", [1])
    summary = upload(paths=[small], api_key=key, api_url=url, workspace_name=name,
                     write_mode=WriteMode[mode], blocking=True, timeout_s=60, show_progress=False)
    check((summary.total_files, summary.successful_upload_count, summary.failed_upload_count)
          == (SMALL, SMALL, 0), f"upload() summary: {summary}")
    want.update(expected("note", SMALL, "small", [1], "#"))
    check(workspace(ws) == want, "the workspace holds the direct uploads too")

    print(f"== {mode}: the same folder with changed content, again", flush=True)
    for i in range(BIG):
        (big / f"doc {i:02d}#.txt").write_text(f"second {i}")
    out, took = cli_upload(key, url, name, big, mode)
    check(out.returncode == 0, f"the second upload finishes, exit 0 ({took:.1f} s)")
    sid = newest_session(ws)
    status, counts = session_counts(ws, sid)
    if mode == "KEEP":
        check(counts["kept"] == BIG and counts["failed_files"] == 0, f"KEEP: every file kept: {counts}")
    elif mode == "OVERWRITE":
        check(counts["overwritten"] == BIG, f"OVERWRITE: every file overwritten: {counts}")
        want.update(expected("doc", BIG, "second", [3, 7], "_"))
    else:
        check((counts["failed_files"], counts["finished_files"]) == (BIG, 0),
              f"FAIL: every file failed, and the client did not hang: {counts}")
    check(workspace(ws) == want, f"{mode}: the workspace holds exactly what {mode} says")
    check(not [d for d in intake("verify", ws=ws) if d.get("type") == "defect"], "verify finds no defect")


def sessions_by_cli(ws, key, url):
    print("\n== list-upload-sessions and get-upload-session", flush=True)
    env = sdk_env(key, url, "fail")
    out = subprocess.run(["deepset-cloud", "list-upload-sessions"], env=env, input="n\n",
                         capture_output=True, text=True, timeout=60, cwd=tempfile.mkdtemp())
    ours = [s for s in intake("session", "list", ws=ws)]
    listed = [s["session_id"] for s in ours if s["session_id"] in out.stdout]
    check(out.returncode == 0 and len(listed) == min(len(ours), 10),
          f"list-upload-sessions shows the sessions ({len(listed)} of {len(ours)}): {out.stderr[-300:]}")
    check("Sdk Client" in out.stdout and "FAIL" in out.stdout, "with their creator and write mode")
    sid = [s for s in ours if s["ingestion_status"]["ingested"] == BIG][0]["session_id"]
    out = subprocess.run(["deepset-cloud", "get-upload-session", sid], env=env,
                         capture_output=True, text=True, timeout=60, cwd=tempfile.mkdtemp())
    got = json.loads(out.stdout) if out.returncode == 0 else {}
    check(got.get("session_id") == sid
          and got.get("ingestion_status") == {"failed_files": 0, "finished_files": BIG},
          f"get-upload-session shows its counts: {out.stdout.strip()[:300]} {out.stderr[-300:]}")


if __name__ == "__main__":
    main()
