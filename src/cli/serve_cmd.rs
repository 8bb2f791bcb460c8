//! `intake serve` and `intake keys`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use axum_server::tls_rustls::RustlsConfig;
use intake::Workspace;
use intake::serve::{Keys, Limits, ServeOptions, Server, valid_workspace_name};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use super::Exit;
use super::args::{Cli, KeysCmd, ServeArgs};
use super::config::workspace_dir;
use super::output::println_locked;
use super::slots::Limited;
use super::user::creator;

fn duration(what: &str, s: &str) -> Result<Duration> {
    intake::duration::parse_duration(s).map_err(|e| anyhow!("{what}: {e}"))
}

/// The workspaces to serve: every workspace folder in `--root`, and each
/// `--workspace NAME=DIR` (or `DIR`, named after the folder).
fn workspaces(cli: &Cli, a: &ServeArgs) -> Result<Vec<(String, Workspace)>> {
    let mut out = Vec::new();
    if let Some(root) = &a.root {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .with_context(|| format!("cannot list --root {}", root.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("intake.db").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let name = folder_name(&dir)?;
            out.push((name, Workspace::open(&dir)?));
        }
    }
    for w in &cli.workspace {
        let text = w.to_string_lossy();
        let (name, dir) = match text.split_once('=') {
            Some((n, d)) if valid_workspace_name(n) => (n.to_owned(), PathBuf::from(d)),
            _ => (folder_name(w)?, w.clone()),
        };
        out.push((name, Workspace::open(&dir)?));
    }
    if out.is_empty() {
        bail!(
            "nothing to serve: pass --root DIR (every workspace folder in it) or --workspace NAME=DIR"
        );
    }
    Ok(out)
}

fn folder_name(dir: &Path) -> Result<String> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if !valid_workspace_name(&name) {
        bail!(
            "{} cannot be served under its folder's name {name:?}: give it one with --workspace NAME={}",
            dir.display(),
            dir.display()
        );
    }
    Ok(name)
}

pub fn serve(cli: &Cli, a: &ServeArgs) -> Result<Exit> {
    let request_timeout = duration("--request-timeout", &a.request_timeout)?;
    let options = ServeOptions {
        public_url: a.public_url.clone(),
        public_status: a.public_status,
        tls: a.tls_cert.is_some(),
        limits: Limits {
            max_upload_bytes: a.max_upload_bytes,
            max_files_per_session: a.max_files_per_session,
            max_open_sessions_per_key: a.max_open_sessions,
            request_timeout,
            upload_idle_timeout: duration("--upload-idle-timeout", &a.upload_idle_timeout)?,
            max_in_flight: a.max_in_flight,
        },
    };
    let stop_timeout = duration("--stop-timeout", &a.stop_timeout)?;
    let server = Server::new(workspaces(cli, a)?, options)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("intake-http")
        .build()
        .context("cannot start the HTTP runtime")?;
    let result = rt.block_on(run(cli, a, &server, request_timeout, stop_timeout));
    // Whatever happened to the listener: commit what was closed.
    server.shutdown();
    result.map(|()| Exit::Ok)
}

/// The TLS configuration from `--tls-cert` and `--tls-key`.
async fn tls_config(a: &ServeArgs) -> Result<Option<RustlsConfig>> {
    let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) else {
        return Ok(None);
    };
    // One provider for the process (ring); a second install is refused,
    // harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem_file(cert, key)
        .await
        .map(Some)
        .with_context(|| {
            format!(
                "cannot use the TLS certificate {} and key {}",
                cert.display(),
                key.display()
            )
        })
}

async fn run(
    cli: &Cli,
    a: &ServeArgs,
    server: &Server,
    first_request: Duration,
    stop_timeout: Duration,
) -> Result<()> {
    let mut int = signal(SignalKind::interrupt()).context("cannot set up signal handling")?;
    let mut term = signal(SignalKind::terminate()).context("cannot set up signal handling")?;
    let tls = tls_config(a).await?;
    let listener = std::net::TcpListener::bind(a.listen)
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    listener
        .set_nonblocking(true)
        .context("the listening socket")?;
    let addr = listener.local_addr().context("the listening address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let names = server.workspaces();
    if cli.json {
        println_locked(
            &json!({"type": "listening", "address": format!("{scheme}://{addr}"), "workspaces": names})
                .to_string(),
        );
    } else if !cli.quiet {
        println_locked(&format!(
            "intake serve: listening on {scheme}://{addr} (API at {scheme}://{addr}/api/v1; workspaces: {})",
            names.join(", ")
        ));
    }
    let app = server
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    // Both kinds of server stop the same way: no new connections, then
    // the requests in flight get `stop_timeout`.
    let handle = axum_server::Handle::<SocketAddr>::new();
    // A connection must send its first request within the request
    // timeout, and holds one of --max-connections slots while it lives.
    let max = a.max_connections;
    let mut http = match tls {
        Some(config) => tokio::spawn(
            axum_server::from_tcp_rustls(listener, config)
                .context("the listening socket")?
                .map(|tls| Limited::new(tls, max))
                .first_request_timeout(first_request)
                .handle(handle.clone())
                .serve(app),
        ),
        None => tokio::spawn(
            axum_server::from_tcp(listener)
                .context("the listening socket")?
                .map(|plain| Limited::new(plain, max))
                .first_request_timeout(first_request)
                .handle(handle.clone())
                .serve(app),
        ),
    };
    let name = tokio::select! {
        r = &mut http => {
            return r.context("the HTTP server failed")?.context("the HTTP server failed");
        }
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    tracing::info!(
        "{name}: no new connections; finishing the requests in flight (at most {stop_timeout:?}; send it again to stop at once)"
    );
    handle.graceful_shutdown(Some(stop_timeout));
    tokio::select! {
        r = &mut http => r.context("the HTTP server failed")?.context("the HTTP server failed")?,
        _ = int.recv() => std::process::exit(128 + libc::SIGINT),
        _ = term.recv() => std::process::exit(128 + libc::SIGTERM),
    }
    tracing::info!("committing the sessions closed so far");
    Ok(())
}

pub fn keys(cli: &Cli, c: &KeysCmd) -> Result<Exit> {
    let ws = Workspace::open(workspace_dir(cli)?)?;
    let keys = Keys::open(&ws)?;
    match c {
        KeysCmd::Create { name, user } => {
            let user = creator(Some(user.as_deref().unwrap_or(name)));
            let key = keys.create(name, user.clone())?;
            let who = format!("{} {}", user.given_name, user.family_name)
                .trim()
                .to_owned();
            if cli.json {
                println_locked(&json!({"name": name, "key": key, "user": who}).to_string());
            } else {
                println_locked(&key);
                if !cli.quiet {
                    eprintln!(
                        "Created key {name:?} (sessions created by {who}). It is shown only now: keep it in a secret store."
                    );
                }
            }
        }
        KeysCmd::List => {
            for k in keys.list()? {
                let who = format!("{} {}", k.user.given_name, k.user.family_name)
                    .trim()
                    .to_owned();
                let created = intake::session::format_ts(k.created_at);
                let revoked = k.revoked_at.map(intake::session::format_ts);
                if cli.json {
                    println_locked(
                        &json!({"name": k.name, "user": who, "created_at": created, "revoked_at": revoked})
                            .to_string(),
                    );
                } else {
                    println_locked(&format!(
                        "{}\t{who}\tcreated {created}{}",
                        k.name,
                        revoked
                            .map(|r| format!("\trevoked {r}"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        KeysCmd::Revoke { name } => {
            if !keys.revoke(name)? {
                bail!("no live key named {name:?}; list them with `intake keys list`");
            }
            if cli.json {
                println_locked(&json!({"name": name, "revoked": true}).to_string());
            } else if !cli.quiet {
                println_locked(&format!("Revoked key {name:?}"));
            }
        }
    }
    Ok(Exit::Ok)
}
