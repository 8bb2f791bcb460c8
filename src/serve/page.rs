//! The status page at `/`: server-rendered HTML that refreshes itself
//! every 5 s, with no script. It shows each workspace's latest sessions
//! with their live counts, and the latest files and failures. File names
//! are private, so it answers only requests from this machine (loopback)
//! unless the server was told otherwise.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::Inner;
use super::wire::ts;
use crate::outcome::Outcome;

/// How many sessions, and files, the page shows per workspace.
const SHOWN: usize = 20;

pub(crate) async fn page(State(s): State<Arc<Inner>>, req: axum::extract::Request) -> Response {
    let local = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(a)| a.ip().is_loopback());
    if !local && !s.options.public_status {
        return (
            StatusCode::FORBIDDEN,
            "the status page answers only on this machine (start the server with --public-status to show it to others)\n",
        )
            .into_response();
    }
    match tokio::task::spawn_blocking(move || render(&s)).await {
        Ok(html) => Html(html).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn render(s: &Inner) -> String {
    let mut h = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>intake</title>\
         <style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}\
         td,th{border-bottom:1px solid #ddd;padding:.25em .75em;text-align:left}\
         .failed{color:#a00}.num{text-align:right}</style></head><body><h1>intake</h1>",
    );
    for (name, hosted) in &s.workspaces {
        let now = hosted.ws.now();
        let _ = write!(h, "<h2 id=\"ws-{0}\">Workspace {0}</h2>", esc(name));
        let mut sessions = match hosted.ws.sessions() {
            Ok(v) => v,
            Err(e) => {
                let _ = write!(h, "<p class=\"failed\">{}</p>", esc(&e.to_string()));
                continue;
            }
        };
        sessions.reverse();
        sessions.truncate(SHOWN);
        h.push_str(
            "<h3>Sessions</h3><table class=\"sessions\"><tr><th>session</th><th>created by</th>\
             <th>created</th><th>mode</th><th>status</th><th class=\"num\">uploaded</th>\
             <th class=\"num\">finished</th><th class=\"num\">failed</th></tr>",
        );
        for rec in &sessions {
            let api = hosted.db.session(rec.session.session_id).ok().flatten();
            let status = match &api {
                Some(a) if a.closed_at.is_some() && a.committed_at.is_none() => "COMMITTING",
                Some(a) if a.closed_at.is_some() && a.expired => "EXPIRED",
                Some(a) if a.closed_at.is_some() => "CLOSED",
                Some(a) if now >= a.expires_at => "EXPIRED",
                Some(_) => "OPEN",
                None => rec.status(now).as_str(),
            };
            let u = &rec.session.created_by;
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                rec.session.session_id,
                esc(&u.given_name),
                esc(&u.family_name),
                ts(rec.session.created_at),
                rec.session.write_mode.as_str(),
                status,
                // Objects received so far (sidecars aside): the count an
                // open session has before its commit.
                match &api {
                    Some(a) if a.direct.is_none() => hosted
                        .db
                        .upload_count(a.id)
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                    _ => String::new(),
                },
                rec.ingestion.finished_files,
                rec.ingestion.failed_files,
            );
        }
        h.push_str("</table>");
        let mut files = Vec::new();
        let mut failures = Vec::new();
        for rec in &sessions {
            if files.len() >= SHOWN && failures.len() >= SHOWN {
                break;
            }
            let _ = hosted.ws.session_files(rec.session.session_id, |o| {
                if o.outcome == Outcome::Failed {
                    failures.push(o);
                } else {
                    files.push(o);
                }
                true
            });
        }
        for (title, class, list) in [
            ("Latest files", "files", &mut files),
            ("Latest failures", "failures", &mut failures),
        ] {
            list.reverse();
            list.truncate(SHOWN);
            let _ = write!(
                h,
                "<h3>{title}</h3><table class=\"{class}\"><tr><th>name</th><th>outcome</th><th class=\"num\">bytes</th><th>why</th></tr>"
            );
            for o in list.iter() {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"{}\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                    esc(&o.name),
                    o.outcome.as_str(),
                    o.outcome.as_str(),
                    o.size.map(|n| n.to_string()).unwrap_or_default(),
                    esc(&match (o.reason, o.message.as_deref()) {
                        (Some(r), Some(m)) => format!("{}: {m}", r.as_str()),
                        (Some(r), None) => r.as_str().to_owned(),
                        (None, m) => m.unwrap_or("").to_owned(),
                    }),
                );
            }
            h.push_str("</table>");
        }
    }
    h.push_str("</body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
