//! The session model's serde form (SPEC §1): parsing arbitrary bytes as a
//! `Session` never panics, and a session that parses serializes to JSON that
//! parses back to an equal session, and serializes again to the same bytes.

#![no_main]

use intake::{CreateSession, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = serde_json::from_slice::<Session>(data) {
        let json = serde_json::to_vec(&s).expect("a session serializes");
        let again: Session = serde_json::from_slice(&json).unwrap_or_else(|e| {
            panic!(
                "intake cannot read back its own session {}: {e}",
                String::from_utf8_lossy(&json)
            )
        });
        assert_eq!(again, s, "{}", String::from_utf8_lossy(&json));
        assert_eq!(serde_json::to_vec(&again).expect("serializes"), json);
    }
    if let Ok(c) = serde_json::from_slice::<CreateSession>(data) {
        let json = serde_json::to_vec(&c).expect("a request serializes");
        let again: CreateSession = serde_json::from_slice(&json).expect("reads back");
        assert_eq!(again.write_mode, c.write_mode);
    }
});
