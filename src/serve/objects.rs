//! Objects coming in: the uploads into a session (the S3-style presigned
//! POST, authorised by the session's token, staged until the session is
//! committed) and the direct uploads of 20 files or fewer (`POST files`,
//! decided and committed at once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::api::{ApiResult, Caller, St, blocking, file_id, hosted, parse_id, parse_mode};
use super::db::{ApiSession, KeyRecord, NewBody, NewUpload};
use super::sessions::session_record;
use super::upload::{self, BodyError, Received};
use super::wire::ApiError;
use super::{Hosted, Inner, token};
use crate::item::{Item, Source};
use crate::meta::Meta;
use crate::name::Name;
use crate::outcome::{FileReport, Outcome, Reason};
use crate::session::{CreateSession, Lifetime, WriteMode};

/// The upload of one object into a session. It carries no API key: the
/// `token` field the session handed out authorises it.
pub(super) async fn upload_object(
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
        // Not `store_error`: nothing failed that a retry would mend.
        return refuse(name, Reason::ReadError, message, err).await;
    }
    let dir = h.stage_of(id);
    let path = dir.join(Uuid::new_v4().to_string());
    let received = upload::receive(&mut field, &path, limits, true).await;
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

#[derive(Deserialize)]
pub(super) struct DirectQuery {
    write_mode: Option<String>,
    file_name: Option<String>,
}

/// `POST files`: one file decided and committed at once, in the session
/// that takes the key's direct uploads in that write mode.
pub(super) async fn direct_upload(
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
                let received = upload::receive(&mut field, &path, limits, false).await?;
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
pub(super) fn direct_session(
    h: &Hosted,
    key: &KeyRecord,
    mode: WriteMode,
) -> ApiResult<crate::Session> {
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
