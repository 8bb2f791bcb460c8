//! Workspace names: validation and normalization (SPEC §2).
//!
//! A name is a relative, `/`-separated path in valid UTF-8, NFC-normalized,
//! with no empty, `.` or `..` component, no NUL or control characters, at most
//! 255 bytes per component and 4096 bytes in all. [`Name`] can only hold a
//! name that obeys these rules, so the rest of the engine never re-checks.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Longest component of a name, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 4096;

/// A valid workspace name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The source path is not valid UTF-8.
    #[error("the name is not valid UTF-8: {0}")]
    NotUtf8(String),
    /// A component is empty (`a//b`, a leading or trailing `/`).
    #[error("the name {0:?} has an empty component (leading, trailing or doubled '/')")]
    EmptyComponent(String),
    /// A `.` or `..` component.
    #[error("the name {0:?} has a '.' or '..' component")]
    DotComponent(String),
    /// A NUL or other control character.
    #[error("the name {0:?} contains a control character (U+{1:04X})")]
    ControlChar(String, u32),
    /// A component longer than [`MAX_COMPONENT_BYTES`].
    #[error("a component of the name is {1} bytes long, over the limit of 255: {0:?}")]
    ComponentTooLong(String, usize),
    /// A name longer than [`MAX_NAME_BYTES`].
    #[error("the name is {0} bytes long, over the limit of 4096")]
    TooLong(usize),
}

impl Name {
    /// Validates `s` and returns it NFC-normalized.
    ///
    /// ```
    /// use intake::Name;
    /// assert_eq!(Name::new("docs/a.txt").unwrap().as_str(), "docs/a.txt");
    /// assert!(Name::new("../etc/passwd").is_err());
    /// // "e" + combining acute accent becomes the single code point "é".
    /// assert_eq!(Name::new("caf\u{65}\u{301}").unwrap().as_str(), "caf\u{e9}");
    /// ```
    pub fn new(s: &str) -> Result<Name, NameError> {
        Name::from_string(s.to_owned())
    }

    /// [`Name::new`] for an owned string: no copy when it is already NFC.
    pub fn from_string(s: String) -> Result<Name, NameError> {
        let normalized = match is_nfc_quick(s.chars()) {
            IsNormalized::Yes => s,
            _ => s.nfc().collect(),
        };
        check(&normalized)?;
        Ok(Name(normalized))
    }

    /// Builds a name from the components of a relative path, with an
    /// optional prefix (itself a `/`-separated name) in front.
    pub fn from_relative_path(prefix: Option<&str>, rel: &Path) -> Result<Name, NameError> {
        Name::from_parts(prefix, rel, None)
    }

    /// The name of `file` in the folder `dir` (relative), with an optional
    /// prefix: `from_relative_path(prefix, dir/file)` without building the
    /// path.
    pub(crate) fn from_parts(
        prefix: Option<&str>,
        dir: &Path,
        file: Option<&OsStr>,
    ) -> Result<Name, NameError> {
        let prefix = prefix.map(|p| p.trim_end_matches('/'));
        let len =
            prefix.map_or(0, str::len) + dir.as_os_str().len() + file.map_or(0, OsStr::len) + 2;
        let mut s = String::with_capacity(len);
        if let Some(p) = prefix {
            s.push_str(p);
        }
        let not_utf8 = || {
            let rel = match file {
                Some(f) => dir.join(f),
                None => dir.to_path_buf(),
            };
            NameError::NotUtf8(lossy(&rel, prefix))
        };
        let parts = dir.components().map(|c| c.as_os_str()).chain(file);
        for part in parts {
            let part = part.to_str().ok_or_else(not_utf8)?;
            if !s.is_empty() {
                s.push('/');
            }
            s.push_str(part);
        }
        Name::from_string(s)
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The last component.
    pub fn basename(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

/// A printable form of a path that may not be UTF-8, for messages.
pub(crate) fn lossy(rel: &Path, prefix: Option<&str>) -> String {
    let tail = rel.to_string_lossy();
    match prefix {
        Some(p) => format!("{}/{}", p.trim_end_matches('/'), tail),
        None => tail.into_owned(),
    }
}

fn check(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong(s.len()));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(NameError::ControlChar(s.to_owned(), c as u32));
    }
    for comp in s.split('/') {
        match comp {
            "" => return Err(NameError::EmptyComponent(s.to_owned())),
            "." | ".." => return Err(NameError::DotComponent(s.to_owned())),
            c if c.len() > MAX_COMPONENT_BYTES => {
                return Err(NameError::ComponentTooLong(s.to_owned(), c.len()));
            }
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["a", "a/b/c.txt", "ü/日本語.pdf", "with space/x", "a.b..c"] {
            assert_eq!(Name::new(ok).map(|n| n.0), Ok(ok.to_owned()), "{ok}");
        }
    }

    #[test]
    fn rejects_each_rule() {
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert!(matches!(
            Name::new("/abs"),
            Err(NameError::EmptyComponent(_))
        ));
        assert!(matches!(
            Name::new("a//b"),
            Err(NameError::EmptyComponent(_))
        ));
        assert!(matches!(Name::new("a/"), Err(NameError::EmptyComponent(_))));
        assert!(matches!(Name::new("./a"), Err(NameError::DotComponent(_))));
        assert!(matches!(
            Name::new("a/../b"),
            Err(NameError::DotComponent(_))
        ));
        assert!(matches!(
            Name::new("a\nb"),
            Err(NameError::ControlChar(_, 10))
        ));
        assert!(matches!(
            Name::new("a\tb"),
            Err(NameError::ControlChar(_, 9))
        ));
        assert!(matches!(
            Name::new("a\u{1b}b"),
            Err(NameError::ControlChar(_, 0x1b))
        ));
        assert!(matches!(
            Name::new("a\0b"),
            Err(NameError::ControlChar(_, 0))
        ));
        assert!(matches!(
            Name::new("a\u{85}b"),
            Err(NameError::ControlChar(_, 0x85))
        ));
    }

    #[test]
    fn length_limits_are_in_bytes() {
        let c255 = "é".repeat(127) + "a"; // 255 bytes
        assert!(Name::new(&c255).is_ok());
        let c256 = "é".repeat(128);
        assert_eq!(
            Name::new(&c256),
            Err(NameError::ComponentTooLong(c256.clone(), 256))
        );
        let long = vec!["a".repeat(200); 21].join("/"); // 4220 bytes
        assert_eq!(Name::new(&long), Err(NameError::TooLong(long.len())));
        let exact = vec!["a".repeat(255); 16].join("/"); // 4095 bytes
        assert!(Name::new(&exact).is_ok());
    }

    #[test]
    fn normalizes_to_nfc() {
        let n = Name::new("cafe\u{301}/x").unwrap();
        assert_eq!(n.as_str(), "caf\u{e9}/x");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_path_is_rejected() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"dir/\xff.txt"));
        assert!(matches!(
            Name::from_relative_path(None, p),
            Err(NameError::NotUtf8(_))
        ));
    }

    #[test]
    fn prefix_is_prepended() {
        let n = Name::from_relative_path(Some("in/"), Path::new("a/b.txt")).unwrap();
        assert_eq!(n.as_str(), "in/a/b.txt");
    }
}
