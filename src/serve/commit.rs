//! Committing a closed upload session: its staged uploads become one
//! ingest run in its intake session, in the order they arrived, each
//! `X.meta.json` object the sidecar of `X` whichever came first. Then the
//! intake session is closed and the staged bodies removed.
//!
//! A commit cut short (the server killed) is done again on restart: the
//! names the session already has an outcome for are skipped, so every
//! upload is decided exactly once.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;

use super::db::{Staged, StagedBody};
use crate::item::{Item, Source};
use crate::meta::{Meta, sidecar_of};
use crate::name::Name;
use crate::outcome::Reason;

/// A file to decide, with its sidecar if one was uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paired<'a> {
    /// The name.
    pub(crate) name: &'a str,
    /// The last upload of the name.
    pub(crate) file: &'a Staged,
    /// The last upload of `name.meta.json`, if there was one.
    pub(crate) sidecar: Option<&'a Staged>,
}

/// Pairs a session's uploads (in arrival order): one entry per name that
/// is not a sidecar, at the place its last upload arrived (a name uploaded
/// again replaces its earlier body, as in S3), with its sidecar; and the
/// sidecars whose file never arrived.
pub(crate) fn pair(uploads: &[Staged]) -> (Vec<Paired<'_>>, Vec<&str>) {
    let mut last: HashMap<&str, i64> = HashMap::new();
    for u in uploads {
        last.insert(u.name.as_str(), u.seq);
    }
    let is_last = |u: &Staged| last.get(u.name.as_str()) == Some(&u.seq);
    let files: HashSet<&str> = last
        .keys()
        .copied()
        .filter(|n| sidecar_of(OsStr::new(n)).is_none())
        .collect();
    let mut sidecars = HashMap::new();
    let mut orphans = Vec::new();
    for u in uploads.iter().filter(|u| is_last(u)) {
        if let Some(target) = sidecar_of(OsStr::new(&u.name)) {
            match target.to_str().filter(|t| files.contains(t)) {
                Some(t) => {
                    sidecars.insert(t, u);
                }
                None => orphans.push(u.name.as_str()),
            }
        }
    }
    let paired = uploads
        .iter()
        .filter(|u| is_last(u) && files.contains(u.name.as_str()))
        .map(|u| Paired {
            name: &u.name,
            file: u,
            sidecar: sidecars.get(u.name.as_str()).copied(),
        })
        .collect();
    (paired, orphans)
}

/// The item for one paired upload: its sidecar read and checked here, so
/// that a bad sidecar fails its file with `invalid_meta`. `data` reads a
/// body kept in the database.
pub(crate) fn item(p: &Paired<'_>, data: &dyn Fn(i64) -> Result<Vec<u8>, String>) -> Item {
    let failed = |reason, message: String| Item::Failed {
        name: p.name.to_owned(),
        source: None,
        reason,
        message,
    };
    let source = match &p.file.body {
        StagedBody::File(f) => Source::Upload(f.clone()),
        StagedBody::Inline => match data(p.file.seq) {
            Ok(bytes) => Source::Bytes(bytes),
            Err(e) => return failed(Reason::StoreError, format!("reading the upload: {e}")),
        },
        StagedBody::Refused(reason, message) => return failed(*reason, message.clone()),
    };
    let name = match Name::new(p.name) {
        Ok(n) => n,
        Err(e) => return failed(Reason::InvalidName, e.to_string()),
    };
    let sidecar = match p.sidecar.map(|s| (&s.body, s.seq)) {
        None => None,
        Some((StagedBody::Refused(_, message), _)) => {
            return failed(
                Reason::InvalidMeta,
                format!("its sidecar {}.meta.json was refused: {message}", p.name),
            );
        }
        Some((StagedBody::File(path), _)) => Some(std::fs::read(path).map_err(|e| e.to_string())),
        Some((StagedBody::Inline, seq)) => Some(data(seq)),
    };
    let meta = match sidecar {
        None => None,
        Some(Err(e)) => {
            return failed(
                Reason::ReadError,
                format!("cannot read the uploaded {}.meta.json: {e}", p.name),
            );
        }
        Some(Ok(bytes)) => match Meta::parse(&bytes) {
            Ok(m) => m,
            Err(e) => {
                return failed(
                    Reason::InvalidMeta,
                    format!("the uploaded {}.meta.json: {e}", p.name),
                );
            }
        },
    };
    Item::File { name, source, meta }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn up(seq: i64, name: &str) -> Staged {
        Staged {
            seq,
            name: name.into(),
            body: StagedBody::File(PathBuf::from(format!("/s/{seq}"))),
        }
    }

    fn refused(seq: i64, name: &str) -> Staged {
        Staged {
            seq,
            name: name.into(),
            body: StagedBody::Refused(Reason::InvalidName, "no".into()),
        }
    }

    fn show(s: &Staged) -> String {
        match &s.body {
            StagedBody::File(f) => f.display().to_string(),
            StagedBody::Inline => format!("inline {}", s.seq),
            StagedBody::Refused(r, _) => r.as_str().to_owned(),
        }
    }

    #[test]
    fn sidecars_pair_in_any_order_and_the_last_upload_of_a_name_wins() {
        let uploads = vec![
            up(1, "b.txt.meta.json"),
            up(2, "a.txt"),
            up(3, "b.txt"),
            up(4, "c.txt"),
            up(5, "a.txt.meta.json"),
            up(6, "a.txt"),
            up(7, "lost.txt.meta.json"),
            refused(8, "bad"),
        ];
        let (paired, orphans) = pair(&uploads);
        let got: Vec<(&str, String, Option<String>)> = paired
            .iter()
            .map(|p| (p.name, show(p.file), p.sidecar.map(show)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b.txt", "/s/3".into(), Some("/s/1".into())),
                ("c.txt", "/s/4".into(), None),
                ("a.txt", "/s/6".into(), Some("/s/5".into())),
                ("bad", "invalid_name".into(), None),
            ]
        );
        assert_eq!(orphans, vec!["lost.txt.meta.json"]);
    }

    #[test]
    fn a_sidecar_uploaded_twice_counts_once_and_a_later_upload_replaces_a_refusal() {
        let uploads = vec![
            up(1, "x.meta.json"),
            refused(2, "x"),
            up(3, "x.meta.json"),
            up(4, "x"),
        ];
        let (paired, orphans) = pair(&uploads);
        assert_eq!(paired.len(), 1);
        assert_eq!(
            (show(paired[0].file), paired[0].sidecar.map(show)),
            ("/s/4".into(), Some("/s/3".into()))
        );
        assert!(orphans.is_empty());
    }

    #[test]
    fn bodies_in_the_database_are_read_and_a_refused_sidecar_fails_its_file() {
        let inline = |seq, name: &str| Staged {
            seq,
            name: name.into(),
            body: StagedBody::Inline,
        };
        let uploads = vec![
            inline(1, "x"),
            inline(2, "x.meta.json"),
            up(3, "y"),
            refused(4, "y.meta.json"),
        ];
        let (paired, _) = pair(&uploads);
        let data = |seq: i64| match seq {
            1 => Ok(b"body".to_vec()),
            2 => Ok(br#"{"k": 1}"#.to_vec()),
            _ => Err("no such row".to_owned()),
        };
        match item(&paired[0], &data) {
            Item::File { name, source, meta } => {
                assert_eq!(name.as_str(), "x");
                assert_eq!(source, Source::Bytes(b"body".to_vec()));
                assert_eq!(
                    meta.map(|m| m.as_str().to_owned()),
                    Some(r#"{"k":1}"#.to_owned())
                );
            }
            other => panic!("expected a file, got {other:?}"),
        }
        match item(&paired[1], &data) {
            Item::Failed { reason, .. } => assert_eq!(reason, Reason::InvalidMeta),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
