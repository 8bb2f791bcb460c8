//! [`PgIndex`]: the [`Index`] on PostgreSQL.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::address::PgAddress;
use super::conn::{Pg, db_err};
use super::rows::{ENTRY_COLS, col, count, entry_row, hash_col, in_order};
use super::schema::prepare;
use super::write::PgTxn;
use crate::hash::Hash;
use crate::outcome::{Counts, Outcome, Reason};
use crate::session::{IngestionStatus, Session, SessionOauthUser, SessionRecord, WriteMode};
use crate::store::sqlite::{from_micros, micros, split_path};
use crate::store::{
    BlobRecord, Entry, Index, IndexGc, KnownSource, OutcomeRecord, ReadTxn, SourceRecord,
    StoreError, StoreErrorKind, WriteTxn,
};

/// Rows fetched per round trip when a listing visits everything.
const PAGE: i64 = 2000;

/// The index in a PostgreSQL schema.
#[derive(Debug)]
pub struct PgIndex {
    pg: Arc<Pg>,
    /// Where the workspace keeps its large blobs, as recorded in the index.
    blobs_at: Option<String>,
    /// Whether the blob store's catalogue (`objects`) lives in this
    /// schema: then a batch that refers to an external blob renews the
    /// blob's object in the same transaction, or fails if `gc` removed it.
    catalogued: bool,
}

const SESSION_COLS: &str = "id, created_at, created_by, expires_at, write_mode, closed_at, \
     ingested, overwritten, unchanged, kept, failed, bytes, deleted, reverts";

fn session_row(row: &Row) -> Result<SessionRecord, StoreError> {
    let by: &str = col(row, 2)?;
    let created_by: SessionOauthUser = serde_json::from_str(by)
        .map_err(|e| StoreError::corrupt(format!("a session's creator: {e}")))?;
    let write_mode: WriteMode = col::<&str>(row, 4)?
        .parse()
        .map_err(|e| StoreError::corrupt(format!("a session's write mode: {e}")))?;
    let counts = Counts {
        ingested: count(row, 6)?,
        overwritten: count(row, 7)?,
        unchanged: count(row, 8)?,
        kept: count(row, 9)?,
        failed: count(row, 10)?,
        bytes: count(row, 11)?,
        deleted: count(row, 12)?,
        refused: 0,
    };
    Ok(SessionRecord {
        session: Session {
            created_at: from_micros(col(row, 1)?),
            created_by,
            expires_at: col::<Option<i64>>(row, 3)?.map(from_micros),
            session_id: col(row, 0)?,
            write_mode,
        },
        closed_at: col::<Option<i64>>(row, 5)?.map(from_micros),
        ingestion: IngestionStatus::from_counts(&counts),
        reverts: col(row, 13)?,
    })
}

fn outcome_row(row: &Row) -> Result<OutcomeRecord, StoreError> {
    let outcome: &str = col(row, 3)?;
    let reason: Option<&str> = col(row, 4)?;
    let unknown = |s: &str| StoreError::corrupt(format!("an outcome: unknown value {s:?}"));
    Ok(OutcomeRecord {
        session_id: col(row, 0)?,
        name: col(row, 1)?,
        source: col::<Option<&[u8]>>(row, 2)?.map(|b| PathBuf::from(OsStr::from_bytes(b))),
        outcome: Outcome::parse(outcome).ok_or_else(|| unknown(outcome))?,
        reason: match reason {
            Some(r) => Some(Reason::parse(r).ok_or_else(|| unknown(r))?),
            None => None,
        },
        message: col(row, 5)?,
        size: col::<Option<i64>>(row, 6)?.map(|s| s as u64),
        hash: col::<Option<&[u8]>>(row, 7)?.and_then(Hash::from_slice),
    })
}

impl PgIndex {
    /// Opens the workspace index at `addr` (with `create`: creating its
    /// schema if needed). `blobs`: the blob store's location to record at
    /// creation, or to check against the recorded one.
    pub fn open(addr: PgAddress, create: bool, blobs: Option<&str>) -> Result<PgIndex, StoreError> {
        let pg = Pg::new(addr)?;
        let blobs_at = pg.run(prepare(&pg, create, blobs))?;
        let catalogued = blobs_at.as_deref().is_some_and(|b| b.starts_with("s3://"));
        Ok(PgIndex {
            pg,
            blobs_at,
            catalogued,
        })
    }

    /// Where the workspace keeps its large blobs, as recorded at creation.
    pub fn blobs_at(&self) -> Option<&str> {
        self.blobs_at.as_deref()
    }

    /// The connection pool, for a blob store that keeps its catalogue in
    /// the same schema.
    pub fn pool(&self) -> &Arc<Pg> {
        &self.pg
    }

    /// Runs one query and maps its rows.
    fn rows<T: Send>(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        map: impl Fn(&Row) -> Result<T, StoreError> + Send + Sync,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.pg.run(self.pg.query(what, sql, params))?;
        rows.iter().map(map).collect()
    }

    /// Runs one statement; returns the rows it changed.
    fn exec(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.pg.run(async {
            let c = self.pg.conn().await?;
            let st = c.prepare_cached(sql).await.map_err(db_err(what))?;
            c.execute(&st, params).await.map_err(db_err(what))
        })
    }

    /// Visits a listing page by page: `page(after)` fetches the rows after
    /// the key `after`; `key` gives a row's key.
    fn paged<T, K: Clone>(
        &self,
        start: K,
        mut page: impl FnMut(&K) -> Result<Vec<T>, StoreError>,
        key: impl Fn(&T) -> K,
        visit: &mut dyn FnMut(T) -> bool,
    ) -> Result<(), StoreError> {
        let mut after = start;
        loop {
            let rows = page(&after)?;
            let full = rows.len() as i64 == PAGE;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = key(last);
            for r in rows {
                if !visit(r) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn current_one(&self, name: &str) -> Result<Option<Entry>, StoreError> {
        let sql = format!("SELECT {ENTRY_COLS} FROM entries WHERE name = $1");
        Ok(self
            .rows("looking up a name", &sql, &[&name], entry_row)?
            .pop())
    }
}

/// Lookups without a transaction: each batch's lookup is one statement,
/// consistent in itself.
struct PgReadTxn<'a>(&'a PgIndex);

impl ReadTxn for PgReadTxn<'_> {
    fn current(&self, name: &str) -> Result<Option<Entry>, StoreError> {
        self.0.current_one(name)
    }

    fn current_many(&self, names: &[&str]) -> Result<Vec<Option<Entry>>, StoreError> {
        let sql = format!("SELECT {ENTRY_COLS} FROM entries WHERE name = ANY($1)");
        let found = self
            .0
            .rows("looking up names", &sql, &[&names], entry_row)?;
        Ok(in_order(names, found))
    }
}

impl Index for PgIndex {
    fn is_remote(&self) -> bool {
        true
    }

    fn create_session(&self, s: &Session, reverts: Option<Uuid>) -> Result<(), StoreError> {
        let by = serde_json::to_string(&s.created_by)
            .map_err(|e| StoreError::new(StoreErrorKind::Corrupt, "serializing the creator", e))?;
        self.exec(
            "creating a session",
            "INSERT INTO sessions (id, created_at, created_by, expires_at, write_mode, reverts)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &s.session_id,
                &micros(s.created_at),
                &by,
                &s.expires_at.map(micros),
                &s.write_mode.as_str(),
                &reverts,
            ],
        )?;
        Ok(())
    }

    fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1");
        Ok(self
            .rows("reading a session", &sql, &[&id], session_row)?
            .pop())
    }

    fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLS} FROM sessions ORDER BY created_at, id");
        self.rows("listing sessions", &sql, &[], session_row)
    }

    fn close_session(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let n = self.exec(
            "closing a session",
            "UPDATE sessions SET closed_at = $2 WHERE id = $1 AND closed_at IS NULL",
            &[&id, &micros(at)],
        )?;
        Ok(n == 1)
    }

    fn is_closed(&self, id: Uuid) -> Result<bool, StoreError> {
        let closed = self.rows(
            "reading a session",
            "SELECT closed_at IS NOT NULL FROM sessions WHERE id = $1",
            &[&id],
            |r| col::<bool>(r, 0),
        )?;
        Ok(closed.first().copied().unwrap_or(false))
    }

    fn current(&self, name: &str) -> Result<Option<Entry>, StoreError> {
        self.current_one(name)
    }

    fn read_txn(&self) -> Result<Box<dyn ReadTxn + '_>, StoreError> {
        Ok(Box::new(PgReadTxn(self)))
    }

    fn sources_in(&self, dir: &Path) -> Result<Vec<KnownSource>, StoreError> {
        let dir = dir.as_os_str().as_bytes();
        self.rows(
            "looking up sources",
            "SELECT file, size, mtime_ns, name, hash, meta FROM sources WHERE dir = $1",
            &[&dir],
            |r| {
                Ok(KnownSource {
                    file: OsStr::from_bytes(col(r, 0)?).to_owned(),
                    size: count(r, 1)?,
                    mtime_ns: col(r, 2)?,
                    name: col(r, 3)?,
                    hash: hash_col(r, 4)?,
                    meta: col(r, 5)?,
                })
            },
        )
    }

    fn sources_under(&self, path: &Path) -> Result<Vec<SourceRecord>, StoreError> {
        let (dir, file) = split_path(path);
        let whole = path.as_os_str().as_bytes();
        // Folders under `path`: from "path/" up to, not including, "path0"
        // ('0' follows '/').
        let lo = [whole, b"/"].concat();
        let hi = [whole, b"0"].concat();
        self.rows(
            "looking up sources",
            "SELECT dir, file, size, mtime_ns, name, hash, meta FROM sources
             WHERE (dir = $1 AND file = $2) OR dir = $3 OR (dir >= $4 AND dir < $5)",
            &[&dir, &file, &whole, &lo, &hi],
            |r| {
                let dir = OsStr::from_bytes(col(r, 0)?);
                let file = OsStr::from_bytes(col(r, 1)?);
                Ok(SourceRecord {
                    path: Path::new(dir).join(file),
                    size: count(r, 2)?,
                    mtime_ns: col(r, 3)?,
                    name: col(r, 4)?,
                    hash: hash_col(r, 5)?,
                    meta: col(r, 6)?,
                })
            },
        )
    }

    fn begin(&self, durable: bool) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        Ok(Box::new(PgTxn::begin(&self.pg, self.catalogued, durable)?))
    }

    fn list(
        &self,
        prefix: Option<&str>,
        visit: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), StoreError> {
        let prefix = prefix.unwrap_or("");
        let sql = format!(
            "SELECT {ENTRY_COLS} FROM entries
             WHERE name >= $1 AND name > $2 AND NOT deleted ORDER BY name LIMIT {PAGE}"
        );
        let mut within = |e: Entry| e.name.starts_with(prefix) && visit(e);
        self.paged(
            String::new(),
            |after| self.rows("listing names", &sql, &[&prefix, after], entry_row),
            |e| e.name.clone(),
            &mut within,
        )
    }

    fn names(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.rows(
            "listing names",
            "SELECT name FROM entries WHERE name > $1 ORDER BY name LIMIT $2",
            &[&after, &(limit as i64)],
            |r| col(r, 0),
        )
    }

    fn list_at(
        &self,
        prefix: Option<&str>,
        at: DateTime<Utc>,
        visit: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), StoreError> {
        let prefix = prefix.unwrap_or("");
        let at = micros(at);
        // A name has at most one version whose span holds `at`: its
        // versions' spans follow each other without gaps.
        let sql = format!(
            "SELECT * FROM (
               SELECT {ENTRY_COLS} FROM entries
                 WHERE name >= $1 AND name > $2 AND ingested_at <= $3
               UNION ALL
               SELECT {ENTRY_COLS} FROM history
                 WHERE name >= $1 AND name > $2 AND ingested_at <= $3 AND replaced_at > $3
             ) v ORDER BY name LIMIT {PAGE}"
        );
        // Deletions are skipped after paging, so that a page of them
        // still moves the listing on.
        let mut within = |e: Entry| e.name.starts_with(prefix) && (e.deleted || visit(e));
        self.paged(
            String::new(),
            |after| {
                self.rows(
                    "listing names at an instant",
                    &sql,
                    &[&prefix, after, &at],
                    entry_row,
                )
            },
            |e| e.name.clone(),
            &mut within,
        )
    }

    fn history_horizon(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let v = self.rows(
            "reading the history horizon",
            "SELECT value FROM settings WHERE key = 'gc_horizon'",
            &[],
            |r| {
                col::<&str>(r, 0)?
                    .parse::<i64>()
                    .map_err(|_| StoreError::corrupt("the history horizon is not a number"))
            },
        )?;
        Ok(v.first().map(|us| from_micros(*us)))
    }

    fn history(&self, name: &str) -> Result<Vec<Entry>, StoreError> {
        let mut out: Vec<Entry> = self.current_one(name)?.into_iter().collect();
        let sql = format!(
            "SELECT {ENTRY_COLS}, replaced_at FROM history WHERE name = $1 ORDER BY version DESC"
        );
        out.extend(self.rows("reading history", &sql, &[&name], |r| {
            let mut e = entry_row(r)?;
            e.replaced_at = Some(from_micros(col(r, 8)?));
            Ok(e)
        })?);
        Ok(out)
    }

    fn session_files(
        &self,
        id: Uuid,
        visit: &mut dyn FnMut(OutcomeRecord) -> bool,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT session_id, name, source, outcome, reason, message, size, hash, id
             FROM file_outcomes WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT {PAGE}"
        );
        let mut visit = |(_, r): (i64, OutcomeRecord)| visit(r);
        self.paged(
            0i64,
            |after| {
                self.rows("listing a session's files", &sql, &[&id, after], |r| {
                    Ok((col(r, 8)?, outcome_row(r)?))
                })
            },
            |(id, _)| *id,
            &mut visit,
        )
    }

    fn inline_blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        let data = self.rows(
            "reading a blob",
            "SELECT data FROM blobs WHERE hash = $1",
            &[&&hash.0[..]],
            |r| col::<Option<Vec<u8>>>(r, 0),
        )?;
        Ok(data.into_iter().next().flatten())
    }

    fn has_blob(&self, hash: &Hash) -> Result<bool, StoreError> {
        let n = self.rows(
            "looking up a blob",
            "SELECT 1 FROM blobs WHERE hash = $1",
            &[&&hash.0[..]],
            |_| Ok(()),
        )?;
        Ok(!n.is_empty())
    }

    fn blobs(&self, visit: &mut dyn FnMut(BlobRecord) -> bool) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT hash, size, data IS NOT NULL FROM blobs WHERE hash > $1 ORDER BY hash LIMIT {PAGE}"
        );
        self.paged(
            Vec::<u8>::new(),
            |after| {
                self.rows("listing blobs", &sql, &[after], |r| {
                    Ok(BlobRecord {
                        hash: hash_col(r, 0)?,
                        size: count(r, 1)?,
                        inline: col(r, 2)?,
                    })
                })
            },
            |b| b.hash.0.to_vec(),
            visit,
        )
    }

    fn dangling(&self) -> Result<Vec<(String, Hash)>, StoreError> {
        // The foreign keys keep this empty; the check stays for what they
        // cannot see: an external blob with no object in the catalogue.
        let sql = if self.catalogued {
            "SELECT e.name, e.hash FROM entries e JOIN blobs b ON b.hash = e.hash
               WHERE b.data IS NULL AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.hash = e.hash)
             UNION
             SELECT h.name, h.hash FROM history h JOIN blobs b ON b.hash = h.hash
               WHERE b.data IS NULL AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.hash = h.hash)
             ORDER BY 1"
        } else {
            "SELECT e.name, e.hash FROM entries e WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.hash = e.hash)
             UNION
             SELECT h.name, h.hash FROM history h WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.hash = h.hash)
             ORDER BY 1"
        };
        self.rows("finding dangling versions", sql, &[], |r| {
            Ok((col(r, 0)?, hash_col(r, 1)?))
        })
    }

    fn names_of(&self, hash: &Hash) -> Result<Vec<String>, StoreError> {
        self.rows(
            "finding names",
            "SELECT name FROM entries WHERE hash = $1
             UNION SELECT name FROM history WHERE hash = $1 ORDER BY 1",
            &[&&hash.0[..]],
            |r| col(r, 0),
        )
    }

    fn gc(&self, cutoff: DateTime<Utc>) -> Result<IndexGc, StoreError> {
        let cutoff = micros(cutoff);
        // A racing ingest that refers to a blob this gc is dropping makes
        // the drop fail (foreign key): then try again, it is referenced.
        let mut tries = 0;
        loop {
            let out = self.pg.run(async {
                let mut c = self.pg.conn().await?;
                let tx = c.transaction().await.map_err(db_err("starting gc"))?;
                let what = "garbage collection";
                let versions = tx
                    .execute("DELETE FROM history WHERE replaced_at < $1", &[&cutoff])
                    .await
                    .map_err(db_err(what))?
                    + tx.execute(
                        "DELETE FROM entries WHERE deleted AND ingested_at < $1",
                        &[&cutoff],
                    )
                    .await
                    .map_err(db_err(what))?;
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES ('gc_horizon', $1::bigint::text)
                     ON CONFLICT (key) DO UPDATE
                       SET value = greatest(settings.value::bigint, excluded.value::bigint)::text",
                    &[&cutoff],
                )
                .await
                .map_err(db_err(what))?;
                let dead = tx
                    .query(
                        "DELETE FROM blobs b
                         WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.hash = b.hash)
                           AND NOT EXISTS (SELECT 1 FROM history h WHERE h.hash = b.hash)
                         RETURNING hash, data IS NOT NULL",
                        &[],
                    )
                    .await
                    .map_err(db_err(what))?;
                let mut out = IndexGc {
                    versions,
                    ..IndexGc::default()
                };
                for r in &dead {
                    if col::<bool>(r, 1)? {
                        out.inline_blobs += 1;
                    } else {
                        out.external_blobs.push(hash_col(r, 0)?);
                    }
                }
                tx.commit().await.map_err(db_err("committing gc"))?;
                Ok(out)
            });
            match out {
                Err(e) if e.kind() == StoreErrorKind::Conflict && tries < 10 => tries += 1,
                out => return out,
            }
        }
    }
}
