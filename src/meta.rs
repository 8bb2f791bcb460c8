//! Metadata sidecars (SPEC §5): `X.meta.json` beside `X` holds a JSON object.
//!
//! Metadata is kept in a canonical form (keys sorted at every level, no
//! insignificant white space) so that two sidecars that mean the same thing
//! compare equal when deciding `unchanged`. An empty object is the same as no
//! metadata.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use serde_json::{Map, Value};

/// Largest sidecar accepted, in bytes.
pub const MAX_SIDECAR_BYTES: u64 = 1024 * 1024;

/// The suffix that marks a sidecar.
pub const SIDECAR_SUFFIX: &str = ".meta.json";

/// The sidecar rule, one way for the walk, one path and the watcher: the
/// name of the file that the sidecar `name` (`X.meta.json`) describes, or
/// `None` if `name` is not a sidecar's (the bare suffix is not).
///
/// ```
/// use std::ffi::OsStr;
/// use intake::meta::sidecar_of;
/// assert_eq!(sidecar_of(OsStr::new("a.pdf.meta.json")), Some(OsStr::new("a.pdf")));
/// assert_eq!(sidecar_of(OsStr::new(".meta.json")), None);
/// assert_eq!(sidecar_of(OsStr::new("a.pdf")), None);
/// ```
pub fn sidecar_of(name: &OsStr) -> Option<&OsStr> {
    name.as_bytes()
        .strip_suffix(SIDECAR_SUFFIX.as_bytes())
        .filter(|base| !base.is_empty())
        .map(OsStr::from_bytes)
}

/// Whether `name` ends with the sidecar suffix (the bare suffix too): a
/// sidecar of such a name is a sidecar's sidecar, never read as metadata
/// of a file of its own.
pub fn ends_as_sidecar(name: &OsStr) -> bool {
    name.as_bytes().ends_with(SIDECAR_SUFFIX.as_bytes())
}

/// The name of the sidecar of the file `name`: `name` + `.meta.json`.
pub fn sidecar_name(name: &OsStr) -> OsString {
    let mut s = name.to_owned();
    s.push(SIDECAR_SUFFIX);
    s
}

/// A file's metadata: a JSON object in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Meta(String);

/// Why a sidecar is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// Over [`MAX_SIDECAR_BYTES`].
    #[error("the sidecar is {0} bytes, over the 1 MiB limit")]
    TooLarge(u64),
    /// Not JSON.
    #[error("the sidecar is not valid JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("the sidecar holds a JSON {0}, not an object")]
    NotObject(&'static str),
}

impl Meta {
    /// Parses sidecar bytes; `Ok(None)` for an empty object.
    ///
    /// ```
    /// use intake::Meta;
    /// let a = Meta::parse(br#"{"b": 1, "a": {"y": 2, "x": 1}}"#).unwrap().unwrap();
    /// assert_eq!(a.as_str(), r#"{"a":{"x":1,"y":2},"b":1}"#);
    /// assert!(Meta::parse(b"[1]").is_err());
    /// assert_eq!(Meta::parse(b"{}"), Ok(None));
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Option<Meta>, MetaError> {
        if bytes.len() as u64 > MAX_SIDECAR_BYTES {
            return Err(MetaError::TooLarge(bytes.len() as u64));
        }
        let v: Value = serde_json::from_slice(bytes).map_err(|e| MetaError::Json(e.to_string()))?;
        match v {
            Value::Object(m) if m.is_empty() => Ok(None),
            Value::Object(_) => Ok(Some(Meta(canonical(&v)))),
            Value::Null => Err(MetaError::NotObject("null")),
            Value::Bool(_) => Err(MetaError::NotObject("boolean")),
            Value::Number(_) => Err(MetaError::NotObject("number")),
            Value::String(_) => Err(MetaError::NotObject("string")),
            Value::Array(_) => Err(MetaError::NotObject("array")),
        }
    }

    /// From an already-canonical string (as stored in the index).
    pub fn from_canonical(s: String) -> Meta {
        Meta(s)
    }

    /// The canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The metadata as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

/// Serializes with keys sorted at every level, whatever map type serde_json
/// was built with.
fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_meaning_same_metadata() {
        let a = Meta::parse(br#"{"a":1,"b":[{"d":1,"c":2}]}"#).unwrap();
        let b = Meta::parse(b" { \"b\" : [ {\"c\":2, \"d\":1} ] , \"a\" : 1 } ").unwrap();
        assert_eq!(a, b);
    }

    /// Regression (fuzz target `sidecar`): serde_json's default float parser
    /// is not correctly rounded, so this 79-digit number came out one unit in
    /// the last place off, and its canonical text then parsed to another
    /// number: the canonical form was not a fixed point.
    #[test]
    fn canonical_form_of_a_long_decimal_reparses_to_itself() {
        let long = format!(r#"{{"n":-{}555{}0.0}}"#, "3".repeat(55), "3".repeat(20));
        let m = Meta::parse(long.as_bytes()).unwrap().unwrap();
        assert_eq!(Meta::parse(m.as_str().as_bytes()), Ok(Some(m)));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(matches!(Meta::parse(b"{"), Err(MetaError::Json(_))));
        assert_eq!(Meta::parse(b"\"x\""), Err(MetaError::NotObject("string")));
        assert_eq!(Meta::parse(b"null"), Err(MetaError::NotObject("null")));
        let big = vec![b' '; (MAX_SIDECAR_BYTES + 1) as usize];
        assert_eq!(
            Meta::parse(&big),
            Err(MetaError::TooLarge(MAX_SIDECAR_BYTES + 1))
        );
    }
}
