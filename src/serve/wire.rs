//! The API's wire forms: timestamps, error bodies, the JSON the SDK
//! parses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::session::{SessionOauthUser, SessionStatus, WriteMode};

/// An instant as the SDK parses it on every Python it supports: RFC 3339
/// in UTC with `Z` and exactly six fractional digits.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What the API shows for a session that never expires: the SDK needs an
/// instant, never `null`.
pub(crate) const NEVER: &str = "9999-12-31T23:59:59.000000Z";

/// An error answer: a status and `{"detail": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) detail: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
        }
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, detail)
    }

    pub(crate) fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    /// The server's own failure (its store): the detail is logged, the
    /// client told only that it failed.
    pub(crate) fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!("{detail}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the workspace's store failed; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "detail": self.detail }))).into_response()
    }
}

/// A session as the list endpoint shows it.
pub(crate) fn session_item(
    id: uuid::Uuid,
    created_by: &SessionOauthUser,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    write_mode: WriteMode,
    status: SessionStatus,
) -> Value {
    json!({
        "session_id": id.to_string(),
        "created_by": {
            "user_id": created_by.user_id.to_string(),
            "given_name": created_by.given_name,
            "family_name": created_by.family_name,
        },
        "created_at": ts(created_at),
        "expires_at": expires_at.map_or_else(|| NEVER.to_owned(), ts),
        "write_mode": write_mode.as_str(),
        "status": status.as_str(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_have_six_fractional_digits_and_never_parses_back() {
        let t: DateTime<Utc> = "2026-11-30T12:00:00.123456789Z".parse().expect("t");
        assert_eq!(ts(t), "2026-11-30T12:00:00.123456Z");
        let t: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().expect("t");
        assert_eq!(ts(t), "2026-11-30T12:00:00.000000Z");
        assert!(NEVER.parse::<DateTime<Utc>>().is_ok());
    }
}
