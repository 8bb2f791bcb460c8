//! The workspace's files as the API shows them: list (cursor pages),
//! download, metadata, delete.

use std::io::Read as _;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Hosted;
use super::api::{ApiResult, Caller, St, base_url, blocking, file_id, parse_id};
use super::objects::direct_session;
use super::wire::{ApiError, ts};
use crate::outcome::Outcome;
use crate::session::WriteMode;

#[derive(Deserialize)]
pub(super) struct ListFilesQuery {
    limit: Option<usize>,
    name: Option<String>,
    filter: Option<String>,
    after_value: Option<String>,
    after_file_id: Option<Uuid>,
}

pub(super) async fn list_files(
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

pub(super) async fn download(
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Response> {
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

pub(super) async fn download_meta(
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let h = caller.hosted;
    blocking(move || Ok(Json(meta_value(file_of(&h, &id)?.meta.as_deref())))).await
}

/// `DELETE files/{id}`: the name is deleted (a new version), in the
/// session that takes the key's direct uploads in OVERWRITE mode.
pub(super) async fn delete_file(
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
