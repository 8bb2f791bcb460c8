//! `intake serve` under load, against the floor for a durable upload: a
//! bare-bones handler, written here, that streams each body to a file and
//! fsyncs it. Both run on this machine in the same run, so the ratios
//! hold while absolute rates drift.
//!
//! ```sh
//! cargo build --release
//! cargo bench --bench serve_load          # INTAKE=target/release/intake, BENCH_DIR=/var/tmp
//! ```
//!
//! - **L**: 16 clients, 4 KiB bodies, 8 s each: the bare handler; intake's
//!   upload endpoint (each client uploading into its own open session);
//!   and intake's whole cycle per upload (create a session, upload, close,
//!   poll until the commit counted it).
//! - **G**: one 1 GiB upload against the disk's sequential write speed
//!   (1 GiB written and fsynced in 1 MiB pieces, on the same disk).
//! - **M**: peak RSS of the server during 100 concurrent 128 MiB uploads.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::post;
use futures_util::StreamExt;
use reqwest::blocking::{Client, multipart};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const CLIENTS: usize = 16;
const BODY: usize = 4096;
const RUN: Duration = Duration::from_secs(8);

fn intake() -> PathBuf {
    std::env::var_os("INTAKE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/intake"))
}

fn run(args: &[&str]) -> Vec<u8> {
    let out = Command::new(intake())
        .args(args)
        .output()
        .expect("running intake");
    assert!(
        out.status.success(),
        "intake {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

struct Serve {
    child: Child,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_intake(ws: &Path) -> Serve {
    let mut child = Command::new(intake())
        .args([
            "--json",
            "-q",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-open-sessions",
            "100000",
        ])
        .arg("--workspace")
        .arg(format!("ws={}", ws.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting intake serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the listening line");
    let v: Value = serde_json::from_str(&line).expect("listening json");
    Serve {
        child,
        base: v["address"].as_str().expect("address").to_owned(),
    }
}

/// The floor: each body streamed to its own new file, fsynced, 201.
fn start_bare(dir: PathBuf) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let n = std::sync::Arc::new(AtomicU64::new(0));
            let app = Router::new().route(
                "/upload",
                post(move |body: Body| {
                    let (dir, n) = (dir.clone(), n.clone());
                    async move {
                        let path = dir.join(n.fetch_add(1, Ordering::Relaxed).to_string());
                        let mut f = tokio::fs::File::create(&path)
                            .await
                            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
                        let mut stream = body.into_data_stream();
                        while let Some(chunk) = stream.next().await {
                            let chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
                            f.write_all(&chunk)
                                .await
                                .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
                        }
                        f.sync_all()
                            .await
                            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
                        Ok::<_, StatusCode>(StatusCode::CREATED)
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    format!("http://{}", rx.recv().expect("bare address"))
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(CLIENTS * 2)
        .build()
        .expect("client")
}

/// Runs `op` from `CLIENTS` threads for `RUN`; returns operations per second.
fn rate(op: impl Fn(usize) + Sync) -> f64 {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..CLIENTS {
            let (op, done, stop) = (&op, &done, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    op(t);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(RUN);
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn create(c: &Client, base: &str, key: &str) -> Value {
    let r = c
        .post(format!("{base}/api/v1/workspaces/ws/upload_sessions"))
        .bearer_auth(key)
        .json(&json!({"write_mode": "OVERWRITE"}))
        .send()
        .expect("create");
    assert_eq!(r.status().as_u16(), 201);
    r.json().expect("session")
}

fn upload(c: &Client, session: &Value, name: &str, part: multipart::Part) {
    let cfg = &session["aws_prefixed_request_config"];
    let mut form = multipart::Form::new();
    for (k, v) in cfg["fields"].as_object().expect("fields") {
        form = form.text(k.clone(), v.as_str().expect("field").to_owned());
    }
    let r = c
        .post(cfg["url"].as_str().expect("url"))
        .multipart(form.part("file", part.file_name(name.to_owned())))
        .send()
        .expect("upload");
    assert_eq!(r.status().as_u16(), 204, "{:?}", r.text());
}

fn close_and_wait(c: &Client, base: &str, key: &str, id: &str, n: u64) {
    let url = format!("{base}/api/v1/workspaces/ws/upload_sessions/{id}");
    let r = c
        .put(&url)
        .bearer_auth(key)
        .json(&json!({"status": "CLOSED"}))
        .send()
        .expect("close");
    assert_eq!(r.status().as_u16(), 204);
    loop {
        let s: Value = c
            .get(&url)
            .bearer_auth(key)
            .send()
            .expect("status")
            .json()
            .expect("json");
        let st = &s["ingestion_status"];
        if st["finished_files"].as_u64().unwrap_or(0) + st["failed_files"].as_u64().unwrap_or(0)
            >= n
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// CPU seconds a process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime is the 12th,
    // stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    f.get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn big_file(path: &Path, mib: usize) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == (mib as u64) << 20) {
        return;
    }
    let mut f = std::fs::File::create(path).expect("create");
    let mut piece = vec![0u8; 1 << 20];
    for i in 0..mib {
        for (j, b) in piece.iter_mut().enumerate() {
            *b = (i * 31 + j * 7) as u8;
        }
        f.write_all(&piece).expect("write");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is a filter of
    // scenarios (L, G, M).
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let on = |s: &str| wanted.is_empty() || wanted.iter().any(|w| w == s);
    let root = tempfile::Builder::new()
        .prefix("intake-serve-bench-")
        .tempdir_in(
            std::env::var_os("BENCH_DIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from),
        )
        .expect("bench dir");
    let ws = root.path().join("ws");
    let ws_s = ws.display().to_string();
    run(&["init", "--workspace", &ws_s]);
    let out = run(&[
        "--json",
        "keys",
        "create",
        "--workspace",
        &ws_s,
        "--name",
        "bench",
    ]);
    let key = serde_json::from_slice::<Value>(&out).expect("key")["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let serve = start_intake(&ws);
    let c = client();
    println!(
        "intake serve under load ({} clients, {} B bodies, {} s each)",
        CLIENTS,
        BODY,
        RUN.as_secs()
    );

    if on("L") {
        let bare_dir = root.path().join("bare");
        std::fs::create_dir_all(&bare_dir).expect("bare dir");
        let bare = start_bare(bare_dir.clone());
        let body = vec![b'x'; BODY];
        let bare_rate = rate(|_| {
            let r = c
                .post(format!("{bare}/upload"))
                .body(body.clone())
                .send()
                .expect("bare");
            assert_eq!(r.status().as_u16(), 201);
        });
        let _ = std::fs::remove_dir_all(&bare_dir);
        let sessions: Vec<Value> = (0..CLIENTS)
            .map(|_| create(&c, &serve.base, &key))
            .collect();
        let seq = AtomicU64::new(0);
        let upload_rate = rate(|t| {
            let n = seq.fetch_add(1, Ordering::Relaxed);
            upload(
                &c,
                &sessions[t],
                &format!("u{n}"),
                multipart::Part::bytes(body.clone()),
            );
        });
        // Where a cycle's time goes, in microseconds summed over clients.
        let spent: [AtomicU64; 3] = Default::default();
        let cycle_rate = rate(|_| {
            let n = seq.fetch_add(1, Ordering::Relaxed);
            let t = Instant::now();
            let s = create(&c, &serve.base, &key);
            let t1 = Instant::now();
            upload(
                &c,
                &s,
                &format!("c{n}"),
                multipart::Part::bytes(body.clone()),
            );
            let t2 = Instant::now();
            close_and_wait(
                &c,
                &serve.base,
                &key,
                s["session_id"].as_str().expect("id"),
                1,
            );
            for (i, d) in [t1 - t, t2 - t1, t2.elapsed()].into_iter().enumerate() {
                spent[i].fetch_add(d.as_micros() as u64, Ordering::Relaxed);
            }
        });
        let total: u64 = spent
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum::<u64>()
            .max(1);
        let share = |i: usize| 100.0 * spent[i].load(Ordering::Relaxed) as f64 / total as f64;
        println!("L  bare handler (body to a file + fsync)     {bare_rate:8.0} uploads/s");
        println!(
            "L  intake upload endpoint (open sessions)    {upload_rate:8.0} uploads/s   ratio {:.2}",
            upload_rate / bare_rate
        );
        println!(
            "L  intake create+upload+close+commit         {cycle_rate:8.0} uploads/s   ratio {:.2}",
            cycle_rate / bare_rate
        );
        println!(
            "L    of a cycle's time: create {:.0}%, upload {:.0}%, close until committed {:.0}%",
            share(0),
            share(1),
            share(2)
        );
    }

    if on("G") {
        let src = root.path().join("1g.bin");
        big_file(&src, 1024);
        // Each measurement starts with no dirty pages waiting.
        let settle = || {
            let _ = Command::new("sync").status();
        };
        settle();
        let target = root.path().join("disk-test.bin");
        let piece = vec![7u8; 1 << 20];
        let t = Instant::now();
        {
            let mut f = std::fs::File::create(&target).expect("create");
            for _ in 0..1024 {
                f.write_all(&piece).expect("write");
            }
            f.sync_all().expect("sync");
        }
        let disk = 1024.0 / t.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&target);
        let bare_dir = root.path().join("bare-g");
        std::fs::create_dir_all(&bare_dir).expect("bare dir");
        let bare = start_bare(bare_dir.clone());
        settle();
        let t = Instant::now();
        let r = c
            .post(format!("{bare}/upload"))
            .body(std::fs::File::open(&src).expect("open"))
            .send()
            .expect("bare upload");
        assert_eq!(r.status().as_u16(), 201);
        let bare_speed = 1024.0 / t.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&bare_dir);
        let s = create(&c, &serve.base, &key);
        settle();
        let cpu = cpu_seconds(serve.child.id());
        let t = Instant::now();
        upload(
            &c,
            &s,
            "big.bin",
            multipart::Part::file(&src).expect("file"),
        );
        let took = t.elapsed().as_secs_f64();
        let up = 1024.0 / took;
        let cpu = cpu_seconds(serve.child.id()) - cpu;
        // The same with curl as the client, when there is one: less of the
        // two cores goes to the client.
        let curl = |args: Vec<String>| -> Option<f64> {
            settle();
            let t = Instant::now();
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .args(args)
                .output()
                .ok()?;
            let code = String::from_utf8_lossy(&out.stdout).into_owned();
            if code != "201" && code != "204" {
                eprintln!(
                    "curl answered {code:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            (code == "201" || code == "204").then(|| 1024.0 / t.elapsed().as_secs_f64())
        };
        let bare_dir = root.path().join("bare-g");
        std::fs::create_dir_all(&bare_dir).expect("bare dir");
        let bare = start_bare(bare_dir.clone());
        let bare_curl = curl(vec![
            "-X".into(),
            "POST".into(),
            "-T".into(),
            src.display().to_string(),
            format!("{bare}/upload"),
        ]);
        let _ = std::fs::remove_dir_all(&bare_dir);
        let s2 = create(&c, &serve.base, &key);
        let cfg = &s2["aws_prefixed_request_config"];
        let intake_curl = curl(vec![
            "-F".into(),
            "key=${filename}".into(),
            "-F".into(),
            format!("token={}", cfg["fields"]["token"].as_str().expect("token")),
            "-F".into(),
            format!("file=@{};filename=big2.bin", src.display()),
            cfg["url"].as_str().expect("url").to_owned(),
        ]);
        let _ = std::fs::remove_file(&src);
        println!("G  disk sequential write, 1 GiB + fsync      {disk:8.0} MiB/s");
        if let (Some(b), Some(i)) = (bare_curl, intake_curl) {
            println!(
                "G  curl: 1 GiB into the bare handler         {b:8.0} MiB/s   ratio {:.2}",
                b / disk
            );
            println!(
                "G  curl: 1 GiB into intake serve             {i:8.0} MiB/s   ratio {:.2}",
                i / disk
            );
        }
        println!(
            "G  one 1 GiB upload into the bare handler    {bare_speed:8.0} MiB/s   ratio {:.2}",
            bare_speed / disk
        );
        println!(
            "G  one 1 GiB upload into intake serve        {up:8.0} MiB/s   ratio {:.2} (server CPU {:.0}% of one core)",
            up / disk,
            100.0 * cpu / took
        );
    }

    if on("M") {
        let src = root.path().join("128m.bin");
        big_file(&src, 128);
        // A server of its own, so that its peak is this scenario's.
        let serve = start_intake(&ws);
        let s = create(&c, &serve.base, &key);
        let before = peak_rss_mib(serve.child.id());
        let t = Instant::now();
        std::thread::scope(|scope| {
            for i in 0..100 {
                let (c, s, src) = (&c, &s, &src);
                scope.spawn(move || {
                    upload(
                        c,
                        s,
                        &format!("m{i}"),
                        multipart::Part::file(src).expect("file"),
                    )
                });
            }
        });
        let took = t.elapsed().as_secs_f64();
        let peak = peak_rss_mib(serve.child.id());
        println!(
            "M  100 concurrent 128 MiB uploads            {took:8.1} s; server peak RSS {peak:.0} MiB (before: {before:.0} MiB)"
        );
    }
}
