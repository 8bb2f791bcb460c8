//! History you can act on (SPEC §10), end to end through the real binary:
//! `files rm`, `files restore`, `session revert`, `--at`, and `export`,
//! with exact outcomes, JSON lines, exit codes, workspace and folder
//! contents.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::dir::{Dir, Run, str_field};
use serde_json::Value;

fn hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// `intake --json ARGS…`.
fn json(d: &Dir, args: &[&str]) -> Run {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    d.run(&a)
}

/// The session id of a run's summary.
fn session_of(r: &Run) -> String {
    str_field(r.summary(), "session_id")
}

/// `files history NAME --json`: (version, deleted, blake3), newest first.
fn history(d: &Dir, name: &str) -> Vec<(u64, bool, String)> {
    let r = json(d, &["files", "history", name]);
    r.assert_code(0);
    r.lines
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap_or(0),
                v["deleted"].as_bool().unwrap_or(false),
                str_field(v, "blake3"),
            )
        })
        .collect()
}

/// Every file under `dir` (not the export's own files) with its content.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    common::dir::export_folder(dir)
        .into_iter()
        .map(|(p, data)| {
            let shown = match data {
                Some(d) => String::from_utf8_lossy(&d).into_owned(),
                None => "-> link".to_owned(),
            };
            (p, shown)
        })
        .collect()
}

fn expect_tree(dir: &Path, want: &[(&str, &str)]) {
    let want: BTreeMap<String, String> = want
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(tree(dir), want, "the folder {}", dir.display());
}

/// `(path, action)` of an export's lines, in order.
fn actions(r: &Run) -> Vec<(String, String)> {
    r.lines
        .iter()
        .filter(|v| v["type"] == "export")
        .map(|v| (str_field(v, "path"), str_field(v, "action")))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// Delete

#[test]
fn rm_writes_deletions_and_a_name_that_is_not_there_fails_not_found() {
    let d = Dir::new();
    d.create("a.txt", "a");
    d.create("b.txt", "b");
    d.create("docs/c.txt", "c");
    d.create("docs/e.txt", "e");
    d.ingest_src(&[]).assert_code(0);

    let r = json(&d, &["files", "rm", "a.txt", "nope.txt"]);
    r.assert_code(1);
    r.assert_outcomes(&[("a.txt", "deleted"), ("nope.txt", "failed not_found")]);
    // A deletion reports what it removed, but brings no bytes.
    assert_eq!(r.file("a.txt")["blake3"], hex(b"a"));
    assert_eq!(r.summary()["bytes"], 0);
    assert_eq!(r.summary()["counts"]["deleted"], 1);
    d.assert_workspace(&[("b.txt", "b"), ("docs/c.txt", "c"), ("docs/e.txt", "e")]);
    // `files history` keeps it: the deletion, then what it removed.
    assert_eq!(
        history(&d, "a.txt"),
        [(2, true, hex(b"a")), (1, false, hex(b"a"))]
    );
    // Gone for `files show` and `files cat`.
    d.run(&["files", "show", "a.txt"]).assert_code(2);
    d.run(&["files", "cat", "a.txt"]).assert_code(2);
    // The session records the deletion.
    let s = json(&d, &["session", "show", &session_of(&r)]);
    let st = &s.lines[0]["ingestion_status"];
    assert_eq!(
        (st["deleted"].as_u64(), st["failed_files"].as_u64()),
        (Some(1), Some(1))
    );

    // By prefix.
    let r = json(&d, &["files", "rm", "--prefix", "docs/"]);
    r.assert_code(0);
    r.assert_outcomes(&[("docs/c.txt", "deleted"), ("docs/e.txt", "deleted")]);
    d.assert_workspace(&[("b.txt", "b")]);

    // A deleted name is not in the workspace for the write-mode table:
    // the same files come back as new, even in FAIL mode, and the quick
    // check does not take them for unchanged.
    let r = d.ingest_src(&["--write-mode", "fail"]);
    r.assert_code(0);
    r.assert_outcomes(&[
        ("a.txt", "ingested"),
        ("b.txt", "unchanged"),
        ("docs/c.txt", "ingested"),
        ("docs/e.txt", "ingested"),
    ]);
    assert_eq!(history(&d, "a.txt")[0], (3, false, hex(b"a")));
    d.verify_without_defects("after deletions and re-ingest");
}

// ---------------------------------------------------------------------------
// Restore

#[test]
fn restore_makes_an_old_version_current_as_a_new_version() {
    let d = Dir::new();
    d.create("a.txt", "one");
    d.ingest_src(&[]).assert_code(0);
    d.create("a.txt", "two");
    d.ingest_src(&["--write-mode", "overwrite"]).assert_code(0);

    let r = json(&d, &["files", "restore", "a.txt", "--version", "1"]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "overwritten")]);
    d.assert_workspace(&[("a.txt", "one")]);
    assert_eq!(
        history(&d, "a.txt"),
        [
            (3, false, hex(b"one")),
            (2, false, hex(b"two")),
            (1, false, hex(b"one"))
        ]
    );
    // Again: it already holds it.
    let r = json(&d, &["files", "restore", "a.txt", "--version", "1"]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "unchanged")]);

    // After a deletion, it comes back as new.
    json(&d, &["files", "rm", "a.txt"]).assert_code(0);
    let r = json(&d, &["files", "restore", "a.txt", "--version", "2"]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "ingested")]);
    d.assert_workspace(&[("a.txt", "two")]);

    // A version that never was, a name that never was: usage errors.
    let r = d.run(&["files", "restore", "a.txt", "--version", "9"]);
    r.assert_code(2);
    assert!(r.stderr.contains("has no version 9"), "{}", r.context());
    d.run(&["files", "restore", "zzz", "--version", "1"])
        .assert_code(2);
    d.verify_without_defects("after restores");
}

// ---------------------------------------------------------------------------
// Revert

#[test]
fn revert_undoes_a_session_and_a_revert_can_be_reverted() {
    let d = Dir::new();
    d.create("a.txt", "a1");
    d.create("b.txt", "b1");
    d.ingest_src(&[]).assert_code(0);
    // The session to revert: overwrites a, leaves b, creates c, deletes
    // nothing (a later `rm` session deletes b).
    d.create("a.txt", "a2");
    d.create("c.txt", "c2");
    let bad = d.ingest_src(&["--write-mode", "overwrite"]);
    bad.assert_outcomes(&[
        ("a.txt", "overwritten"),
        ("b.txt", "unchanged"),
        ("c.txt", "ingested"),
    ]);
    let bad_id = session_of(&bad);
    let before = json(&d, &["session", "list"]).lines.len();

    // A dry run says what it would do and changes nothing.
    let r = json(&d, &["session", "revert", &bad_id, "--dry-run"]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "overwritten"), ("c.txt", "deleted")]);
    assert!(r.files.iter().all(|f| f["dry_run"] == true));
    d.assert_workspace(&[("a.txt", "a2"), ("b.txt", "b1"), ("c.txt", "c2")]);
    assert_eq!(json(&d, &["session", "list"]).lines.len(), before);

    let r = json(&d, &["session", "revert", &bad_id]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "overwritten"), ("c.txt", "deleted")]);
    d.assert_workspace(&[("a.txt", "a1"), ("b.txt", "b1")]);
    let revert_id = session_of(&r);
    let s = json(&d, &["session", "show", &revert_id]).lines[0].clone();
    assert_eq!(s["reverts"], Value::String(bad_id.clone()));
    assert_eq!(s["status"], "CLOSED");
    assert_eq!(s["ingestion_status"]["overwritten"], 1);
    assert_eq!(s["ingestion_status"]["deleted"], 1);
    // An ordinary session reverts nothing.
    assert_eq!(
        json(&d, &["session", "show", &bad_id]).lines[0]["reverts"],
        Value::Null
    );

    // Reverting the revert brings the session's work back.
    let r = json(&d, &["session", "revert", &revert_id]);
    r.assert_code(0);
    r.assert_outcomes(&[("a.txt", "overwritten"), ("c.txt", "ingested")]);
    d.assert_workspace(&[("a.txt", "a2"), ("b.txt", "b1"), ("c.txt", "c2")]);

    // A session that deleted: the name comes back.
    let rm = json(&d, &["files", "rm", "b.txt"]);
    let r = json(&d, &["session", "revert", &session_of(&rm)]);
    r.assert_outcomes(&[("b.txt", "ingested")]);
    d.assert_workspace(&[("a.txt", "a2"), ("b.txt", "b1"), ("c.txt", "c2")]);
    d.verify_without_defects("after reverts");
}

#[test]
fn revert_leaves_a_name_changed_since_unless_forced() {
    let d = Dir::new();
    d.create("a.txt", "1");
    d.create("b.txt", "1");
    d.ingest_src(&[]).assert_code(0);
    d.create("a.txt", "2");
    d.create("b.txt", "2");
    let s2 = session_of(&d.ingest_src(&["--write-mode", "overwrite"]));
    // A later session changes a.
    d.create("a.txt", "3");
    d.ingest(&["--write-mode", "overwrite", "src/a.txt"])
        .assert_code(0);

    let r = json(&d, &["session", "revert", &s2]);
    r.assert_code(1);
    r.assert_outcomes(&[("a.txt", "failed conflict"), ("b.txt", "overwritten")]);
    let msg = str_field(r.file("a.txt"), "message");
    assert!(msg.contains("--force"), "{msg}");
    d.assert_workspace(&[("a.txt", "3"), ("b.txt", "1")]);

    let r = json(&d, &["session", "revert", &s2, "--force"]);
    r.assert_code(0);
    // b already holds what it had before the session.
    r.assert_outcomes(&[("a.txt", "overwritten"), ("b.txt", "unchanged")]);
    d.assert_workspace(&[("a.txt", "1"), ("b.txt", "1")]);
}

#[test]
fn an_open_session_or_one_that_never_was_cannot_be_reverted() {
    let d = Dir::new();
    d.create("a.txt", "1");
    let open = json(&d, &["session", "create"]);
    let id = str_field(&open.lines[0], "session_id");
    d.ingest_src(&["--session", &id]).assert_code(0);
    let r = d.run(&["session", "revert", &id]);
    r.assert_code(2);
    assert!(r.stderr.contains("still open"), "{}", r.context());
    d.assert_workspace(&[("a.txt", "1")]);
    let r = d.run(&["session", "revert", "00000000-0000-0000-0000-000000000000"]);
    r.assert_code(2);
    assert!(r.stderr.contains("no session"), "{}", r.context());
}

// ---------------------------------------------------------------------------
// Time travel

#[test]
fn list_and_cat_at_an_instant_show_the_workspace_as_it_was() {
    let d = Dir::new();
    d.create("a.txt", "old");
    d.create("b.txt", "b");
    d.ingest_src(&[]).assert_code(0);
    std::thread::sleep(Duration::from_millis(20));
    let then = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(Duration::from_millis(20));
    d.create("a.txt", "new");
    d.create("c.txt", "c");
    d.ingest_src(&["--write-mode", "overwrite"]).assert_code(0);
    json(&d, &["files", "rm", "b.txt"]).assert_code(0);

    let r = json(&d, &["files", "list", "--at", &then]);
    r.assert_code(0);
    let got: Vec<(String, String)> = r
        .lines
        .iter()
        .map(|v| (str_field(v, "name"), str_field(v, "blake3")))
        .collect();
    assert_eq!(
        got,
        pairs(&[("a.txt", &hex(b"old")), ("b.txt", &hex(b"b"))])
    );
    let out = d
        .cmd()
        .args(["files", "cat", "a.txt", "--at", &then])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"old"[..])
    );
    // Not there yet then.
    d.run(&["files", "cat", "c.txt", "--at", &then])
        .assert_code(2);
    // Now: as `files list`.
    assert_eq!(d.names(), ["a.txt", "c.txt"]);
    // Before the first ingest: empty.
    let r = json(&d, &["files", "list", "--at", "2000-01-01T00:00:00Z"]);
    r.assert_code(0);
    assert!(r.lines.is_empty(), "{}", r.context());
    // A bad instant is a usage error.
    d.run(&["files", "list", "--at", "yesterday-ish"])
        .assert_code(2);

    // Once gc has dropped the history, asking for that instant is an
    // error that says so.
    d.run(&["gc", "--retention", "0s", "--grace", "0s"])
        .assert_code(0);
    let r = d.run(&["files", "list", "--at", &then]);
    r.assert_code(2);
    assert!(r.stderr.contains("removed by gc"), "{}", r.context());
    // gc dropped b's deletion with what it deleted.
    d.run(&["files", "history", "b.txt"]).assert_code(2);
    d.verify_without_defects("after gc");
}

// ---------------------------------------------------------------------------
// Export

#[test]
fn export_writes_the_tree_then_only_what_changed_and_deletes_only_its_own() {
    let d = Dir::new();
    d.create("a.txt", "a");
    d.create("docs/b.txt", "b");
    d.create("docs/b.txt.meta.json", r#"{"k": 1}"#);
    d.create("big.bin", vec![b'x'; 200 * 1024]);
    d.ingest_src(&[]).assert_code(0);
    let out = d.root().join("out");

    let r = json(&d, &["export", "out", "--with-meta"]);
    r.assert_code(0);
    assert_eq!(
        actions(&r),
        pairs(&[
            ("a.txt", "written"),
            ("big.bin", "written"),
            ("docs/b.txt", "written"),
            ("docs/b.txt.meta.json", "written"),
        ])
    );
    let big = String::from_utf8(vec![b'x'; 200 * 1024]).unwrap_or_default();
    expect_tree(
        &out,
        &[
            ("a.txt", "a"),
            ("big.bin", &big),
            ("docs/b.txt", "b"),
            ("docs/b.txt.meta.json", r#"{"k":1}"#),
        ],
    );
    // Nothing half-written is left.
    assert!(!out.join(".intake-export.tmp").exists());
    let mtime = |p: &str| fs::metadata(out.join(p)).and_then(|m| m.modified()).ok();
    let a_before = mtime("a.txt");

    // Again: nothing to write.
    let r = json(&d, &["export", "out", "--with-meta"]);
    r.assert_code(0);
    assert!(
        actions(&r).iter().all(|(_, a)| a == "unchanged"),
        "{}",
        r.context()
    );
    assert_eq!(r.lines.last().map(|v| v["written"].clone()), Some(0.into()));
    assert_eq!(mtime("a.txt"), a_before);

    // A file changed on disk is written again; a file of someone else's
    // in the folder is never touched.
    fs::write(out.join("docs/b.txt"), "tampered").unwrap_or_else(|e| panic!("{e}"));
    fs::write(out.join("mine.txt"), "not intake's").unwrap_or_else(|e| panic!("{e}"));
    // The workspace changes: a deleted, big.bin overwritten, c new.
    json(&d, &["files", "rm", "a.txt"]).assert_code(0);
    fs::remove_file(d.path("a.txt")).unwrap_or_else(|e| panic!("{e}"));
    d.create("big.bin", "small now");
    d.create("c.txt", "c");
    d.ingest_src(&["--write-mode", "overwrite"]).assert_code(0);
    // Without --delete, a is left in place.
    let r = json(&d, &["export", "out", "--with-meta"]);
    r.assert_code(0);
    assert_eq!(
        actions(&r),
        pairs(&[
            ("big.bin", "written"),
            ("c.txt", "written"),
            ("docs/b.txt", "written"),
            ("docs/b.txt.meta.json", "unchanged"),
        ])
    );
    expect_tree(
        &out,
        &[
            ("a.txt", "a"),
            ("big.bin", "small now"),
            ("c.txt", "c"),
            ("docs/b.txt", "b"),
            ("docs/b.txt.meta.json", r#"{"k":1}"#),
            ("mine.txt", "not intake's"),
        ],
    )
}

#[test]
fn export_delete_removes_only_unchanged_files_it_exported() {
    let d = Dir::new();
    d.create("a.txt", "a");
    d.create("b.txt", "b");
    d.create("sub/c.txt", "c");
    d.ingest_src(&[]).assert_code(0);
    json(&d, &["export", "out"]).assert_code(0);
    let out = d.root().join("out");
    fs::write(out.join("mine.txt"), "mine").unwrap_or_else(|e| panic!("{e}"));
    // b is removed from the workspace but changed on disk meanwhile.
    fs::write(out.join("b.txt"), "edited by hand").unwrap_or_else(|e| panic!("{e}"));
    json(&d, &["files", "rm", "a.txt", "b.txt", "sub/c.txt"]).assert_code(0);

    let r = json(&d, &["export", "out", "--delete"]);
    r.assert_code(0);
    assert_eq!(
        actions(&r),
        pairs(&[
            ("a.txt", "removed"),
            ("b.txt", "kept"),
            ("sub/c.txt", "removed"),
        ])
    );
    expect_tree(&out, &[("b.txt", "edited by hand"), ("mine.txt", "mine")]);
    // The emptied folder went with its last file.
    assert!(!out.join("sub").exists());
}

#[test]
fn export_at_an_instant_and_never_through_a_link() {
    let d = Dir::new();
    d.create("a.txt", "old");
    d.create("d/x.txt", "x");
    d.ingest_src(&[]).assert_code(0);
    std::thread::sleep(Duration::from_millis(20));
    let then = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(Duration::from_millis(20));
    d.create("a.txt", "new");
    d.ingest_src(&["--write-mode", "overwrite"]).assert_code(0);

    // The folder holds a link where a folder of names would go.
    let outside = d.root().join("outside");
    let out = d.root().join("out");
    fs::create_dir_all(&outside).unwrap_or_else(|e| panic!("{e}"));
    fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&outside, out.join("d")).unwrap_or_else(|e| panic!("{e}"));
    let r = json(&d, &["export", "out", "--at", &then]);
    r.assert_code(1);
    assert_eq!(
        actions(&r),
        pairs(&[("a.txt", "written"), ("d/x.txt", "failed")])
    );
    let msg = r
        .lines
        .iter()
        .find(|v| v["path"] == "d/x.txt")
        .map(|v| str_field(v, "message"));
    assert!(
        msg.is_some_and(|m| m.contains("symbolic link")),
        "{}",
        r.context()
    );
    expect_tree(&out, &[("a.txt", "old"), ("d", "-> link")]);
    assert_eq!(fs::read_dir(&outside).map(|r| r.count()).ok(), Some(0));
}
