//! From arguments to the library's configuration: the workspace, the plan
//! options, the session request. Shared by the commands; decides nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use intake::plan::PlanOptions;
use intake::{CreateSession, DateTime, Lifetime, Session, Utc, Uuid, Workspace, WriteMode};

use super::args::{ChangeSessionArgs, Cli, SelectArgs, SessionArgs};
use super::user::creator;

pub fn workspace_dir(cli: &Cli) -> Result<PathBuf> {
    single_workspace(cli)?
        .ok_or_else(|| anyhow!("no workspace given: pass --workspace DIR or set INTAKE_WORKSPACE"))
}

/// The one `--workspace` given, if any: only `intake serve` takes several.
pub fn single_workspace(cli: &Cli) -> Result<Option<PathBuf>> {
    match cli.workspace.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => Err(anyhow!(
            "--workspace is given {} times; only `intake serve` takes more than one",
            many.len()
        )),
    }
}

pub fn plan_options(paths: &[PathBuf], s: &SelectArgs, workspace: &Path) -> PlanOptions {
    PlanOptions {
        roots: paths.to_vec(),
        max_depth: s.max_depth,
        extensions: s.ext.clone(),
        include: s.include.clone(),
        exclude: s.exclude.clone(),
        hidden: s.hidden,
        follow_links: s.follow_links,
        flatten: s.flatten,
        prefix: s.prefix.clone(),
        skip_dirs: vec![workspace.to_path_buf()],
    }
}

pub fn create_request(
    mode: Option<WriteMode>,
    ttl: Option<&str>,
    no_expiry: bool,
) -> Result<CreateSession> {
    let lifetime = match (ttl, no_expiry) {
        (_, true) => Lifetime::Forever,
        (Some(t), false) => {
            let d = intake::duration::parse_duration(t)?;
            let d = chrono::Duration::from_std(d).context("--ttl is too long")?;
            Lifetime::Ttl(d)
        }
        (None, false) => Lifetime::Default,
    };
    Ok(CreateSession::new(mode.unwrap_or_default()).lifetime(lifetime))
}

/// An instant given on the command line: RFC 3339 (`2026-11-30T12:00:00Z`),
/// or a duration meaning that long before `now` (`2h`, `7d`).
pub fn parse_instant(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = intake::duration::parse_duration(s).map_err(|_| {
        anyhow!(
            "{s:?} is not an instant: use RFC 3339 (2026-11-30T12:00:00Z) or a duration meaning that long ago (2h, 7d)"
        )
    })?;
    let ago = chrono::Duration::from_std(ago).context("the duration is too long")?;
    now.checked_sub_signed(ago)
        .ok_or_else(|| anyhow!("{s:?} is further back than the calendar goes"))
}

/// The session a change (delete, restore) is written in, and whether it
/// was created for it.
pub fn session_for_change(ws: &Workspace, a: &ChangeSessionArgs) -> Result<(Session, bool)> {
    if let Some(id) = &a.session {
        let rec = ws.session(parse_id(id)?)?;
        return Ok((rec.session, false));
    }
    let req = create_request(None, None, false)?;
    Ok((ws.create_session(&req, creator(a.user.as_deref()))?, true))
}

pub fn parse_id(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s.trim()).map_err(|_| {
        anyhow!("{s:?} is not a session id (a UUID); list sessions with `intake session list`")
    })
}

/// The session to ingest into, and whether this run created it.
pub fn session_for_run(ws: &Workspace, a: &SessionArgs, dry_run: bool) -> Result<(Session, bool)> {
    if let Some(id) = &a.session {
        let rec = ws.session(parse_id(id)?)?;
        return Ok((rec.session, false));
    }
    let req = create_request(a.write_mode, a.ttl.as_deref(), a.no_expiry)?;
    let user = creator(a.user.as_deref());
    if dry_run {
        // A dry run changes nothing, not even the session list.
        let now = ws.now();
        let s = Session {
            created_at: now,
            created_by: user,
            expires_at: req.expiry(now),
            session_id: Uuid::nil(),
            write_mode: req.write_mode,
        };
        return Ok((s, false));
    }
    Ok((ws.create_session(&req, user)?, true))
}
