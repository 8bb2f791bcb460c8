//! The write transaction on PostgreSQL: one lookup of the batch's names,
//! then the batch's writes as a handful of array statements sent
//! pipelined, each write guarded against a lost race, then the commit.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;

use deadpool_postgres::Object;
use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;

use super::conn::{Pg, db_err};
use super::rows::{ENTRY_COLS, entry_row, in_order};
use crate::hash::Hash;
use crate::outcome::Reason;
use crate::store::sqlite::{micros, split_path};
use crate::store::{Entry, StoreError, StoreErrorKind, WriteTxn, Writes};

pub(super) struct PgTxn<'a> {
    pg: &'a Pg,
    /// Whether the blob store's catalogue lives in this schema (see
    /// `PgIndex`): then a batch renews the objects of the blobs it refers to.
    catalogued: bool,
    conn: Option<Object>,
}

impl<'a> PgTxn<'a> {
    pub(super) fn begin(
        pg: &'a Pg,
        catalogued: bool,
        durable: bool,
    ) -> Result<PgTxn<'a>, StoreError> {
        let conn = pg.run(async {
            let c = pg.conn().await?;
            // Not durable: bookkeeping that changes no name, which may be
            // lost on a crash of the server, never torn.
            let begin = if durable {
                "BEGIN"
            } else {
                "BEGIN; SET LOCAL synchronous_commit = off"
            };
            c.batch_execute(begin)
                .await
                .map_err(db_err("starting a transaction"))?;
            Ok(c)
        })?;
        Ok(PgTxn {
            pg,
            catalogued,
            conn: Some(conn),
        })
    }

    fn conn(&self) -> Result<&Object, StoreError> {
        self.conn
            .as_ref()
            .ok_or_else(|| StoreError::corrupt("the transaction has ended"))
    }
}

impl Drop for PgTxn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let rolled_back = self
                .pg
                .run(async {
                    c.batch_execute("ROLLBACK")
                        .await
                        .map_err(db_err("rolling back"))
                })
                .is_ok();
            if !rolled_back {
                // Not back into the pool in an unknown state.
                let _ = Object::take(c);
            }
        }
    }
}

type Param<'p> = &'p (dyn ToSql + Sync);

/// What a guarded statement that changed too few rows means.
#[derive(Clone, Copy)]
enum Short {
    /// A name was written since the lookup: the batch is redone.
    LostRace,
    /// A blob's object was removed by gc since the upload: the files fail.
    ObjectGone,
}

/// One statement of a batch, with its parameters.
struct Statement<'p> {
    sql: &'static str,
    params: Vec<Param<'p>>,
    /// How many rows it must change, if that is known (a guard), and what
    /// it means when it changes fewer.
    expect: Option<(u64, Short)>,
    what: &'static str,
}

impl WriteTxn for PgTxn<'_> {
    /// Optimistic: the lookup locks nothing. What the batch then writes
    /// is guarded instead: a new name by its insert (a racing insert of it
    /// makes this one fail), a replaced version by `WHERE version = was`;
    /// either lost race fails the batch with `Conflict`, and the engine
    /// redoes it against the new state. A decision that writes nothing
    /// (`kept`, a FAIL `conflict`, `unchanged`) holds at the lookup, which
    /// is a valid place for it in the name's serial order.
    fn lock(&mut self, names: &[&str]) -> Result<Vec<Option<Entry>>, StoreError> {
        let c = self.conn()?;
        let found = self.pg.run(async {
            let sql = format!("SELECT {ENTRY_COLS} FROM entries WHERE name = ANY($1)");
            let st = c
                .prepare_cached(&sql)
                .await
                .map_err(db_err("looking up names"))?;
            let rows = c
                .query(&st, &[&names])
                .await
                .map_err(db_err("looking up names"))?;
            rows.iter().map(entry_row).collect::<Result<Vec<_>, _>>()
        })?;
        Ok(in_order(names, found))
    }

    fn has_blob(&mut self, hash: &Hash) -> Result<bool, StoreError> {
        let c = self.conn()?;
        self.pg.run(async {
            let rows = c
                .query("SELECT 1 FROM blobs WHERE hash = $1", &[&&hash.0[..]])
                .await
                .map_err(db_err("looking up a blob"))?;
            Ok(!rows.is_empty())
        })
    }

    fn write(&mut self, w: &Writes<'_>) -> Result<(), StoreError> {
        let at = micros(w.at);
        let mut batch: Vec<Statement<'_>> = Vec::new();

        // Blobs, sorted (racing inserts of one hash wait in one order).
        let mut blobs: Vec<_> = w.blobs.iter().collect();
        blobs.sort_by_key(|b| b.hash);
        blobs.dedup_by_key(|b| b.hash);
        let b_hash: Vec<&[u8]> = blobs.iter().map(|b| &b.hash.0[..]).collect();
        let b_size: Vec<i64> = blobs.iter().map(|b| b.size as i64).collect();
        let b_data: Vec<Option<&[u8]>> = blobs.iter().map(|b| b.data).collect();
        let external: Vec<&[u8]> = blobs
            .iter()
            .filter(|b| b.data.is_none())
            .map(|b| &b.hash.0[..])
            .collect();
        if !blobs.is_empty() {
            batch.push(Statement {
                sql: "INSERT INTO blobs (hash, size, data, created_at)
                      SELECT h, s, d, $4 FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) AS t (h, s, d)
                      ORDER BY h ON CONFLICT (hash) DO NOTHING",
                params: vec![&b_hash, &b_size, &b_data, &at],
                expect: None,
                what: "storing blobs",
            });
        }
        if self.catalogued && !external.is_empty() {
            // Renews each external blob's object, so that a gc sweeping
            // it now waits and then keeps it; one gc already removed is a
            // failure of the batch, never a version without its bytes.
            batch.push(Statement {
                sql: "UPDATE objects SET touched_at = now() WHERE hash IN
                        (SELECT hash FROM objects WHERE hash = ANY($1) ORDER BY hash FOR UPDATE)",
                params: vec![&external],
                expect: Some((external.len() as u64, Short::ObjectGone)),
                what: "renewing blob objects",
            });
        }

        // Versions: a name may get several in one batch; the last is
        // current, every one it replaced goes to history.
        let mut names: BTreeMap<&str, (Option<&Entry>, &Entry)> = BTreeMap::new();
        let mut replaced: Vec<(&Entry, i64)> = Vec::new();
        for v in &w.versions {
            let e = &v.entry;
            names
                .entry(e.name.as_str())
                .and_modify(|(_, last)| *last = e)
                .or_insert((v.replaced.as_ref(), e));
            if let Some(old) = &v.replaced {
                replaced.push((old, micros(e.ingested_at)));
            }
        }
        let h_name: Vec<&str> = replaced.iter().map(|(o, _)| o.name.as_str()).collect();
        let h_version: Vec<i64> = replaced.iter().map(|(o, _)| o.version as i64).collect();
        let h_hash: Vec<&[u8]> = replaced.iter().map(|(o, _)| &o.hash.0[..]).collect();
        let h_size: Vec<i64> = replaced.iter().map(|(o, _)| o.size as i64).collect();
        let h_meta: Vec<Option<&str>> = replaced.iter().map(|(o, _)| o.meta.as_deref()).collect();
        let h_session: Vec<uuid::Uuid> = replaced.iter().map(|(o, _)| o.session_id).collect();
        let h_at: Vec<i64> = replaced
            .iter()
            .map(|(o, _)| micros(o.ingested_at))
            .collect();
        let h_replaced: Vec<i64> = replaced.iter().map(|(_, t)| *t).collect();
        let h_deleted: Vec<bool> = replaced.iter().map(|(o, _)| o.deleted).collect();
        if !replaced.is_empty() {
            batch.push(Statement {
                sql: "INSERT INTO history (name, version, hash, size, meta, session_id, ingested_at, replaced_at, deleted)
                      SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::bigint[], $5::text[],
                                           $6::uuid[], $7::bigint[], $8::bigint[], $9::bool[])",
                params: vec![
                    &h_name, &h_version, &h_hash, &h_size, &h_meta, &h_session, &h_at,
                    &h_replaced, &h_deleted,
                ],
                expect: None,
                what: "moving versions into history",
            });
        }
        let (new, updated): (Vec<_>, Vec<_>) =
            names.values().partition(|(first, _)| first.is_none());
        let n = EntryCols::of(new.iter().map(|(_, e)| *e));
        if !new.is_empty() {
            // A name another transaction inserted since the lookup fails
            // the insert (unique violation): the batch is redone.
            batch.push(Statement {
                sql: "INSERT INTO entries (name, hash, size, meta, session_id, ingested_at, version, deleted)
                      SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::text[],
                                           $5::uuid[], $6::bigint[], $7::bigint[], $8::bool[])",
                params: vec![&n.0, &n.1, &n.2, &n.3, &n.4, &n.5, &n.6, &n.7],
                expect: None,
                what: "writing versions",
            });
        }
        let u = EntryCols::of(updated.iter().map(|(_, e)| *e));
        let u_was: Vec<i64> = updated
            .iter()
            .map(|(first, _)| first.map_or(0, |e| e.version as i64))
            .collect();
        if !updated.is_empty() {
            batch.push(Statement {
                sql: "UPDATE entries e SET hash = t.hash, size = t.size, meta = t.meta,
                        session_id = t.session_id, ingested_at = t.ingested_at,
                        version = t.version, deleted = t.deleted
                      FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::text[], $5::uuid[],
                                  $6::bigint[], $7::bigint[], $8::bool[], $9::bigint[])
                        AS t (name, hash, size, meta, session_id, ingested_at, version, deleted, was)
                      WHERE e.name = t.name AND e.version = t.was",
                params: vec![&u.0, &u.1, &u.2, &u.3, &u.4, &u.5, &u.6, &u.7, &u_was],
                expect: Some((updated.len() as u64, Short::LostRace)),
                what: "writing versions",
            });
            // The sources recorded for what the names held no longer hold.
            batch.push(Statement {
                sql: "DELETE FROM sources s
                      USING unnest($1::text[], $2::bytea[], $3::text[], $4::bool[]) AS t (name, hash, meta, deleted)
                      WHERE s.name = t.name
                        AND (t.deleted OR s.hash <> t.hash OR s.meta IS DISTINCT FROM t.meta)",
                params: vec![&u.0, &u.1, &u.3, &u.7],
                expect: None,
                what: "dropping stale sources",
            });
        }

        // Sources: one row per path (the last), sorted.
        let mut sources: HashMap<(&[u8], &[u8]), usize> = HashMap::new();
        for (i, s) in w.sources.iter().enumerate() {
            sources.insert(split_path(&s.path), i);
        }
        let mut sources: Vec<_> = sources.into_iter().collect();
        sources.sort();
        let s_dir: Vec<&[u8]> = sources.iter().map(|((d, _), _)| *d).collect();
        let s_file: Vec<&[u8]> = sources.iter().map(|((_, f), _)| *f).collect();
        let s_rec: Vec<_> = sources.iter().map(|(_, i)| w.sources[*i]).collect();
        let s_size: Vec<i64> = s_rec.iter().map(|r| r.size as i64).collect();
        let s_mtime: Vec<i64> = s_rec.iter().map(|r| r.mtime_ns).collect();
        let s_name: Vec<&str> = s_rec.iter().map(|r| r.name.as_str()).collect();
        let s_hash: Vec<&[u8]> = s_rec.iter().map(|r| &r.hash.0[..]).collect();
        let s_meta: Vec<Option<&str>> = s_rec.iter().map(|r| r.meta.as_deref()).collect();
        if !sources.is_empty() {
            batch.push(Statement {
                sql: "INSERT INTO sources (dir, file, size, mtime_ns, name, hash, meta)
                      SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[],
                                           $5::text[], $6::bytea[], $7::text[])
                      ON CONFLICT (dir, file) DO UPDATE SET size = excluded.size,
                        mtime_ns = excluded.mtime_ns, name = excluded.name,
                        hash = excluded.hash, meta = excluded.meta",
                params: vec![
                    &s_dir, &s_file, &s_size, &s_mtime, &s_name, &s_hash, &s_meta,
                ],
                expect: None,
                what: "recording sources",
            });
        }

        let o = &w.outcomes;
        let o_session: Vec<uuid::Uuid> = o.iter().map(|r| r.session_id).collect();
        let o_name: Vec<String> = o.iter().map(|r| no_nul(&r.name)).collect();
        let o_source: Vec<Option<&[u8]>> = o
            .iter()
            .map(|r| r.source.as_ref().map(|p| p.as_os_str().as_bytes()))
            .collect();
        let o_outcome: Vec<&str> = o.iter().map(|r| r.outcome.as_str()).collect();
        let o_reason: Vec<Option<&str>> = o.iter().map(|r| r.reason.map(Reason::as_str)).collect();
        let o_message: Vec<Option<String>> =
            o.iter().map(|r| r.message.as_deref().map(no_nul)).collect();
        let o_size: Vec<Option<i64>> = o.iter().map(|r| r.size.map(|s| s as i64)).collect();
        let o_hash: Vec<Option<&[u8]>> = o
            .iter()
            .map(|r| r.hash.as_ref().map(|h| &h.0[..]))
            .collect();
        if !o.is_empty() {
            batch.push(Statement {
                sql: "INSERT INTO file_outcomes (session_id, name, source, outcome, reason, message, size, hash)
                      SELECT s, n, src, o, r, m, sz, h FROM unnest($1::uuid[], $2::text[], $3::bytea[],
                          $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bytea[])
                        WITH ORDINALITY AS t (s, n, src, o, r, m, sz, h, i)
                      ORDER BY i",
                params: vec![
                    &o_session, &o_name, &o_source, &o_outcome, &o_reason, &o_message, &o_size,
                    &o_hash,
                ],
                expect: None,
                what: "recording outcomes",
            });
        }

        let counts: Vec<(uuid::Uuid, [i64; 7])> = w
            .counts
            .iter()
            .map(|(id, d)| {
                let n = [
                    d.ingested,
                    d.overwritten,
                    d.unchanged,
                    d.kept,
                    d.failed,
                    d.bytes,
                    d.deleted,
                ];
                (*id, n.map(|x| x as i64))
            })
            .collect();
        for (id, n) in &counts {
            batch.push(Statement {
                sql: "UPDATE sessions SET ingested = ingested + $2, overwritten = overwritten + $3,
                        unchanged = unchanged + $4, kept = kept + $5, failed = failed + $6,
                        bytes = bytes + $7, deleted = deleted + $8 WHERE id = $1",
                params: vec![id, &n[0], &n[1], &n[2], &n[3], &n[4], &n[5], &n[6]],
                expect: None,
                what: "updating session counters",
            });
        }
        self.run_batch(&batch)
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let c = self
            .conn
            .take()
            .ok_or_else(|| StoreError::corrupt("the transaction has ended"))?;
        let done = self.pg.run(async {
            c.batch_execute("COMMIT")
                .await
                .map_err(db_err("committing"))
        });
        if done.is_err() {
            // Whatever the connection's state, it is not reused.
            let _ = Object::take(c);
        }
        done
    }
}

impl PgTxn<'_> {
    /// Prepares every statement, then sends them all without waiting for
    /// answers in between (pipelined), in order.
    fn run_batch(&self, batch: &[Statement<'_>]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let c = self.conn()?;
        let done = self.pg.run(async {
            let prepared = try_join_all(batch.iter().map(|s| async move {
                c.prepare_cached(s.sql).await.map_err(db_err(s.what))
            }))
            .await?;
            let runs = batch.iter().zip(&prepared).map(|(s, st)| async move {
                let n = c.execute(st, &s.params).await.map_err(db_err(s.what))?;
                match s.expect {
                    Some((want, Short::LostRace)) if n != want => Err(StoreError::bare(
                        StoreErrorKind::Conflict,
                        format!(
                            "index database {}: {n} of {want} names still held what was looked up",
                            s.what
                        ),
                    )),
                    Some((want, Short::ObjectGone)) if n != want => Err(StoreError::bare(
                        StoreErrorKind::Io,
                        format!(
                            "index database {}: {n} of {want} found; gc removed a blob's object while this run held it: run again",
                            s.what
                        ),
                    )),
                    _ => Ok(()),
                }
            });
            try_join_all(runs).await
        });
        done.map(|_| ())
    }
}

/// Versions as columns, for `unnest`.
struct EntryCols<'e>(
    Vec<&'e str>,
    Vec<&'e [u8]>,
    Vec<i64>,
    Vec<Option<&'e str>>,
    Vec<uuid::Uuid>,
    Vec<i64>,
    Vec<i64>,
    Vec<bool>,
);

impl<'e> EntryCols<'e> {
    fn of(entries: impl Iterator<Item = &'e Entry>) -> EntryCols<'e> {
        let mut c = EntryCols(
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
        );
        for e in entries {
            c.0.push(&e.name);
            c.1.push(&e.hash.0[..]);
            c.2.push(e.size as i64);
            c.3.push(e.meta.as_deref());
            c.4.push(e.session_id);
            c.5.push(micros(e.ingested_at));
            c.6.push(e.version as i64);
            c.7.push(e.deleted);
        }
        c
    }
}

/// PostgreSQL's text holds no NUL: a message or a lossy name shows it as
/// U+FFFD instead.
fn no_nul(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}
