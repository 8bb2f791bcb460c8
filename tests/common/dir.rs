//! A test-directory helper for the end-to-end tests, in the spirit of
//! ripgrep's `tests/util.rs` `Dir`: build a source tree in a temp dir, run
//! the real `intake` binary against a workspace beside it, parse its `--json`
//! lines, and assert with a readable diff.
//!
//! Layout of one [`Dir`]:
//!
//! ```text
//! <tmp>/          the current directory of every command
//! <tmp>/src/      the source tree the test builds (`Dir::create` …)
//! <tmp>/ws/       the workspace (not created until a command creates it)
//! ```

#![allow(dead_code)] // Not every test binary uses every helper.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

/// Longest any single command may take: a hang (a FIFO opened for reading,
/// a symlink loop followed forever) fails the test instead of blocking it.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A temp dir with a source tree and a workspace path.
pub struct Dir {
    tmp: TempDir,
}

impl Default for Dir {
    fn default() -> Self {
        Dir::new()
    }
}

impl Dir {
    /// A fresh temp dir with an empty `src/` and no workspace yet.
    pub fn new() -> Dir {
        let tmp = tempfile::Builder::new()
            .prefix("intake-cli-")
            .tempdir()
            .expect("creating a temp dir");
        fs::create_dir(tmp.path().join("src")).expect("creating src/");
        Dir { tmp }
    }

    /// The temp dir itself (the current directory of every command).
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The source tree, `<tmp>/src`.
    pub fn src(&self) -> PathBuf {
        self.root().join("src")
    }

    /// The workspace, `<tmp>/ws`.
    pub fn ws(&self) -> PathBuf {
        self.root().join("ws")
    }

    /// `<tmp>/src/<rel>`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.src().join(rel)
    }

    /// Writes `src/<rel>` (creating its folders) and returns its path.
    pub fn create(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("creating folders");
        }
        fs::write(&p, contents).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }

    /// Writes a file whose name under `src/` is raw bytes (for non-UTF-8
    /// names).
    pub fn create_raw(&self, rel: &[u8], contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.src().join(std::ffi::OsStr::from_bytes(rel));
        fs::write(&p, contents).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }

    /// Creates the folder `src/<rel>` and its parents.
    pub fn create_dir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).expect("creating folders");
        p
    }

    /// Creates the symbolic link `src/<link>` pointing at `target` (taken
    /// as it is: relative targets resolve from the link's folder).
    pub fn symlink(&self, target: &str, link: &str) -> PathBuf {
        let p = self.path(link);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("creating folders");
        }
        std::os::unix::fs::symlink(target, &p).expect("creating a symlink");
        p
    }

    /// Creates a FIFO at `src/<rel>`.
    pub fn fifo(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("no NUL in a temp path");
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
        assert_eq!(
            rc,
            0,
            "mkfifo {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        p
    }

    /// `intake --workspace <ws>` run from the temp dir, with a fixed user,
    /// no inherited workspace, and [`TIMEOUT`].
    pub fn cmd(&self) -> Command {
        let mut c = self.bare_cmd();
        c.arg("--workspace").arg(self.ws());
        c
    }

    /// `intake` without `--workspace` (and without `INTAKE_WORKSPACE`).
    pub fn bare_cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_intake"));
        c.current_dir(self.root())
            .env_remove("INTAKE_WORKSPACE")
            .env_remove("RUST_LOG")
            .env("INTAKE_USER", "Ada Lovelace")
            .timeout(TIMEOUT);
        c
    }

    /// Runs `intake --workspace <ws> ARGS…` and parses what it printed.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args), args.contains(&"--json"))
    }

    /// `intake --workspace <ws> --json ingest ARGS…` (give the paths in
    /// `args`, e.g. `"src"`).
    pub fn ingest(&self, args: &[&str]) -> Run {
        let mut c = self.cmd();
        c.arg("--json").arg("ingest").args(args);
        Run::from(&mut c, true)
    }

    /// `intake --json ingest ARGS… src`: the whole source tree.
    pub fn ingest_src(&self, args: &[&str]) -> Run {
        let mut c = self.cmd();
        c.arg("--json").arg("ingest").args(args).arg("src");
        Run::from(&mut c, true)
    }

    /// Every `files list --json` object, in the order listed.
    pub fn files(&self) -> Vec<Value> {
        let r = self.run(&["--json", "files", "list"]);
        r.assert_code(0);
        r.lines
    }

    /// `files list --json` as `name -> object`.
    pub fn files_by_name(&self) -> BTreeMap<String, Value> {
        self.files()
            .into_iter()
            .map(|v| (str_field(&v, "name"), v))
            .collect()
    }

    /// The current content of `name` (`files cat NAME`).
    pub fn cat(&self, name: &str) -> Vec<u8> {
        let out = self
            .cmd()
            .args(["files", "cat", name])
            .output()
            .expect("running intake files cat");
        assert_eq!(
            out.status.code(),
            Some(0),
            "files cat {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Every name with its content, via `files list` and `files cat`.
    pub fn contents(&self) -> Vec<(String, String)> {
        self.files()
            .iter()
            .map(|v| {
                let name = str_field(v, "name");
                let data = String::from_utf8_lossy(&self.cat(&name)).into_owned();
                (name, data)
            })
            .collect()
    }

    /// Asserts the workspace holds exactly these names with these contents.
    pub fn assert_workspace(&self, expected: &[(&str, &str)]) {
        let mut want: Vec<String> = expected
            .iter()
            .map(|(n, c)| format!("{n} = {c:?}"))
            .collect();
        let mut got: Vec<String> = self
            .contents()
            .iter()
            .map(|(n, c)| format!("{n} = {c:?}"))
            .collect();
        want.sort();
        got.sort();
        assert_lines("workspace contents (name = content)", &want, &got, "");
    }

    /// The names in the workspace, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.files().iter().map(|v| str_field(v, "name")).collect();
        v.sort();
        v
    }

    /// Runs `intake --json verify` and asserts it exits 0 without a
    /// `"type":"defect"` line (`context` goes into the failure message).
    pub fn verify_without_defects(&self, context: &str) -> Run {
        let r = self.run(&["--json", "verify"]);
        let defects: Vec<&Value> = r.lines.iter().filter(|v| v["type"] == "defect").collect();
        assert!(
            r.code == 0 && defects.is_empty(),
            "verify found defects ({context}): exit {}{}",
            r.code,
            r.context()
        );
        r
    }

    /// BLAKE3 of every file under the workspace folder, by relative path
    /// (folders appear with the value `"dir"`), skipping the names in
    /// `ignore` (e.g. SQLite's `-shm`, which is shared memory, not data).
    pub fn snapshot_ws(&self, ignore: &[&str]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        snapshot(&self.ws(), Path::new(""), ignore, &mut out);
        out
    }

    /// The external blob files, `ws/blobs/xx/<64 hex>`.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        let Ok(subs) = fs::read_dir(self.ws().join("blobs")) else {
            return v;
        };
        for sub in subs.flatten() {
            let name = sub.file_name();
            if name.len() != 2 || !sub.path().is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path()).expect("listing blobs").flatten() {
                if f.file_name().len() == 64 {
                    v.push(f.path());
                }
            }
        }
        v.sort();
        v
    }
}

fn snapshot(dir: &Path, rel: &Path, ignore: &[&str], out: &mut BTreeMap<String, String>) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let e = e.expect("listing the workspace");
        let name = e.file_name();
        if ignore
            .iter()
            .any(|i| name.as_bytes().ends_with(i.as_bytes()))
        {
            continue;
        }
        let rel = rel.join(&name);
        let key = rel.to_string_lossy().into_owned();
        let ty = e.file_type().expect("file type");
        if ty.is_dir() {
            out.insert(key, "dir".into());
            snapshot(&e.path(), &rel, ignore, out);
        } else {
            let data = fs::read(e.path()).expect("reading a workspace file");
            out.insert(key, blake3::hash(&data).to_hex().to_string());
        }
    }
}

/// What one command printed, parsed.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`-1` if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Every stdout line that parses as a JSON object, in order.
    pub lines: Vec<Value>,
    /// The `"type":"file"` lines.
    pub files: Vec<Value>,
    /// The `"type":"skipped"` lines.
    pub skipped: Vec<Value>,
    /// The `"type":"summary"` line, if any.
    pub summary: Option<Value>,
}

impl Run {
    /// Runs `cmd` (within [`TIMEOUT`]) and parses its output. Panics if a
    /// `json_mode` run prints a line that is not a JSON object, or if a
    /// summary's counts disagree with the file lines: every test checks
    /// that for free.
    pub fn from(cmd: &mut Command, json_mode: bool) -> Run {
        let out = cmd.output().expect("running intake");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().unwrap_or(-1);
        let mut lines = Vec::new();
        for l in stdout.lines() {
            match serde_json::from_str::<Value>(l) {
                Ok(v) if v.is_object() => lines.push(v),
                _ if json_mode => panic!(
                    "a --json run printed a line that is not a JSON object: {l:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
                ),
                _ => {}
            }
        }
        let of_type =
            |t: &str| -> Vec<Value> { lines.iter().filter(|v| v["type"] == t).cloned().collect() };
        let files = of_type("file");
        let skipped = of_type("skipped");
        let summaries = of_type("summary");
        assert!(summaries.len() <= 1, "more than one summary:\n{stdout}");
        if let Some(s) = summaries.first() {
            assert_eq!(
                lines.last(),
                Some(s),
                "the summary is not the last line:\n{stdout}"
            );
        }
        let run = Run {
            code,
            stdout,
            stderr,
            lines,
            files,
            skipped,
            summary: summaries.into_iter().next(),
        };
        run.check_summary();
        run
    }

    /// The summary's counts equal the file lines' counts.
    fn check_summary(&self) {
        let Some(s) = &self.summary else {
            return;
        };
        let mut want: Vec<String> = Vec::new();
        let mut got: Vec<String> = Vec::new();
        for o in OUTCOMES {
            let n = self.files.iter().filter(|f| f["outcome"] == *o).count();
            want.push(format!("{o}: {n}"));
            got.push(format!("{o}: {}", s["counts"][*o]));
        }
        let failed = self
            .files
            .iter()
            .filter(|f| f["outcome"] == "failed")
            .count();
        let refused = self
            .files
            .iter()
            .filter(|f| f["outcome"] == "refused")
            .count();
        want.push(format!("failed_files: {failed}"));
        got.push(format!("failed_files: {}", s["failed_files"]));
        want.push(format!(
            "finished_files: {}",
            self.files.len() - failed - refused
        ));
        got.push(format!("finished_files: {}", s["finished_files"]));
        assert_lines(
            "summary counts vs per-file lines",
            &want,
            &got,
            &self.context(),
        );
    }

    /// `(name, "outcome")` or `(name, "outcome reason")` for every file
    /// line, in the order printed (walk order).
    pub fn outcomes(&self) -> Vec<(String, String)> {
        self.files
            .iter()
            .map(|f| {
                let name = str_field(f, "name");
                let outcome = str_field(f, "outcome");
                let o = match f["reason"].as_str() {
                    Some(r) => format!("{outcome} {r}"),
                    None => outcome,
                };
                (name, o)
            })
            .collect()
    }

    /// Asserts the per-file outcomes, in order, e.g.
    /// `[("a.txt", "ingested"), ("b.txt", "failed conflict")]`.
    pub fn assert_outcomes(&self, expected: &[(&str, &str)]) {
        let want: Vec<String> = expected.iter().map(|(n, o)| format!("{n}: {o}")).collect();
        let got: Vec<String> = self
            .outcomes()
            .iter()
            .map(|(n, o)| format!("{n}: {o}"))
            .collect();
        assert_lines(
            "per-file outcomes (walk order)",
            &want,
            &got,
            &self.context(),
        );
    }

    /// Asserts the exit code.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            code,
            "exit code {} instead of {code}{}",
            self.code,
            self.context()
        );
    }

    /// The file line for `name` (the first, if several).
    pub fn file(&self, name: &str) -> &Value {
        self.files
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no file line for {name:?}{}", self.context()))
    }

    /// The summary, which must be there.
    pub fn summary(&self) -> &Value {
        self.summary
            .as_ref()
            .unwrap_or_else(|| panic!("no summary line{}", self.context()))
    }

    /// stdout and stderr, for failure messages.
    pub fn context(&self) -> String {
        format!(
            "\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.stdout, self.stderr
        )
    }
}

/// The outcome keys of a summary's `counts`.
pub const OUTCOMES: &[&str] = &[
    "ingested",
    "overwritten",
    "unchanged",
    "kept",
    "deleted",
    "failed",
    "refused",
];

/// A string field of a JSON object (panics with the object if missing).
pub fn str_field(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key:?} is not a string in {v}"))
        .to_owned()
}

/// The sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// Asserts two lists of lines are equal; on mismatch panics with a unified
/// line diff (`-` expected only, `+` actual only) and `context`.
pub fn assert_lines(what: &str, expected: &[String], actual: &[String], context: &str) {
    if expected == actual {
        return;
    }
    panic!(
        "{what} differ (- expected, + actual):\n{}{context}",
        diff(expected, actual)
    );
}

/// A line diff by longest common subsequence (inputs here are small).
pub fn diff(a: &[String], b: &[String]) -> String {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        } else {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        }
    }
    out
}

/// Whether the current process can open `path` for reading (root can read
/// a file after `chmod 000`; tests that need an unreadable file check this).
pub fn can_read(path: &Path) -> bool {
    fs::File::open(path).is_ok()
}

/// Every entry under the folder `dir` (an export's target) that is not one
/// of the export's own files (`.intake-export*`), by its path relative to
/// `dir`: a file's content, or `None` for a symbolic link. Empty if `dir`
/// is not there.
pub fn export_folder(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let e = e.unwrap_or_else(|e| panic!("{e}"));
            let p = e.path();
            let rel = p
                .strip_prefix(dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if rel.starts_with(".intake-export") {
                continue;
            }
            let ft = e.file_type().unwrap_or_else(|e| panic!("{e}"));
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_symlink() {
                out.insert(rel, None);
            } else {
                let data = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                out.insert(rel, Some(data));
            }
        }
    }
    out
}
