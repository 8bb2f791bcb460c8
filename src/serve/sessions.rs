//! Upload sessions: create, get (the status the SDK polls), close (the
//! commit follows at once, in the background), list.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::SubsecRound;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Hosted;
use super::api::{
    ApiResult, Caller, DOCUMENTATION_URL, St, api_view, base_url, blocking, parse_id, parse_mode,
};
use super::db::ApiSession;
use super::token;
use super::wire::{ApiError, NEVER, session_item, ts};
use crate::session::{CreateSession, Lifetime, SessionRecord, SessionStatus, WriteMode};

#[derive(Deserialize, Default)]
struct CreateBody {
    #[serde(default)]
    write_mode: Option<String>,
    #[serde(default)]
    expires_in_seconds: Option<i64>,
    // `parallel_processing_enabled`, which the SDK always sends, changes
    // nothing here: every commit decides its files in parallel.
}

pub(super) async fn create_session(
    State(s): St,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: CreateBody = if body.is_empty() {
        CreateBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("the request body: {e}")))?
    };
    let mode = match req.write_mode.as_deref() {
        None => WriteMode::Keep,
        Some(m) => parse_mode(m)?,
    };
    let ttl = match req.expires_in_seconds {
        None => 86_400,
        Some(n) if (1..=86_400).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "expires_in_seconds {n} is not between 1 and 86400"
            )));
        }
    };
    let max_open = s.options.limits.max_open_sessions_per_key;
    let base = base_url(&s, &headers);
    let h = Arc::clone(&caller.hosted);
    let key = caller.key;
    let (id, expires) = blocking(move || {
        let now = h.ws.now();
        let open =
            h.db.open_sessions(Some(&key.name), now)
                .map_err(ApiError::internal)?;
        if open >= max_open {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!(
                    "this key has {open} upload sessions open, the most it may; close one first"
                ),
            ));
        }
        let session =
            h.ws.create_session(
                &CreateSession::new(mode).lifetime(Lifetime::Forever),
                key.user.clone(),
            )
            .map_err(ApiError::internal)?;
        let expires = (now + chrono::Duration::seconds(ttl)).trunc_subsecs(6);
        super::db::private_dir(&h.stage_of(session.session_id)).map_err(ApiError::internal)?;
        h.db.add_session(&ApiSession {
            id: session.session_id,
            key: key.name,
            expires_at: expires,
            closed_at: None,
            expired: false,
            committed_at: None,
            direct: None,
        })
        .map_err(ApiError::internal)?;
        Ok((session.session_id, expires))
    })
    .await?;
    let h = &caller.hosted;
    let url = format!(
        "{base}/api/v1/workspaces/{}/upload_sessions/{id}/objects",
        h.name
    );
    let token = token::sign(&h.secret, &h.name, id, expires);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "session_id": id.to_string(),
            "documentation_url": DOCUMENTATION_URL,
            "expires_at": ts(expires),
            "aws_prefixed_request_config": {
                "url": url,
                "fields": { "key": "${filename}", "token": token },
            },
        })),
    ))
}

pub(super) async fn get_session(
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    let h = caller.hosted;
    blocking(move || {
        let rec = session_record(&h, id)?;
        let api = h.db.session(id).map_err(ApiError::internal)?;
        let (expires, _) = api_view(&rec, api.as_ref(), h.ws.now());
        Ok(Json(json!({
            "session_id": id.to_string(),
            "documentation_url": DOCUMENTATION_URL,
            "expires_at": expires.map_or_else(|| NEVER.to_owned(), ts),
            "ingestion_status": {
                "finished_files": rec.ingestion.finished_files,
                "failed_files": rec.ingestion.failed_files,
            },
        })))
    })
    .await
}

pub(super) fn session_record(h: &Hosted, id: Uuid) -> ApiResult<SessionRecord> {
    match h.ws.session(id) {
        Ok(r) => Ok(r),
        Err(crate::Error::SessionNotFound(_)) => {
            Err(ApiError::not_found(format!("no upload session {id}")))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[derive(Deserialize)]
struct CloseBody {
    status: String,
}

pub(super) async fn close_session(
    State(s): St,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    let req: CloseBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body: {e}")))?;
    if req.status != "CLOSED" {
        return Err(ApiError::invalid(format!(
            "status {:?}: a session can only be set CLOSED",
            req.status
        )));
    }
    let h = caller.hosted;
    blocking(move || {
        let rec = session_record(&h, id)?;
        let now = h.ws.now();
        let already = || {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("upload session {id} is already closed"),
            )
        };
        match h.db.session(id).map_err(ApiError::internal)? {
            Some(api) => {
                let expired = now >= api.expires_at;
                if !h
                    .db
                    .close_session(id, now, expired)
                    .map_err(ApiError::internal)?
                {
                    return Err(already());
                }
            }
            None => {
                if rec.closed_at.is_some() {
                    return Err(already());
                }
                h.ws.close_session(id).map_err(ApiError::internal)?;
            }
        }
        Ok(())
    })
    .await?;
    s.wake();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct ListSessionsQuery {
    limit: Option<usize>,
    page_number: Option<usize>,
    is_expired: Option<bool>,
}

pub(super) async fn list_sessions(
    caller: Caller,
    Query(q): Query<ListSessionsQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(10).clamp(1, 100);
    let page = q.page_number.unwrap_or(1).max(1);
    let h = caller.hosted;
    blocking(move || {
        let now = h.ws.now();
        let api: HashMap<Uuid, ApiSession> =
            h.db.sessions()
                .map_err(ApiError::internal)?
                .into_iter()
                .map(|a| (a.id, a))
                .collect();
        let mut all = h.ws.sessions().map_err(ApiError::internal)?;
        all.reverse();
        let items: Vec<Value> = all
            .iter()
            .filter_map(|rec| {
                let (expires, status) = api_view(rec, api.get(&rec.session.session_id), now);
                let wanted = match q.is_expired {
                    None => true,
                    Some(e) => e == (status == SessionStatus::Expired),
                };
                wanted.then(|| {
                    session_item(
                        rec.session.session_id,
                        &rec.session.created_by,
                        rec.session.created_at,
                        expires,
                        rec.session.write_mode,
                        status,
                    )
                })
            })
            .collect();
        let total = items.len();
        let start = (page - 1).saturating_mul(limit).min(total);
        let end = start.saturating_add(limit).min(total);
        Ok(Json(json!({
            "total": total,
            "has_more": end < total,
            "data": items[start..end],
        })))
    })
    .await
}
