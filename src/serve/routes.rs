//! The routes: the deepset upload-session API under
//! `/api/v1/workspaces/{workspace}/`, the status page, `/healthz` and
//! `/metrics`, all behind the gate.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

use super::Inner;
use super::api::{gate, metrics};
use super::files::{delete_file, download, download_meta, list_files};
use super::objects::{direct_upload, upload_object};
use super::sessions::{close_session, create_session, get_session, list_sessions};
use super::wire::ApiError;

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
