//! Delegating wrappers of the storage seams (`intake::store::{Index,
//! WriteTxn, BlobStore, BlobWriter}`) with hooks for the steps a test needs
//! to intercept.
//!
//! [`HookedIndex`] wraps the SQLite index and [`HookedBlobs`] the local blob
//! store; every call goes to the wrapped one, except that the steps named in
//! [`IndexHooks`] and [`BlobHooks`] go through the hooks first. Such a hook
//! gets the real step as `run` and decides whether to call it: returning an
//! error without calling `run` injects a fault (a write transaction or blob
//! writer dropped unfinished is rolled back or discarded, as after a real
//! failure). Every hook defaults to just calling `run`.
//!
//! Per-transaction and per-writer state (what a transaction wrote, whether a
//! writer saw a marked content) lives in [`IndexHooks::Txn`] and
//! [`BlobHooks::Writer`], made at `begin` and `writer`.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use intake::store::{
    BlobRecord, BlobStore, BlobWriter, Entry, FsBlobStore, Index, IndexGc, KnownSource,
    OutcomeRecord, SourceRecord, SqliteIndex, SqliteOptions, StoreError, WriteTxn, Writes,
};
use intake::{Hash, Session, SessionRecord};
use uuid::Uuid;

/// What a [`HookedIndex`] lets a test intercept.
pub trait IndexHooks: Send + Sync {
    /// State kept for one write transaction.
    type Txn: Default;

    /// `Index::current` (not the transaction's own lookup).
    fn current(
        &self,
        _name: &str,
        run: impl FnOnce() -> Result<Option<Entry>, StoreError>,
    ) -> Result<Option<Entry>, StoreError> {
        run()
    }

    /// `Index::begin`, before the real transaction starts: an error fails it.
    fn begin(&self, _durable: bool) -> Result<Self::Txn, StoreError> {
        Ok(Self::Txn::default())
    }

    /// The batch's lookup of its names, which locks them.
    fn lock(
        &self,
        _txn: &mut Self::Txn,
        _names: &[&str],
        run: impl FnOnce() -> Result<Vec<Option<Entry>>, StoreError>,
    ) -> Result<Vec<Option<Entry>>, StoreError> {
        run()
    }

    /// The whole batch's write, after each part went through its hook.
    fn write(
        &self,
        _txn: &mut Self::Txn,
        _writes: &Writes<'_>,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        run()
    }

    /// `WriteTxn::put_blob`.
    fn put_blob(
        &self,
        _txn: &mut Self::Txn,
        _hash: &Hash,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        run()
    }

    /// `WriteTxn::write_version`.
    fn write_version(
        &self,
        _txn: &mut Self::Txn,
        _entry: &Entry,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        run()
    }

    /// `WriteTxn::record_source`.
    fn record_source(
        &self,
        _txn: &mut Self::Txn,
        _rec: &SourceRecord,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        run()
    }

    /// `WriteTxn::record_outcome`.
    fn record_outcome(
        &self,
        _txn: &mut Self::Txn,
        _rec: &OutcomeRecord,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        run()
    }

    /// `WriteTxn::commit`; not calling `run` rolls the transaction back.
    fn commit(
        &self,
        _txn: Self::Txn,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        run()
    }
}

/// The SQLite index, with `hooks` on the steps of [`IndexHooks`].
pub struct HookedIndex<H> {
    inner: Arc<dyn Index>,
    pub hooks: Arc<H>,
}

impl<H: IndexHooks> HookedIndex<H> {
    /// The SQLite index of the workspace folder `ws_dir`, hooked.
    pub fn open(ws_dir: &Path, hooks: Arc<H>) -> HookedIndex<H> {
        fs::create_dir_all(ws_dir).expect("creating the workspace folder");
        let opts = SqliteOptions {
            create: true,
            ..SqliteOptions::default()
        };
        let inner = SqliteIndex::open(&ws_dir.join(intake::workspace::INDEX_FILE), &opts)
            .expect("opening the index");
        HookedIndex::wrap(Arc::new(inner), hooks)
    }

    /// Any index, hooked.
    pub fn wrap(inner: Arc<dyn Index>, hooks: Arc<H>) -> HookedIndex<H> {
        HookedIndex { inner, hooks }
    }
}

struct HookedTxn<'a, H: IndexHooks> {
    inner: Box<dyn WriteTxn + 'a>,
    hooks: &'a H,
    state: H::Txn,
}

// `check_integrity` is left to the trait's default (it checks nothing), as
// in the hand-written wrappers this replaces.
impl<H: IndexHooks> Index for HookedIndex<H> {
    fn create_session(&self, session: &Session, reverts: Option<Uuid>) -> Result<(), StoreError> {
        self.inner.create_session(session, reverts)
    }
    fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.session(id)
    }
    fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.sessions()
    }
    fn close_session(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.inner.close_session(id, at)
    }
    fn is_closed(&self, id: Uuid) -> Result<bool, StoreError> {
        self.inner.is_closed(id)
    }
    fn current(&self, name: &str) -> Result<Option<Entry>, StoreError> {
        self.hooks.current(name, || self.inner.current(name))
    }
    fn sources_in(&self, dir: &Path) -> Result<Vec<KnownSource>, StoreError> {
        self.inner.sources_in(dir)
    }
    fn sources_under(&self, path: &Path) -> Result<Vec<SourceRecord>, StoreError> {
        self.inner.sources_under(path)
    }
    fn begin(&self, durable: bool) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        let state = self.hooks.begin(durable)?;
        Ok(Box::new(HookedTxn {
            inner: self.inner.begin(durable)?,
            hooks: &*self.hooks,
            state,
        }))
    }
    fn list(
        &self,
        prefix: Option<&str>,
        visit: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.list(prefix, visit)
    }
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
    fn names(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.names(after, limit)
    }
    fn list_at(
        &self,
        prefix: Option<&str>,
        at: DateTime<Utc>,
        visit: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.list_at(prefix, at, visit)
    }
    fn history_horizon(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner.history_horizon()
    }
    fn history(&self, name: &str) -> Result<Vec<Entry>, StoreError> {
        self.inner.history(name)
    }
    fn session_files(
        &self,
        id: Uuid,
        visit: &mut dyn FnMut(OutcomeRecord) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.session_files(id, visit)
    }
    fn inline_blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.inline_blob(hash)
    }
    fn has_blob(&self, hash: &Hash) -> Result<bool, StoreError> {
        self.inner.has_blob(hash)
    }
    fn blobs(&self, visit: &mut dyn FnMut(BlobRecord) -> bool) -> Result<(), StoreError> {
        self.inner.blobs(visit)
    }
    fn dangling(&self) -> Result<Vec<(String, Hash)>, StoreError> {
        self.inner.dangling()
    }
    fn names_of(&self, hash: &Hash) -> Result<Vec<String>, StoreError> {
        self.inner.names_of(hash)
    }
    fn gc(&self, cutoff: DateTime<Utc>) -> Result<IndexGc, StoreError> {
        self.inner.gc(cutoff)
    }
}

impl<H: IndexHooks> WriteTxn for HookedTxn<'_, H> {
    fn lock(&mut self, names: &[&str]) -> Result<Vec<Option<Entry>>, StoreError> {
        let inner = &mut self.inner;
        self.hooks
            .lock(&mut self.state, names, || inner.lock(names))
    }
    fn has_blob(&mut self, hash: &Hash) -> Result<bool, StoreError> {
        self.inner.has_blob(hash)
    }
    /// Each part of the batch goes through its hook, in the order the
    /// backend applies them, before the whole batch is written.
    fn write(&mut self, w: &Writes<'_>) -> Result<(), StoreError> {
        let (hooks, state) = (self.hooks, &mut self.state);
        for b in &w.blobs {
            hooks.put_blob(state, &b.hash, || Ok(()))?;
        }
        for v in &w.versions {
            hooks.write_version(state, &v.entry, || Ok(()))?;
        }
        for rec in &w.sources {
            hooks.record_source(state, rec, || Ok(()))?;
        }
        for rec in &w.outcomes {
            hooks.record_outcome(state, rec, || Ok(()))?;
        }
        let inner = &mut self.inner;
        hooks.write(state, w, || inner.write(w))
    }
    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let HookedTxn {
            inner,
            hooks,
            state,
        } = *self;
        hooks.commit(state, || inner.commit())
    }
}

/// What a [`HookedBlobs`] lets a test intercept.
pub trait BlobHooks: Send + Sync + 'static {
    /// State kept for one blob writer.
    type Writer: Default + Send;

    /// `BlobStore::writer`, before the real writer is made: an error fails
    /// it.
    fn writer(&self, _size_hint: u64) -> Result<Self::Writer, StoreError> {
        Ok(Self::Writer::default())
    }

    /// `Write::write` of a blob writer.
    fn write(
        &self,
        _writer: &mut Self::Writer,
        _buf: &[u8],
        run: impl FnOnce() -> io::Result<usize>,
    ) -> io::Result<usize> {
        run()
    }

    /// `BlobWriter::finish`; not calling `run` discards the temporary file.
    fn finish(
        &self,
        _writer: Self::Writer,
        _hash: &Hash,
        run: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        run()
    }

    /// `BlobStore::sync`.
    fn sync(&self, run: impl FnOnce() -> Result<(), StoreError>) -> Result<(), StoreError> {
        run()
    }
}

/// The local blob store, with `hooks` on the steps of [`BlobHooks`].
pub struct HookedBlobs<H> {
    inner: FsBlobStore,
    pub hooks: Arc<H>,
}

impl<H: BlobHooks> HookedBlobs<H> {
    /// Opens (or creates) the blob store of the workspace folder `ws_dir`.
    pub fn open(ws_dir: &Path, hooks: Arc<H>) -> HookedBlobs<H> {
        let inner = FsBlobStore::open(ws_dir.join(intake::workspace::BLOB_DIR))
            .expect("opening the blob store");
        HookedBlobs { inner, hooks }
    }
}

/// A blob writer of a [`HookedBlobs`].
struct HookedWriter<H: BlobHooks> {
    inner: Box<dyn BlobWriter>,
    hooks: Arc<H>,
    state: H::Writer,
}

impl<H: BlobHooks> BlobStore for HookedBlobs<H> {
    fn writer(&self, size_hint: u64) -> Result<Box<dyn BlobWriter>, StoreError> {
        let state = self.hooks.writer(size_hint)?;
        Ok(Box::new(HookedWriter {
            inner: self.inner.writer(size_hint)?,
            hooks: Arc::clone(&self.hooks),
            state,
        }))
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.hooks.sync(|| self.inner.sync())
    }
    fn reuse(&self, hash: &Hash) -> Result<bool, StoreError> {
        self.inner.reuse(hash)
    }
    fn open(&self, hash: &Hash) -> Result<Box<dyn Read + Send>, StoreError> {
        self.inner.open(hash)
    }
    fn remove(&self, hash: &Hash, cutoff: SystemTime) -> Result<bool, StoreError> {
        self.inner.remove(hash, cutoff)
    }
    fn list(&self, visit: &mut dyn FnMut(Hash, SystemTime)) -> Result<(), StoreError> {
        self.inner.list(visit)
    }
    fn remove_stale(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        self.inner.remove_stale(cutoff)
    }
}

impl<H: BlobHooks> Write for HookedWriter<H> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let inner = &mut self.inner;
        self.hooks.write(&mut self.state, buf, || inner.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<H: BlobHooks> BlobWriter for HookedWriter<H> {
    fn finish(self: Box<Self>, hash: &Hash) -> Result<(), StoreError> {
        let HookedWriter {
            inner,
            hooks,
            state,
        } = *self;
        hooks.finish(state, hash, || inner.finish(hash))
    }
}
