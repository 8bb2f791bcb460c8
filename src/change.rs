//! Changes that are not ingests (SPEC §10): deleting a name, making an
//! older version current again, reverting a session. Each is a new version
//! of a name, written inside a session like any run, decided per name
//! inside the write transaction that locks the name, so that it is atomic
//! against every other writer.
//!
//! [`step`] is the whole table of what a change does to a name, as one
//! pure function; [`revert_want`] says, from a name's history, what
//! reverting a session asks of it; [`apply`] runs changes in batches.

use std::collections::HashMap;

use uuid::Uuid;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::outcome::{Counts, FileReport, Outcome, Reason};
use crate::session::Session;
use crate::store::{Entry, NewVersion, OutcomeRecord, StoreError, Writes, lock_all};

/// What a change asks of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Want {
    /// Delete it; a name not in the workspace fails with `not_found`.
    Delete,
    /// Delete it if it still holds this content and metadata (a watched
    /// file that was removed); otherwise leave it (`unchanged`).
    DeleteIf { hash: Hash, meta: Option<String> },
    /// Make it hold `target`'s content and metadata (`None`, or a
    /// deletion: make it absent). With `expect`, only if the name is still
    /// at that version; otherwise it fails with `conflict`.
    Become {
        target: Option<Entry>,
        expect: Option<u64>,
    },
    /// It cannot be done: fails with `not_found` and this message.
    Gone(String),
}

/// What a change does to a name, given what the name holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    /// Write a deletion version of the name, which holds this now.
    Delete(&'a Entry),
    /// Write a version with `content`'s content and metadata; `over`: what
    /// the name holds now, if it is not absent.
    Write {
        content: &'a Entry,
        over: Option<&'a Entry>,
    },
    /// The name already holds what is asked.
    Unchanged,
    /// Nothing to do, and nothing to report (a conditional deletion whose
    /// condition no longer holds).
    Skip,
    /// Fail: the name is not there (or what is asked for is gone).
    NotFound,
    /// Fail: the name changed since the version expected.
    Conflict,
}

/// The table of SPEC §10: what `want` does to a name whose current
/// version is `current` (a deletion included; `None`: never written, or
/// its history collected).
pub(crate) fn step<'a>(want: &'a Want, current: Option<&'a Entry>) -> Step<'a> {
    let live = current.filter(|e| !e.deleted);
    match want {
        Want::Gone(_) => Step::NotFound,
        Want::Delete => match live {
            Some(now) => Step::Delete(now),
            None => Step::NotFound,
        },
        Want::DeleteIf { hash, meta } => match live {
            Some(now) if now.hash == *hash && now.meta == *meta => Step::Delete(now),
            _ => Step::Skip,
        },
        Want::Become { target, expect } => {
            if expect.is_some() && current.map(|e| e.version) != *expect {
                return Step::Conflict;
            }
            match (target.as_ref().filter(|t| !t.deleted), live) {
                (None, Some(now)) => Step::Delete(now),
                (None, None) => Step::Unchanged,
                (Some(t), Some(now)) if now.identity() == t.identity() => Step::Unchanged,
                (Some(t), over) => Step::Write { content: t, over },
            }
        }
    }
}

/// What reverting session `id` asks of a name whose versions, newest
/// first, are `history`: that the name hold again what it held before the
/// session's first version of it, if it still holds the session's last
/// one (unless `force`). `None` if the session wrote no version of it that
/// is still in the history.
pub(crate) fn revert_want(id: Uuid, history: &[Entry], force: bool) -> Option<Want> {
    let mine = history.iter().filter(|e| e.session_id == id);
    let last = mine.clone().map(|e| e.version).max()?;
    let first = mine.map(|e| e.version).min()?;
    let expect = (!force).then_some(last);
    if first == 1 {
        return Some(Want::Become {
            target: None,
            expect,
        });
    }
    match history.iter().find(|e| e.version == first - 1) {
        Some(before) => Some(Want::Become {
            target: Some(before.clone()),
            expect,
        }),
        None => Some(Want::Gone(format!(
            "version {} (before the session) was removed by gc",
            first - 1
        ))),
    }
}

/// How many names one transaction changes at most.
const BATCH: usize = 512;

/// Runs `changes` in `session`, in order, as if one at a time; with
/// `dry_run`, decides them against the workspace as it is and writes
/// nothing. Once the session is over, the rest are refused. One report per
/// change, but none for a change with nothing to do ([`Step::Skip`]).
pub(crate) fn apply(
    engine: &Engine,
    session: &Session,
    changes: &[(String, Want)],
    dry_run: bool,
) -> Result<Vec<FileReport>> {
    let mut out = Vec::with_capacity(changes.len());
    for batch in changes.chunks(BATCH) {
        let over = if dry_run {
            None
        } else {
            match engine.index.session(session.session_id) {
                Ok(Some(rec)) => Error::session_over(&rec, engine.now()),
                Ok(None) => return Err(Error::SessionNotFound(session.session_id)),
                Err(e) => return Err(engine.err(e)),
            }
        };
        if let Some(over) = over {
            let reason = over.refusal_reason();
            out.extend(batch.iter().map(|(name, _)| FileReport {
                name: name.clone(),
                source: None,
                outcome: Outcome::Refused,
                reason,
                message: Some(over.to_string()),
                size: None,
                blake3: None,
                session_id: session.session_id,
            }));
            continue;
        }
        let reports = if dry_run {
            let view = engine.index.read_txn().map_err(|e| engine.err(e))?;
            let mut names: Vec<&str> = batch.iter().map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            let found = view.current_many(&names).map_err(|e| engine.err(e))?;
            let current = names.into_iter().zip(found).collect();
            decide_batch(engine, session, batch, current, &mut |h| {
                engine.index.has_blob(h)
            })
            .map_err(|e| engine.err(e))?
            .0
        } else {
            engine
                .retry
                .run(|| commit_batch(engine, session, batch))
                .map_err(|e| engine.err(e))?
        };
        out.extend(reports);
    }
    Ok(out)
}

/// Decides and writes one batch in one durable transaction.
fn commit_batch(
    engine: &Engine,
    session: &Session,
    batch: &[(String, Want)],
) -> Result<Vec<FileReport>, StoreError> {
    let mut txn = engine.index.begin(true)?;
    let current = lock_all(&mut *txn, batch.iter().map(|(n, _)| n.as_str()).collect())?;
    let (reports, writes) = {
        let txn = &mut txn;
        decide_batch(engine, session, batch, current, &mut |h| txn.has_blob(h))?
    };
    if !writes.is_empty() {
        txn.write(&writes)?;
    }
    txn.commit()?;
    if writes.versions.iter().any(|v| v.entry.deleted) {
        engine
            .removals
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    Ok(reports)
}

/// Decides each change of `batch` in order against `current` (what each
/// name holds, updated as the batch goes), returning the reports and what
/// to write.
fn decide_batch<'b>(
    engine: &Engine,
    session: &Session,
    batch: &'b [(String, Want)],
    mut current: HashMap<&'b str, Option<Entry>>,
    has_blob: &mut dyn FnMut(&Hash) -> Result<bool, StoreError>,
) -> Result<(Vec<FileReport>, Writes<'static>), StoreError> {
    let sid = session.session_id;
    let mut writes = Writes {
        at: engine.now(),
        ..Writes::default()
    };
    let mut counts = Counts::default();
    let mut reports = Vec::with_capacity(batch.len());
    for (name, want) in batch {
        let now = current.get(name.as_str()).cloned().flatten();
        let report = |outcome, reason, message, of: Option<&Entry>| FileReport {
            name: name.clone(),
            source: None,
            outcome,
            reason,
            message,
            size: of.map(|e| e.size),
            blake3: of.map(|e| e.hash),
            session_id: sid,
        };
        let live = now.as_ref().filter(|e| !e.deleted);
        // What to write (the outcome, and the content it records), or
        // why the change fails.
        type Failure<'e> = (Reason, String, Option<&'e Entry>);
        let decided: std::result::Result<(Outcome, &Entry), Failure<'_>> = match step(
            want,
            now.as_ref(),
        ) {
            Step::Skip => continue,
            Step::Unchanged => {
                let r = report(Outcome::Unchanged, None, None, live);
                counts.add(&r);
                reports.push(r);
                continue;
            }
            Step::NotFound => Err((
                Reason::NotFound,
                match want {
                    Want::Gone(why) => format!("{name}: {why}"),
                    _ => format!("{name} is not in the workspace"),
                },
                None,
            )),
            Step::Conflict => Err((
                Reason::Conflict,
                format!(
                    "{name} was changed since (version {} by {}); use --force to revert it anyway",
                    now.as_ref().map_or(0, |e| e.version),
                    now.as_ref()
                        .map_or("gc".to_owned(), |e| format!("session {}", e.session_id))
                ),
                live,
            )),
            Step::Write { content, .. } if !has_blob(&content.hash)? => Err((
                Reason::NotFound,
                format!(
                    "{name}: the content of version {} was removed by gc",
                    content.version
                ),
                None,
            )),
            Step::Write { content, over } => Ok((
                if over.is_some() {
                    Outcome::Overwritten
                } else {
                    Outcome::Ingested
                },
                content,
            )),
            // A deletion records the content it removes.
            Step::Delete(gone) => Ok((Outcome::Deleted, gone)),
        };
        let r = match decided {
            Err((reason, message, of)) => report(Outcome::Failed, Some(reason), Some(message), of),
            Ok((outcome, content)) => {
                let entry = Entry {
                    name: name.clone(),
                    hash: content.hash,
                    size: content.size,
                    meta: content.meta.clone(),
                    session_id: sid,
                    ingested_at: writes.at,
                    version: now.as_ref().map_or(1, |e| e.version + 1),
                    replaced_at: None,
                    deleted: outcome == Outcome::Deleted,
                };
                let r = report(outcome, None, None, Some(content));
                current.insert(name.as_str(), Some(entry.clone()));
                writes.versions.push(NewVersion {
                    entry,
                    replaced: now.clone(),
                });
                r
            }
        };
        counts.add(&r);
        if r.outcome != Outcome::Unchanged {
            writes.outcomes.push(OutcomeRecord::of(&r));
        }
        reports.push(r);
    }
    if !counts.is_empty() {
        writes.counts.push((sid, counts));
    }
    Ok((reports, writes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn v(version: u64, content: &[u8], session: u128, deleted: bool) -> Entry {
        Entry {
            name: "n".into(),
            hash: Hash::of(content),
            size: content.len() as u64,
            meta: None,
            session_id: Uuid::from_u128(session),
            ingested_at: DateTime::UNIX_EPOCH,
            version,
            replaced_at: None,
            deleted,
        }
    }

    /// Every change against every kind of current version.
    #[test]
    fn the_whole_table() {
        let a = v(1, b"a", 1, false);
        let b = v(2, b"b", 2, false);
        let gone = v(3, b"b", 3, true);
        let become_a = |expect| Want::Become {
            target: Some(a.clone()),
            expect,
        };
        let become_none = |expect| Want::Become {
            target: None,
            expect,
        };
        let hold_b = Want::DeleteIf {
            hash: b.hash,
            meta: None,
        };
        use Step::*;
        let cases: Vec<(Want, [Step<'_>; 3])> = vec![
            // current:         none,      b (v2),       deleted (v3)
            (Want::Delete, [NotFound, Delete(&b), NotFound]),
            (hold_b.clone(), [Skip, Delete(&b), Skip]),
            (
                become_a(None),
                [
                    Write {
                        content: &a,
                        over: None,
                    },
                    Write {
                        content: &a,
                        over: Some(&b),
                    },
                    Write {
                        content: &a,
                        over: None,
                    },
                ],
            ),
            (become_none(None), [Unchanged, Delete(&b), Unchanged]),
            (
                become_a(Some(2)),
                [
                    Conflict,
                    Write {
                        content: &a,
                        over: Some(&b),
                    },
                    Conflict,
                ],
            ),
            (become_none(Some(3)), [Conflict, Conflict, Unchanged]),
            (Want::Gone("gc".into()), [NotFound, NotFound, NotFound]),
        ];
        for (want, row) in &cases {
            let got = [
                step(want, None),
                step(want, Some(&b)),
                step(want, Some(&gone)),
            ];
            assert_eq!(&got, row, "{want:?}");
        }
        // The name already holds the target.
        assert_eq!(step(&become_a(None), Some(&a)), Unchanged);
    }

    #[test]
    fn a_revert_asks_for_what_was_there_before_the_sessions_first_version() {
        let s = 7u128;
        // v1 by 1, v2 and v3 by s, v4 by 9: changed since.
        let h = vec![
            v(4, b"d", 9, false),
            v(3, b"c", s, false),
            v(2, b"b", s, false),
            v(1, b"a", 1, false),
        ];
        let want = revert_want(Uuid::from_u128(s), &h, false);
        assert_eq!(
            want,
            Some(Want::Become {
                target: Some(h[3].clone()),
                expect: Some(3),
            })
        );
        let forced = revert_want(Uuid::from_u128(s), &h, true);
        assert!(matches!(forced, Some(Want::Become { expect: None, .. })));
        // Created by the session: reverted to absent.
        let created = revert_want(Uuid::from_u128(1), &h[3..], false);
        assert_eq!(
            created,
            Some(Want::Become {
                target: None,
                expect: Some(1),
            })
        );
        // Not written by the session at all.
        assert_eq!(revert_want(Uuid::from_u128(42), &h, false), None);
        // The version before it collected by gc.
        let gone = revert_want(Uuid::from_u128(s), &h[..3], false);
        assert!(matches!(gone, Some(Want::Gone(_))), "{gone:?}");
    }
}
