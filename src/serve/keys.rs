//! API keys: random, shown once, stored only as a BLAKE3 hash, each
//! mapping to the user its sessions are created by.

use chrono::{DateTime, Utc};

use super::db::KeyRecord;
use crate::session::SessionOauthUser;

/// What every key starts with, so that a leaked one is recognisable.
const PREFIX: &str = "intake_";

/// A new random key (256 bits from the operating system).
pub(crate) fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let mut key = String::with_capacity(PREFIX.len() + 64);
    key.push_str(PREFIX);
    for b in bytes {
        key.push_str(&format!("{b:02x}"));
    }
    Ok(key)
}

/// What is stored of a key.
pub(crate) fn hash(key: &str) -> blake3::Hash {
    blake3::hash(key.as_bytes())
}

/// A record for a new key.
pub(crate) fn record(
    name: &str,
    key: &str,
    user: SessionOauthUser,
    now: DateTime<Utc>,
) -> KeyRecord {
    KeyRecord {
        name: name.to_owned(),
        user,
        created_at: now,
        revoked_at: None,
        hash: hash(key),
    }
}

/// The live key among `keys` that `presented` is, comparing against every
/// one in constant time (`blake3::Hash`'s equality), so that the time
/// taken says nothing about which hash came close.
pub(crate) fn find<'k>(keys: &'k [KeyRecord], presented: &str) -> Option<&'k KeyRecord> {
    let h = hash(presented);
    let mut found = None;
    for k in keys {
        if k.hash == h && k.revoked_at.is_none() {
            found = Some(k);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_by_itself_alone_and_not_once_revoked() {
        let now = Utc::now();
        let k1 = generate().expect("random");
        let k2 = generate().expect("random");
        assert_ne!(k1, k2);
        assert!(k1.starts_with(PREFIX) && k1.len() == PREFIX.len() + 64);
        let mut keys = vec![
            record("a", &k1, SessionOauthUser::from_name("A"), now),
            record("b", &k2, SessionOauthUser::from_name("B"), now),
        ];
        assert_eq!(find(&keys, &k1).map(|k| k.name.as_str()), Some("a"));
        assert_eq!(find(&keys, &k2).map(|k| k.name.as_str()), Some("b"));
        assert!(find(&keys, "intake_00").is_none());
        assert!(find(&keys, "").is_none());
        keys[0].revoked_at = Some(now);
        assert!(find(&keys, &k1).is_none());
    }
}
