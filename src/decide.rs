//! The write-mode table of SPEC §3: one pure function, and nowhere else.

use crate::hash::Hash;
use crate::meta::Meta;
use crate::outcome::{Outcome, Reason};
use crate::session::WriteMode;

/// What identifies a file's version: its content hash and its metadata
/// (canonical JSON, `None` when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    /// BLAKE3 of the content.
    pub hash: &'a Hash,
    /// Canonical JSON of the metadata object, if any.
    pub meta: Option<&'a str>,
}

impl<'a> Identity<'a> {
    /// The identity of content `hash` with metadata `meta`.
    pub fn new(hash: &'a Hash, meta: Option<&'a Meta>) -> Identity<'a> {
        Identity {
            hash,
            meta: meta.map(Meta::as_str),
        }
    }
}

/// The write-mode decision for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The name is new: store it.
    Ingest,
    /// The name holds the same content and metadata: nothing to do.
    Unchanged,
    /// KEEP: the name holds something else, which stays.
    Keep,
    /// OVERWRITE: replace what the name holds.
    Overwrite,
    /// FAIL: the name holds something else; the file fails with `conflict`.
    Conflict,
}

impl Decision {
    /// Whether applying the decision writes a new version of the name.
    pub fn writes(self) -> bool {
        matches!(self, Decision::Ingest | Decision::Overwrite)
    }

    /// The file's outcome, and the reason for a failure.
    pub fn outcome(self) -> (Outcome, Option<Reason>) {
        match self {
            Decision::Ingest => (Outcome::Ingested, None),
            Decision::Overwrite => (Outcome::Overwritten, None),
            Decision::Unchanged => (Outcome::Unchanged, None),
            Decision::Keep => (Outcome::Kept, None),
            Decision::Conflict => (Outcome::Failed, Some(Reason::Conflict)),
        }
    }

    /// Whether a source file remembered for the quick check still holds
    /// after the decision: its name then holds its content and metadata.
    pub fn name_holds_it(self) -> bool {
        matches!(
            self,
            Decision::Ingest | Decision::Overwrite | Decision::Unchanged
        )
    }
}

/// Whether a file may need its content stored, known before it is read:
/// `exists` says whether its name is in the workspace now (not deleted).
/// A name that exists may be deleted before the decision, and the file
/// then fails with `store_error` (run again) instead of being ingested
/// without its content; otherwise KEEP and FAIL never write there, and
/// everything else may.
pub fn needs_content(mode: WriteMode, exists: bool) -> bool {
    !exists || mode == WriteMode::Overwrite
}

/// Decides what happens to a file with identity `new` whose name currently
/// holds `existing` (`None`: the name is not in the workspace).
///
/// ```
/// use intake::decide::{decide, Decision, Identity};
/// use intake::{Hash, WriteMode};
/// let a = Hash::of(b"a");
/// let b = Hash::of(b"b");
/// let new = Identity { hash: &a, meta: None };
/// let old = Identity { hash: &b, meta: None };
/// assert_eq!(decide(WriteMode::Fail, None, new), Decision::Ingest);
/// assert_eq!(decide(WriteMode::Fail, Some(old), new), Decision::Conflict);
/// assert_eq!(decide(WriteMode::Keep, Some(new), new), Decision::Unchanged);
/// ```
pub fn decide(mode: WriteMode, existing: Option<Identity<'_>>, new: Identity<'_>) -> Decision {
    match existing {
        None => Decision::Ingest,
        Some(old) if old == new => Decision::Unchanged,
        Some(_) => match mode {
            WriteMode::Keep => Decision::Keep,
            WriteMode::Overwrite => Decision::Overwrite,
            WriteMode::Fail => Decision::Conflict,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_table() {
        let a = Hash::of(b"a");
        let b = Hash::of(b"b");
        let new = Identity {
            hash: &a,
            meta: Some("{\"k\":1}"),
        };
        let same = Identity {
            hash: &a,
            meta: Some("{\"k\":1}"),
        };
        let other_meta = Identity {
            hash: &a,
            meta: None,
        };
        let other_content = Identity {
            hash: &b,
            meta: Some("{\"k\":1}"),
        };
        use Decision::*;
        let expect = [
            (WriteMode::Keep, [Ingest, Unchanged, Keep, Keep]),
            (
                WriteMode::Overwrite,
                [Ingest, Unchanged, Overwrite, Overwrite],
            ),
            (WriteMode::Fail, [Ingest, Unchanged, Conflict, Conflict]),
        ];
        for (mode, row) in expect {
            let got = [
                decide(mode, None, new),
                decide(mode, Some(same), new),
                decide(mode, Some(other_meta), new),
                decide(mode, Some(other_content), new),
            ];
            assert_eq!(got, row, "{mode}");
        }
    }

    /// `needs_content` is true exactly where the table can write.
    #[test]
    fn needs_content_agrees_with_the_table() {
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let new = Identity {
            hash: &a,
            meta: None,
        };
        let others = [
            None,
            Some(Identity {
                hash: &a,
                meta: None,
            }),
            Some(Identity {
                hash: &b,
                meta: None,
            }),
        ];
        for mode in [WriteMode::Keep, WriteMode::Overwrite, WriteMode::Fail] {
            for exists in [false, true] {
                let may_write = others
                    .iter()
                    .filter(|o| o.is_some() == exists)
                    .any(|o| decide(mode, *o, new).writes());
                assert_eq!(needs_content(mode, exists), may_write, "{mode} {exists}");
            }
        }
    }

    #[test]
    fn every_decision_has_one_outcome() {
        use Decision::*;
        let got: Vec<_> = [Ingest, Unchanged, Keep, Overwrite, Conflict]
            .map(Decision::outcome)
            .into();
        assert_eq!(
            got,
            [
                (Outcome::Ingested, None),
                (Outcome::Unchanged, None),
                (Outcome::Kept, None),
                (Outcome::Overwritten, None),
                (Outcome::Failed, Some(Reason::Conflict)),
            ]
        );
    }
}
