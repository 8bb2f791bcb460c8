//! `intake watch`: the command line and an optional TOML file turned into
//! the library's [`WatchConfig`], signals turned into a graceful stop, and
//! each outcome logged (and printed with `--json`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use intake::plan::Planner;
use intake::watch::{WatchConfig, WatchError, WatchEvent, WatchSession, Watcher};
use intake::{FileReport, Workspace, WriteMode};
use serde::Deserialize;

use super::Exit;
use super::args::{Cli, LogFormat, SelectArgs, WatchArgs};
use super::config::{create_request, parse_id, plan_options};
use super::output::{colour, printable, println_locked};
use super::signals::Signals;
use super::user::creator;

/// Default for `--stop-timeout`.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The options a `--config` file may carry: every option of `intake watch`
/// (and the global ones that matter to it), by its long name, with `_` or
/// `-` between words. Relative paths are relative to the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workspace: Option<PathBuf>,
    paths: Option<Vec<PathBuf>>,
    flatten: Option<bool>,
    prefix: Option<String>,
    ext: Option<OneOrMany>,
    include: Option<OneOrMany>,
    exclude: Option<OneOrMany>,
    hidden: Option<bool>,
    #[serde(alias = "max-depth")]
    max_depth: Option<usize>,
    #[serde(alias = "follow-links")]
    follow_links: Option<bool>,
    session: Option<String>,
    #[serde(alias = "write-mode")]
    write_mode: Option<String>,
    ttl: Option<String>,
    #[serde(alias = "no-expiry")]
    no_expiry: Option<bool>,
    user: Option<String>,
    settle: Option<String>,
    poll: Option<String>,
    #[serde(alias = "no-rotate")]
    no_rotate: Option<bool>,
    #[serde(alias = "log-format")]
    log_format: Option<String>,
    #[serde(alias = "stop-timeout")]
    stop_timeout: Option<String>,
    checksum: Option<bool>,
    delete: Option<bool>,
    jobs: Option<usize>,
    json: Option<bool>,
    quiet: Option<bool>,
    verbose: Option<u8>,
}

/// `ext = "txt,pdf"` or `ext = ["txt", "pdf"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self, split: bool) -> Vec<String> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(s) if split => s.split(',').map(|p| p.trim().to_owned()).collect(),
            OneOrMany::One(s) => vec![s],
        }
    }
}

fn load(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let mut c: FileConfig = toml::from_str(&text)
        .map_err(|e| anyhow!("invalid config file {}: {e}", path.display()))?;
    // Relative paths in the file are relative to the file.
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(ws) = &mut c.workspace
        && ws.is_relative()
    {
        *ws = base.join(&*ws);
    }
    if let Some(paths) = &mut c.paths {
        for p in paths.iter_mut().filter(|p| p.is_relative()) {
            *p = base.join(&*p);
        }
    }
    Ok(c)
}

/// Everything, after the command line and the file are merged.
struct Opts {
    workspace: PathBuf,
    paths: Vec<PathBuf>,
    select: SelectArgs,
    session: Option<String>,
    write_mode: Option<WriteMode>,
    ttl: Option<String>,
    no_expiry: bool,
    user: Option<String>,
    settle: Duration,
    poll: Option<Duration>,
    rotate: bool,
    json_logs: bool,
    stop_timeout: Duration,
    checksum: bool,
    delete: bool,
    jobs: Option<usize>,
    json: bool,
    quiet: bool,
    verbose: u8,
}

fn duration(what: &str, s: &str) -> Result<Duration> {
    let d = intake::duration::parse_duration(s).map_err(|e| anyhow!("{what}: {e}"))?;
    if d > intake::watch::MAX_WAIT {
        bail!("{what}: {s} is longer than the longest allowed, 7d");
    }
    Ok(d)
}

/// The command line wins over the file; a flag set in the file cannot be
/// unset on the command line.
fn merge(cli: &Cli, a: &WatchArgs, f: FileConfig) -> Result<Opts> {
    let workspace = super::config::single_workspace(cli)?.or(f.workspace).ok_or_else(|| {
        anyhow!("no workspace given: pass --workspace DIR, set INTAKE_WORKSPACE, or put `workspace = \"DIR\"` in the config file")
    })?;
    let paths = if a.paths.is_empty() {
        f.paths.unwrap_or_default()
    } else {
        a.paths.clone()
    };
    if paths.is_empty() {
        bail!(
            "no folder to watch: give one or more PATHs, or `paths = [\"DIR\"]` in the config file"
        );
    }
    let s = &a.select;
    let pick = |cli: &Vec<String>, file: Option<OneOrMany>, split: bool| {
        if cli.is_empty() {
            file.map(|v| v.into_vec(split)).unwrap_or_default()
        } else {
            cli.clone()
        }
    };
    let select = SelectArgs {
        flatten: s.flatten || f.flatten.unwrap_or(false),
        prefix: s.prefix.clone().or(f.prefix),
        ext: pick(&s.ext, f.ext, true),
        include: pick(&s.include, f.include, false),
        exclude: pick(&s.exclude, f.exclude, false),
        hidden: s.hidden || f.hidden.unwrap_or(false),
        max_depth: s.max_depth.or(f.max_depth),
        follow_links: s.follow_links || f.follow_links.unwrap_or(false),
    };
    let ss = &a.session;
    let write_mode = match (ss.write_mode, f.write_mode) {
        (Some(m), _) => Some(m),
        (None, Some(m)) => Some(
            m.parse::<WriteMode>()
                .map_err(|e| anyhow!("write_mode in the config file: {e}"))?,
        ),
        (None, None) => None,
    };
    let session = ss.session.clone().or(f.session);
    let ttl = ss.ttl.clone().or(f.ttl);
    let no_expiry = ss.no_expiry || f.no_expiry.unwrap_or(false);
    if session.is_some() && (write_mode.is_some() || ttl.is_some() || no_expiry) {
        bail!(
            "--session uses an existing session: it cannot be combined with --write-mode, --ttl or --no-expiry"
        );
    }
    if ttl.is_some() && no_expiry {
        bail!("--ttl and --no-expiry cannot be used together");
    }
    let settle = match a.settle.clone().or(f.settle) {
        Some(s) => duration("--settle", &s)?,
        None => intake::watch::DEFAULT_SETTLE,
    };
    let poll = match a.poll.clone().or(f.poll) {
        Some(s) => {
            let d = duration("--poll", &s)?;
            if d.is_zero() {
                bail!("--poll: the interval must be more than zero");
            }
            Some(d)
        }
        None => None,
    };
    let json_logs = a.log_format == LogFormat::Json
        || match f
            .log_format
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => bail!("log_format in the config file: {other:?} is not text or json"),
        };
    let stop_timeout = match a.stop_timeout.clone().or(f.stop_timeout) {
        Some(s) => duration("--stop-timeout", &s)?,
        None => DEFAULT_STOP_TIMEOUT,
    };
    Ok(Opts {
        workspace,
        paths,
        select,
        session,
        write_mode,
        ttl,
        no_expiry,
        user: ss.user.clone().or(f.user),
        settle,
        poll,
        rotate: !(a.no_rotate || f.no_rotate.unwrap_or(false)),
        json_logs,
        stop_timeout,
        checksum: a.checksum || f.checksum.unwrap_or(false),
        delete: a.delete || f.delete.unwrap_or(false),
        jobs: a.jobs.or(f.jobs),
        json: cli.json || f.json.unwrap_or(false),
        quiet: cli.quiet || f.quiet.unwrap_or(false),
        verbose: cli.verbose.max(f.verbose.unwrap_or(0)),
    })
}

/// The watcher's own logging: outcomes at info are what a daemon's log is
/// for, so info is the default here (warn for the other commands); `-v`
/// adds debug, `-q` keeps errors only, `RUST_LOG` overrides. The format can
/// come from the config file, which is read after the global logging is
/// set up, hence a subscriber of its own for this command's threads.
fn subscriber(o: &Opts) -> tracing::Dispatch {
    use tracing_subscriber::EnvFilter;
    let default = match (o.quiet, o.verbose) {
        (true, _) => "error",
        (_, 0) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .with_target(false);
    if o.json_logs {
        tracing::Dispatch::new(builder.json().finish())
    } else {
        tracing::Dispatch::new(builder.finish())
    }
}

pub fn watch(cli: &Cli, a: &WatchArgs) -> Result<Exit> {
    let file = match &a.config {
        Some(p) => load(p)?,
        None => FileConfig::default(),
    };
    let o = merge(cli, a, file)?;
    let dispatch = subscriber(&o);
    tracing::dispatcher::with_default(&dispatch, || run(&o, &dispatch))
}

fn run(o: &Opts, dispatch: &tracing::Dispatch) -> Result<Exit> {
    // Check every option before touching the disk: a usage error must not
    // leave a new, empty workspace behind.
    let existing = o.session.as_deref().map(parse_id).transpose()?;
    let request = create_request(o.write_mode, o.ttl.as_deref(), o.no_expiry)?;
    let plan = plan_options(&o.paths, &o.select, &o.workspace);
    Planner::new(plan.clone())?;
    for p in &o.paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "cannot watch {}: it is not a folder (intake watch watches folders)",
                p.display()
            ),
            Err(e) => bail!("cannot watch {}: {e}", p.display()),
        }
    }
    // Before anything starts, so that a signal during start-up is not lost.
    let signals = Signals::new()?;
    let ws = Workspace::create(&o.workspace)?;
    let session = match existing {
        Some(id) => WatchSession::Existing(id),
        None => WatchSession::New {
            request,
            user: creator(o.user.as_deref()),
        },
    };
    let mut config = WatchConfig::new(plan, session)
        .settle(o.settle)
        .poll(o.poll)
        .rotate(o.rotate)
        .quick_check(!o.checksum)
        .delete(o.delete);
    if let Some(j) = o.jobs {
        config = config.parallelism(j);
    }
    let handle = Watcher::start(ws, config).map_err(to_anyhow)?;
    let stopper = handle.stopper();
    signals.spawn(
        move || stopper.stop(),
        Some(o.stop_timeout),
        dispatch.clone(),
    )?;
    for ev in handle.events() {
        // Rotations and retries are logged by the library.
        if let WatchEvent::File(r) = ev {
            file(o, &r);
        }
    }
    let summary = handle.stop().map_err(to_anyhow)?;
    let c = &summary.counts;
    let text = format!(
        "stopped after {:.1}s: {} files ({} ingested, {} overwritten, {} unchanged, {} kept, {} deleted, {} failed, {} refused); {} rescans, {} retries; sessions {}",
        summary.elapsed.as_secs_f64(),
        c.total(),
        c.ingested,
        c.overwritten,
        c.unchanged,
        c.kept,
        c.deleted,
        c.failed,
        c.refused,
        summary.rescans,
        summary.retries,
        summary
            .sessions
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if o.json_logs {
        tracing::info!(
            files = c.total(),
            ingested = c.ingested,
            overwritten = c.overwritten,
            unchanged = c.unchanged,
            kept = c.kept,
            deleted = c.deleted,
            failed = c.failed,
            refused = c.refused,
            rescans = summary.rescans,
            retries = summary.retries,
            "{text}"
        );
    } else {
        tracing::info!("{text}");
    }
    // SIGINT/SIGTERM end a watch normally: 0, whatever the files did.
    Ok(Exit::Ok)
}

/// Session errors keep their type, so that they exit with code 3.
fn to_anyhow(e: WatchError) -> anyhow::Error {
    match e {
        WatchError::Engine(e) => e.into(),
        e => e.into(),
    }
}

/// One outcome: a log line (a warning if it failed), and with `--json` the
/// stable per-file object on stdout.
fn file(o: &Opts, r: &FileReport) {
    if o.json {
        println_locked(&r.to_json().to_string());
    }
    let source = r.source.as_ref().map(|p| p.display().to_string());
    let blake3 = r.blake3.map(|h| h.to_hex().to_string());
    let reason = r.reason.map(|x| x.as_str());
    // A name may hold control characters; text logs go to a terminal.
    let text = {
        let mut s = format!("{} {}", r.outcome, r.name);
        if let Some(reason) = reason {
            s.push_str(&format!(" ({reason})"));
        }
        if let Some(m) = &r.message {
            s.push_str(&format!(": {m}"));
        }
        if o.json_logs {
            s
        } else {
            printable(&s).into_owned()
        }
    };
    // JSON logs carry every field; text logs only the line.
    macro_rules! log {
        ($level:ident) => {
            if o.json_logs {
                tracing::$level!(
                    outcome = r.outcome.as_str(),
                    name = %r.name,
                    source,
                    reason,
                    size = r.size,
                    blake3,
                    session_id = %r.session_id,
                    "{text}"
                )
            } else {
                tracing::$level!("{text}")
            }
        };
    }
    if r.outcome.is_finished() {
        log!(info)
    } else {
        log!(warn)
    }
}
