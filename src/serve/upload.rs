//! Receiving upload bodies: multipart parts streamed to a staging file
//! (owner-only, synced with its folder before the upload is answered),
//! never held whole in memory, within a size limit and with a timeout
//! between pieces so that a stalled client is cut off.

use std::io;
use std::path::Path;
use std::time::Duration;

use axum::extract::Multipart;
use axum::extract::multipart::Field;
use axum::http::StatusCode;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;

use super::Limits;
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

/// Reads and drops what is left of a multipart body, up to `limit` bytes
/// (then gives up), each piece within `idle`.
pub(crate) async fn drain(mp: &mut Multipart, limit: u64, idle: Duration) {
    let mut n = 0u64;
    while let Ok(Some(mut f)) = next_field(mp, idle).await {
        while let Ok(Some(c)) = chunk(&mut f, idle).await {
            n += c.len() as u64;
            if n > limit {
                return;
            }
        }
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

/// Where a received body went.
#[derive(Debug)]
pub(crate) enum Received {
    /// It was small: here it is.
    Bytes(Vec<u8>),
    /// Into the file, this many bytes.
    File(u64),
}

/// Upload bodies up to this size are kept in memory, and then in the
/// server's database (one durable write for many uploads); larger ones go
/// to files of their own.
pub(crate) const INLINE: usize = 64 * 1024;

/// Receives a part: kept in memory while it is at most [`INLINE`] bytes,
/// else streamed into the new file `path` (synced with `durable`; its
/// folder's entry is the caller's to sync, so that many uploads share one
/// folder sync), within the server's size limit and idle timeout. On any
/// error the file is removed.
pub(crate) async fn receive(
    field: &mut Field<'_>,
    path: &Path,
    limits: &Limits,
    durable: bool,
) -> Result<Received, BodyError> {
    let (limit, idle) = (limits.max_upload_bytes, limits.upload_idle_timeout);
    let mut spilled = false;
    let result = write(field, path, limit, INLINE, idle, durable, &mut spilled).await;
    if result.is_err() && spilled {
        let _ = tokio::fs::remove_file(path).await;
    }
    result
}

async fn write(
    field: &mut Field<'_>,
    path: &Path,
    limit: u64,
    inline: usize,
    idle: Duration,
    durable: bool,
    spilled: &mut bool,
) -> Result<Received, BodyError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut n = 0u64;
    // Pieces in memory until the body proves larger than `inline`.
    let first = loop {
        match chunk(field, idle).await? {
            None => return Ok(Received::Bytes(buf)),
            Some(c) => {
                n += c.len() as u64;
                if n > limit {
                    return Err(BodyError::TooLarge(limit));
                }
                if buf.len() + c.len() > inline {
                    break c;
                }
                buf.extend_from_slice(&c);
            }
        }
    };
    // Then a file, written by a blocking thread that takes the pieces as
    // they come: a few pieces in flight per upload, never the body.
    *spilled = true;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(BodyError::Disk)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<()> {
        let mut file = file;
        while let Some(piece) = rx.blocking_recv() {
            file.write_all(&piece)?;
        }
        if durable {
            file.sync_all()?;
        }
        Ok(())
    });
    // Small pieces are gathered into larger ones: fewer hand-offs and
    // write calls.
    const PIECE: usize = 128 * 1024;
    let fed = async {
        buf.extend_from_slice(&first);
        while let Some(c) = chunk(field, idle).await? {
            n += c.len() as u64;
            if n > limit {
                return Err(BodyError::TooLarge(limit));
            }
            if buf.is_empty() && c.len() >= PIECE {
                if tx.send(c).await.is_err() {
                    break;
                }
                continue;
            }
            buf.extend_from_slice(&c);
            if buf.len() >= PIECE {
                let piece = std::mem::replace(&mut buf, Vec::with_capacity(PIECE));
                if tx.send(piece.into()).await.is_err() {
                    // The writer stopped: its error says why.
                    break;
                }
            }
        }
        if !buf.is_empty() {
            let _ = tx.send(std::mem::take(&mut buf).into()).await;
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| BodyError::Disk(io::Error::other(e)))?;
    fed?;
    written.map_err(BodyError::Disk)?;
    Ok(Received::File(n))
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
