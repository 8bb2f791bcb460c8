//! The connection to a PostgreSQL index: a pool on a runtime the backend
//! owns, and what its errors mean to the engine.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;

use super::address::PgAddress;
use crate::store::{StoreError, StoreErrorKind};

/// The kind of a PostgreSQL error: a lost race (serialization failure,
/// deadlock, a racing insert of the same key, a row a racing `gc` removed)
/// is redone; a lost or refused connection is retried; the rest is I/O.
fn kind_of(e: &tokio_postgres::Error) -> StoreErrorKind {
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::FOREIGN_KEY_VIOLATION =>
        {
            StoreErrorKind::Conflict
        }
        Some(c)
            if c.code().starts_with("08")
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::TOO_MANY_CONNECTIONS
                || *c == SqlState::QUERY_CANCELED =>
        {
            StoreErrorKind::Unavailable
        }
        Some(_) => StoreErrorKind::Io,
        // No SQLSTATE: the connection itself failed.
        None => StoreErrorKind::Unavailable,
    }
}

/// Maps a client error, naming what was being done.
pub(crate) fn db_err(what: &str) -> impl FnOnce(tokio_postgres::Error) -> StoreError + '_ {
    move |e| {
        // The server's message, not the client's wrapper ("db error").
        let detail = match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        };
        StoreError::new(kind_of(&e), format!("index database {what}"), detail)
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => db_err("connecting")(e),
        e => StoreError::new(
            StoreErrorKind::Unavailable,
            "index database connecting",
            e.to_string(),
        ),
    }
}

/// A runtime that may be dropped anywhere, async code included.
struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A connection pool to one workspace's schema, on a runtime of its own.
pub struct Pg {
    rt: Rt,
    handle: tokio::runtime::Handle,
    pool: Pool,
    pub(super) addr: PgAddress,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").field("at", &self.addr.label).finish()
    }
}

impl Pg {
    /// A pool for `addr`; connects lazily.
    pub fn new(addr: PgAddress) -> Result<Arc<Pg>, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("intake-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::io("starting the index's runtime", e))?;
        let manager = Manager::from_config(
            addr.config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(addr.pool_max)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(60)))
            .create_timeout(Some(Duration::from_secs(15)))
            .build()
            .map_err(|e| {
                StoreError::new(StoreErrorKind::Io, "index database pool", e.to_string())
            })?;
        Ok(Arc::new(Pg {
            handle: rt.handle().clone(),
            rt: Rt(Some(rt)),
            pool,
            addr,
        }))
    }

    /// How messages name the workspace.
    pub fn label(&self) -> &str {
        &self.addr.label
    }

    /// Runs `f` to completion on the pool's runtime, blocking this thread.
    /// Called from async code (where blocking would stall a runtime), it
    /// runs on a thread of its own instead.
    pub(crate) fn run<T: Send>(
        &self,
        f: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        let _ = &self.rt;
        if tokio::runtime::Handle::try_current().is_err() {
            return self.handle.block_on(f);
        }
        std::thread::scope(|s| {
            s.spawn(|| self.handle.block_on(f))
                .join()
                .unwrap_or_else(|_| Err(StoreError::corrupt("an index call panicked")))
        })
    }

    /// One statement (prepared once per connection); the rows it returns.
    pub(crate) async fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let c = self.conn().await?;
        let st = c.prepare_cached(sql).await.map_err(db_err(what))?;
        c.query(&st, params).await.map_err(db_err(what))
    }

    /// A pooled connection.
    pub(crate) async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    /// The runtime, for a blob store that shares it.
    #[cfg(feature = "s3")]
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}
