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
use std::path::PathBuf;

use super::db::Staged;
use crate::item::{Item, Source};
use crate::meta::{Meta, sidecar_of};
use crate::name::Name;
use crate::outcome::Reason;

/// A file to decide, with its sidecar if one was uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paired<'a> {
    /// The name.
    pub(crate) name: &'a str,
    /// Its body (from the last upload of the name), or why that upload
    /// was refused.
    pub(crate) body: &'a Result<PathBuf, (Reason, String)>,
    /// The body of `name.meta.json` (or why it was refused), if uploaded.
    pub(crate) sidecar: Option<&'a Result<PathBuf, (Reason, String)>>,
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
                    sidecars.insert(t, &u.body);
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
            body: &u.body,
            sidecar: sidecars.get(u.name.as_str()).copied(),
        })
        .collect();
    (paired, orphans)
}

/// The item for one paired upload: its sidecar read and checked here, so
/// that a bad sidecar fails its file with `invalid_meta`.
pub(crate) fn item(p: &Paired<'_>) -> Item {
    let failed = |reason, message: String| Item::Failed {
        name: p.name.to_owned(),
        source: None,
        reason,
        message,
    };
    let file = match p.body {
        Ok(f) => f,
        Err((reason, message)) => return failed(*reason, message.clone()),
    };
    let name = match Name::new(p.name) {
        Ok(n) => n,
        Err(e) => return failed(Reason::InvalidName, e.to_string()),
    };
    let meta = match p.sidecar {
        None => None,
        Some(Err((_, message))) => {
            return failed(
                Reason::InvalidMeta,
                format!("its sidecar {}.meta.json was refused: {message}", p.name),
            );
        }
        Some(Ok(path)) => match std::fs::read(path) {
            Err(e) => {
                return failed(
                    Reason::ReadError,
                    format!("cannot read the uploaded {}.meta.json: {e}", p.name),
                );
            }
            Ok(bytes) => match Meta::parse(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    return failed(
                        Reason::InvalidMeta,
                        format!("the uploaded {}.meta.json: {e}", p.name),
                    );
                }
            },
        },
    };
    Item::File {
        name,
        source: Source::Upload(file.clone()),
        meta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(seq: i64, name: &str) -> Staged {
        Staged {
            seq,
            name: name.into(),
            body: Ok(PathBuf::from(format!("/s/{seq}"))),
        }
    }

    fn refused(seq: i64, name: &str) -> Staged {
        Staged {
            seq,
            name: name.into(),
            body: Err((Reason::InvalidName, "no".into())),
        }
    }

    fn file(p: &Paired<'_>) -> String {
        match p.body {
            Ok(f) => f.display().to_string(),
            Err((r, _)) => r.as_str().to_owned(),
        }
    }

    fn side(p: &Paired<'_>) -> Option<String> {
        p.sidecar.map(|s| match s {
            Ok(f) => f.display().to_string(),
            Err((r, _)) => r.as_str().to_owned(),
        })
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
        let got: Vec<(&str, String, Option<String>)> =
            paired.iter().map(|p| (p.name, file(p), side(p))).collect();
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
            (file(&paired[0]), side(&paired[0])),
            ("/s/4".into(), Some("/s/3".into()))
        );
        assert!(orphans.is_empty());
    }

    #[test]
    fn a_refused_sidecar_fails_its_file_with_invalid_meta() {
        let uploads = vec![up(1, "x"), refused(2, "x.meta.json")];
        let (paired, _) = pair(&uploads);
        match item(&paired[0]) {
            Item::Failed { reason, .. } => assert_eq!(reason, Reason::InvalidMeta),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
