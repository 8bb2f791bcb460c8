//! The write-mode table of SPEC §3: one pure function, and nowhere else.

use crate::hash::Hash;
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
}
