//! The upload token a session hands out with its upload URL: the S3-style
//! presigned POST the SDK sends carries no API key, so the token is what
//! authorises it. It binds the workspace, the session and its expiry with
//! a keyed BLAKE3 MAC under the workspace's secret; the session travels in
//! the URL, so a token is good for its own session alone, and only until
//! the expiry it was signed with.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A workspace's token-signing secret.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) [u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a token does not authorise an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// Not a token at all.
    #[error("the upload token is malformed")]
    Malformed,
    /// Signed for something else: another session, workspace or expiry.
    #[error("the upload token is not valid for this session")]
    Invalid,
    /// Past the session's expiry.
    #[error("the upload session has expired")]
    Expired,
}

fn mac(secret: &Secret, workspace: &str, session: Uuid, expires: i64) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(&secret.0);
    h.update(b"intake upload token v1\0");
    h.update(workspace.as_bytes());
    h.update(b"\0");
    h.update(session.as_bytes());
    h.update(&expires.to_le_bytes());
    h.finalize()
}

/// The token for uploads into `session` of `workspace` until `expires`.
pub(crate) fn sign(
    secret: &Secret,
    workspace: &str,
    session: Uuid,
    expires: DateTime<Utc>,
) -> String {
    let at = expires.timestamp_micros();
    format!("{at}.{}", mac(secret, workspace, session, at).to_hex())
}

/// Checks `token` for an upload into `session` of `workspace` at `now`.
pub(crate) fn check(
    secret: &Secret,
    workspace: &str,
    session: Uuid,
    token: &str,
    now: DateTime<Utc>,
) -> Result<(), TokenError> {
    let (at, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let at: i64 = at.parse().map_err(|_| TokenError::Malformed)?;
    let sig = blake3::Hash::from_hex(sig).map_err(|_| TokenError::Malformed)?;
    // blake3::Hash compares in constant time.
    if sig != mac(secret, workspace, session, at) {
        return Err(TokenError::Invalid);
    }
    if now.timestamp_micros() >= at {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("instant")
    }

    #[test]
    fn a_token_is_good_for_its_session_until_its_expiry() {
        let secret = Secret([7; 32]);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let exp = t("2026-01-02T00:00:00Z");
        let tok = sign(&secret, "ws", a, exp);
        let before = t("2026-01-01T23:59:59Z");
        assert_eq!(check(&secret, "ws", a, &tok, before), Ok(()));
        assert_eq!(
            check(&secret, "ws", b, &tok, before),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            check(&secret, "other", a, &tok, before),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            check(&Secret([8; 32]), "ws", a, &tok, before),
            Err(TokenError::Invalid)
        );
        assert_eq!(check(&secret, "ws", a, &tok, exp), Err(TokenError::Expired));
        // A later expiry cannot be written into the token.
        let (_, sig) = tok.split_once('.').expect("dot");
        let forged = format!("{}.{sig}", t("2027-01-01T00:00:00Z").timestamp_micros());
        assert_eq!(
            check(&secret, "ws", a, &forged, before),
            Err(TokenError::Invalid)
        );
        for bad in ["", "x", "1.zz", "abc.def"] {
            assert_eq!(
                check(&secret, "ws", a, bad, before),
                Err(TokenError::Malformed)
            );
        }
    }
}
