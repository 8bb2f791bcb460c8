//! `intake serve` driven over HTTP, as the deepset SDK drives it: every
//! endpoint, status code and error body, then the exact workspace
//! contents through the command line.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::dir::{Dir, str_field};
use common::serve::{Served, key};
use reqwest::blocking::multipart;
use serde_json::{Value, json};

/// A workspace `ws` in a temp dir, a key for it, and a server.
fn setup(extra: &[&str]) -> (Dir, String, Served) {
    let d = Dir::new();
    d.run(&["init"]).assert_code(0);
    let k = key(&d.ws(), "tests");
    let ws = format!("ws={}", d.ws().display());
    let mut args = vec!["--workspace", ws.as_str()];
    args.extend_from_slice(extra);
    let s = Served::start(&args);
    (d, k, s)
}

fn sid(session: &Value) -> String {
    str_field(session, "session_id")
}

fn detail(r: reqwest::blocking::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().unwrap_or(Value::Null);
    (status, body["detail"].as_str().unwrap_or("").to_owned())
}

fn session_show(d: &Dir, id: &str) -> Value {
    let r = d.run(&["--json", "session", "show", id]);
    r.assert_code(0);
    r.lines[0].clone()
}

/// The per-file outcomes of a session, in order.
fn session_files(d: &Dir, id: &str) -> Vec<Value> {
    let r = d.run(&["--json", "session", "show", "--files", id]);
    r.assert_code(0);
    r.lines
        .iter()
        .filter(|v| v.get("outcome").is_some())
        .cloned()
        .collect()
}

#[test]
fn a_session_is_committed_at_close_in_arrival_order_with_its_sidecars() {
    let (d, k, s) = setup(&[]);
    let session = s.create(&k, "ws", "FAIL");
    // The 201 body the SDK reads.
    let id = sid(&session);
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let expires = str_field(&session, "expires_at");
    assert_eq!(
        expires.len(),
        "2026-11-30T12:00:00.000000Z".len(),
        "{expires}"
    );
    assert!(expires.ends_with('Z'));
    assert_eq!(
        session["aws_prefixed_request_config"]["url"],
        json!(s.url(&format!(
            "/api/v1/workspaces/ws/upload_sessions/{id}/objects"
        )))
    );
    // The sidecar of b comes before b; a is uploaded twice (the last wins).
    for (name, body) in [
        ("a.txt", "first a"),
        ("b.txt.meta.json", r#"{"m": 1}"#),
        ("b.txt", "bee"),
        ("c.txt", "sea"),
        ("a.txt", "second a"),
    ] {
        let r = s.upload(&session, name, body.as_bytes());
        assert_eq!(r.status().as_u16(), 204, "{name}: {:?}", r.text());
    }
    // Nothing is decided before the close.
    let st = s.status(&k, "ws", &id);
    assert_eq!(
        st["ingestion_status"],
        json!({"finished_files": 0, "failed_files": 0})
    );
    assert!(d.names().is_empty());
    assert_eq!(s.close(&k, "ws", &id), 204);
    assert_eq!(s.wait_counted(&k, "ws", &id, 3), (3, 0));
    d.assert_workspace(&[("a.txt", "second a"), ("b.txt", "bee"), ("c.txt", "sea")]);
    let files = d.files_by_name();
    assert_eq!(files["b.txt"]["meta"], json!({"m": 1}));
    assert_eq!(files["a.txt"]["meta"], Value::Null);
    // The session as the command line shows it: closed, by the key's user.
    let shown = session_show(&d, &id);
    assert_eq!(shown["status"], "CLOSED");
    assert_eq!(shown["write_mode"], "FAIL");
    assert_eq!(shown["created_by"]["given_name"], "Grace");
    assert_eq!(shown["ingestion_status"]["ingested"], 3);
    // The order of the decisions is the order of the last uploads.
    let names: Vec<String> = session_files(&d, &id)
        .iter()
        .map(|v| str_field(v, "name"))
        .collect();
    assert_eq!(names, ["b.txt", "c.txt", "a.txt"]);
    // Closing again is a conflict; uploading after the close is refused.
    assert_eq!(s.close(&k, "ws", &id), 409);
    let (code, msg) = detail(s.upload(&session, "late.txt", b"late"));
    assert_eq!(code, 403);
    assert!(msg.contains("closed"), "{msg}");
    assert_eq!(d.names(), ["a.txt", "b.txt", "c.txt"]);
    d.verify_without_defects("after a committed session");
}

#[test]
fn a_fail_session_over_existing_names_finishes_with_every_file_failed() {
    let (d, k, s) = setup(&[]);
    let first = s.create(&k, "ws", "FAIL");
    for n in ["x", "y"] {
        assert_eq!(s.upload(&first, n, n.as_bytes()).status().as_u16(), 204);
    }
    assert_eq!(s.close(&k, "ws", &sid(&first)), 204);
    assert_eq!(s.wait_counted(&k, "ws", &sid(&first), 2), (2, 0));
    let second = s.create(&k, "ws", "FAIL");
    for n in ["x", "y"] {
        assert_eq!(s.upload(&second, n, b"other").status().as_u16(), 204);
    }
    assert_eq!(s.close(&k, "ws", &sid(&second)), 204);
    assert_eq!(s.wait_counted(&k, "ws", &sid(&second), 2), (0, 2));
    d.assert_workspace(&[("x", "x"), ("y", "y")]);
    // KEEP keeps the existing file; OVERWRITE replaces it.
    let keep = s.create(&k, "ws", "KEEP");
    assert_eq!(s.upload(&keep, "x", b"kept?").status().as_u16(), 204);
    assert_eq!(s.close(&k, "ws", &sid(&keep)), 204);
    assert_eq!(s.wait_counted(&k, "ws", &sid(&keep), 1), (1, 0));
    let over = s.create(&k, "ws", "OVERWRITE");
    assert_eq!(s.upload(&over, "y", b"new y").status().as_u16(), 204);
    assert_eq!(s.close(&k, "ws", &sid(&over)), 204);
    assert_eq!(s.wait_counted(&k, "ws", &sid(&over), 1), (1, 0));
    d.assert_workspace(&[("x", "x"), ("y", "new y")]);
    assert_eq!(session_show(&d, &sid(&keep))["ingestion_status"]["kept"], 1);
    assert_eq!(
        session_show(&d, &sid(&over))["ingestion_status"]["overwritten"],
        1
    );
}

#[test]
fn keys_tokens_and_workspaces_are_checked() {
    let (d, k, s) = setup(&[]);
    let path = "/api/v1/workspaces/ws/upload_sessions";
    let post = |key: Option<&str>, ws: &str| {
        let mut r = s
            .client
            .post(s.url(&format!("/api/v1/workspaces/{ws}/upload_sessions")))
            .json(&json!({"write_mode": "KEEP"}));
        if let Some(key) = key {
            r = r.bearer_auth(key);
        }
        detail(r.send().expect("create"))
    };
    assert_eq!(post(None, "ws").0, 401);
    assert_eq!(post(Some("intake_wrong"), "ws").0, 401);
    let (code, msg) = post(Some(&k), "nope");
    assert_eq!(code, 404);
    assert!(msg.contains("nope"), "{msg}");
    // A revoked key stops working at once.
    let k2 = key(&d.ws(), "second");
    assert_eq!(
        s.get(&k2, path).send().expect("list").status().as_u16(),
        200
    );
    d.run(&["keys", "revoke", "second"]).assert_code(0);
    assert_eq!(
        s.get(&k2, path).send().expect("list").status().as_u16(),
        401
    );
    d.run(&["keys", "revoke", "second"]).assert_code(2);
    let listed = d.run(&["--json", "keys", "list"]);
    listed.assert_code(0);
    let names: Vec<(String, bool)> = listed
        .lines
        .iter()
        .map(|v| (str_field(v, "name"), v["revoked_at"].is_string()))
        .collect();
    assert_eq!(
        names,
        [("second".to_owned(), true), ("tests".to_owned(), false)]
    );
    // The key is stored only as a hash.
    let db = std::fs::read(d.ws().join("serve/serve.db")).expect("serve.db");
    assert!(!db.windows(k.len()).any(|w| w == k.as_bytes()));
    // A token is good for its own session only, and must be there.
    let a = s.create(&k, "ws", "KEEP");
    let b = s.create(&k, "ws", "KEEP");
    let mut forged = a.clone();
    forged["aws_prefixed_request_config"]["url"] = b["aws_prefixed_request_config"]["url"].clone();
    assert_eq!(detail(s.upload(&forged, "f", b"x")).0, 403);
    let mut tampered = a.clone();
    let tok = str_field(&a["aws_prefixed_request_config"]["fields"], "token");
    let (at, sig) = tok.split_once('.').expect("token");
    tampered["aws_prefixed_request_config"]["fields"]["token"] = json!(format!(
        "{}.{sig}",
        at.parse::<i64>().expect("at") + 1_000_000
    ));
    assert_eq!(detail(s.upload(&tampered, "f", b"x")).0, 403);
    let mut none = a.clone();
    none["aws_prefixed_request_config"]["fields"] = json!({"key": "${filename}"});
    assert_eq!(detail(s.upload(&none, "f", b"x")).0, 403);
    // Nothing was staged by those.
    assert_eq!(s.close(&k, "ws", &sid(&b)), 204);
    assert_eq!(s.wait_counted(&k, "ws", &sid(&b), 0), (0, 0));
    assert_eq!(s.close(&k, "ws", &sid(&a)), 204);
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.names().is_empty());
    // Unknown sessions.
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(s.code_of(&k, &format!("{path}/{unknown}")), 404);
    assert_eq!(s.close(&k, "ws", &unknown.to_string()), 404);
}

#[test]
fn refused_uploads_count_once_as_failed_so_the_client_stops_waiting() {
    let (d, k, s) = setup(&["--max-upload-bytes", "1000"]);
    let session = s.create(&k, "ws", "KEEP");
    let (code, _) = detail(s.upload(&session, "ok.txt", b"fine"));
    assert_eq!(code, 204);
    let (code, msg) = detail(s.upload(&session, "../escape.txt", b"x"));
    assert_eq!(code, 422, "{msg}");
    let (code, msg) = detail(s.upload(&session, "big.bin", &vec![7u8; 1001]));
    assert_eq!(code, 413, "{msg}");
    // A sidecar that is refused fails its file, and is no file itself.
    let (code, _) = detail(s.upload(&session, "m.txt", b"m"));
    assert_eq!(code, 204);
    let (code, _) = detail(s.upload(&session, "m.txt.meta.json", &vec![b' '; 1001]));
    assert_eq!(code, 413);
    // Exactly at the limit is taken.
    assert_eq!(
        detail(s.upload(&session, "edge.bin", &vec![1u8; 1000])).0,
        204
    );
    assert_eq!(s.close(&k, "ws", &sid(&session)), 204);
    // ok, edge: finished; ../escape, big, m: failed.
    assert_eq!(s.wait_counted(&k, "ws", &sid(&session), 5), (2, 3));
    assert_eq!(d.names(), ["edge.bin", "ok.txt"]);
    let got: Vec<(String, String, String)> = session_files(&d, &sid(&session))
        .iter()
        .map(|v| {
            (
                str_field(v, "name"),
                str_field(v, "outcome"),
                v["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("ok.txt", "ingested", ""),
        ("../escape.txt", "failed", "invalid_name"),
        ("big.bin", "failed", "read_error"),
        ("m.txt", "failed", "invalid_meta"),
        ("edge.bin", "ingested", ""),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn file_names_are_percent_decoded_and_key_templates_expanded() {
    let (d, k, s) = setup(&[]);
    let session = s.create(&k, "ws", "KEEP");
    let cfg = &session["aws_prefixed_request_config"];
    let boundary = "XyZ";
    let token = str_field(&cfg["fields"], "token");
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"key\"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nin/${{filename}}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"token\"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{token}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"my%20file%20_1%20_%C3%A9_.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
         --{b}--\r\n",
        b = boundary
    );
    let post_raw = |body: String| {
        s.client
            .post(cfg["url"].as_str().expect("url"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .expect("upload")
            .status()
            .as_u16()
    };
    assert_eq!(post_raw(body), 204);
    // A body that is not multipart at all.
    assert_eq!(post_raw("--XyZ\r\nnonsense".to_owned()), 400);
    assert_eq!(s.close(&k, "ws", &sid(&session)), 204);
    assert_eq!(s.wait_counted(&k, "ws", &sid(&session), 1), (1, 0));
    d.assert_workspace(&[("in/my file _1 _é_.txt", "hello")]);
}

#[test]
fn direct_uploads_list_download_and_delete() {
    let (d, k, s) = setup(&[]);
    let files = s.url("/api/v1/workspaces/ws/files");
    let direct = |mode: &str, name: &str, body: &str, meta: &str| {
        let form = multipart::Form::new()
            .part(
                "file",
                multipart::Part::bytes(body.as_bytes().to_vec())
                    .file_name(name.to_owned())
                    .mime_str("text/markdown")
                    .expect("mime"),
            )
            .text("meta", meta.to_owned());
        let r = s
            .client
            .post(format!("{files}?write_mode={mode}"))
            .bearer_auth(&k)
            .multipart(form)
            .send()
            .expect("direct upload");
        let code = r.status().as_u16();
        (code, r.json::<Value>().unwrap_or(Value::Null))
    };
    let (code, body) = direct("FAIL", "one.md", "one", r#"{"m": 1}"#);
    assert_eq!(code, 201, "{body}");
    let id1 = str_field(&body, "file_id");
    assert_eq!(direct("FAIL", "two.md", "two", "{}").0, 201);
    assert_eq!(direct("FAIL", "three.md", "three", "{}").0, 201);
    // The same content again is unchanged (201); other content conflicts.
    let (code, again) = direct("FAIL", "one.md", "one", r#"{"m": 1}"#);
    assert_eq!((code, str_field(&again, "file_id")), (201, id1.clone()));
    let (code, body) = direct("FAIL", "one.md", "changed", "{}");
    assert_eq!(code, 409, "{body}");
    let (code, body) = direct("FAIL", "bad.md", "x", "[not json");
    assert_eq!(code, 422, "{body}");
    assert_eq!(direct("OVERWRITE", "two.md", "TWO", "{}").0, 201);
    assert_eq!(direct("SOMETIMES", "x.md", "x", "{}").0, 422);
    d.assert_workspace(&[("one.md", "one"), ("two.md", "TWO"), ("three.md", "three")]);
    // Cursor pagination, oldest first, two at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<(String, String)> = None;
    loop {
        let mut req = s
            .get(&k, "/api/v1/workspaces/ws/files")
            .query(&[("limit", "2")]);
        if let Some((v, id)) = &cursor {
            req = req.query(&[("after_value", v.as_str()), ("after_file_id", id.as_str())]);
        }
        let page: Value = req.send().expect("list").json().expect("list body");
        assert_eq!(page["total"], 3);
        let data = page["data"].as_array().expect("data").clone();
        for f in &data {
            seen.push(str_field(f, "name"));
        }
        let last = data.last().expect("a page is not empty");
        cursor = Some((str_field(last, "created_at"), str_field(last, "file_id")));
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(seen, ["one.md", "three.md", "two.md"]);
    let filtered: Value = s
        .get(&k, "/api/v1/workspaces/ws/files")
        .query(&[("name", "thr")])
        .send()
        .expect("list")
        .json()
        .expect("body");
    assert_eq!(filtered["total"], 1);
    assert_eq!(filtered["data"][0]["name"], "three.md");
    // Download and metadata.
    let r = s
        .get(&k, &format!("/api/v1/workspaces/ws/files/{id1}"))
        .send()
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().expect("bytes"), "one");
    let meta: Value = s
        .get(&k, &format!("/api/v1/workspaces/ws/files/{id1}/meta"))
        .send()
        .expect("meta")
        .json()
        .expect("meta body");
    assert_eq!(meta, json!({"m": 1}));
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        s.code_of(&k, &format!("/api/v1/workspaces/ws/files/{unknown}")),
        404
    );
    // Delete: 204, then the file is gone.
    let r = s
        .client
        .delete(s.url(&format!("/api/v1/workspaces/ws/files/{id1}")))
        .bearer_auth(&k)
        .send()
        .expect("delete");
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(
        s.code_of(&k, &format!("/api/v1/workspaces/ws/files/{id1}")),
        404
    );
    d.assert_workspace(&[("two.md", "TWO"), ("three.md", "three")]);
    d.verify_without_defects("after direct uploads");
}

#[test]
fn sessions_are_listed_by_page_and_expire_into_a_commit() {
    let (d, k, s) = setup(&[]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let sess = s.create(&k, "ws", "OVERWRITE");
        ids.push(sid(&sess));
    }
    // One that expires in a second, with an upload it never closes.
    let r = s.create_with(
        &k,
        "ws",
        &json!({"write_mode": "KEEP", "expires_in_seconds": 1}),
    );
    assert_eq!(r.status().as_u16(), 201);
    let short: Value = r.json().expect("body");
    assert_eq!(
        s.upload(&short, "late.txt", b"on time").status().as_u16(),
        204
    );
    std::thread::sleep(Duration::from_millis(1200));
    let (code, msg) = detail(s.upload(&short, "later.txt", b"too late"));
    assert_eq!(code, 403);
    assert!(msg.contains("expired"), "{msg}");
    // The expired session is closed and its upload committed.
    assert_eq!(s.wait_counted(&k, "ws", &sid(&short), 1), (1, 0));
    d.assert_workspace(&[("late.txt", "on time")]);
    let list = |q: &[(&str, &str)]| -> Value {
        s.get(&k, "/api/v1/workspaces/ws/upload_sessions")
            .query(q)
            .send()
            .expect("list")
            .json()
            .expect("list body")
    };
    let p1 = list(&[("limit", "3"), ("page_number", "1")]);
    assert_eq!(
        (p1["total"].clone(), p1["has_more"].clone()),
        (json!(4), json!(true))
    );
    let p2 = list(&[("limit", "3"), ("page_number", "2")]);
    assert_eq!(p2["has_more"], false);
    assert_eq!(p2["data"].as_array().map(Vec::len), Some(1));
    // Newest first: the expired one leads.
    assert_eq!(p1["data"][0]["session_id"], json!(sid(&short)));
    assert_eq!(p1["data"][0]["status"], "EXPIRED");
    assert_eq!(p1["data"][1]["status"], "OPEN");
    assert_eq!(p1["data"][1]["write_mode"], "OVERWRITE");
    assert_eq!(p1["data"][1]["created_by"]["family_name"], "Hopper");
    let expired = list(&[("is_expired", "true")]);
    assert_eq!(expired["total"], 1);
    // Closing an expired session is a conflict: it was closed at expiry.
    assert_eq!(s.close(&k, "ws", &sid(&short)), 409);
    assert_eq!(session_show(&d, &sid(&short))["status"], "CLOSED");
    // Too many open sessions for one key.
    let mut open = 3;
    while open < 10 {
        s.create(&k, "ws", "KEEP");
        open += 1;
    }
    let r = s.create_with(&k, "ws", &json!({"write_mode": "KEEP"}));
    assert_eq!(r.status().as_u16(), 406);
    let r = s.create_with(&k, "ws", &json!({"write_mode": "TEMPORARY"}));
    assert_eq!(r.status().as_u16(), 422);
}

#[test]
fn a_stalled_upload_is_cut_off_and_the_server_keeps_serving() {
    let (d, k, s) = setup(&["--upload-idle-timeout", "1s"]);
    let session = s.create(&k, "ws", "KEEP");
    let url = str_field(&session["aws_prefixed_request_config"], "url");
    let path = url.trim_start_matches(&s.base).to_owned();
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut conn = TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000\r\n\r\n--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n${{filename}}\r\n--B\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n{}\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.txt\"\r\n\r\nfirst bytes",
        str_field(&session["aws_prefixed_request_config"]["fields"], "token")
    );
    conn.write_all(head.as_bytes()).expect("send");
    // Meanwhile the server answers others.
    assert_eq!(
        s.client
            .get(s.url("/healthz"))
            .send()
            .expect("healthz")
            .status()
            .as_u16(),
        200
    );
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert_eq!(s.close(&k, "ws", &sid(&session)), 204);
    assert_eq!(s.wait_counted(&k, "ws", &sid(&session), 0), (0, 0));
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.names().is_empty());
    // Nothing of it is left staged.
    let staged = d.ws().join("serve/uploads").join(sid(&session));
    assert!(!staged.exists() || std::fs::read_dir(&staged).map(|r| r.count()).unwrap_or(0) == 0);
}

#[test]
fn sigterm_lets_the_commit_finish_and_exits_0() {
    let (d, k, mut s) = setup(&[]);
    let session = s.create(&k, "ws", "KEEP");
    for i in 0..50 {
        let name = format!("f{i:02}.txt");
        assert_eq!(
            s.upload(&session, &name, name.as_bytes()).status().as_u16(),
            204
        );
    }
    assert_eq!(s.close(&k, "ws", &sid(&session)), 204);
    assert_eq!(s.stop(), Some(0));
    assert_eq!(d.names().len(), 50);
    assert_eq!(
        session_show(&d, &sid(&session))["ingestion_status"]["ingested"],
        50
    );
    assert_eq!(session_show(&d, &sid(&session))["status"], "CLOSED");
}

#[test]
fn health_metrics_and_the_status_page() {
    let (_d, k, s) = setup(&[]);
    let session = s.create(&k, "ws", "KEEP");
    assert_eq!(
        s.upload(&session, "<b>bold</b>.txt", b"x")
            .status()
            .as_u16(),
        204
    );
    assert_eq!(s.close(&k, "ws", &sid(&session)), 204);
    s.wait_counted(&k, "ws", &sid(&session), 1);
    let r = s.client.get(s.url("/healthz")).send().expect("healthz");
    assert_eq!(
        (r.status().as_u16(), r.text().expect("body")),
        (200, "ok\n".to_owned())
    );
    let m = s
        .client
        .get(s.url("/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("body");
    assert!(
        m.contains("intake_files_total{outcome=\"ingested\"} 1"),
        "{m}"
    );
    assert!(m.contains("intake_sessions_open 0"), "{m}");
    assert!(m.contains("intake_upload_duration_seconds_count 1"), "{m}");
    let page = s
        .client
        .get(s.url("/"))
        .send()
        .expect("page")
        .text()
        .expect("body");
    assert!(page.contains(&sid(&session)), "{page}");
    assert!(page.contains("&lt;b&gt;bold&lt;/b&gt;.txt"), "{page}");
    assert!(!page.contains("<b>bold"), "{page}");
    assert!(s.log().contains("status=204"), "{}", s.log());
}

/// Uploads `names` (content = name) from 16 threads; returns the names
/// whose upload got no 204 (the server was killed under them).
fn upload_all(s: &Served, session: &Value, names: &[String]) -> Vec<String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(n) = names.get(i) else { return };
                    let ok = s
                        .try_upload(session, n, n.as_bytes())
                        .is_ok_and(|r| r.status().as_u16() == 204);
                    if !ok {
                        failed.lock().expect("failed list").push(n.clone());
                    }
                }
            });
        }
    });
    failed.into_inner().expect("failed list")
}

#[test]
fn five_hundred_concurrent_uploads_are_each_taken_once() {
    let (d, k, s) = setup(&[]);
    let session = s.create(&k, "ws", "FAIL");
    let names: Vec<String> = (0..500).map(|i| format!("c{i:03}.txt")).collect();
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for n in &names {
            let (s, session, failed) = (&s, &session, &failed);
            scope.spawn(move || {
                let code = s.upload(session, n, n.as_bytes()).status().as_u16();
                if code != 204 {
                    failed.lock().expect("list").push((n.clone(), code));
                }
            });
        }
    });
    assert_eq!(
        failed.into_inner().expect("list"),
        Vec::<(String, u16)>::new()
    );
    assert_eq!(s.close(&k, "ws", &sid(&session)), 204);
    assert_eq!(s.wait_counted(&k, "ws", &sid(&session), 500), (500, 0));
    let files = d.files_by_name();
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), names);
    for n in ["c000.txt", "c250.txt", "c499.txt"] {
        assert_eq!(d.cat(n), n.as_bytes());
    }
    assert_eq!(
        session_show(&d, &sid(&session))["ingestion_status"]["ingested"],
        500
    );
}

/// Kills the server (kill -9) during uploads, then right after a close
/// (during the commit), restarts it, re-uploads what the client saw fail
/// (as the SDK's retries do), and checks: every file is there once with
/// its content, the session counted each once, `verify` passes.
fn kill_rounds(rounds: u64) {
    let mut rng = common::procs::Rng::new(common::procs::seed(0x5e7e));
    for round in 0..rounds {
        let (d, k, mut s) = setup(&[]);
        let ws_arg = format!("ws={}", d.ws().display());
        let session = s.create(&k, "ws", "OVERWRITE");
        let names: Vec<String> = (0..2000).map(|i| format!("r{round}-{i:04}.txt")).collect();
        // During the uploads.
        let delay = Duration::from_millis(rng.range(5, 150));
        let pid = s.child.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        });
        let failed = upload_all(&s, &session, &names);
        killer.join().expect("killer");
        let _ = s.child.wait();
        // The server's URL changes with its port: the client's session
        // config is re-pointed at the new server.
        s = Served::start(&["--workspace", &ws_arg]);
        let mut session = session.clone();
        let url = str_field(&session["aws_prefixed_request_config"], "url");
        let path = &url[url.find("/api/").expect("api path")..];
        session["aws_prefixed_request_config"]["url"] = json!(s.url(path));
        assert_eq!(
            upload_all(&s, &session, &failed),
            Vec::<String>::new(),
            "round {round}"
        );
        // During the commit.
        assert_eq!(s.close(&k, "ws", &sid(&session)), 204);
        // A commit of 2,000 small files takes some tens of milliseconds:
        // the kill lands before, inside or after it.
        std::thread::sleep(Duration::from_millis(rng.range(0, 60)));
        let _ = s.child.kill();
        let _ = s.child.wait();
        let s = Served::start(&["--workspace", &ws_arg]);
        assert_eq!(
            s.wait_counted(&k, "ws", &sid(&session), 2000),
            (2000, 0),
            "round {round}"
        );
        assert_eq!(d.names(), names, "round {round}");
        assert_eq!(d.cat(&names[77]), names[77].as_bytes());
        let shown = session_show(&d, &sid(&session));
        assert_eq!(
            shown["ingestion_status"]["ingested"], 2000,
            "round {round}: {shown}"
        );
        assert_eq!(shown["status"], "CLOSED");
        d.verify_without_defects(&format!("round {round}"));
        // The staged bodies go once the commit is recorded.
        let staged = d.ws().join("serve/uploads").join(sid(&session));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while staged.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !staged.exists(),
            "round {round}: staged uploads left behind: {:?}\n{}",
            std::fs::read_dir(&staged).map(|r| r.count()),
            s.log()
        );
    }
}

#[test]
fn a_server_killed_during_uploads_and_commit_loses_and_doubles_nothing_short() {
    kill_rounds(3);
}

/// `cargo test --release --test serve -- --ignored --nocapture killed`
#[test]
#[ignore]
fn a_server_killed_during_uploads_and_commit_loses_and_doubles_nothing_long() {
    kill_rounds(40);
}

#[test]
fn new_workspaces_are_owner_only_and_serve_refuses_exposed_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    let d = Dir::new();
    d.run(&["init"]).assert_code(0);
    assert_eq!(
        (mode(&d.ws()), mode(&d.ws().join("intake.db"))),
        (0o700, 0o600)
    );
    let group = d.path("shared");
    d.bare_cmd()
        .arg("init")
        .arg("--group")
        .arg("--workspace")
        .arg(&group)
        .assert()
        .code(0);
    assert_eq!(
        (mode(&group), mode(&group.join("intake.db"))),
        (0o750, 0o640)
    );
    key(&d.ws(), "k");
    let serve_dir = d.ws().join("serve");
    assert_eq!(mode(&serve_dir), 0o700);
    assert_eq!(mode(&serve_dir.join("serve.db")), 0o600);
    std::fs::set_permissions(&serve_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = d
        .bare_cmd()
        .args(["serve", "--listen", "127.0.0.1:0", "--workspace"])
        .arg(format!("ws={}", d.ws().display()))
        .output()
        .expect("serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("chmod -R go-rwx"), "{err}");
}

#[test]
fn tls_serves_https_and_hands_out_https_upload_urls() {
    let have = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("curl") || !(have("openssl") || std::path::Path::new("/usr/bin/openssl").exists()) {
        eprintln!("skipped: this test needs the curl and openssl commands");
        return;
    }
    let d = Dir::new();
    d.run(&["init"]).assert_code(0);
    let k = key(&d.ws(), "tls");
    let (cert, pkey) = (d.path("cert.pem"), d.path("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&pkey)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let ws = format!("ws={}", d.ws().display());
    let (c, p) = (cert.display().to_string(), pkey.display().to_string());
    let s = Served::start(&["--workspace", &ws, "--tls-cert", &c, "--tls-key", &p]);
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("a status line");
        (code.to_owned(), body.to_owned())
    };
    assert_eq!(
        curl(&[&s.url("/healthz")]),
        ("200".to_owned(), "ok\n".to_owned())
    );
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {k}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"write_mode":"KEEP"}"#,
        &s.url("/api/v1/workspaces/ws/upload_sessions"),
    ]);
    assert_eq!(code, "201", "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let url = str_field(&v["aws_prefixed_request_config"], "url");
    assert!(url.starts_with("https://"), "{url}");
    // Plain HTTP to the TLS port gets nothing useful.
    let (code, _) = curl(&[&s.url("/healthz").replace("https://", "http://")]);
    assert_ne!(code, "200");
}

/// The status page as a browser shows it: the DOM headless Chromium
/// renders (Debian's `chromium` package). Skipped, with the reason, when
/// there is no Chromium:
/// `cargo test --test serve -- --ignored --nocapture status_page_in_chromium`
#[test]
#[ignore]
fn status_page_in_chromium() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("skipped: no Chromium (apt-get install chromium)");
        return;
    };
    let (d, k, s) = setup(&[]);
    let session = s.create(&k, "ws", "FAIL");
    assert_eq!(
        s.upload(&session, "report.pdf", b"%PDF").status().as_u16(),
        204
    );
    assert_eq!(
        s.upload(&session, "../escape.txt", b"x").status().as_u16(),
        422
    );
    assert_eq!(s.close(&k, "ws", &sid(&session)), 204);
    assert_eq!(s.wait_counted(&k, "ws", &sid(&session), 2), (1, 1));
    let open = s.create(&k, "ws", "KEEP");
    let profile = d.path("chromium-profile");
    let shot = d.path("status.png");
    let run = |extra: &[&str]| {
        std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(s.url("/"))
            .output()
            .expect("running chromium")
    };
    let out = run(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Workspace ws",
        sid(&session).as_str(),
        sid(&open).as_str(),
        "CLOSED",
        "OPEN",
        "Grace Hopper",
        "report.pdf",
        "../escape.txt",
        "invalid_name",
    ] {
        assert!(
            dom.contains(want),
            "the rendered page lacks {want:?}:\n{dom}"
        );
    }
    let _ = run(&[&format!("--screenshot={}", shot.display())]);
    if let Ok(dir) = std::env::var("INTAKE_KEEP_SCREENSHOT") {
        let _ = std::fs::copy(&shot, std::path::Path::new(&dir).join("status.png"));
    }
}

#[test]
fn connections_past_the_cap_are_closed_and_served_again_once_one_is_free() {
    let (_d, _k, s) = setup(&["--max-connections", "2"]);
    let addr = s.base.trim_start_matches("http://").to_owned();
    let held = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let mut c = TcpStream::connect(&addr).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .expect("send");
                let mut buf = [0u8; 512];
                let n = c.read(&mut buf).expect("an answer");
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
                c
            })
            .collect()
    };
    let two = held(2);
    // A third connection is closed without an answer.
    let mut third = TcpStream::connect(&addr).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = third.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    drop(two);
    // Once the two are closed, connections are served again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = reqwest::blocking::Client::new();
        if fresh
            .get(s.url("/healthz"))
            .send()
            .is_ok_and(|r| r.status().as_u16() == 200)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not served again after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
