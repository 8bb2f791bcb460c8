//! A real `intake serve` process on a free port, its address read from its
//! first line, and a blocking HTTP client for it. Dropped, it is stopped
//! with SIGTERM (and killed if it does not exit).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response, multipart};
use serde_json::{Value, json};

pub struct Served {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub client: Client,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Creates a key for `ws` and returns it.
pub fn key(ws: &Path, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_intake"))
        .env_remove("INTAKE_WORKSPACE")
        .args(["--json", "keys", "create", "--workspace"])
        .arg(ws)
        .args(["--name", name, "--user", "Grace Hopper"])
        .output()
        .expect("running intake keys create");
    assert_eq!(
        out.status.code(),
        Some(0),
        "keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("keys create --json");
    v["key"].as_str().expect("a key").to_owned()
}

impl Served {
    /// `intake --json serve --listen 127.0.0.1:0 ARGS…`, waiting for its
    /// listening line.
    pub fn start(args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_intake"))
            .env_remove("INTAKE_WORKSPACE")
            .env("RUST_LOG", "info")
            .args(["--json", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting intake serve");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        {
            let err = child.stderr.take().expect("stderr");
            let sink = std::sync::Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = sink.lock().expect("stderr log");
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line)
            .expect("reading the listening line");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "intake serve did not start ({e}): {line:?}; stderr:\n{}",
                stderr.lock().expect("stderr")
            )
        });
        let base = v["address"].as_str().expect("address").to_owned();
        Served {
            child,
            base,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(32)
                .build()
                .expect("an HTTP client"),
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    pub fn get(&self, key: &str, path: &str) -> RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(key)
    }

    /// The status of `GET path` with `key`.
    pub fn code_of(&self, key: &str, path: &str) -> u16 {
        self.get(key, path).send().expect("get").status().as_u16()
    }

    /// `POST upload_sessions` in `ws` with this body.
    pub fn create_with(&self, key: &str, ws: &str, body: &Value) -> Response {
        self.client
            .post(self.url(&format!("/api/v1/workspaces/{ws}/upload_sessions")))
            .bearer_auth(key)
            .json(body)
            .send()
            .expect("create")
    }

    /// Creates a session in `ws` and returns the 201 body.
    pub fn create(&self, key: &str, ws: &str, mode: &str) -> Value {
        let r = self.create_with(
            key,
            ws,
            &json!({"write_mode": mode, "parallel_processing_enabled": false}),
        );
        assert_eq!(r.status().as_u16(), 201, "create: {:?}", r.text());
        r.json().expect("create body")
    }

    /// Uploads one object into a session the way the SDK does: the
    /// session's fields in order, then `file` (its name percent-encoded).
    pub fn upload(&self, session: &Value, name: &str, body: &[u8]) -> Response {
        self.try_upload(session, name, body).expect("upload")
    }

    /// [`Served::upload`], with a connection failure as an error.
    pub fn try_upload(
        &self,
        session: &Value,
        name: &str,
        body: &[u8],
    ) -> reqwest::Result<Response> {
        let cfg = &session["aws_prefixed_request_config"];
        let mut form = multipart::Form::new();
        for (k, v) in cfg["fields"].as_object().expect("fields") {
            form = form.text(k.clone(), v.as_str().expect("a field").to_owned());
        }
        let part = multipart::Part::bytes(body.to_vec())
            .file_name(name.to_owned())
            .mime_str("text/plain")
            .expect("mime");
        form = form.part("file", part);
        self.client
            .post(cfg["url"].as_str().expect("url"))
            .multipart(form)
            .send()
    }

    /// Closes a session; returns the status.
    pub fn close(&self, key: &str, ws: &str, id: &str) -> u16 {
        self.client
            .put(self.url(&format!("/api/v1/workspaces/{ws}/upload_sessions/{id}")))
            .bearer_auth(key)
            .json(&json!({"status": "CLOSED"}))
            .send()
            .expect("close")
            .status()
            .as_u16()
    }

    /// The session's status body.
    pub fn status(&self, key: &str, ws: &str, id: &str) -> Value {
        let r = self
            .get(
                key,
                &format!("/api/v1/workspaces/{ws}/upload_sessions/{id}"),
            )
            .send()
            .expect("status");
        assert_eq!(r.status().as_u16(), 200);
        r.json().expect("status body")
    }

    /// Polls the status until `finished + failed` reaches `n` (as the SDK
    /// does); returns (finished, failed).
    pub fn wait_counted(&self, key: &str, ws: &str, id: &str, n: u64) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status(key, ws, id);
            let fin = s["ingestion_status"]["finished_files"]
                .as_u64()
                .expect("finished");
            let fail = s["ingestion_status"]["failed_files"]
                .as_u64()
                .expect("failed");
            if fin + fail >= n {
                return (fin, fail);
            }
            assert!(
                Instant::now() < deadline,
                "session {id} counted {fin}+{fail} of {n} after 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        unsafe_free_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().ok().and_then(|s| s.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
