//! One function per command.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use intake::plan::{PlanEvent, Planner};
use intake::{SessionRecord, Workspace, session::format_ts};
use serde_json::json;
use uuid::Uuid;

use super::Exit;
use super::args::{Cli, Command, ExportArgs, FilesCmd, IngestArgs, SessionCmd};
use super::config::{
    create_request, parse_id, parse_instant, plan_options, session_for_change, session_for_run,
    workspace_dir,
};
use super::output::{Printer, human_bytes, printable, println_locked};
use super::signals::Signals;
use super::user::creator;

pub fn dispatch(cli: &Cli) -> Result<Exit> {
    match &cli.command {
        Command::Init { group, blobs } => init(cli, *group, blobs.as_deref()),
        Command::Ingest(a) => ingest(cli, a),
        Command::Watch(a) => super::watch_cmd::watch(cli, a),
        Command::Session(c) => session(cli, c),
        Command::Files(c) => files(cli, c),
        Command::Export(a) => export(cli, a),
        Command::Verify => verify(cli),
        Command::Gc { retention, grace } => gc(cli, retention, grace),
        Command::Copy { from, to } => copy(cli, from, to),
        Command::Serve(a) => super::serve_cmd::serve(cli, a),
        Command::Keys(c) => super::serve_cmd::keys(cli, c),
        Command::Completions { shell } => {
            // Generated into memory first: writing to a closed pipe must
            // end the command, not panic inside the generator.
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "intake", &mut script);
            print_bytes(&script)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("rendering the manual page")?;
            print_bytes(&page)
        }
    }
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an
/// error.
fn print_bytes(bytes: &[u8]) -> Result<Exit> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to standard output"))
        }
        _ => Ok(Exit::Ok),
    }
}

fn open(cli: &Cli) -> Result<Workspace> {
    Ok(Workspace::open(workspace_dir(cli)?)?)
}

fn init(cli: &Cli, group: bool, blobs: Option<&str>) -> Result<Exit> {
    let dir = workspace_dir(cli)?;
    let remote = intake::workspace::postgres_address(&dir).is_some();
    let builder = || {
        let b = intake::WorkspaceBuilder::new(&dir).group_access(group);
        match blobs {
            Some(at) => Ok::<_, anyhow::Error>(b.blobs_location(blobs_location(at)?)),
            None => Ok(b),
        }
    };
    match (remote, blobs) {
        (false, Some(_)) => {
            bail!("--blobs is for a PostgreSQL workspace (--workspace postgresql://…)")
        }
        (true, None) => {
            if let Err(intake::Error::NotAWorkspace(_)) = Workspace::open(&dir) {
                bail!(
                    "a new PostgreSQL workspace needs --blobs s3://BUCKET/PREFIX (or a folder every machine reaches)"
                );
            }
        }
        _ => {}
    }
    // Whether the workspace is there is the index's to say.
    let (ws, existed) = match builder()?.open() {
        Ok(ws) => (ws, true),
        Err(intake::Error::NotAWorkspace(_)) => (builder()?.create()?, false),
        Err(e) => return Err(e.into()),
    };
    if cli.json {
        println_locked(
            &json!({"type": "workspace", "path": ws.label(), "created": !existed}).to_string(),
        );
    } else if !cli.quiet {
        let verb = if existed {
            "Workspace already exists at"
        } else {
            "Created workspace at"
        };
        println_locked(&format!("{verb} {}", ws.label()));
    }
    Ok(Exit::Ok)
}

/// A blob location as the index records it: `s3://…` as given, a folder
/// made absolute.
fn blobs_location(at: &str) -> Result<String> {
    if at.starts_with("s3://") {
        return Ok(at.to_owned());
    }
    let path = std::path::absolute(at).with_context(|| format!("--blobs {at}"))?;
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("--blobs {at}: the folder's path is not UTF-8"))
}

fn ingest(cli: &Cli, a: &IngestArgs) -> Result<Exit> {
    let dir = workspace_dir(cli)?;
    // Check every option before touching the disk: a usage error must not
    // leave a new, empty workspace behind.
    if let Some(id) = &a.session.session {
        parse_id(id)?;
    }
    create_request(
        a.session.write_mode,
        a.session.ttl.as_deref(),
        a.session.no_expiry,
    )?;
    Planner::new(plan_options(&a.paths, &a.select, &dir))?;
    // A source that is not there is a mistake in the command, not a file
    // that failed: nothing is created for it. (A dangling link is there; it
    // fails as a file.)
    for path in &a.paths {
        if let Err(e) = std::fs::symlink_metadata(path)
            && e.kind() == std::io::ErrorKind::NotFound
        {
            bail!(
                "{}: no such file or folder; check the path",
                printable(&path.to_string_lossy())
            );
        }
    }
    let mut _scratch = None;
    let ws = if a.dry_run {
        // A dry run must not create the workspace: if the index says there
        // is none, decide against an empty scratch one instead.
        match Workspace::open(&dir) {
            Ok(ws) => ws,
            Err(intake::Error::NotAWorkspace(_)) => {
                let scratch = Scratch::new()?;
                let ws = Workspace::create(scratch.0.join("ws"))?;
                _scratch = Some(scratch);
                ws
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        Workspace::create(&dir)?
    };
    let (session, created) = session_for_run(&ws, &a.session, a.dry_run)?;
    // Now that the workspace exists, the planner can recognise it in a source.
    let planner = Planner::new(plan_options(&a.paths, &a.select, &dir))?;
    let quiet = cli.quiet;
    let json = cli.json;
    let items = planner.filter_map(move |ev| match ev {
        PlanEvent::Item(i) => Some(i),
        PlanEvent::Skipped { path, reason, why } => {
            if json {
                println_locked(
                    &json!({
                        "type": "skipped",
                        "source": path,
                        "reason": reason.as_str(),
                        "message": why,
                    })
                    .to_string(),
                );
            } else if !quiet {
                let line = format!("skipped     {}: {why}", path.display());
                eprintln!("{}", printable(&line));
            }
            None
        }
    });
    // Ctrl-C: stop admitting files, finish and report those in flight,
    // close the session; a second Ctrl-C exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    Signals::new()?.spawn(
        move || flag.store(true, Ordering::SeqCst),
        None,
        tracing::dispatcher::get_default(|d| d.clone()),
    )?;
    let mut run = ws
        .ingest(&session)
        .quick_check(!a.checksum)
        .dry_run(a.dry_run)
        .stop_flag(Arc::clone(&stop));
    if let Some(j) = a.jobs {
        run = run.parallelism(j);
    }
    let mut printer = Printer::new(cli, a.dry_run);
    let mut bytes = 0u64;
    let summary = run.run(items, |r| {
        if r.outcome.is_finished() {
            bytes += r.size.unwrap_or(0);
        }
        printer.file(r, bytes);
    })?;
    if created {
        ws.close_session(session.session_id)?;
    }
    printer.summary(&summary, a.dry_run);
    let c = summary.counts;
    if stop.load(Ordering::SeqCst) {
        eprintln!("intake: interrupted: the files not reported above were not attempted");
        return Ok(Exit::Interrupted);
    }
    Ok(if c.refused > 0 {
        Exit::Session
    } else if c.failed > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

/// A scratch workspace for a dry run against a workspace that does not
/// exist yet; removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let p = std::env::temp_dir().join(format!("intake-dry-run-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn session_text(r: &SessionRecord, now: chrono::DateTime<chrono::Utc>) -> String {
    let s = &r.session;
    let i = &r.ingestion;
    let by = format!("{} {}", s.created_by.given_name, s.created_by.family_name);
    format!(
        "session   {}\nstatus    {}\nmode      {}\ncreated   {} by {} ({})\nexpires   {}\nclosed    {}\nfiles     {} finished, {} failed (ingested {}, overwritten {}, unchanged {}, kept {}, deleted {}); {}{}",
        s.session_id,
        r.status(now).as_str(),
        s.write_mode,
        format_ts(s.created_at),
        by.trim(),
        s.created_by.user_id,
        s.expires_at.map_or("never".to_owned(), format_ts),
        r.closed_at.map_or("-".to_owned(), format_ts),
        i.finished_files,
        i.failed_files,
        i.ingested,
        i.overwritten,
        i.unchanged,
        i.kept,
        i.deleted,
        human_bytes(i.bytes),
        r.reverts
            .map(|id| format!("\nreverts   {id}"))
            .unwrap_or_default(),
    )
}

fn session(cli: &Cli, c: &SessionCmd) -> Result<Exit> {
    match c {
        SessionCmd::Create {
            write_mode,
            ttl,
            no_expiry,
            user,
        } => {
            let ws = Workspace::create(workspace_dir(cli)?)?;
            let req = create_request(*write_mode, ttl.as_deref(), *no_expiry)?;
            let s = ws.create_session(&req, creator(user.as_deref()))?;
            if cli.json {
                println_locked(&serde_json::to_string(&s)?);
            } else {
                println_locked(&s.session_id.to_string());
            }
        }
        SessionCmd::List => {
            let ws = open(cli)?;
            let now = ws.now();
            for r in ws.sessions()? {
                if cli.json {
                    println_locked(&r.to_json(now).to_string());
                } else {
                    println_locked(&format!(
                        "{}  {:<8} {:<9} {}  {} finished, {} failed",
                        r.session.session_id,
                        r.status(now).as_str(),
                        r.session.write_mode.as_str(),
                        format_ts(r.session.created_at),
                        r.ingestion.finished_files,
                        r.ingestion.failed_files
                    ));
                }
            }
        }
        SessionCmd::Show { id, files } => {
            let ws = open(cli)?;
            let id = parse_id(id)?;
            let r = ws.session(id)?;
            let now = ws.now();
            if cli.json {
                println_locked(&r.to_json(now).to_string());
            } else {
                println_locked(&session_text(&r, now));
            }
            if *files {
                ws.session_files(id, |f| {
                    if cli.json {
                        let v = json!({
                            "type": "file",
                            "name": f.name,
                            "source": f.source,
                            "outcome": f.outcome.as_str(),
                            "reason": f.reason.map(|r| r.as_str()),
                            "message": f.message,
                            "size": f.size,
                            "blake3": f.hash.map(|h| h.to_hex()),
                            "session_id": f.session_id.to_string(),
                        });
                        println_locked(&v.to_string());
                    } else {
                        let reason = f.reason.map(|r| format!(" ({r})")).unwrap_or_default();
                        println_locked(&format!("{:<11} {}{reason}", f.outcome.as_str(), f.name));
                    }
                    true
                })?;
            }
        }
        SessionCmd::Revert {
            id,
            dry_run,
            force,
            user,
        } => {
            let ws = open(cli)?;
            let opts = intake::workspace::RevertOptions {
                force: *force,
                dry_run: *dry_run,
            };
            let started = std::time::Instant::now();
            let done = ws.revert_session(parse_id(id)?, opts, creator(user.as_deref()))?;
            return Ok(print_changes(
                cli,
                &done.files,
                done.session.session_id,
                started,
                *dry_run,
            ));
        }
        SessionCmd::Close { id } => {
            let ws = open(cli)?;
            let r = ws.close_session(parse_id(id)?)?;
            if cli.json {
                println_locked(&r.to_json(ws.now()).to_string());
            } else if !cli.quiet {
                println_locked(&format!("closed session {}", r.session.session_id));
            }
        }
    }
    Ok(Exit::Ok)
}

/// Prints the reports of a change (delete, restore, revert) and its
/// summary; the exit code follows them as for an ingest.
fn print_changes(
    cli: &Cli,
    files: &[intake::FileReport],
    session_id: Uuid,
    started: std::time::Instant,
    dry_run: bool,
) -> Exit {
    let mut printer = Printer::new(cli, dry_run).every_file();
    let mut counts = intake::outcome::Counts::default();
    for r in files {
        counts.add(r);
        printer.file(r, counts.bytes);
    }
    let summary = intake::Summary {
        session_id,
        counts,
        elapsed: started.elapsed(),
    };
    printer.summary(&summary, dry_run);
    if counts.refused > 0 {
        Exit::Session
    } else if counts.failed > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

fn entry_json(e: &intake::store::Entry) -> serde_json::Value {
    json!({
        "name": e.name,
        "size": e.size,
        "blake3": e.hash.to_hex(),
        "session_id": e.session_id.to_string(),
        "ingested_at": format_ts(e.ingested_at),
        "meta": e.meta.as_ref().map(|m| intake::Meta::from_canonical(m.clone()).to_value()),
        "version": e.version,
        "deleted": e.deleted,
    })
}

fn files(cli: &Cli, c: &FilesCmd) -> Result<Exit> {
    let ws = open(cli)?;
    match c {
        FilesCmd::List { prefix, at } => {
            let print = |e: intake::store::Entry| {
                if cli.json {
                    println_locked(&entry_json(&e).to_string());
                } else {
                    println_locked(&format!(
                        "{:>10}  {}  {}",
                        e.size,
                        &e.hash.to_hex()[..12],
                        e.name
                    ));
                }
                true
            };
            match at {
                Some(at) => ws
                    .as_of(parse_instant(at, ws.now())?)?
                    .list(prefix.as_deref(), print)?,
                None => ws.list(prefix.as_deref(), print)?,
            }
        }
        FilesCmd::Show { name, at } => {
            let e = match at {
                Some(at) => ws.as_of(parse_instant(at, ws.now())?)?.current(name)?,
                None => ws.current(name)?,
            }
            .ok_or_else(|| intake::Error::NameNotFound(name.clone()))?;
            if cli.json {
                println_locked(&entry_json(&e).to_string());
            } else {
                println_locked(&format!(
                    "name      {}\nsize      {}\nblake3    {}\nversion   {}\nsession   {}\ningested  {}\nmeta      {}",
                    e.name,
                    e.size,
                    e.hash,
                    e.version,
                    e.session_id,
                    format_ts(e.ingested_at),
                    e.meta.as_deref().unwrap_or("-")
                ));
            }
        }
        FilesCmd::Cat { name, version, at } => {
            let mut r = match (version, at) {
                (Some(v), _) => ws.read_version(name, *v)?,
                (None, Some(at)) => ws.as_of(parse_instant(at, ws.now())?)?.read(name)?,
                (None, None) => ws.read(name)?,
            };
            let mut out = io::stdout().lock();
            match io::copy(&mut r, &mut out).and_then(|_| out.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(e) => bail!("writing {name} to standard output: {e}"),
            }
        }
        FilesCmd::History { name } => {
            for e in ws.history(name)? {
                if cli.json {
                    let mut v = entry_json(&e);
                    v["replaced_at"] = e.replaced_at.map(format_ts).into();
                    println_locked(&v.to_string());
                } else {
                    let what = if e.deleted {
                        format!("{:>10}  {:<12}", "", "deleted")
                    } else {
                        format!("{:>10}  {}", e.size, &e.hash.to_hex()[..12])
                    };
                    println_locked(&format!(
                        "v{:<4} {}  {what}  {}",
                        e.version,
                        format_ts(e.ingested_at),
                        e.replaced_at.map_or("current".to_owned(), |t| format!(
                            "replaced {}",
                            format_ts(t)
                        ))
                    ));
                }
            }
        }
        FilesCmd::Rm {
            names,
            prefix,
            session,
        } => {
            let mut names: Vec<String> = names.clone();
            if let Some(p) = prefix {
                ws.list(Some(p), |e| {
                    names.push(e.name);
                    true
                })?;
            }
            let (s, created) = session_for_change(&ws, session)?;
            let started = std::time::Instant::now();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let files = ws.delete(&s, &refs);
            if created {
                ws.close_session(s.session_id)?;
            }
            return Ok(print_changes(cli, &files?, s.session_id, started, false));
        }
        FilesCmd::Restore {
            name,
            version,
            session,
        } => {
            let (s, created) = session_for_change(&ws, session)?;
            let started = std::time::Instant::now();
            let r = ws.restore(&s, name, *version);
            if created {
                ws.close_session(s.session_id)?;
            }
            return Ok(print_changes(cli, &[r?], s.session_id, started, false));
        }
    }
    Ok(Exit::Ok)
}

fn export(cli: &Cli, a: &ExportArgs) -> Result<Exit> {
    use intake::export::{ExportAction, ExportOptions};
    let ws = open(cli)?;
    let opts = ExportOptions {
        prefix: a.prefix.clone(),
        at: a
            .at
            .as_deref()
            .map(|t| parse_instant(t, ws.now()))
            .transpose()?,
        with_meta: a.with_meta,
        delete: a.delete,
    };
    let verbose = cli.verbose > 0;
    let sum = ws.export(&a.dir, &opts, |ev| {
        if cli.json {
            let v = json!({
                "type": "export",
                "path": ev.path,
                "action": ev.action.as_str(),
                "message": ev.message,
                "size": ev.size,
            });
            println_locked(&v.to_string());
        } else if matches!(ev.action, ExportAction::Failed | ExportAction::Kept) {
            let line = format!(
                "{:<9} {}: {}",
                ev.action.as_str(),
                ev.path,
                ev.message.as_deref().unwrap_or_default()
            );
            eprintln!("{}", printable(&line));
        } else if verbose && ev.action != ExportAction::Unchanged {
            println_locked(&printable(&format!(
                "{:<9} {}",
                ev.action.as_str(),
                ev.path
            )));
        }
    })?;
    if cli.json {
        let v = json!({
            "type": "export_summary",
            "written": sum.written,
            "unchanged": sum.unchanged,
            "removed": sum.removed,
            "kept": sum.kept,
            "failed": sum.failed,
            "bytes": sum.bytes,
            "elapsed_ms": sum.elapsed.as_millis() as u64,
        });
        println_locked(&v.to_string());
    } else if !cli.quiet {
        println_locked(&format!(
            "exported into {}: {} written ({}), {} unchanged, {} removed, {} kept, {} failed in {:.2}s",
            printable(&a.dir.to_string_lossy()),
            sum.written,
            human_bytes(sum.bytes),
            sum.unchanged,
            sum.removed,
            sum.kept,
            sum.failed,
            sum.elapsed.as_secs_f64()
        ));
    }
    Ok(if sum.failed > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

fn verify(cli: &Cli) -> Result<Exit> {
    let ws = open(cli)?;
    let report = ws.verify()?;
    for p in &report.index_problems {
        if cli.json {
            println_locked(&json!({"type": "defect", "name": null, "blake3": null, "problem": format!("index: {p}")}).to_string());
        } else {
            eprintln!("defect  index: {}", printable(p));
        }
    }
    for d in &report.defects {
        if cli.json {
            println_locked(&json!({"type": "defect", "name": d.name, "blake3": d.hash.to_hex(), "problem": d.problem}).to_string());
        } else {
            eprintln!(
                "defect  {}: {} ({})",
                d.name.as_deref().unwrap_or("(no name)"),
                d.problem,
                d.hash
            );
        }
    }
    if cli.json {
        println_locked(&json!({"type": "verify", "blobs": report.blobs, "bytes": report.bytes, "defects": report.defects.len() + report.index_problems.len()}).to_string());
    } else if !cli.quiet {
        println_locked(&format!(
            "verified {} blobs, {}: {} defects",
            report.blobs,
            human_bytes(report.bytes),
            report.defects.len() + report.index_problems.len()
        ));
    }
    Ok(if report.is_sound() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

fn copy(cli: &Cli, from: &std::path::Path, to: &std::path::Path) -> Result<Exit> {
    let source = Workspace::open(from)?;
    let target = if intake::workspace::postgres_address(to).is_some() {
        Workspace::open(to)?
    } else {
        Workspace::create(to)?
    };
    let started = std::time::Instant::now();
    let mut last = std::time::Instant::now();
    let r = intake::copy::copy(&source, &target, &mut |r| {
        if !cli.quiet && !cli.json && last.elapsed() >= std::time::Duration::from_secs(2) {
            last = std::time::Instant::now();
            eprintln!(
                "copying: {} names, {} versions, {} blobs so far",
                r.names, r.versions, r.blobs
            );
        }
    })?;
    let sound = r.verify.is_sound();
    if cli.json {
        println_locked(
            &json!({
                "type": "copy", "sessions": r.sessions, "names": r.names,
                "versions": r.versions, "blobs": r.blobs, "bytes": r.bytes,
                "outcomes": r.outcomes, "verified_blobs": r.verify.blobs,
                "defects": r.verify.defects.len(), "sound": sound,
                "elapsed_ms": started.elapsed().as_millis() as u64,
            })
            .to_string(),
        );
    } else if !cli.quiet {
        println_locked(&format!(
            "copied {} sessions, {} versions of {} names, {} blobs ({} bytes), {} outcomes into {}; verified {} blobs: {} defects",
            r.sessions,
            r.versions,
            r.names,
            r.blobs,
            r.bytes,
            r.outcomes,
            target.label(),
            r.verify.blobs,
            r.verify.defects.len() + r.verify.index_problems.len()
        ));
    }
    Ok(if sound { Exit::Ok } else { Exit::Failed })
}

fn gc(cli: &Cli, retention: &str, grace: &str) -> Result<Exit> {
    let grace = intake::duration::parse_duration(grace)?;
    let ws = intake::WorkspaceBuilder::new(workspace_dir(cli)?)
        .gc_grace(grace)
        .open()?;
    let d = intake::duration::parse_duration(retention)?;
    let d = chrono::Duration::from_std(d).context("--retention is too long")?;
    let r = ws.gc(d)?;
    if cli.json {
        println_locked(
            &json!({"type": "gc", "versions": r.versions, "blobs": r.blobs, "orphans": r.orphans})
                .to_string(),
        );
    } else if !cli.quiet {
        println_locked(&format!(
            "removed {} old versions, {} blobs, {} orphaned blob files",
            r.versions, r.blobs, r.orphans
        ));
    }
    Ok(Exit::Ok)
}
