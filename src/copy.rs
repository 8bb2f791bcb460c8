//! Copying a whole workspace into another: every session (with its
//! counters, its closing time and its per-file outcomes), every name's
//! versions (deletions included) with their metadata, and every blob they
//! refer to. Typically from a local folder into PostgreSQL + S3, or back.
//!
//! Resumable, and never copying anything twice: a batch of names is
//! written in one transaction (each name's missing versions, oldest first,
//! after the target's newest), a session's outcomes in transactions that
//! a second run counts and skips, and its counters as the difference to
//! the source's. Blobs are streamed, and made durable before the rows that
//! refer to them. The quick check's source records are not copied: they
//! describe one machine's folders. The target is verified at the end.

use std::collections::HashMap;
use std::io::Read;

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::outcome::Counts;
use crate::store::{Entry, NewBlob, NewVersion, OutcomeRecord, StoreError, Writes};
use crate::workspace::{VerifyReport, Workspace};

/// Names copied per transaction.
const NAMES_PER_BATCH: usize = 500;
/// Outcomes copied per transaction.
const OUTCOMES_PER_BATCH: usize = 10_000;

/// What a copy did (a resumed copy counts only what it added).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Sessions created in the target.
    pub sessions: u64,
    /// Names that got versions.
    pub names: u64,
    /// Versions written.
    pub versions: u64,
    /// Blobs written (inline or to the blob store).
    pub blobs: u64,
    /// Bytes of those blobs.
    pub bytes: u64,
    /// Per-file outcomes written.
    pub outcomes: u64,
    /// The target's verification.
    pub verify: VerifyReport,
}

/// The target holds something the source does not explain.
fn differs(to: &Workspace, what: String) -> Error {
    to.engine().err(StoreError::corrupt(format!(
        "{what}; the target is not a copy of this source (copy into a new workspace)"
    )))
}

/// Copies everything `from` holds into `to`; `progress` sees the counts
/// after each transaction.
pub fn copy(
    from: &Workspace,
    to: &Workspace,
    progress: &mut dyn FnMut(&CopyReport),
) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    let (src, dst) = (from.engine(), to.engine());
    let (src_err, dst_err) = (|e| src.err(e), |e| dst.err(e));

    // Sessions first: versions and outcomes name them.
    let sessions = src.index.sessions().map_err(src_err)?;
    for s in &sessions {
        if dst
            .index
            .session(s.session.session_id)
            .map_err(dst_err)?
            .is_none()
        {
            dst.index
                .create_session(&s.session, s.reverts)
                .map_err(dst_err)?;
            report.sessions += 1;
        }
    }

    // Names, a batch per transaction.
    let mut after = String::new();
    loop {
        let names = src.index.names(&after, NAMES_PER_BATCH).map_err(src_err)?;
        let Some(last) = names.last() else { break };
        after = last.clone();
        copy_names(from, to, &names, &mut report)?;
        progress(&report);
    }

    for s in &sessions {
        copy_outcomes(from, to, s.session.session_id, &mut report, progress)?;
        // Counters: what the target lacks of the source's.
        let id = s.session.session_id;
        let have = dst
            .index
            .session(id)
            .map_err(dst_err)?
            .ok_or_else(|| differs(to, format!("session {id} vanished from the target")))?;
        let (a, b) = (&s.ingestion, &have.ingestion);
        let less = |x: u64, y: u64, what: &str| {
            x.checked_sub(y).ok_or_else(|| {
                differs(to, format!("session {id} counts more {what} in the target"))
            })
        };
        let delta = Counts {
            ingested: less(a.ingested, b.ingested, "ingested")?,
            overwritten: less(a.overwritten, b.overwritten, "overwritten")?,
            unchanged: less(a.unchanged, b.unchanged, "unchanged")?,
            kept: less(a.kept, b.kept, "kept")?,
            deleted: less(a.deleted, b.deleted, "deleted")?,
            failed: less(a.failed_files, b.failed_files, "failed")?,
            refused: 0,
            bytes: less(a.bytes, b.bytes, "bytes")?,
        };
        if delta != Counts::default() {
            let writes = Writes {
                at: to.now(),
                counts: vec![(id, delta)],
                ..Writes::default()
            };
            let mut txn = dst.index.begin(true).map_err(dst_err)?;
            txn.write(&writes).map_err(dst_err)?;
            txn.commit().map_err(dst_err)?;
        }
        if let Some(at) = s.closed_at {
            dst.index.close_session(id, at).map_err(dst_err)?;
        }
    }

    // The history gc has dropped is gone in the target too.
    if let Some(horizon) = src.index.history_horizon().map_err(src_err)? {
        dst.index.gc(horizon).map_err(dst_err)?;
    }
    report.verify = to.verify()?;
    progress(&report);
    Ok(report)
}

/// Copies the versions of `names` that the target lacks, in one
/// transaction.
fn copy_names(
    from: &Workspace,
    to: &Workspace,
    names: &[String],
    report: &mut CopyReport,
) -> Result<()> {
    let (src, dst) = (from.engine(), to.engine());
    let dst_err = |e| dst.err(e);
    let mut txn = dst.index.begin(true).map_err(dst_err)?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let have = txn.lock(&refs).map_err(dst_err)?;
    let mut versions: Vec<NewVersion> = Vec::new();
    for (name, have) in names.iter().zip(have) {
        // The source's versions, oldest first.
        let mut chain = src.index.history(name).map_err(|e| src.err(e))?;
        chain.reverse();
        let mut replaced: Option<Entry> = None;
        if let Some(have) = have {
            let same = chain
                .iter()
                .find(|e| e.version == have.version)
                .is_some_and(|e| e.hash == have.hash && e.deleted == have.deleted);
            if !same {
                return Err(differs(
                    to,
                    format!(
                        "{name}: the target's version {} is not the source's",
                        have.version
                    ),
                ));
            }
            chain.retain(|e| e.version > have.version);
            replaced = Some(have);
        }
        if !chain.is_empty() {
            report.names += 1;
        }
        for mut e in chain {
            e.replaced_at = None;
            let next = e.clone();
            versions.push(NewVersion {
                entry: e,
                replaced: replaced.take().map(|mut r| {
                    r.replaced_at = Some(next.ingested_at);
                    r
                }),
            });
            replaced = Some(next);
        }
    }
    // Every blob the new versions refer to that the target lacks: small
    // ones inline, the rest to the blob store, durable before the commit.
    let mut inline: HashMap<Hash, Vec<u8>> = HashMap::new();
    let mut external: Vec<(Hash, u64)> = Vec::new();
    for v in &versions {
        let (hash, size) = (v.entry.hash, v.entry.size);
        if inline.contains_key(&hash)
            || external.iter().any(|(h, _)| *h == hash)
            || txn.has_blob(&hash).map_err(dst_err)?
        {
            continue;
        }
        let mut r = from.open_blob(&hash)?;
        if size <= dst.inline_threshold {
            let mut data = Vec::with_capacity(size as usize);
            r.read_to_end(&mut data)
                .map_err(|e| src.err(StoreError::io(format!("reading blob {hash}"), e)))?;
            inline.insert(hash, data);
        } else {
            if !dst.blobs.reuse(&hash).map_err(dst_err)? {
                let mut w = dst.blobs.writer(size).map_err(dst_err)?;
                std::io::copy(&mut r, &mut w)
                    .map_err(|e| dst.err(StoreError::io(format!("copying blob {hash}"), e)))?;
                w.finish(&hash).map_err(dst_err)?;
            }
            external.push((hash, size));
        }
        report.blobs += 1;
        report.bytes += size;
    }
    dst.blobs.sync().map_err(dst_err)?;
    let mut blobs: Vec<NewBlob<'_>> = inline
        .iter()
        .map(|(h, d)| NewBlob {
            hash: *h,
            size: d.len() as u64,
            data: Some(d),
        })
        .collect();
    blobs.extend(external.iter().map(|(h, size)| NewBlob {
        hash: *h,
        size: *size,
        data: None,
    }));
    report.versions += versions.len() as u64;
    let writes = Writes {
        at: to.now(),
        blobs,
        versions,
        ..Writes::default()
    };
    txn.write(&writes).map_err(dst_err)?;
    txn.commit().map_err(dst_err)
}

/// Copies a session's per-file outcomes past those the target has.
fn copy_outcomes(
    from: &Workspace,
    to: &Workspace,
    id: uuid::Uuid,
    report: &mut CopyReport,
    progress: &mut dyn FnMut(&CopyReport),
) -> Result<()> {
    let (src, dst) = (from.engine(), to.engine());
    let mut have = 0u64;
    dst.index
        .session_files(id, &mut |_| {
            have += 1;
            true
        })
        .map_err(|e| dst.err(e))?;
    let mut seen = 0u64;
    let mut chunk: Vec<OutcomeRecord> = Vec::new();
    let mut failed: Option<Error> = None;
    let flush = |chunk: &mut Vec<OutcomeRecord>, report: &mut CopyReport| -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let writes = Writes {
            at: to.now(),
            outcomes: std::mem::take(chunk),
            ..Writes::default()
        };
        let mut txn = dst.index.begin(true).map_err(|e| dst.err(e))?;
        txn.write(&writes).map_err(|e| dst.err(e))?;
        txn.commit().map_err(|e| dst.err(e))?;
        report.outcomes += writes.outcomes.len() as u64;
        Ok(())
    };
    src.index
        .session_files(id, &mut |r| {
            seen += 1;
            if seen > have {
                chunk.push(r);
            }
            if chunk.len() >= OUTCOMES_PER_BATCH {
                if let Err(e) = flush(&mut chunk, report) {
                    failed = Some(e);
                    return false;
                }
                progress(report);
            }
            true
        })
        .map_err(|e| src.err(e))?;
    if let Some(e) = failed {
        return Err(e);
    }
    flush(&mut chunk, report)
}
