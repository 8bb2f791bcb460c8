//! Name validation and normalization (SPEC §2): `Name::new` on arbitrary
//! UTF-8 and `Name::from_relative_path` on arbitrary bytes never panic; a
//! name they accept obeys every rule and re-validates to itself; and
//! `Name::new` accepts exactly what a tiny model of the rules accepts.

#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use intake::Name;
use libfuzzer_sys::fuzz_target;
use unicode_normalization::{UnicodeNormalization, is_nfc};

/// The rules, written out again: the model `Name::new` must agree with.
fn valid(nfc: &str) -> bool {
    !nfc.is_empty()
        && nfc.len() <= 4096
        && !nfc.chars().any(char::is_control)
        && nfc
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= 255)
}

/// Every rule holds for an accepted name, and it is a fixed point.
fn check_accepted(n: &Name) {
    let s = n.as_str();
    assert!(valid(s), "accepted an invalid name {s:?}");
    assert!(is_nfc(s), "accepted a name not in NFC: {s:?}");
    assert_eq!(
        Name::new(s).as_ref(),
        Ok(n),
        "{s:?} does not re-validate to itself"
    );
    assert_eq!(Some(n.basename()), s.rsplit('/').next());
    assert_eq!(n.to_string(), s);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let nfc: String = s.nfc().collect();
        let r = Name::new(s);
        assert_eq!(r.is_ok(), valid(&nfc), "Name::new({s:?}) = {r:?}");
        if let Ok(n) = &r {
            assert_eq!(n.as_str(), nfc);
            check_accepted(n);
        }
    }
    // The first byte picks a prefix length; the prefix (if UTF-8) goes in
    // front of the rest, which is a path of arbitrary bytes.
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(k % 16).min(rest.len());
    let (prefix, path) = rest.split_at(k);
    let prefix = if k == 0 {
        None
    } else {
        std::str::from_utf8(prefix).ok()
    };
    let path = Path::new(OsStr::from_bytes(path));
    if let Ok(n) = Name::from_relative_path(prefix, path) {
        check_accepted(&n);
        // A name is UTF-8, so a path that is not is never accepted.
        assert!(
            path.to_str().is_some(),
            "accepted a non-UTF-8 path {path:?}"
        );
    }
});
