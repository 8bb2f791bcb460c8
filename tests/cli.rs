//! End-to-end tests: the real `intake` binary on trees built in temp dirs.
//!
//! Every test asserts exact outcomes: the per-file lines of `--json` in walk
//! order, the workspace's names and contents (`files list --json`, `files
//! cat`), and the exit code. Every `--json` run is also checked for lines
//! that are not JSON and for a summary whose counts disagree with its file
//! lines (see `common::dir::Run::from`).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::dir::{Dir, Run, keys, str_field};
use serde_json::{Value, json};

fn hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

fn ts(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}")))
        .unwrap_or_else(|e| panic!("not RFC 3339: {v}: {e}"))
        .with_timezone(&Utc)
}

/// The names a dry run with `args` selects, in walk order (every one must
/// come out finished).
fn selected(d: &Dir, args: &[&str]) -> Vec<String> {
    let mut a = vec!["--dry-run"];
    a.extend_from_slice(args);
    let r = d.ingest_src(&a);
    r.assert_code(0);
    r.files.iter().map(|f| str_field(f, "name")).collect()
}

fn assert_names(what: &str, expected: &[&str], actual: &[String]) {
    let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    common::dir::assert_lines(what, &want, actual, "");
}

/// Creates a session and returns its JSON.
fn create_session(d: &Dir, args: &[&str]) -> Value {
    let mut a = vec!["--json", "session", "create"];
    a.extend_from_slice(args);
    let r = d.run(&a);
    r.assert_code(0);
    assert_eq!(r.lines.len(), 1, "{}", r.context());
    r.lines[0].clone()
}

fn show_session(d: &Dir, id: &str) -> Value {
    let r = d.run(&["--json", "session", "show", id]);
    r.assert_code(0);
    assert_eq!(r.lines.len(), 1, "{}", r.context());
    r.lines[0].clone()
}

fn history(d: &Dir, name: &str) -> Vec<Value> {
    let r = d.run(&["--json", "files", "history", name]);
    r.assert_code(0);
    r.lines
}

/// Content larger than the 64 KiB inline threshold, so its blob is a file
/// under `ws/blobs/xx/<hex>`.
fn big(fill: u8) -> Vec<u8> {
    let mut v = vec![fill; 100 * 1024];
    v[0] = b'<';
    v
}

// ---------------------------------------------------------------------------
// Every outcome kind (SPEC §3).

#[test]
fn ingested_for_every_new_name() {
    let d = Dir::new();
    let a = d.create("a.txt", "alpha");
    d.create("sub/b.txt", "beta!!");
    let r = d.ingest_src(&[]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "ingested"), ("sub/b.txt", "ingested")]);
    let f = r.file("a.txt");
    assert_eq!(f["size"], 5);
    assert_eq!(f["blake3"], hex(b"alpha"));
    assert_eq!(f["source"], a.to_str().expect("utf-8 temp path"));
    assert_eq!(f["reason"], Value::Null);
    assert_eq!(f["session_id"], r.summary()["session_id"]);
    d.assert_workspace(&[("a.txt", "alpha"), ("sub/b.txt", "beta!!")]);
}

#[test]
fn unchanged_on_identical_rerun() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("sub/b.txt", "beta");
    d.ingest_src(&[]).assert_code(0);
    for mode in ["keep", "overwrite", "fail"] {
        let r = d.ingest_src(&["--write-mode", mode]);
        r.assert_code(0);
        r.assert_outcomes(&[("a.txt", "unchanged"), ("sub/b.txt", "unchanged")]);
    }
    d.assert_workspace(&[("a.txt", "alpha"), ("sub/b.txt", "beta")]);
    assert_eq!(history(&d, "a.txt").len(), 1);
}

#[test]
fn kept_in_keep_mode_leaves_existing_untouched() {
    let d = Dir::new();
    d.create("a.txt", "v1");
    d.create("b.txt", "same");
    d.ingest_src(&[]).assert_code(0);
    d.create("a.txt", "version two");
    // KEEP is the default.
    let r = d.ingest_src(&[]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "kept"), ("b.txt", "unchanged")]);
    let r = d.ingest_src(&["--write-mode", "KEEP"]);
    r.assert_outcomes(&[("a.txt", "kept"), ("b.txt", "unchanged")]);
    d.assert_workspace(&[("a.txt", "v1"), ("b.txt", "same")]);
    assert_eq!(history(&d, "a.txt").len(), 1);
}

#[test]
fn overwritten_in_overwrite_mode() {
    let d = Dir::new();
    d.create("a.txt", "v1");
    d.create("b.txt", "same");
    d.ingest_src(&[]).assert_code(0);
    d.create("a.txt", "version two");
    // Any case is accepted.
    let r = d.ingest_src(&["--write-mode", "OverWrite"]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "overwritten"), ("b.txt", "unchanged")]);
    assert_eq!(r.file("a.txt")["blake3"], hex(b"version two"));
    d.assert_workspace(&[("a.txt", "version two"), ("b.txt", "same")]);
}

#[test]
fn failed_conflict_in_fail_mode_leaves_existing_untouched() {
    let d = Dir::new();
    d.create("a.txt", "v1");
    d.create("b.txt", "same");
    d.ingest_src(&[]).assert_code(0);
    d.create("a.txt", "version two");
    d.create("c.txt", "new");
    let r = d.ingest_src(&["--write-mode", "fail"]);
    r.assert_code(1);
    r.assert_outcomes(&[
        ("a.txt", "failed conflict"),
        ("b.txt", "unchanged"),
        ("c.txt", "ingested"),
    ]);
    d.assert_workspace(&[("a.txt", "v1"), ("b.txt", "same"), ("c.txt", "new")]);
}

#[test]
fn failed_read_error_for_unreadable_file() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    let b = d.create("b.txt", "secret");
    d.create("c.txt", "gamma");
    fs::set_permissions(&b, fs::Permissions::from_mode(0o000)).expect("chmod 000");
    let r = d.ingest_src(&[]);
    if common::dir::can_read(&b) {
        eprintln!(
            "failed_read_error_for_unreadable_file: chmod 000 does not stop this user (root?) \
             from reading; only checking that the other files are ingested"
        );
        r.assert_code(0);
        assert_eq!(r.file("a.txt")["outcome"], "ingested");
        assert_eq!(r.file("c.txt")["outcome"], "ingested");
        return;
    }
    r.assert_code(1);
    r.assert_outcomes(&[
        ("a.txt", "ingested"),
        ("b.txt", "failed read_error"),
        ("c.txt", "ingested"),
    ]);
    d.assert_workspace(&[("a.txt", "alpha"), ("c.txt", "gamma")]);
}

/// The same as above but proof against root: `/proc/self/mem` opens as a
/// regular file and every read at offset 0 fails with EIO.
#[test]
fn failed_read_error_when_reading_fails_even_as_root() {
    if !Path::new("/proc/self/mem").exists() {
        eprintln!("no /proc/self/mem here; skipping");
        return;
    }
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.symlink("/proc/self/mem", "mem");
    d.create("z.txt", "zeta");
    let r = d.ingest_src(&["--follow-links"]);
    r.assert_code(1);
    r.assert_outcomes(&[
        ("a.txt", "ingested"),
        ("mem", "failed read_error"),
        ("z.txt", "ingested"),
    ]);
    d.assert_workspace(&[("a.txt", "alpha"), ("z.txt", "zeta")]);
}

#[test]
fn refused_every_file_on_expired_session_exit_3() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("b.txt", "beta");
    let s = create_session(&d, &["--ttl", "1s"]);
    let id = str_field(&s, "session_id");
    std::thread::sleep(Duration::from_millis(1100));
    let r = d.ingest_src(&["--session", &id]);
    r.assert_code(3);
    r.assert_outcomes(&[
        ("a.txt", "refused session_expired"),
        ("b.txt", "refused session_expired"),
    ]);
    assert_eq!(r.summary()["session_id"], id.as_str());
    assert!(d.names().is_empty(), "nothing may enter the workspace");
    let shown = show_session(&d, &id);
    assert_eq!(shown["status"], "EXPIRED");
    // Refused files are not part of the session.
    assert_eq!(shown["ingestion_status"]["finished_files"], 0);
    assert_eq!(shown["ingestion_status"]["failed_files"], 0);
}

#[test]
fn refused_every_file_on_closed_session_exit_3() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("b.txt", "beta");
    let id = str_field(&create_session(&d, &[]), "session_id");
    let r = d.run(&["session", "close", &id]);
    r.assert_code(0);
    let r = d.ingest_src(&["--session", &id]);
    r.assert_code(3);
    r.assert_outcomes(&[
        ("a.txt", "refused session_closed"),
        ("b.txt", "refused session_closed"),
    ]);
    assert!(d.names().is_empty(), "nothing may enter the workspace");
    let shown = show_session(&d, &id);
    assert_eq!(shown["status"], "CLOSED");
    assert_eq!(shown["ingestion_status"]["finished_files"], 0);
}

// ---------------------------------------------------------------------------
// Exit codes (SPEC §9).

#[test]
fn exit_0_when_every_file_finished() {
    let d = Dir::new();
    d.create("a.txt", "v1");
    d.create("b.txt", "b");
    d.ingest_src(&[]).assert_code(0);
    d.create("a.txt", "v2");
    d.create("c.txt", "c");
    // kept, unchanged and ingested are all finished.
    let r = d.ingest_src(&[]);
    r.assert_code(0);
    r.assert_outcomes(&[
        ("a.txt", "kept"),
        ("b.txt", "unchanged"),
        ("c.txt", "ingested"),
    ]);
    assert_eq!(r.summary()["finished_files"], 3);
    assert_eq!(r.summary()["failed_files"], 0);
}

#[test]
fn exit_1_when_some_file_failed() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("ghost.txt.meta.json", "{}");
    let r = d.ingest_src(&[]);
    r.assert_code(1);
    r.assert_outcomes(&[
        ("a.txt", "ingested"),
        ("ghost.txt.meta.json", "failed orphan_meta"),
    ]);
    assert_eq!(r.summary()["finished_files"], 1);
    assert_eq!(r.summary()["failed_files"], 1);
}

#[test]
fn exit_2_on_unknown_flag() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    let r = d.ingest_src(&["--no-such-flag"]);
    r.assert_code(2);
    assert!(r.files.is_empty(), "{}", r.context());
    assert!(
        !d.ws().exists(),
        "a usage error must not create the workspace"
    );
}

#[test]
fn exit_2_on_unknown_write_mode_names_the_modes() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    let r = d.ingest_src(&["--write-mode", "merge"]);
    r.assert_code(2);
    assert!(r.files.is_empty(), "{}", r.context());
    for word in ["merge", "KEEP", "OVERWRITE", "FAIL"] {
        assert!(
            r.stderr.contains(word),
            "stderr lacks {word}{}",
            r.context()
        );
    }
    let r = d.run(&["session", "create", "--write-mode", "merge"]);
    r.assert_code(2);
    assert!(r.stderr.contains("KEEP") && r.stderr.contains("OVERWRITE"));
}

#[test]
fn exit_2_without_workspace() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    let r = Run::from(d.bare_cmd().args(["--json", "ingest", "src"]), true);
    r.assert_code(2);
    assert!(r.files.is_empty(), "{}", r.context());
    assert!(r.stderr.contains("--workspace"), "{}", r.context());
    // INTAKE_WORKSPACE stands in for --workspace.
    let r = Run::from(
        d.bare_cmd()
            .env("INTAKE_WORKSPACE", d.ws())
            .args(["--json", "ingest", "src"]),
        true,
    );
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "ingested")]);
}

#[test]
fn exit_2_on_bad_ttl() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    for ttl in ["5x", "", "-1h", "forever"] {
        let r = d.ingest_src(&["--ttl", ttl]);
        r.assert_code(2);
        assert!(r.files.is_empty(), "--ttl {ttl:?}{}", r.context());
    }
    d.run(&["session", "create", "--ttl", "5x"]).assert_code(2);
}

#[test]
fn exit_2_on_unknown_session_id() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.run(&["init"]).assert_code(0);
    for id in ["00000000-0000-0000-0000-000000000001", "not-a-uuid"] {
        let r = d.ingest_src(&["--session", id]);
        r.assert_code(2);
        assert!(r.files.is_empty(), "--session {id}{}", r.context());
        assert!(r.stderr.contains("session"), "{}", r.context());
    }
    d.run(&["session", "show", "00000000-0000-0000-0000-000000000001"])
        .assert_code(2);
    assert!(d.names().is_empty());
}

// ---------------------------------------------------------------------------
// --flatten collisions: same basename, walk order a/, b/, c/ (SPEC §3 Order).

fn collisions() -> Dir {
    let d = Dir::new();
    d.create("a/x.txt", "from a");
    d.create("b/x.txt", "from b");
    d.create("c/x.txt", "from c");
    d
}

#[test]
fn flatten_collision_keep_keeps_the_first() {
    let d = collisions();
    let r = d.ingest_src(&["--flatten", "--write-mode", "keep"]);
    r.assert_code(0);
    r.assert_outcomes(&[("x.txt", "ingested"), ("x.txt", "kept"), ("x.txt", "kept")]);
    d.assert_workspace(&[("x.txt", "from a")]);
}

#[test]
fn flatten_collision_overwrite_ends_with_the_last() {
    let d = collisions();
    let r = d.ingest_src(&["--flatten", "--write-mode", "overwrite"]);
    r.assert_code(0);
    r.assert_outcomes(&[
        ("x.txt", "ingested"),
        ("x.txt", "overwritten"),
        ("x.txt", "overwritten"),
    ]);
    d.assert_workspace(&[("x.txt", "from c")]);
    assert_eq!(history(&d, "x.txt").len(), 3);
}

#[test]
fn flatten_collision_fail_ingests_the_first_and_fails_the_rest() {
    let d = collisions();
    let r = d.ingest_src(&["--flatten", "--write-mode", "fail"]);
    r.assert_code(1);
    r.assert_outcomes(&[
        ("x.txt", "ingested"),
        ("x.txt", "failed conflict"),
        ("x.txt", "failed conflict"),
    ]);
    d.assert_workspace(&[("x.txt", "from a")]);
}

#[test]
fn flatten_collision_is_the_same_at_any_parallelism() {
    let d = collisions();
    let r = d.ingest_src(&["--flatten", "--write-mode", "overwrite", "--jobs", "1"]);
    let serial = r.outcomes();
    let d2 = collisions();
    let r2 = d2.ingest_src(&["--flatten", "--write-mode", "overwrite", "--jobs", "8"]);
    assert_eq!(serial, r2.outcomes());
    d2.assert_workspace(&[("x.txt", "from c")]);
}

// ---------------------------------------------------------------------------
// Selection and naming (SPEC §2, §6).

#[test]
fn prefix_puts_p_in_front_of_every_name() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("sub/b.txt", "beta");
    let r = d.ingest_src(&["--prefix", "inbox/2024"]);
    r.assert_code(0);
    r.assert_outcomes(&[
        ("inbox/2024/a.txt", "ingested"),
        ("inbox/2024/sub/b.txt", "ingested"),
    ]);
    // With --flatten, only the basename follows the prefix.
    let r = d.ingest_src(&["--prefix", "flat/", "--flatten"]);
    r.assert_outcomes(&[("flat/a.txt", "ingested"), ("flat/b.txt", "ingested")]);
    d.assert_workspace(&[
        ("flat/a.txt", "alpha"),
        ("flat/b.txt", "beta"),
        ("inbox/2024/a.txt", "alpha"),
        ("inbox/2024/sub/b.txt", "beta"),
    ]);
    // An invalid prefix is a usage error.
    d.ingest_src(&["--prefix", "../up"]).assert_code(2);
}

#[test]
fn max_depth_limits_the_levels_taken() {
    let d = Dir::new();
    d.create("top.txt", "1");
    d.create("a/mid.txt", "2");
    d.create("a/b/deep.txt", "3");
    assert_names(
        "depth 1",
        &["top.txt"],
        &selected(&d, &["--max-depth", "1"]),
    );
    assert_names(
        "depth 2",
        &["a/mid.txt", "top.txt"],
        &selected(&d, &["--max-depth", "2"]),
    );
    assert_names(
        "unlimited",
        &["a/b/deep.txt", "a/mid.txt", "top.txt"],
        &selected(&d, &[]),
    );
    let r = d.ingest_src(&["--max-depth", "2"]);
    r.assert_code(0);
    d.assert_workspace(&[("a/mid.txt", "2"), ("top.txt", "1")]);
}

#[test]
fn ext_filter_is_case_insensitive() {
    let d = Dir::new();
    for f in [
        "a.txt",
        "b.TXT",
        "c.pdf",
        "d.PDF",
        "e.md",
        "noext",
        "sub/f.Txt",
        "txt",
    ] {
        d.create(f, f);
    }
    let r = d.ingest_src(&["--ext", "txt,PDF"]);
    r.assert_code(0);
    r.assert_outcomes(&[
        ("a.txt", "ingested"),
        ("b.TXT", "ingested"),
        ("c.pdf", "ingested"),
        ("d.PDF", "ingested"),
        ("sub/f.Txt", "ingested"),
    ]);
    assert_names(
        "workspace",
        &["a.txt", "b.TXT", "c.pdf", "d.PDF", "sub/f.Txt"],
        &d.names(),
    );
}

fn glob_tree() -> Dir {
    let d = Dir::new();
    d.create("top.md", "t");
    d.create("top.txt", "t");
    d.create("docs/a.md", "a");
    d.create("docs/a.log", "l");
    d.create("docs/sub/b.md", "b");
    d.create("other/docs/c.md", "c");
    d.create("build/x.md", "x");
    d.create("other/build/y.md", "y");
    d
}

#[test]
fn include_glob_without_slash_matches_file_name_at_any_depth() {
    let d = glob_tree();
    let r = d.ingest_src(&["--include", "*.md"]);
    r.assert_code(0);
    let names: Vec<String> = r.outcomes().into_iter().map(|(n, _)| n).collect();
    assert_names(
        "--include *.md",
        &[
            "build/x.md",
            "docs/a.md",
            "docs/sub/b.md",
            "other/build/y.md",
            "other/docs/c.md",
            "top.md",
        ],
        &names,
    );
    assert_eq!(d.names(), names);
    // Repeatable: a file matching any include is taken.
    assert_names(
        "--include a.* --include top.txt",
        &["docs/a.log", "docs/a.md", "top.txt"],
        &selected(&d, &["--include", "a.*", "--include", "top.txt"]),
    );
}

/// Regression: path globs were built with globset's default, where `*`
/// crosses `/`, so `docs/*.md` also took `docs/sub/b.md`.
#[test]
fn include_glob_with_slash_matches_path_under_root() {
    let d = glob_tree();
    // `*` stays within one folder, as in git and rsync; `**` crosses folders.
    assert_names(
        "--include docs/*.md",
        &["docs/a.md"],
        &selected(&d, &["--include", "docs/*.md"]),
    );
    assert_names(
        "--include docs/**/*.md",
        &["docs/a.md", "docs/sub/b.md"],
        &selected(&d, &["--include", "docs/**/*.md"]),
    );
    assert_names(
        "--include **/docs/*.md",
        &["docs/a.md", "other/docs/c.md"],
        &selected(&d, &["--include", "**/docs/*.md"]),
    );
}

#[test]
fn exclude_glob_prunes_files_and_folders() {
    let d = glob_tree();
    // Without '/': a file or folder name at any depth.
    assert_names(
        "--exclude build --exclude *.log",
        &[
            "docs/a.md",
            "docs/sub/b.md",
            "other/docs/c.md",
            "top.md",
            "top.txt",
        ],
        &selected(&d, &["--exclude", "build", "--exclude", "*.log"]),
    );
    // With '/': the path under the root.
    assert_names(
        "--exclude docs/sub",
        &[
            "build/x.md",
            "docs/a.log",
            "docs/a.md",
            "other/build/y.md",
            "other/docs/c.md",
            "top.md",
            "top.txt",
        ],
        &selected(&d, &["--exclude", "docs/sub"]),
    );
    // Pruned, not filtered: a symlink loop inside an excluded folder is
    // never reached, so the run reports no failure.
    d.symlink("..", "build/loop");
    let r = d.ingest_src(&["--follow-links", "--exclude", "build", "--include", "*.md"]);
    r.assert_code(0);
    r.assert_outcomes(&[
        ("docs/a.md", "ingested"),
        ("docs/sub/b.md", "ingested"),
        ("other/docs/c.md", "ingested"),
        ("top.md", "ingested"),
    ]);
}

#[test]
fn hidden_files_and_folders_skipped_unless_hidden() {
    let d = Dir::new();
    d.create("a.txt", "a");
    d.create(".hidden.txt", "h");
    d.create(".git/config", "c");
    d.create("sub/.secret", "s");
    d.create("sub/b.txt", "b");
    let r = d.ingest_src(&[]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "ingested"), ("sub/b.txt", "ingested")]);
    let r = d.ingest_src(&["--hidden"]);
    r.assert_code(0);
    r.assert_outcomes(&[
        (".git/config", "ingested"),
        (".hidden.txt", "ingested"),
        ("a.txt", "unchanged"),
        ("sub/.secret", "ingested"),
        ("sub/b.txt", "unchanged"),
    ]);
    assert_names(
        "workspace",
        &[
            ".git/config",
            ".hidden.txt",
            "a.txt",
            "sub/.secret",
            "sub/b.txt",
        ],
        &d.names(),
    );
}

#[test]
fn temporary_files_always_skipped() {
    let d = Dir::new();
    let temps = [
        "a.part",
        "a.partial",
        "a.tmp",
        "a.crdownload",
        "foo~",
        ".x.swp",
        ".x.swo",
        "#x#",
        ".#x",
        "sub/b.txt.part",
        "sub/notes~",
    ];
    for t in temps {
        d.create(t, "temp");
    }
    d.create("keep.txt", "k");
    d.create(".dot", "d");
    d.create("sub/b.txt", "b");
    // Even with --hidden, and even when an include names them.
    let r = d.ingest_src(&["--hidden"]);
    r.assert_code(0);
    r.assert_outcomes(&[
        (".dot", "ingested"),
        ("keep.txt", "ingested"),
        ("sub/b.txt", "ingested"),
    ]);
    assert_names(
        "--hidden --include *",
        &[".dot", "keep.txt", "sub/b.txt"],
        &selected(&d, &["--hidden", "--include", "*"]),
    );
    d.assert_workspace(&[(".dot", "d"), ("keep.txt", "k"), ("sub/b.txt", "b")]);
}

// ---------------------------------------------------------------------------
// Metadata sidecars (SPEC §5).

#[test]
fn sidecar_metadata_is_stored_with_its_file() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("a.txt.meta.json", r#"{"author":"ada","n":1,"tags":["x"]}"#);
    d.create("b.txt", "beta");
    let r = d.ingest_src(&[]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "ingested"), ("b.txt", "ingested")]);
    let files = d.files_by_name();
    assert_eq!(files.keys().collect::<Vec<_>>(), ["a.txt", "b.txt"]);
    assert_eq!(
        files["a.txt"]["meta"],
        json!({"author":"ada","n":1,"tags":["x"]})
    );
    assert_eq!(files["b.txt"]["meta"], Value::Null);
    d.assert_workspace(&[("a.txt", "alpha"), ("b.txt", "beta")]);
}

fn assert_invalid_meta(sidecar: &[u8]) {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("a.txt.meta.json", sidecar);
    d.create("b.txt", "beta");
    let r = d.ingest_src(&[]);
    r.assert_code(1);
    r.assert_outcomes(&[("a.txt", "failed invalid_meta"), ("b.txt", "ingested")]);
    d.assert_workspace(&[("b.txt", "beta")]);
}

#[test]
fn sidecar_invalid_json_fails_invalid_meta() {
    assert_invalid_meta(br#"{"author": "ada""#);
}

#[test]
fn sidecar_non_object_fails_invalid_meta() {
    assert_invalid_meta(b"[1, 2, 3]");
    assert_invalid_meta(br#""just a string""#);
    assert_invalid_meta(b"null");
}

#[test]
fn sidecar_over_1_mib_fails_invalid_meta() {
    // A valid JSON object, 2 MiB long.
    let mut s = b"{\"k\":\"".to_vec();
    s.resize(2 * 1024 * 1024, b'x');
    s.extend_from_slice(b"\"}");
    assert_invalid_meta(&s);
}

#[test]
fn sidecar_without_file_fails_orphan_meta() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("ghost.txt.meta.json", r#"{"k":1}"#);
    d.create("sub/gone.pdf.meta.json", r#"{"k":2}"#);
    let r = d.ingest_src(&[]);
    r.assert_code(1);
    r.assert_outcomes(&[
        ("a.txt", "ingested"),
        ("ghost.txt.meta.json", "failed orphan_meta"),
        ("sub/gone.pdf.meta.json", "failed orphan_meta"),
    ]);
    d.assert_workspace(&[("a.txt", "alpha")]);
}

#[test]
fn changed_sidecar_is_overwritten_same_sidecar_unchanged() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("a.txt.meta.json", r#"{"v":1}"#);
    d.ingest_src(&[]).assert_code(0);
    // The same sidecar, even reformatted, is the same metadata.
    d.create("a.txt.meta.json", "{ \"v\" : 1 }\n");
    let r = d.ingest_src(&["--write-mode", "overwrite"]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "unchanged")]);
    // Different metadata is a different file, content unchanged or not.
    d.create("a.txt.meta.json", r#"{"v":2}"#);
    let r = d.ingest_src(&["--write-mode", "keep"]);
    r.assert_outcomes(&[("a.txt", "kept")]);
    assert_eq!(d.files_by_name()["a.txt"]["meta"], json!({"v":1}));
    let r = d.ingest_src(&["--write-mode", "overwrite"]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "overwritten")]);
    assert_eq!(d.files_by_name()["a.txt"]["meta"], json!({"v":2}));
    let r = d.ingest_src(&["--write-mode", "overwrite"]);
    r.assert_outcomes(&[("a.txt", "unchanged")]);
    d.assert_workspace(&[("a.txt", "alpha")]);
    assert_eq!(history(&d, "a.txt").len(), 2);
}

// ---------------------------------------------------------------------------
// Symlinks and special files (SPEC §6).

#[test]
fn symlink_loop_with_follow_links_is_reported_and_run_finishes() {
    let d = Dir::new();
    d.create("a/file.txt", "f");
    d.symlink("..", "a/loop");
    d.symlink("self", "a/self");
    d.create("b.txt", "b");
    let r = d.ingest_src(&["--follow-links"]);
    r.assert_code(1);
    r.assert_outcomes(&[
        ("a/file.txt", "ingested"),
        ("a/loop", "failed read_error"),
        ("a/self", "failed read_error"),
        ("b.txt", "ingested"),
    ]);
    d.assert_workspace(&[("a/file.txt", "f"), ("b.txt", "b")]);
}

#[test]
fn symlinks_not_followed_without_follow_links() {
    let d = Dir::new();
    d.create("real.txt", "r");
    d.create("sub/x.txt", "x");
    d.symlink("real.txt", "link.txt");
    d.symlink("sub", "dirlink");
    d.symlink("nowhere", "dangling");
    let r = d.ingest_src(&[]);
    r.assert_code(0);
    r.assert_outcomes(&[("real.txt", "ingested"), ("sub/x.txt", "ingested")]);
    let mut skipped: Vec<String> = r
        .skipped
        .iter()
        .map(|s| {
            let p = str_field(s, "source");
            p.rsplit('/').next().unwrap_or_default().to_owned()
        })
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        ["dangling", "dirlink", "link.txt"],
        "{}",
        r.context()
    );
    d.assert_workspace(&[("real.txt", "r"), ("sub/x.txt", "x")]);
    // Followed, the links are files and folders like any other.
    let d2 = Dir::new();
    d2.create("real.txt", "r");
    d2.create("sub/x.txt", "x");
    d2.symlink("real.txt", "link.txt");
    d2.symlink("sub", "dirlink");
    let r = d2.ingest_src(&["-L"]);
    r.assert_code(0);
    d2.assert_workspace(&[
        ("dirlink/x.txt", "x"),
        ("link.txt", "r"),
        ("real.txt", "r"),
        ("sub/x.txt", "x"),
    ]);
}

#[test]
fn fifo_is_skipped_and_never_opened() {
    let d = Dir::new();
    d.create("a.txt", "a");
    d.fifo("pipe");
    d.symlink("pipe", "pipelink");
    d.create("z.txt", "z");
    // Opening the FIFO for reading would block until a writer comes: the
    // command timeout (common::dir::TIMEOUT) turns a hang into a failure (exit -1).
    let r = d.ingest_src(&[]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "ingested"), ("z.txt", "ingested")]);
    assert!(
        r.skipped
            .iter()
            .any(|s| s["source"].as_str().is_some_and(|p| p.ends_with("/pipe"))),
        "the FIFO is reported as skipped{}",
        r.context()
    );
    // Followed through a link, or named on the command line: still skipped.
    let r = d.ingest_src(&["--follow-links"]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "unchanged"), ("z.txt", "unchanged")]);
    let r = d.ingest(&["src/pipe", "src/a.txt"]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "unchanged")]);
    d.assert_workspace(&[("a.txt", "a"), ("z.txt", "z")]);
}

// ---------------------------------------------------------------------------
// --dry-run.

/// What a dry run must leave byte-for-byte alone: every file under the
/// workspace folder (`intake.db`, its `-wal` journal if any, every blob and
/// folder), by BLAKE3 of its content. Only SQLite's `-shm` is left out: it
/// is the WAL's shared-memory index, rebuilt by any reader, not data.
const SNAPSHOT_IGNORE: &[&str] = &["-shm"];

#[test]
fn dry_run_predicts_the_real_run_and_changes_nothing() {
    let d = Dir::new();
    d.create("a.txt", "v1");
    d.create("b.txt", "same");
    d.create("big.bin", big(b'1'));
    d.create("m.txt", "m");
    d.create("m.txt.meta.json", r#"{"v":1}"#);
    d.ingest_src(&[]).assert_code(0);
    assert_eq!(d.blob_files().len(), 1);

    d.create("a.txt", "v2");
    d.create("big.bin", big(b'2'));
    d.create("c.txt", "new");
    d.create("new.bin", big(b'3'));
    d.create("m.txt.meta.json", r#"{"v":2}"#);
    d.create("orphan.meta.json", "{}");
    let before = d.snapshot_ws(SNAPSHOT_IGNORE);
    assert!(before.contains_key("intake.db"), "{before:?}");

    let dry = d.ingest_src(&["--dry-run", "--write-mode", "overwrite"]);
    dry.assert_code(1);
    let expected = [
        ("a.txt", "overwritten"),
        ("b.txt", "unchanged"),
        ("big.bin", "overwritten"),
        ("c.txt", "ingested"),
        ("m.txt", "overwritten"),
        ("new.bin", "ingested"),
        ("orphan.meta.json", "failed orphan_meta"),
    ];
    dry.assert_outcomes(&expected);
    assert!(
        dry.files.iter().all(|f| f["dry_run"] == true),
        "{}",
        dry.context()
    );
    let after = d.snapshot_ws(SNAPSHOT_IGNORE);
    let fmt = |m: &std::collections::BTreeMap<String, String>| -> Vec<String> {
        m.iter().map(|(k, v)| format!("{k} {v}")).collect()
    };
    common::dir::assert_lines(
        "workspace files after the dry run",
        &fmt(&before),
        &fmt(&after),
        "",
    );

    let real = d.ingest_src(&["--write-mode", "overwrite"]);
    real.assert_code(1);
    assert_eq!(dry.outcomes(), real.outcomes());
    // The dry run's hashes and sizes are the real ones too.
    for (df, rf) in dry.files.iter().zip(&real.files) {
        assert_eq!(df["blake3"], rf["blake3"], "{df} vs {rf}");
        assert_eq!(df["size"], rf["size"], "{df} vs {rf}");
    }
    d.assert_workspace(&[
        ("a.txt", "v2"),
        ("b.txt", "same"),
        ("big.bin", &String::from_utf8(big(b'2')).expect("ascii")),
        ("c.txt", "new"),
        ("m.txt", "m"),
        ("new.bin", &String::from_utf8(big(b'3')).expect("ascii")),
    ]);
}

#[test]
fn dry_run_on_missing_workspace_does_not_create_it() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("sub/b.txt", "beta");
    // A scratch workspace may be used: it must be in TMPDIR and gone after.
    let tmpdir = d.root().join("tmpdir");
    fs::create_dir(&tmpdir).expect("mkdir");
    let r = Run::from(
        d.cmd()
            .env("TMPDIR", &tmpdir)
            .args(["--json", "ingest", "--dry-run", "src"]),
        true,
    );
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "ingested"), ("sub/b.txt", "ingested")]);
    assert!(!d.ws().exists(), "the dry run created the workspace");
    let left: Vec<_> = fs::read_dir(&tmpdir).expect("ls").collect();
    assert!(left.is_empty(), "the dry run left {left:?} in TMPDIR");
    assert_eq!(
        d.run(&["session", "list"]).code,
        2,
        "no workspace, no sessions"
    );
}

// ---------------------------------------------------------------------------
// The quick check: size and mtime are trusted unless --checksum.

#[test]
fn rerun_trusts_size_and_mtime_without_reading() {
    let d = Dir::new();
    let a = d.create("a.txt", "hello world");
    d.create("b.txt", "other");
    d.ingest_src(&[]).assert_code(0);
    let mtime = fs::metadata(&a).expect("stat").modified().expect("mtime");

    // Same length, other bytes, old mtime: only reading could tell.
    fs::write(&a, "HELLO WORLD").expect("write");
    fs::File::options()
        .write(true)
        .open(&a)
        .and_then(|f| f.set_modified(mtime))
        .expect("restoring the mtime");
    assert_eq!(
        fs::metadata(&a).expect("stat").modified().expect("mtime"),
        mtime
    );

    let r = d.ingest_src(&["--write-mode", "overwrite"]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "unchanged"), ("b.txt", "unchanged")]);
    assert_eq!(r.file("a.txt")["blake3"], hex(b"hello world"));
    d.assert_workspace(&[("a.txt", "hello world"), ("b.txt", "other")]);

    // --checksum reads everything and sees the change.
    let r = d.ingest_src(&["--write-mode", "overwrite", "--checksum"]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "overwritten"), ("b.txt", "unchanged")]);
    assert_eq!(r.file("a.txt")["blake3"], hex(b"HELLO WORLD"));
    d.assert_workspace(&[("a.txt", "HELLO WORLD"), ("b.txt", "other")]);
}

#[test]
fn rerun_reads_a_file_whose_mtime_changed() {
    let d = Dir::new();
    let a = d.create("a.txt", "hello world");
    d.ingest_src(&[]).assert_code(0);
    let mtime = fs::metadata(&a).expect("stat").modified().expect("mtime");
    fs::write(&a, "HELLO WORLD").expect("write");
    fs::File::options()
        .write(true)
        .open(&a)
        .and_then(|f| f.set_modified(mtime + Duration::from_secs(5)))
        .expect("setting the mtime");
    let r = d.ingest_src(&["--write-mode", "overwrite"]);
    r.assert_outcomes(&[("a.txt", "overwritten")]);
    d.assert_workspace(&[("a.txt", "HELLO WORLD")]);
}

// ---------------------------------------------------------------------------
// --json (SPEC §9).

#[test]
fn json_lines_have_the_stable_keys_and_summary_counts_add_up() {
    let d = Dir::new();
    d.create("a.txt", "v1");
    d.create("b.txt", "bb");
    d.ingest_src(&[]).assert_code(0);
    d.create("a.txt", "v2!");
    d.create("c.txt", "ccc");
    d.create("ghost.meta.json", "{}");
    let r = d.ingest_src(&["--write-mode", "overwrite"]);
    r.assert_code(1);
    r.assert_outcomes(&[
        ("a.txt", "overwritten"),
        ("b.txt", "unchanged"),
        ("c.txt", "ingested"),
        ("ghost.meta.json", "failed orphan_meta"),
    ]);
    // Every stdout line is a JSON object (common::dir::Run::from checks that).
    assert_eq!(r.lines.len(), r.stdout.lines().count());
    let file_keys = [
        "blake3",
        "name",
        "outcome",
        "reason",
        "session_id",
        "size",
        "source",
        "type",
    ];
    for f in &r.files {
        let k = keys(f);
        for want in file_keys {
            assert!(k.iter().any(|x| x == want), "{want} missing in {f}");
        }
    }
    let s = r.summary();
    let k = keys(s);
    for want in [
        "bytes",
        "counts",
        "elapsed_ms",
        "failed_files",
        "finished_files",
        "session_id",
        "type",
    ] {
        assert!(k.iter().any(|x| x == want), "{want} missing in {s}");
    }
    assert_eq!(
        keys(&s["counts"]),
        [
            "deleted",
            "failed",
            "ingested",
            "kept",
            "overwritten",
            "refused",
            "unchanged"
        ]
    );
    assert_eq!(
        s["counts"],
        json!({"ingested":1,"overwritten":1,"unchanged":1,"kept":0,"deleted":0,"failed":1,"refused":0})
    );
    assert_eq!(s["finished_files"], 3);
    assert_eq!(s["failed_files"], 1);
    // Bytes of the finished files: 3 + 2 + 3.
    assert_eq!(s["bytes"], 8);
    assert!(s["elapsed_ms"].is_u64(), "{s}");
    let id = str_field(s, "session_id");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert!(r.files.iter().all(|f| f["session_id"] == id.as_str()));
    let failed = r.file("ghost.meta.json");
    assert_eq!(failed["size"], Value::Null);
    assert_eq!(failed["blake3"], Value::Null);
}

// ---------------------------------------------------------------------------
// Sessions (SPEC §1, §4, §9).

#[test]
fn session_create_json_has_the_session_fields() {
    let d = Dir::new();
    let s = create_session(&d, &["--write-mode", "overwrite", "--ttl", "15m"]);
    assert_eq!(
        keys(&s),
        [
            "created_at",
            "created_by",
            "expires_at",
            "session_id",
            "write_mode"
        ]
    );
    assert_eq!(
        keys(&s["created_by"]),
        ["family_name", "given_name", "user_id"]
    );
    assert_eq!(s["created_by"]["given_name"], "Ada");
    assert_eq!(s["created_by"]["family_name"], "Lovelace");
    assert!(uuid::Uuid::parse_str(&str_field(&s["created_by"], "user_id")).is_ok());
    assert!(uuid::Uuid::parse_str(&str_field(&s, "session_id")).is_ok());
    assert_eq!(s["write_mode"], "OVERWRITE");
    let created = ts(&s["created_at"]);
    assert!(str_field(&s, "created_at").ends_with('Z'), "UTC: {s}");
    assert_eq!(
        ts(&s["expires_at"]) - created,
        chrono::Duration::minutes(15)
    );
    assert!((Utc::now() - created).num_seconds().abs() < 60, "{s}");

    let s = create_session(&d, &["--no-expiry"]);
    assert_eq!(s["expires_at"], Value::Null);
    assert_eq!(s["write_mode"], "KEEP", "the default mode");
    let s = create_session(&d, &[]);
    assert_eq!(
        ts(&s["expires_at"]) - ts(&s["created_at"]),
        chrono::Duration::hours(24),
        "the default lifetime"
    );
    // The same user, the same id.
    assert_eq!(
        s["created_by"]["user_id"],
        create_session(&d, &[])["created_by"]["user_id"]
    );
    // --ttl and --no-expiry together make no sense.
    d.run(&["session", "create", "--ttl", "1h", "--no-expiry"])
        .assert_code(2);
}

#[test]
fn session_list_show_close_report_status_and_counts() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("b.txt", "beta");
    d.create("ghost.meta.json", "{}");
    let s1 = create_session(&d, &["--write-mode", "fail", "--no-expiry"]);
    let id1 = str_field(&s1, "session_id");
    let r = d.ingest_src(&["--session", &id1]);
    r.assert_code(1);
    assert_eq!(r.summary()["session_id"], id1.as_str());

    // Regression: `session create` printed nanoseconds while the index
    // keeps microseconds, so `show` disagreed with `create` on
    // created_at/expires_at for the same session.
    let shown = show_session(&d, &id1);
    for k in [
        "created_at",
        "created_by",
        "expires_at",
        "session_id",
        "write_mode",
    ] {
        assert_eq!(shown[k], s1[k], "{k}");
    }
    // --session leaves the session open.
    assert_eq!(shown["status"], "OPEN");
    assert_eq!(shown["ingestion_status"]["finished_files"], 2);
    assert_eq!(shown["ingestion_status"]["failed_files"], 1);

    // A run without --session creates its own and closes it at the end.
    d.create("c.txt", "gamma");
    let r = d.ingest_src(&[]);
    let id2 = str_field(r.summary(), "session_id");
    assert_ne!(id1, id2);
    let shown2 = show_session(&d, &id2);
    assert_eq!(shown2["status"], "CLOSED");
    assert_eq!(shown2["write_mode"], "KEEP");
    assert_eq!(shown2["ingestion_status"]["finished_files"], 3);
    assert_eq!(shown2["ingestion_status"]["failed_files"], 1);

    let r = d.run(&["--json", "session", "close", &id1]);
    r.assert_code(0);
    assert_eq!(show_session(&d, &id1)["status"], "CLOSED");

    let list = d.run(&["--json", "session", "list"]);
    list.assert_code(0);
    let mut got: Vec<String> = list
        .lines
        .iter()
        .map(|v| format!("{} {}", str_field(v, "session_id"), str_field(v, "status")))
        .collect();
    got.sort();
    let mut want = vec![format!("{id1} CLOSED"), format!("{id2} CLOSED")];
    want.sort();
    common::dir::assert_lines("session list", &want, &got, &list.context());
    for v in &list.lines {
        assert!(v["ingestion_status"]["finished_files"].is_u64(), "{v}");
    }
}

/// A FAIL session over a re-run: one file of each of conflict, unchanged,
/// ingested and orphan_meta. Returns the dir, the session id and the lines of
/// `session show ID --files --json` (session first).
fn session_with_files() -> (Dir, String, Vec<Value>) {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("b.txt", "beta");
    d.ingest_src(&[]).assert_code(0);
    d.create("a.txt", "changed");
    d.create("c.txt", "gamma");
    d.create("ghost.meta.json", "{}");
    let id = str_field(&create_session(&d, &["--write-mode", "fail"]), "session_id");
    d.ingest_src(&["--session", &id]).assert_code(1);
    let r = d.run(&["--json", "session", "show", &id, "--files"]);
    r.assert_code(0);
    assert_eq!(r.lines[0]["session_id"], id.as_str(), "{}", r.context());
    for f in &r.lines[1..] {
        assert_eq!(f["type"], "file", "{f}");
        assert_eq!(f["session_id"], id.as_str(), "{f}");
    }
    (d, id, r.lines)
}

fn file_line(f: &Value) -> String {
    match f["reason"].as_str() {
        Some(reason) => format!("{} {} {reason}", str_field(f, "name"), f["outcome"]),
        None => format!("{} {}", str_field(f, "name"), f["outcome"]),
    }
}

/// `--files` lists every file the session ingested, overwrote, kept or
/// failed; `unchanged` files are counted but not listed (README: a re-run
/// over a million unchanged files writes no million rows).
#[test]
fn session_show_files_lists_per_file_outcomes() {
    let (_d, _id, lines) = session_with_files();
    let status = &lines[0]["ingestion_status"];
    assert_eq!(status["ingested"], 1, "{status}");
    assert_eq!(status["unchanged"], 1, "{status}");
    assert_eq!(status["finished_files"], 2, "{status}");
    assert_eq!(status["failed_files"], 2, "{status}");
    let mut got: Vec<String> = lines[1..].iter().map(file_line).collect();
    got.sort();
    let want = [
        r#"a.txt "failed" conflict"#,
        r#"c.txt "ingested""#,
        r#"ghost.meta.json "failed" orphan_meta"#,
    ]
    .map(String::from);
    common::dir::assert_lines("session show --files", &want, &got, "");
}

// ---------------------------------------------------------------------------
// files history / cat --version, verify, gc (SPEC §3, §7, §9).

#[test]
fn files_history_is_newest_first_and_cat_version_gives_old_content() {
    let d = Dir::new();
    d.create("a.txt", "one");
    d.ingest_src(&[]).assert_code(0);
    d.create("a.txt", "two!");
    d.ingest_src(&["--write-mode", "overwrite"]).assert_code(0);
    let h = history(&d, "a.txt");
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0]["blake3"], hex(b"two!"));
    assert_eq!(h[0]["version"], 2);
    assert_eq!(h[0]["replaced_at"], Value::Null);
    assert_eq!(h[1]["blake3"], hex(b"one"));
    assert_eq!(h[1]["version"], 1);
    assert!(h[1]["replaced_at"].is_string(), "{}", h[1]);
    assert!(ts(&h[0]["ingested_at"]) >= ts(&h[1]["ingested_at"]));
    let v1 = d
        .cmd()
        .args(["files", "cat", "a.txt", "--version", "1"])
        .output()
        .expect("cat");
    assert_eq!(v1.status.code(), Some(0));
    assert_eq!(v1.stdout, b"one");
    assert_eq!(d.cat("a.txt"), b"two!");
    // Unknown names and versions are errors, not empty output.
    let r = d.run(&["files", "cat", "a.txt", "--version", "9"]);
    assert_ne!(r.code, 0);
    let r = d.run(&["files", "cat", "nope.txt"]);
    assert_ne!(r.code, 0);
}

/// Regression: `files cat --version N` clashed with the program's own
/// `--version` (propagated to every subcommand) and clap panicked (exit 101)
/// on every `files cat`. Every subcommand's help must build.
#[test]
fn every_subcommand_parses_including_files_cat_version() {
    let d = Dir::new();
    for sub in [
        &["init"][..],
        &["ingest"],
        &["watch"],
        &["session"],
        &["session", "create"],
        &["session", "list"],
        &["session", "show"],
        &["session", "close"],
        &["files"],
        &["files", "list"],
        &["files", "show"],
        &["files", "cat"],
        &["files", "history"],
        &["verify"],
        &["gc"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let r = d.run(&args);
        r.assert_code(0);
        assert!(r.stdout.contains("Usage:"), "{sub:?}{}", r.context());
    }
    let r = d.run(&["files", "cat", "--help"]);
    assert!(r.stdout.contains("--version <VERSION>"), "{}", r.context());
    let r = d
        .bare_cmd()
        .arg("--version")
        .output()
        .expect("intake --version");
    assert_eq!(r.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&r.stdout).starts_with("intake "));
}

#[test]
fn verify_passes_when_healthy_and_fails_on_a_corrupt_blob() {
    let d = Dir::new();
    d.create("big1.bin", big(b'a'));
    d.create("big2.bin", big(b'b'));
    d.create("small.txt", "small");
    d.ingest_src(&[]).assert_code(0);
    let r = d.run(&["--json", "verify"]);
    r.assert_code(0);
    let blobs = d.blob_files();
    assert_eq!(blobs.len(), 2, "one file per large blob: {blobs:?}");
    let target = blobs
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy() == hex(&big(b'a')))
        })
        .expect("big1.bin's blob is named by its BLAKE3")
        .clone();
    let mut data = fs::read(&target).expect("read blob");
    data[10] ^= 0xff;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&target, data).expect("corrupting the blob");
    let r = d.run(&["--json", "verify"]);
    r.assert_code(1);
    let defects: Vec<&Value> = r.lines.iter().filter(|v| v["type"] == "defect").collect();
    assert_eq!(defects.len(), 1, "{}", r.context());
    assert_eq!(defects[0]["name"], "big1.bin");
}

#[test]
fn verify_fails_on_a_missing_blob() {
    let d = Dir::new();
    d.create("big1.bin", big(b'a'));
    d.create("big2.bin", big(b'b'));
    d.ingest_src(&[]).assert_code(0);
    d.run(&["verify"]).assert_code(0);
    let blobs = d.blob_files();
    assert_eq!(blobs.len(), 2);
    fs::remove_file(&blobs[0]).expect("deleting a blob");
    let r = d.run(&["--json", "verify"]);
    r.assert_code(1);
    let defects: Vec<&Value> = r.lines.iter().filter(|v| v["type"] == "defect").collect();
    assert_eq!(defects.len(), 1, "{}", r.context());
}

#[test]
fn gc_with_zero_retention_removes_replaced_versions() {
    let d = Dir::new();
    d.create("big.bin", big(b'1'));
    d.ingest_src(&[]).assert_code(0);
    d.create("big.bin", big(b'2'));
    d.ingest_src(&["--write-mode", "overwrite"]).assert_code(0);
    assert_eq!(history(&d, "big.bin").len(), 2);
    assert_eq!(d.blob_files().len(), 2);
    // The default retention keeps the old version recoverable.
    d.run(&["gc"]).assert_code(0);
    assert_eq!(history(&d, "big.bin").len(), 2);
    // Zero retention drops the old version at once; its young blob file
    // stays for the grace period (a running ingest might be about to use it).
    let r = d.run(&["--json", "gc", "--retention", "0s"]);
    r.assert_code(0);
    assert_eq!(r.lines[0]["versions"], 1, "{}", r.context());
    let h = history(&d, "big.bin");
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["blake3"], hex(&big(b'2')));
    assert_eq!(d.blob_files().len(), 2);
    d.run(&["verify"]).assert_code(0);
    // With no grace, the file goes too.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let r = d.run(&["--json", "gc", "--retention", "0s", "--grace", "0s"]);
    r.assert_code(0);
    assert_eq!(r.lines[0]["orphans"], 1, "{}", r.context());
    let blobs = d.blob_files();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert!(blobs[0].ends_with(hex(&big(b'2'))));
    assert_eq!(d.cat("big.bin"), big(b'2'));
    d.run(&["verify"]).assert_code(0);
}

// ---------------------------------------------------------------------------
// Paths on the command line (SPEC §2).

#[test]
fn file_given_directly_is_named_by_its_basename() {
    let d = Dir::new();
    d.create("deep/dir/f.txt", "f");
    d.create("deep/dir/f.txt.meta.json", r#"{"k":"v"}"#);
    d.create("g.txt", "g");
    let r = d.ingest(&["src/deep/dir/f.txt", "src/g.txt"]);
    r.assert_code(0);
    r.assert_outcomes(&[("f.txt", "ingested"), ("g.txt", "ingested")]);
    assert_eq!(d.files_by_name()["f.txt"]["meta"], json!({"k":"v"}));
    d.assert_workspace(&[("f.txt", "f"), ("g.txt", "g")]);
    // Roots in argument order, each folder named relative to itself.
    let r = d.ingest(&["src/deep", "src/g.txt"]);
    r.assert_outcomes(&[("dir/f.txt", "ingested"), ("g.txt", "unchanged")]);
}

/// A source that does not exist is a usage error: exit 2, the first such
/// path named, nothing created (no workspace, no session), nothing ingested.
#[test]
fn missing_path_argument_is_a_usage_error_and_creates_nothing() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    for (args, missing) in [
        (
            &["src/a.txt", "src/nope.txt", "src/no-dir"][..],
            "src/nope.txt",
        ),
        (&["--dry-run", "src/no-dir"], "src/no-dir"),
    ] {
        let r = d.ingest(args);
        r.assert_code(2);
        assert!(r.files.is_empty(), "{}", r.context());
        assert_eq!(
            r.stderr,
            format!("intake: error: {missing}: no such file or folder; check the path\n")
        );
        assert!(!d.ws().exists(), "the workspace was created{}", r.context());
    }
    // Once every source is there, the run goes ahead.
    let r = d.ingest(&["src/a.txt"]);
    r.assert_code(0);
    d.assert_workspace(&[("a.txt", "alpha")]);
}

#[test]
fn workspace_inside_source_is_not_ingested() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("big.bin", big(b'x'));
    let ingest = || {
        Run::from(
            d.bare_cmd()
                .args(["--workspace", "src/ws", "--json", "ingest", "src"]),
            true,
        )
    };
    let r = ingest();
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "ingested"), ("big.bin", "ingested")]);
    // Second run: the workspace now holds an index and a blob file.
    let r = ingest();
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "unchanged"), ("big.bin", "unchanged")]);
    let list = Run::from(
        d.bare_cmd()
            .args(["--workspace", "src/ws", "--json", "files", "list"]),
        true,
    );
    let names: Vec<String> = list.lines.iter().map(|v| str_field(v, "name")).collect();
    assert_eq!(names, ["a.txt", "big.bin"]);
}

#[test]
fn source_equal_to_workspace_ingests_nothing() {
    let d = Dir::new();
    d.create("a.txt", "alpha");
    d.create("big.bin", big(b'x'));
    d.ingest_src(&[]).assert_code(0);
    let r = d.ingest(&["ws"]);
    r.assert_code(0);
    r.assert_outcomes(&[]);
    assert_eq!(r.summary()["finished_files"], 0);
    assert_eq!(r.skipped.len(), 1, "{}", r.context());
    assert_eq!(d.names(), ["a.txt", "big.bin"]);
    // The same through another spelling of the path.
    let r = d.ingest(&["./src/../ws/"]);
    r.assert_outcomes(&[]);
    assert_eq!(d.names(), ["a.txt", "big.bin"]);
}

// ---------------------------------------------------------------------------
// Names (SPEC §2).

#[test]
fn non_utf8_file_name_fails_invalid_name() {
    let d = Dir::new();
    d.create_raw(b"bad\xff.txt", "bad");
    d.create("good.txt", "good");
    let r = d.ingest_src(&[]);
    r.assert_code(1);
    r.assert_outcomes(&[
        ("bad\u{FFFD}.txt", "failed invalid_name"),
        ("good.txt", "ingested"),
    ]);
    d.assert_workspace(&[("good.txt", "good")]);
}

#[test]
fn control_characters_in_name_fail_invalid_name() {
    let d = Dir::new();
    d.create("new\nline.txt", "n");
    d.create("ok.txt", "ok");
    d.create("tab\there.txt", "t");
    let r = d.ingest_src(&[]);
    r.assert_code(1);
    r.assert_outcomes(&[
        ("new\nline.txt", "failed invalid_name"),
        ("ok.txt", "ingested"),
        ("tab\there.txt", "failed invalid_name"),
    ]);
    d.assert_workspace(&[("ok.txt", "ok")]);
}

#[test]
fn decomposed_file_name_is_stored_nfc() {
    let d = Dir::new();
    d.create("cafe\u{301}.txt", "nfd");
    let r = d.ingest_src(&[]);
    r.assert_code(0);
    r.assert_outcomes(&[("caf\u{e9}.txt", "ingested")]);
    d.assert_workspace(&[("caf\u{e9}.txt", "nfd")]);
}

// ---------------------------------------------------------------------------
// Interruption.

#[test]
fn sigint_finishes_files_in_flight_closes_the_session_and_exits_130() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command as StdCommand, Stdio};

    let d = Dir::new();
    const N: usize = 20_000;
    for i in 0..N {
        d.create(&format!("d{:03}/f{i:05}.txt", i / 100), format!("{i}"));
    }
    let mut child = StdCommand::new(env!("CARGO_BIN_EXE_intake"))
        .current_dir(d.root())
        .env_remove("INTAKE_WORKSPACE")
        .env("INTAKE_USER", "Ada Lovelace")
        .args(["--workspace", "ws", "--json", "ingest", "src"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting intake");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen: Vec<Value> = Vec::new();
    // Interrupt once the run is well under way.
    while seen.len() < 100 {
        let line = lines.next().expect("a line").expect("utf-8");
        seen.push(serde_json::from_str(&line).expect("json"));
    }
    // SAFETY: kill(2) with a live child's pid and a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    for line in lines {
        seen.push(serde_json::from_str(&line.expect("utf-8")).expect("json"));
    }
    let status = child.wait().expect("waiting for intake");
    assert_eq!(status.code(), Some(130), "{status:?}");

    let files: Vec<&Value> = seen.iter().filter(|v| v["type"] == "file").collect();
    let summary = seen.last().expect("a summary");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["counts"]["ingested"], files.len());
    assert!(files.iter().all(|f| f["outcome"] == "ingested"));
    assert!(files.len() < N, "the run finished before the signal");
    // Exactly what was reported is in the workspace, and it is sound.
    assert_eq!(d.names().len(), files.len());
    d.run(&["verify"]).assert_code(0);
    let sid = summary["session_id"].as_str().expect("session id");
    let show = d.run(&["--json", "session", "show", sid]);
    assert_eq!(show.lines[0]["status"], "CLOSED", "{}", show.context());
    // The next run picks up the rest.
    let r = d.ingest_src(&[]);
    r.assert_code(0);
    assert_eq!(r.summary()["counts"]["unchanged"], files.len());
    assert_eq!(r.summary()["counts"]["ingested"], N - files.len());
}

/// Log lines on a terminal are coloured, unless `NO_COLOR` is set to
/// anything but the empty string (no-color.org). `script` (util-linux)
/// gives the command a terminal; the warning comes from a config file that
/// does not parse.
#[test]
fn no_color_turns_off_colour_on_a_terminal() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` (util-linux) to give intake a terminal");
        return;
    }
    let d = Dir::new();
    let config = d.root().join("config/intake");
    fs::create_dir_all(&config).unwrap();
    fs::write(config.join("config.toml"), "user = [").unwrap();
    let run = |no_color: Option<&str>| -> String {
        let command = format!(
            "{} --workspace {} session create",
            env!("CARGO_BIN_EXE_intake"),
            d.ws().display()
        );
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &command, "/dev/null"])
            .current_dir(d.root())
            .env("XDG_CONFIG_HOME", d.root().join("config"))
            .env_remove("INTAKE_USER")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = run(None);
    assert!(coloured.contains("ignoring"), "{coloured:?}");
    assert!(coloured.contains("\x1b["), "{coloured:?}");
    let plain = run(Some("1"));
    assert!(plain.contains("ignoring"), "{plain:?}");
    assert!(!plain.contains("\x1b["), "{plain:?}");
    // Set but empty: as if unset.
    assert!(run(Some("")).contains("\x1b["));
}

/// Shell completions and the manual page come from the same definitions
/// as the parser: every command is in them, and no workspace is needed.
#[test]
fn completions_and_man_page_name_every_command() {
    let d = Dir::new();
    let commands = [
        "init", "ingest", "watch", "session", "files", "verify", "gc",
    ];
    for (shell, marker) in [
        ("bash", "complete -F _intake"),
        ("zsh", "#compdef intake"),
        ("fish", "complete -c intake"),
    ] {
        let r = Run::from(d.bare_cmd().args(["completions", shell]), false);
        r.assert_code(0);
        assert!(r.stdout.contains(marker), "{shell}{}", r.context());
        for c in commands {
            assert!(r.stdout.contains(c), "{shell}: {c}{}", r.context());
        }
        assert!(!d.ws().exists());
    }
    let r = Run::from(d.bare_cmd().arg("man"), false);
    r.assert_code(0);
    assert!(r.stdout.contains(".TH intake 1"), "{}", r.context());
    for c in commands {
        assert!(
            r.stdout.contains(&format!("intake\\-{c}")),
            "{c}{}",
            r.context()
        );
    }
    let r = Run::from(d.bare_cmd().args(["completions", "nosh"]), false);
    r.assert_code(2);
}
