//! [`S3BlobStore`]: large blobs in an S3-compatible object store, for a
//! workspace whose index is PostgreSQL.
//!
//! A blob's bytes are uploaded to a key of their own (`PREFIX/objects/<uuid>`,
//! never reused), because the hash is known only once they have all gone
//! through. The store's catalogue, in the index's schema, maps each hash
//! to its object:
//!
//! 1. a lease (`uploads`) is recorded before the first byte goes out;
//! 2. the bytes are uploaded (multipart past 8 MiB, never whole in memory);
//!    they are durable when the upload returns;
//! 3. one transaction turns the lease into the catalogue row (`objects`),
//!    or, if the hash has an object already, keeps that one and the new
//!    upload is removed.
//!
//! `gc` removes an object only through its catalogue row: only while no
//! blob row of the index refers to the hash, and only when the row was last
//! renewed longer ago than the grace, on PostgreSQL's clock. Renewing (a
//! reuse, a finish, and every batch that refers to the blob, in its own
//! transaction) and removing lock the same row, so one waits for the other,
//! and a removal that waited then sees the batch's blob row and keeps the
//! object. A crashed upload's object is removed with its lease once the
//! lease is older than the grace.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart};

use crate::hash::Hash;
use crate::store::pg::{Pg, db_err};
use crate::store::{BlobStore, BlobWriter, RetryPolicy, StoreError, StoreErrorKind};

/// Up to this many bytes, a blob goes up in one request at its finish.
const ONE_PUT: usize = 8 << 20;
/// The part size of a multipart upload.
const PART: usize = 8 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Whether `location` names an object store (`s3://BUCKET[/PREFIX]`).
pub fn is_s3_location(location: &str) -> bool {
    location.starts_with("s3://")
}

fn s3_err(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> StoreError {
    let what = what.into();
    move |e| {
        let kind = match &e {
            object_store::Error::NotFound { .. } => StoreErrorKind::NotFound,
            object_store::Error::Generic { .. } => StoreErrorKind::Unavailable,
            _ => StoreErrorKind::Io,
        };
        StoreError::new(kind, what, e)
    }
}

struct Inner {
    pg: Arc<Pg>,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    location: String,
}

/// Blobs in an S3-compatible store, catalogued in a PostgreSQL index.
#[derive(Clone)]
pub struct S3BlobStore(Arc<Inner>);

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("at", &self.0.location)
            .finish()
    }
}

impl S3BlobStore {
    /// The store at `location` (`s3://BUCKET[/PREFIX]`), catalogued through
    /// `pg`. Credentials, region and endpoint come from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), never from the location.
    pub fn open(location: &str, pg: Arc<Pg>) -> Result<S3BlobStore, StoreError> {
        let rest = location.strip_prefix("s3://").ok_or_else(|| {
            StoreError::not_found(format!("{location}: not an s3://BUCKET/PREFIX location"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::not_found(format!("{location}: no bucket")));
        }
        let retry = RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(30),
            ..RetryConfig::default()
        };
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry)
            .build()
            .map_err(s3_err(format!("opening the object store {location}")))?;
        Ok(S3BlobStore(Arc::new(Inner {
            pg,
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_owned(),
            location: location.to_owned(),
        })))
    }

    fn new_key(&self) -> String {
        let id = uuid::Uuid::new_v4();
        match self.0.prefix.as_str() {
            "" => format!("objects/{id}"),
            p => format!("{p}/objects/{id}"),
        }
    }
}

impl Inner {
    fn run<T: Send>(
        &self,
        f: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        self.pg.run(f)
    }

    /// Runs `f` on the pool's runtime, again (as the engine retries the
    /// index) while PostgreSQL is out of reach: every catalogue statement
    /// may be run twice.
    fn retried<T: Send, F: Future<Output = Result<T, StoreError>> + Send>(
        &self,
        mut f: impl FnMut() -> F,
    ) -> Result<T, StoreError> {
        RetryPolicy::default().run(|| self.run(f()))
    }

    /// One statement on the catalogue (one that may be run twice); the
    /// rows it returns.
    fn query(
        &self,
        what: &'static str,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.retried(|| self.pg.query(what, sql, params))
    }

    /// Deletes an object; one already gone is fine.
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run(async {
            match self.store.delete(&Key::from(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(s3_err(format!("removing {key}"))(e)),
            }
        })
    }

    fn key_of(&self, hash: &Hash) -> Result<Option<String>, StoreError> {
        let rows = self.query(
            "looking up a blob's object",
            "SELECT key FROM objects WHERE hash = $1",
            &[&&hash.0[..]],
        )?;
        match rows.first() {
            Some(r) => Ok(Some(crate::store::pg::col(r, 0)?)),
            None => Ok(None),
        }
    }
}

/// `cutoff` as an age in seconds on this machine's clock, for the server
/// to subtract from its own `now()`.
fn age_secs(cutoff: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(cutoff)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

enum Upload {
    /// Bytes held until the finish, which sends them in one request.
    Small(Vec<u8>),
    /// A multipart upload under way.
    Parts(WriteMultipart),
}

struct S3Writer {
    store: S3BlobStore,
    key: String,
    /// Bytes written so far.
    written: u64,
    upload: Option<Upload>,
    leased: bool,
    finished: bool,
}

impl S3Writer {
    /// Records the lease before the first byte reaches the store.
    fn lease(&mut self) -> Result<(), StoreError> {
        if !self.leased {
            self.store.0.query(
                "leasing an upload",
                "INSERT INTO uploads (key) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&self.key],
            )?;
            self.leased = true;
        }
        Ok(())
    }

    fn start_parts(&mut self, first: Vec<u8>) -> Result<(), StoreError> {
        self.lease()?;
        let inner = &self.store.0;
        let key = Key::from(self.key.as_str());
        let upload = inner.run(async {
            inner
                .store
                .put_multipart(&key)
                .await
                .map_err(s3_err(format!("starting the upload of {}", self.key)))
        })?;
        let _in_runtime = inner.pg.handle().enter();
        let mut parts = WriteMultipart::new_with_chunk_size(upload, PART);
        parts.write(&first);
        self.upload = Some(Upload::Parts(parts));
        Ok(())
    }
}

impl Write for S3Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.upload.take() {
            Some(Upload::Small(mut held)) if held.len() + buf.len() <= ONE_PUT => {
                held.extend_from_slice(buf);
                self.upload = Some(Upload::Small(held));
            }
            Some(Upload::Small(mut held)) => {
                held.extend_from_slice(buf);
                self.start_parts(held).map_err(io::Error::other)?;
            }
            Some(Upload::Parts(mut parts)) => {
                let inner = &self.store.0;
                {
                    let _in_runtime = inner.pg.handle().enter();
                    parts.write(buf);
                }
                let waited = inner.run(async {
                    parts
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(s3_err("uploading a part"))
                });
                self.upload = Some(Upload::Parts(parts));
                waited.map_err(io::Error::other)?;
            }
            None => return Err(io::Error::other("the upload has failed")),
        }
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter for S3Writer {
    fn finish(mut self: Box<Self>, hash: &Hash) -> Result<(), StoreError> {
        self.lease()?;
        let inner = Arc::clone(&self.store.0);
        let key = self.key.clone();
        let size = self.written;
        match self.upload.take() {
            Some(Upload::Small(held)) => inner.run(async {
                inner
                    .store
                    .put(&Key::from(key.as_str()), Bytes::from(held).into())
                    .await
                    .map_err(s3_err(format!("uploading {key}")))
            })?,
            Some(Upload::Parts(parts)) => inner.run(async {
                parts
                    .finish()
                    .await
                    .map_err(s3_err(format!("completing the upload of {key}")))
            })?,
            None => {
                return Err(StoreError::bare(
                    StoreErrorKind::Io,
                    "the upload has failed",
                ));
            }
        };
        self.finished = true;
        // The lease becomes the catalogue row, unless the hash has an
        // object already: then that one stays, and this upload goes.
        // Retried: a try whose commit went through but whose answer was
        // lost finds its own row, not inserted now, and is done.
        let kept: String = inner.retried(|| async {
            let what = "cataloguing a blob";
            let mut c = inner.pg.conn().await?;
            let tx = c.transaction().await.map_err(db_err(what))?;
            let row = tx
                .query_one(
                    "INSERT INTO objects (hash, key, size) VALUES ($1, $2, $3)
                     ON CONFLICT (hash) DO UPDATE SET touched_at = now()
                     RETURNING key, xmax = 0",
                    &[&&hash.0[..], &key, &(size as i64)],
                )
                .await
                .map_err(db_err(what))?;
            let kept: String = crate::store::pg::col(&row, 0)?;
            let inserted: bool = crate::store::pg::col(&row, 1)?;
            if kept == key && inserted {
                let n = tx
                    .execute("DELETE FROM uploads WHERE key = $1", &[&key])
                    .await
                    .map_err(db_err(what))?;
                if n != 1 {
                    return Err(StoreError::bare(
                        StoreErrorKind::Io,
                        format!(
                            "uploading {key}: it outlasted its lease, and gc took it; run again"
                        ),
                    ));
                }
            }
            tx.commit().await.map_err(db_err(what))?;
            Ok(kept)
        })?;
        if kept != key {
            inner.delete(&key)?;
            inner.query(
                "ending an upload's lease",
                "DELETE FROM uploads WHERE key = $1",
                &[&key],
            )?;
        }
        Ok(())
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.finished || !self.leased {
            return;
        }
        // Dropped unfinished (a duplicate, a failed read): what went up is
        // removed now; if that fails, the lease's sweep removes it later.
        let inner = &self.store.0;
        if let Some(Upload::Parts(parts)) = self.upload.take() {
            let _ = inner.run(async { parts.abort().await.map_err(s3_err("aborting")) });
        }
        if inner.delete(&self.key).is_ok() {
            let _ = inner.query(
                "ending an upload's lease",
                "DELETE FROM uploads WHERE key = $1",
                &[&self.key],
            );
        }
    }
}

/// An object's bytes, read as they arrive.
struct S3Reader {
    pg: Arc<Pg>,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let stream = &mut self.stream;
            let next = self.pg.run(async {
                match stream.next().await {
                    Some(Ok(b)) => Ok(Some(b)),
                    Some(Err(e)) => Err(s3_err("reading a blob")(e)),
                    None => Ok(None),
                }
            });
            match next.map_err(io::Error::other)? {
                Some(b) => self.chunk = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

impl BlobStore for S3BlobStore {
    fn writer(&self, size_hint: u64) -> Result<Box<dyn BlobWriter>, StoreError> {
        let held = (size_hint as usize).min(ONE_PUT);
        Ok(Box::new(S3Writer {
            store: self.clone(),
            key: self.new_key(),
            written: 0,
            upload: Some(Upload::Small(Vec::with_capacity(held))),
            leased: false,
            finished: false,
        }))
    }

    fn sync(&self) -> Result<(), StoreError> {
        // An object is durable when its upload returns.
        Ok(())
    }

    fn reuse(&self, hash: &Hash) -> Result<bool, StoreError> {
        let rows = self.0.query(
            "renewing a blob's object",
            "UPDATE objects SET touched_at = now() WHERE hash = $1 RETURNING 1",
            &[&&hash.0[..]],
        )?;
        Ok(!rows.is_empty())
    }

    fn open(&self, hash: &Hash) -> Result<Box<dyn Read + Send>, StoreError> {
        let inner = &self.0;
        let key = inner
            .key_of(hash)?
            .ok_or_else(|| StoreError::not_found(format!("blob {hash} has no object")))?;
        let stream = inner.run(async {
            let got = inner
                .store
                .get(&Key::from(key.as_str()))
                .await
                .map_err(s3_err(format!("reading {key}")))?;
            Ok(got.into_stream())
        })?;
        Ok(Box::new(S3Reader {
            pg: Arc::clone(&inner.pg),
            stream,
            chunk: Bytes::new(),
        }))
    }

    fn local_path(&self, _hash: &Hash) -> Option<PathBuf> {
        None
    }

    /// In one transaction: lock the catalogue row (waiting for a batch
    /// that is renewing it), then, in a new statement that sees what that
    /// batch committed, remove the row only if no blob row refers to the
    /// hash and the row was last renewed before the grace. The object goes
    /// after the commit; its key is never reused.
    fn remove(&self, hash: &Hash, cutoff: SystemTime) -> Result<bool, StoreError> {
        let inner = &self.0;
        let age = age_secs(cutoff);
        let key: Option<String> = inner.run(async {
            let what = "removing a blob's object";
            let mut c = inner.pg.conn().await?;
            let tx = c.transaction().await.map_err(db_err(what))?;
            let locked = tx
                .query_opt(
                    "SELECT 1 FROM objects WHERE hash = $1 FOR UPDATE",
                    &[&&hash.0[..]],
                )
                .await
                .map_err(db_err(what))?;
            if locked.is_none() {
                return Ok(None);
            }
            let gone = tx
                .query_opt(
                    "DELETE FROM objects o WHERE hash = $1
                       AND touched_at < now() - make_interval(secs => $2)
                       AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.hash = o.hash)
                     RETURNING key",
                    &[&&hash.0[..], &age],
                )
                .await
                .map_err(db_err(what))?;
            let key = match gone {
                Some(r) => Some(crate::store::pg::col::<String>(&r, 0)?),
                None => None,
            };
            tx.commit().await.map_err(db_err(what))?;
            Ok(key)
        })?;
        match key {
            Some(key) => {
                inner.delete(&key)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn list(&self, visit: &mut dyn FnMut(Hash, SystemTime)) -> Result<(), StoreError> {
        let mut after: Vec<u8> = Vec::new();
        loop {
            let rows = self.0.query(
                "listing blob objects",
                "SELECT hash, touched_at FROM objects WHERE hash > $1 ORDER BY hash LIMIT 2000",
                &[&after],
            )?;
            for r in &rows {
                let h: &[u8] = crate::store::pg::col(r, 0)?;
                let at: SystemTime = crate::store::pg::col(r, 1)?;
                if let Some(h) = Hash::from_slice(h) {
                    visit(h, at);
                }
                after = h.to_vec();
            }
            if rows.len() < 2000 {
                return Ok(());
            }
        }
    }

    fn remove_stale(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        let rows = self.0.query(
            "sweeping stale uploads",
            "DELETE FROM uploads WHERE started_at < now() - make_interval(secs => $1) RETURNING key",
            &[&age_secs(cutoff)],
        )?;
        for r in &rows {
            self.0.delete(&crate::store::pg::col::<String>(r, 0)?)?;
        }
        Ok(rows.len() as u64)
    }
}
