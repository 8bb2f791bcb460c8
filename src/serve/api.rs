//! What every handler of the API shares: the gate every request passes
//! (limits, timeouts, the log line), the authenticated caller, and the
//! small rules of the wire (ids, write modes, the base URL, how a
//! session's expiry and status show). The handlers are in `sessions`,
//! `objects` and `files`; `routes` puts them together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::db::{ApiSession, KeyRecord};
use super::wire::ApiError;
use super::{Hosted, Inner, keys};
use crate::session::{SessionRecord, SessionStatus, WriteMode};

pub(super) type St = State<Arc<Inner>>;
pub(super) type ApiResult<T> = Result<T, ApiError>;

/// The id namespace of file ids: a file's id is derived from its name, so
/// the same name always has the same id.
const FILE_NAMESPACE: Uuid = Uuid::from_u128(0x3b1f_7c2e_9d4a_4e61_b0c8_52a7_e19f_6d03);

/// Where the API's clients are told to read about uploads.
pub(super) const DOCUMENTATION_URL: &str = "https://docs.cloud.deepset.ai/docs/upload-files";

/// Every request: refused with 503 when too many are in flight, cut off
/// with 408 past the request timeout (uploads have their own idle
/// timeout instead), counted, and logged in one line.
pub(super) async fn gate(State(s): St, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let is_upload =
        method == Method::POST && (path.ends_with("/objects") || path.ends_with("/files"));
    let response = match s.in_flight.try_acquire() {
        Err(_) => {
            let mut r = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests in flight; try again",
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Ok(_permit) if is_upload => next.run(req).await,
        Ok(_permit) => {
            let limit = s.options.limits.request_timeout;
            match tokio::time::timeout(limit, next.run(req)).await {
                Ok(r) => r,
                Err(_) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request took longer than {} s", limit.as_secs()),
                )
                .into_response(),
            }
        }
    };
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    s.metrics.request(method.as_str(), status, seconds);
    tracing::info!(
        target: "intake::serve::request",
        method = %method, path = %path, status, ms = (seconds * 1000.0).round() as u64,
        "request"
    );
    response
}

/// Runs store work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))?
}

pub(super) fn hosted(s: &Inner, name: &str) -> ApiResult<Arc<Hosted>> {
    s.workspaces
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no workspace named {name:?}")))
}

/// An authenticated call into a workspace: the workspace and the key.
pub(super) struct Caller {
    pub(super) hosted: Arc<Hosted>,
    pub(super) key: KeyRecord,
}

impl FromRequestParts<Arc<Inner>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Inner>) -> ApiResult<Caller> {
        let presented = bearer(&parts.headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "an API key is needed: Authorization: Bearer KEY",
            )
        })?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, s)
            .await
            .map_err(|_| ApiError::not_found("no such endpoint"))?;
        let name = params.get("workspace").map(String::as_str).unwrap_or("");
        let hosted = hosted(s, name)?;
        let h = Arc::clone(&hosted);
        let key = blocking(move || {
            let all = h.db.keys().map_err(ApiError::internal)?;
            Ok(keys::find(&all, &presented).cloned())
        })
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the API key is not valid for this workspace (unknown or revoked)",
            )
        })?;
        Ok(Caller { hosted, key })
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty()).then(|| key.trim().to_owned())
}

pub(super) fn parse_id(id: &str) -> ApiResult<Uuid> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no session or file {id:?}")))
}

pub(super) fn parse_mode(s: &str) -> ApiResult<WriteMode> {
    match s {
        "KEEP" => Ok(WriteMode::Keep),
        "OVERWRITE" => Ok(WriteMode::Overwrite),
        "FAIL" => Ok(WriteMode::Fail),
        other => Err(ApiError::invalid(format!(
            "write_mode {other:?} is not one of KEEP, OVERWRITE, FAIL"
        ))),
    }
}

/// The base URL clients reach this server at.
pub(super) fn base_url(s: &Inner, headers: &HeaderMap) -> String {
    if let Some(u) = &s.options.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = if s.options.tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// The API's expiry and status of a workspace session: from the server's
/// record for a session it made, else from the session itself.
pub(super) fn api_view(
    rec: &SessionRecord,
    api: Option<&ApiSession>,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, SessionStatus) {
    match api {
        Some(a) => {
            let status = match a.closed_at {
                Some(_) if a.expired => SessionStatus::Expired,
                Some(_) => SessionStatus::Closed,
                None if now >= a.expires_at => SessionStatus::Expired,
                None => SessionStatus::Open,
            };
            (Some(a.expires_at), status)
        }
        None => (rec.session.expires_at, rec.status(now)),
    }
}

/// A file's id: derived from its name.
pub(super) fn file_id(name: &str) -> Uuid {
    Uuid::new_v5(&FILE_NAMESPACE, name.as_bytes())
}

pub(super) async fn metrics(State(s): St) -> ApiResult<Response> {
    let s2 = Arc::clone(&s);
    let open = blocking(move || {
        let mut open = 0u64;
        for h in s2.workspaces.values() {
            open +=
                h.db.open_sessions(None, h.ws.now())
                    .map_err(ApiError::internal)?;
        }
        Ok(i64::try_from(open).unwrap_or(i64::MAX))
    })
    .await?;
    let body = s.metrics.render(open);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
