//! The routes and their handlers: the deepset upload-session API under
//! `/api/v1/workspaces/{workspace}/`, the status page, `/healthz` and
//! `/metrics`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Multipart, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::db::{ApiSession, KeyRecord, NewBody, NewUpload};
use super::upload::{self, BodyError, Received};
use super::wire::{ApiError, NEVER, session_item, ts};
use super::{Hosted, Inner, keys, token};
use crate::item::{Item, Source};
use crate::meta::Meta;
use crate::name::Name;
use crate::outcome::{FileReport, Outcome, Reason};
use crate::session::{CreateSession, Lifetime, SessionRecord, SessionStatus, WriteMode};

type St = State<Arc<Inner>>;
type ApiResult<T> = Result<T, ApiError>;

/// The id namespace of file ids: a file's id is derived from its name, so
/// the same name always has the same id.
const FILE_NAMESPACE: Uuid = Uuid::from_u128(0x3b1f_7c2e_9d4a_4e61_b0c8_52a7_e19f_6d03);

/// Upload bodies up to this size are kept in the server's database (one
/// durable write for many uploads), larger ones in files of their own.
const INLINE_UPLOAD: usize = 64 * 1024;

/// Where the API's clients are told to read about uploads.
const DOCUMENTATION_URL: &str = "https://docs.cloud.deepset.ai/docs/upload-files";

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let ws = "/api/v1/workspaces/{workspace}";
    Router::new()
        .route("/", get(super::page::page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route(
            &format!("{ws}/upload_sessions"),
            post(create_session).get(list_sessions),
        )
        .route(
            &format!("{ws}/upload_sessions/{{id}}"),
            get(get_session).put(close_session),
        )
        .route(
            &format!("{ws}/upload_sessions/{{id}}/objects"),
            post(upload_object).layer(DefaultBodyLimit::disable()),
        )
        .route(
            &format!("{ws}/files"),
            get(list_files)
                .post(direct_upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            &format!("{ws}/files/{{id}}"),
            get(download).delete(delete_file),
        )
        .route(&format!("{ws}/files/{{id}}/meta"), get(download_meta))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(Arc::clone(&inner), gate))
        .with_state(inner)
}

/// Every request: refused with 503 when too many are in flight, cut off
/// with 408 past the request timeout (uploads have their own idle
/// timeout instead), counted, and logged in one line.
async fn gate(State(s): St, req: Request, next: Next) -> Response {
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
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))?
}

fn hosted(s: &Inner, name: &str) -> ApiResult<Arc<Hosted>> {
    s.workspaces
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no workspace named {name:?}")))
}

/// An authenticated call into a workspace: the workspace and the key.
struct Caller {
    hosted: Arc<Hosted>,
    key: KeyRecord,
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

fn parse_id(id: &str) -> ApiResult<Uuid> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no session or file {id:?}")))
}

fn parse_mode(s: &str) -> ApiResult<WriteMode> {
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
fn base_url(s: &Inner, headers: &HeaderMap) -> String {
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
fn api_view(
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

// ---- sessions

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    write_mode: Option<String>,
    #[serde(default)]
    expires_in_seconds: Option<i64>,
    #[serde(default)]
    #[allow(dead_code)]
    parallel_processing_enabled: Option<bool>,
}

async fn create_session(
    State(s): St,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: CreateBody = if body.is_empty() {
        CreateBody {
            write_mode: None,
            expires_in_seconds: None,
            parallel_processing_enabled: None,
        }
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
            h.db.open_sessions_of(&key.name, now)
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
        let expires = (now + chrono::Duration::seconds(ttl)).trunc_subsecs_micros();
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

trait TruncMicros {
    fn trunc_subsecs_micros(self) -> Self;
}

impl TruncMicros for DateTime<Utc> {
    fn trunc_subsecs_micros(self) -> Self {
        use chrono::SubsecRound;
        self.trunc_subsecs(6)
    }
}

async fn get_session(
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

fn session_record(h: &Hosted, id: Uuid) -> ApiResult<SessionRecord> {
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

async fn close_session(
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
struct ListSessionsQuery {
    limit: Option<usize>,
    page_number: Option<usize>,
    is_expired: Option<bool>,
}

async fn list_sessions(
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

// ---- uploads into a session (the S3-style presigned POST)

/// The upload of one object into a session. It carries no API key: the
/// `token` field the session handed out authorises it.
async fn upload_object(
    State(s): St,
    Path((workspace, id)): Path<(String, String)>,
    mut mp: Multipart,
) -> ApiResult<StatusCode> {
    let r = receive_object(&s, &workspace, &id, &mut mp).await;
    drain_after(&s, &r, &mut mp).await;
    r
}

/// After an error answer to an upload whose body is not read to its end,
/// reads (and drops) the rest of it, up to 16 MiB: a server that answers
/// and closes with bytes unread resets the connection, and the client
/// never sees the answer. A body that stalled or was malformed is not
/// waited for.
async fn drain_after<T>(s: &Inner, r: &ApiResult<T>, mp: &mut Multipart) {
    if let Err(e) = r
        && e.status != StatusCode::REQUEST_TIMEOUT
        && e.status != StatusCode::BAD_REQUEST
    {
        upload::drain(mp, 16 << 20, s.options.limits.upload_idle_timeout).await;
    }
}

async fn receive_object(
    s: &Arc<Inner>,
    workspace: &str,
    id: &str,
    mp: &mut Multipart,
) -> ApiResult<StatusCode> {
    let started = Instant::now();
    let h = hosted(s, workspace)?;
    let id = parse_id(id)?;
    let limits = &s.options.limits;
    let idle = limits.upload_idle_timeout;
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut field = loop {
        let f = upload::next_field(mp, idle)
            .await?
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "the body has no file part"))?;
        if f.name() == Some("file") {
            break f;
        }
        let name = f.name().unwrap_or("").to_owned();
        let value = upload::small(f, 64 * 1024, idle).await?;
        fields.insert(name, String::from_utf8_lossy(&value).into_owned());
    };
    let tok = fields
        .get("token")
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "the upload carries no token"))?;
    token::check(&h.secret, &h.name, id, tok, h.ws.now())
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e.to_string()))?;
    let h2 = Arc::clone(&h);
    let api = blocking(move || h2.db.session(id).map_err(ApiError::internal))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no upload session {id}")))?;
    if api.closed_at.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("upload session {id} is closed"),
        ));
    }
    let raw = field.file_name().unwrap_or("").to_owned();
    let key = fields
        .get("key")
        .cloned()
        .unwrap_or_else(|| "${filename}".into());
    // The object's name: `key`, with `${filename}` expanded as S3 does.
    let name = upload::file_name(&raw).map(|f| key.replace("${filename}", &f));
    let refuse = |name: String, reason: Reason, message: String, err: ApiError| {
        let h = Arc::clone(&h);
        async move {
            record_refusal(&h, id, name, reason, message).await?;
            Err::<StatusCode, ApiError>(err)
        }
    };
    let name = match name.and_then(|n| {
        Name::new(&n)
            .map(|_| n.clone())
            .map_err(|e| format!("{n:?}: {e}"))
    }) {
        Ok(n) => n,
        Err(message) => {
            let printable = upload::file_name(&raw).unwrap_or(raw.clone());
            let err = ApiError::invalid(format!("invalid object name: {message}"));
            return refuse(printable, Reason::InvalidName, message, err).await;
        }
    };
    let h2 = Arc::clone(&h);
    let staged = blocking(move || h2.db.upload_count(id).map_err(ApiError::internal)).await?;
    let is_sidecar = crate::meta::sidecar_of(std::ffi::OsStr::new(&name)).is_some();
    if !is_sidecar && staged >= limits.max_files_per_session {
        let message =
            format!("the session holds {staged} files, the most this server takes in one session");
        let err = ApiError::new(StatusCode::FORBIDDEN, message.clone());
        return refuse(name, Reason::StoreError, message, err).await;
    }
    let dir = h.stage_of(id);
    let path = dir.join(Uuid::new_v4().to_string());
    let received = upload::receive(
        &mut field,
        &path,
        limits.max_upload_bytes,
        INLINE_UPLOAD,
        idle,
        true,
    )
    .await;
    let (size, body) = match received {
        Ok(Received::Bytes(b)) => (b.len() as u64, NewBody::Bytes(b)),
        Ok(Received::File(n)) => (n, NewBody::File(path.clone())),
        Err(e) if e.is_final() => {
            let message = ApiError::from(BodyError::TooLarge(limits.max_upload_bytes)).detail;
            let err = ApiError::from(e);
            return refuse(name, Reason::ReadError, message, err).await;
        }
        Err(e) => return Err(e.into()),
    };
    let h2 = Arc::clone(&h);
    let up = NewUpload {
        session: id,
        name,
        body,
    };
    let added = blocking(move || h2.db.add_upload(up).map_err(ApiError::internal)).await;
    match added {
        Ok(Some(_)) => {}
        Ok(None) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("upload session {id} was closed during the upload"),
            ));
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
    }
    s.metrics.upload(size, started.elapsed().as_secs_f64());
    Ok(StatusCode::NO_CONTENT)
}

/// Records an upload refused for good, so that the file counts once as
/// failed when its session is committed (the SDK waits for every file it
/// sent to be counted).
async fn record_refusal(
    h: &Arc<Hosted>,
    id: Uuid,
    name: String,
    reason: Reason,
    message: String,
) -> ApiResult<()> {
    let h = Arc::clone(h);
    blocking(move || {
        h.db.add_upload(NewUpload {
            session: id,
            name,
            body: NewBody::Refused(reason, message),
        })
        .map_err(ApiError::internal)
        .map(|_| ())
    })
    .await
}

// ---- direct uploads (20 files or fewer)

#[derive(Deserialize)]
struct DirectQuery {
    write_mode: Option<String>,
    file_name: Option<String>,
}

/// `POST files`: one file decided and committed at once, in the session
/// that takes the key's direct uploads in that write mode.
async fn direct_upload(
    State(s): St,
    caller: Result<Caller, ApiError>,
    Query(q): Query<DirectQuery>,
    mut mp: Multipart,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let r = match caller {
        Ok(caller) => receive_direct(&s, caller, q, &mut mp).await,
        Err(e) => Err(e),
    };
    drain_after(&s, &r, &mut mp).await;
    r
}

async fn receive_direct(
    s: &Arc<Inner>,
    caller: Caller,
    q: DirectQuery,
    mp: &mut Multipart,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mode = match q.write_mode.as_deref() {
        None => WriteMode::Keep,
        Some(m) => parse_mode(m)?,
    };
    let h = Arc::clone(&caller.hosted);
    let key = caller.key.clone();
    let session = blocking(move || direct_session(&h, &key, mode)).await?;
    let h = caller.hosted;
    let limits = &s.options.limits;
    let idle = limits.upload_idle_timeout;
    let dir = h.stage_of(session.session_id);
    let mut staged: Option<(Received, std::path::PathBuf, String)> = None;
    let mut meta_text: Option<Vec<u8>> = None;
    let cleanup = |p: &Option<(Received, std::path::PathBuf, String)>| {
        if let Some((Received::File(_), path, _)) = p {
            let _ = std::fs::remove_file(path);
        }
    };
    loop {
        let mut field = match upload::next_field(mp, idle).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                cleanup(&staged);
                return Err(e.into());
            }
        };
        match field.name() {
            Some("file") | Some("text") if staged.is_none() => {
                let raw = field.file_name().unwrap_or("").to_owned();
                let path = dir.join(Uuid::new_v4().to_string());
                // Read by the ingest right after, then removed: not synced.
                let received = upload::receive(
                    &mut field,
                    &path,
                    limits.max_upload_bytes,
                    INLINE_UPLOAD,
                    idle,
                    false,
                )
                .await?;
                staged = Some((received, path, raw));
            }
            Some("meta") => match upload::small(field, 1 << 20, idle).await {
                Ok(m) => meta_text = Some(m),
                Err(e) => {
                    cleanup(&staged);
                    return Err(e.into());
                }
            },
            _ => {
                if let Err(e) = upload::small(field, 1 << 20, idle).await {
                    cleanup(&staged);
                    return Err(e.into());
                }
            }
        }
    }
    let Some((received, path, raw)) = staged else {
        return Err(ApiError::invalid("the body has no file part"));
    };
    let name = match q.file_name {
        Some(n) => Ok(n),
        None => upload::file_name(&raw),
    };
    let source = match received {
        Received::Bytes(b) => Source::Bytes(b),
        Received::File(_) => Source::Upload(path.clone()),
    };
    let item = direct_item(name, source, meta_text.as_deref());
    let metrics_inner = Arc::clone(s);
    let report = blocking(move || {
        let mut last: Option<FileReport> = None;
        let result =
            h.ws.ingest(&session)
                .quick_check(false)
                .parallelism(1)
                .run(vec![item], |r| {
                    metrics_inner.metrics.file(r);
                    last = Some(r.clone());
                });
        let _ = std::fs::remove_file(&path);
        result.map_err(ApiError::internal)?;
        let report = last.ok_or_else(|| ApiError::internal("the ingest reported no file"))?;
        if let Ok(n) = Name::new(&report.name) {
            let id = file_id(n.as_str());
            h.db.remember_ids(&[(id, n.as_str())])
                .map_err(ApiError::internal)?;
        }
        Ok(report)
    })
    .await?;
    match (report.outcome, report.reason) {
        (o, _) if o.is_finished() && o != Outcome::Failed => Ok((
            StatusCode::CREATED,
            Json(json!({ "file_id": file_id(&report.name).to_string() })),
        )),
        (_, Some(Reason::Conflict)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            report
                .message
                .unwrap_or_else(|| "the name holds another file".into()),
        )),
        (_, Some(Reason::StoreError)) => {
            Err(ApiError::internal(report.message.unwrap_or_default()))
        }
        (_, _) => Err(ApiError::invalid(
            report
                .message
                .unwrap_or_else(|| "the file was not taken".into()),
        )),
    }
}

fn direct_item(name: Result<String, String>, source: Source, meta: Option<&[u8]>) -> Item {
    let failed = |name: String, reason, message| Item::Failed {
        name,
        source: None,
        reason,
        message,
    };
    let name = match name {
        Ok(n) => match Name::new(&n) {
            Ok(valid) => valid,
            Err(e) => return failed(n.clone(), Reason::InvalidName, format!("{n:?}: {e}")),
        },
        Err(m) => return failed(String::new(), Reason::InvalidName, m),
    };
    let meta = match meta.map(Meta::parse) {
        None => None,
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            return failed(
                name.as_str().to_owned(),
                Reason::InvalidMeta,
                format!("the meta part: {e}"),
            );
        }
    };
    Item::File { name, source, meta }
}

/// The open session taking `key`'s direct uploads in `mode`, made if
/// there is none that stays open for the next hour.
fn direct_session(h: &Hosted, key: &KeyRecord, mode: WriteMode) -> ApiResult<crate::Session> {
    let now = h.ws.now();
    let until = now + chrono::Duration::hours(1);
    if let Some(id) =
        h.db.direct_session(&key.name, mode, until)
            .map_err(ApiError::internal)?
    {
        return Ok(session_record(h, id)?.session);
    }
    let session =
        h.ws.create_session(
            &CreateSession::new(mode).lifetime(Lifetime::Forever),
            key.user.clone(),
        )
        .map_err(ApiError::internal)?;
    super::db::private_dir(&h.stage_of(session.session_id)).map_err(ApiError::internal)?;
    h.db.add_session(&ApiSession {
        id: session.session_id,
        key: key.name.clone(),
        expires_at: now + chrono::Duration::hours(24),
        closed_at: None,
        expired: false,
        committed_at: None,
        direct: Some(mode),
    })
    .map_err(ApiError::internal)?;
    Ok(session)
}

// ---- files

fn file_id(name: &str) -> Uuid {
    Uuid::new_v5(&FILE_NAMESPACE, name.as_bytes())
}

#[derive(Deserialize)]
struct ListFilesQuery {
    limit: Option<usize>,
    name: Option<String>,
    filter: Option<String>,
    after_value: Option<String>,
    after_file_id: Option<Uuid>,
}

async fn list_files(
    State(s): St,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<ListFilesQuery>,
) -> ApiResult<Json<Value>> {
    if q.filter.is_some() {
        return Err(ApiError::invalid(
            "filter (OData) is not supported by intake; use name",
        ));
    }
    let after = match (&q.after_value, q.after_file_id) {
        (None, _) => None,
        (Some(v), id) => Some((
            v.replace(' ', "+")
                .parse::<DateTime<Utc>>()
                .map_err(|e| ApiError::invalid(format!("after_value {v:?}: {e}")))?,
            id.unwrap_or(Uuid::nil()),
        )),
    };
    let limit = q.limit.unwrap_or(10).clamp(1, 1000);
    let base = format!(
        "{}/api/v1/workspaces/{}/files",
        base_url(&s, &headers),
        caller.hosted.name
    );
    let h = caller.hosted;
    blocking(move || {
        let mut all = Vec::new();
        h.ws.list(None, |e| {
            if q.name.as_deref().is_none_or(|n| e.name.contains(n)) {
                all.push((e.ingested_at, file_id(&e.name), e));
            }
            true
        })
        .map_err(ApiError::internal)?;
        all.sort_by_key(|(t, id, _)| (*t, *id));
        let total = all.len();
        let start = after.map_or(0, |(t, id)| {
            all.partition_point(|(et, eid, _)| (*et, *eid) <= (t, id))
        });
        let end = start.saturating_add(limit).min(total);
        let page = &all[start..end];
        let ids: Vec<(Uuid, &str)> = page
            .iter()
            .map(|(_, id, e)| (*id, e.name.as_str()))
            .collect();
        h.db.remember_ids(&ids).map_err(ApiError::internal)?;
        let data: Vec<Value> = page
            .iter()
            .map(|(t, id, e)| {
                json!({
                    "file_id": id.to_string(),
                    "url": format!("{base}/{id}"),
                    "name": e.name,
                    "size": e.size,
                    "created_at": ts(*t),
                    "meta": meta_value(e.meta.as_deref()),
                    "version": e.version,
                    "blake3": e.hash.to_string(),
                })
            })
            .collect();
        Ok(Json(
            json!({ "total": total, "has_more": end < total, "data": data }),
        ))
    })
    .await
}

fn meta_value(meta: Option<&str>) -> Value {
    meta.and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_else(|| json!({}))
}

/// The current entry of the file an id was handed out for.
fn file_of(h: &Hosted, id: &str) -> ApiResult<crate::store::Entry> {
    let id = parse_id(id)?;
    let name =
        h.db.name_of(id)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(format!("no file {id}")))?;
    h.ws.current(&name)
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(format!("no file {id} ({name:?} is not in the workspace)"))
        })
}

async fn download(caller: Caller, Path((_, id)): Path<(String, String)>) -> ApiResult<Response> {
    let h = caller.hosted;
    let (entry, reader) = blocking(move || {
        let entry = file_of(&h, &id)?;
        let reader = h.ws.open_blob(&entry.hash).map_err(ApiError::internal)?;
        Ok((entry, reader))
    })
    .await?;
    // The blob is read on a blocking thread, one piece at a time.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<axum::body::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf.into())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let base = entry.name.rsplit('/').next().unwrap_or(&entry.name);
    let disposition = format!(
        "attachment; filename*=UTF-8''{}",
        percent_encoding::utf8_percent_encode(base, percent_encoding::NON_ALPHANUMERIC)
    );
    let mut r = Response::new(Body::from_stream(stream));
    let hs = r.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    hs.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.size));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        hs.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

use std::io::Read as _;

async fn download_meta(
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let h = caller.hosted;
    blocking(move || Ok(Json(meta_value(file_of(&h, &id)?.meta.as_deref())))).await
}

/// `DELETE files/{id}`: the name is deleted (a new version), in the
/// session that takes the key's direct uploads in OVERWRITE mode.
async fn delete_file(
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let h = caller.hosted;
    let key = caller.key;
    blocking(move || {
        let entry = file_of(&h, &id)?;
        let session = direct_session(&h, &key, WriteMode::Overwrite)?;
        let reports =
            h.ws.delete(&session, &[entry.name.as_str()])
                .map_err(ApiError::internal)?;
        match reports.first().map(|r| r.outcome) {
            Some(Outcome::Deleted) => Ok(StatusCode::NO_CONTENT),
            _ => Err(ApiError::not_found(format!("no file {id}"))),
        }
    })
    .await
}

// ---- operations

async fn metrics(State(s): St) -> ApiResult<Response> {
    let s2 = Arc::clone(&s);
    let open = blocking(move || {
        let mut open = 0i64;
        for h in s2.workspaces.values() {
            let now = h.ws.now();
            for a in h.db.sessions().map_err(ApiError::internal)? {
                if a.direct.is_none() && a.closed_at.is_none() && now < a.expires_at {
                    open += 1;
                }
            }
        }
        Ok(open)
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
