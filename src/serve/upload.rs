//! Receiving upload bodies: multipart parts streamed to a staging file
//! (owner-only, synced with its folder before the upload is answered),
//! never held whole in memory, within a size limit and with a timeout
//! between pieces so that a stalled client is cut off.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::Multipart;
use axum::extract::multipart::Field;
use axum::http::StatusCode;
use tokio::io::AsyncWriteExt;

use super::wire::ApiError;

/// Why a body was not received.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over the limit.
    TooLarge(u64),
    /// No piece arrived within the idle timeout.
    Stalled(Duration),
    /// The multipart body is malformed or cut short.
    Malformed(String),
    /// The staging disk failed.
    Disk(io::Error),
}

impl BodyError {
    /// Whether the file the upload names should count as failed: the
    /// client sent it whole and it cannot ever be taken (its retry would
    /// be refused again).
    pub(crate) fn is_final(&self) -> bool {
        matches!(self, BodyError::TooLarge(_))
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        match e {
            BodyError::TooLarge(limit) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the upload is larger than this server's limit of {limit} bytes"),
            ),
            BodyError::Stalled(d) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("no data for {} s; the upload was cut off", d.as_secs()),
            ),
            BodyError::Malformed(m) => ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("malformed multipart body: {m}"),
            ),
            BodyError::Disk(e) => ApiError::internal(format!("staging an upload: {e}")),
        }
    }
}

/// The next part, waiting at most `idle`.
pub(crate) async fn next_field<'m>(
    mp: &'m mut Multipart,
    idle: Duration,
) -> Result<Option<Field<'m>>, BodyError> {
    match tokio::time::timeout(idle, mp.next_field()).await {
        Err(_) => Err(BodyError::Stalled(idle)),
        Ok(Err(e)) => Err(BodyError::Malformed(e.body_text())),
        Ok(Ok(f)) => Ok(f),
    }
}

async fn chunk(
    field: &mut Field<'_>,
    idle: Duration,
) -> Result<Option<axum::body::Bytes>, BodyError> {
    match tokio::time::timeout(idle, field.chunk()).await {
        Err(_) => Err(BodyError::Stalled(idle)),
        Ok(Err(e)) => Err(BodyError::Malformed(e.body_text())),
        Ok(Ok(c)) => Ok(c),
    }
}

/// A small part (a form field) as bytes, at most `max` of them.
pub(crate) async fn small(
    mut field: Field<'_>,
    max: u64,
    idle: Duration,
) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    while let Some(c) = chunk(&mut field, idle).await? {
        if (out.len() + c.len()) as u64 > max {
            return Err(BodyError::TooLarge(max));
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Streams a part into the new file `path` (in `dir`), at most `limit`
/// bytes, and makes it durable; returns its size. On any error the file
/// is removed.
pub(crate) async fn stage(
    field: &mut Field<'_>,
    dir: &Path,
    path: &Path,
    limit: u64,
    idle: Duration,
) -> Result<u64, BodyError> {
    let result = write(field, dir, path, limit, idle).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
    result
}

async fn write(
    field: &mut Field<'_>,
    dir: &Path,
    path: &Path,
    limit: u64,
    idle: Duration,
) -> Result<u64, BodyError> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(BodyError::Disk)?;
    let mut n = 0u64;
    while let Some(c) = chunk(field, idle).await? {
        n += c.len() as u64;
        if n > limit {
            return Err(BodyError::TooLarge(limit));
        }
        file.write_all(&c).await.map_err(BodyError::Disk)?;
    }
    file.sync_all().await.map_err(BodyError::Disk)?;
    let dir: PathBuf = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| BodyError::Disk(io::Error::other(e)))?
        .map_err(BodyError::Disk)?;
    Ok(n)
}

/// The file name of a part as the SDK sends it: percent-encoded by
/// aiohttp (losslessly: the SDK replaced every `%` first), decoded here.
pub(crate) fn file_name(raw: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("the file name {raw:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_percent_decoded() {
        assert_eq!(
            file_name("my%20file%20_1%20_%C3%A9_.txt").as_deref(),
            Ok("my file _1 _é_.txt")
        );
        assert_eq!(file_name("plain.txt").as_deref(), Ok("plain.txt"));
        assert!(file_name("bad%FF").is_err());
    }
}
