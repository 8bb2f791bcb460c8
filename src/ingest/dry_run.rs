//! A dry run: every file decided as a real run would decide it, against
//! the index as it is plus what the run would have written; nothing is
//! written.

use std::collections::HashMap;

use super::prepared::Prepared;
use crate::decide::{Identity, decide};
use crate::engine::Engine;
use crate::hash::Hash;
use crate::outcome::{FileReport, Outcome, Reason};
use crate::session::Session;
use crate::store::{EachAlone, Entry, ReadTxn};

/// What the run would have written so far: the identity of each name.
#[derive(Default)]
pub(crate) struct DryRun {
    written: HashMap<String, (Hash, Option<String>)>,
}

impl DryRun {
    /// Decides `batch` (drained) with one lookup in one read transaction;
    /// the reports, named, go to `out`.
    pub(crate) fn decide_batch(
        &mut self,
        engine: &Engine,
        session: &Session,
        batch: &mut Vec<Prepared>,
        out: &mut Vec<FileReport>,
    ) {
        let sid = session.session_id;
        let mut names: Vec<&str> = batch
            .iter()
            .filter(|p| p.identity().is_some() && !self.written.contains_key(&p.name))
            .map(|p| p.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        // One read transaction per batch; if there is none to be had, each
        // lookup on its own.
        let index = &*engine.index;
        let found = match index.read_txn() {
            Ok(view) => view.current_many(&names),
            Err(_) => EachAlone(index).current_many(&names),
        };
        let found: Result<HashMap<&str, Option<Entry>>, String> = match found {
            Ok(f) if f.len() == names.len() => Ok(names.into_iter().zip(f).collect()),
            Ok(_) => Err("the index answered for fewer names than asked".into()),
            Err(e) => Err(e.to_string()),
        };
        let start = out.len();
        for p in batch.iter() {
            let r = match (p.settled(sid), p.identity(), &found) {
                (Some(r), _, _) => r,
                (None, Some(new), Ok(found)) => {
                    let existing = match self.written.get(&p.name) {
                        Some((h, m)) => Some(Identity {
                            hash: h,
                            meta: m.as_deref(),
                        }),
                        None => found
                            .get(p.name.as_str())
                            .and_then(Option::as_ref)
                            .and_then(Entry::identity),
                    };
                    let decision = decide(session.write_mode, existing, new);
                    if decision.writes() {
                        let written = (*new.hash, new.meta.map(str::to_owned));
                        self.written.insert(p.name.clone(), written);
                    }
                    p.decided(sid, decision)
                }
                (None, _, Err(message)) => p.report(
                    sid,
                    Outcome::Failed,
                    Some(Reason::StoreError),
                    Some(message.clone()),
                ),
                (None, None, Ok(_)) => {
                    p.report(sid, Outcome::Failed, Some(Reason::ReadError), None)
                }
            };
            out.push(r);
        }
        for (p, r) in batch.drain(..).zip(out[start..].iter_mut()) {
            p.name_report(r);
        }
    }
}
