//! The session model (SPEC §1), field for field, and its serde form.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Default lifetime of a session.
pub const DEFAULT_TTL: Duration = Duration::hours(24);

/// What to do with a name that is already in the workspace (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WriteMode {
    /// Keep the existing file; the new one comes out `kept`.
    #[default]
    Keep,
    /// Replace the existing file; the old version stays recoverable until gc.
    Overwrite,
    /// Fail the new file with reason `conflict`.
    Fail,
}

impl WriteMode {
    /// The wire form: `KEEP`, `OVERWRITE` or `FAIL`.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Keep => "KEEP",
            WriteMode::Overwrite => "OVERWRITE",
            WriteMode::Fail => "FAIL",
        }
    }
}

/// An unknown write-mode string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown write mode {0:?}: expected one of KEEP, OVERWRITE, FAIL (any case)")]
pub struct UnknownWriteMode(pub String);

impl FromStr for WriteMode {
    type Err = UnknownWriteMode;
    /// Parses a write mode in any case; anything else is an error, never a default.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "KEEP" => Ok(WriteMode::Keep),
            "OVERWRITE" => Ok(WriteMode::Overwrite),
            "FAIL" => Ok(WriteMode::Fail),
            _ => Err(UnknownWriteMode(s.to_owned())),
        }
    }
}

impl fmt::Display for WriteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WriteMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WriteMode {
    /// Exactly `KEEP`, `OVERWRITE` or `FAIL` on the wire.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "KEEP" => Ok(WriteMode::Keep),
            "OVERWRITE" => Ok(WriteMode::Overwrite),
            "FAIL" => Ok(WriteMode::Fail),
            _ => Err(serde::de::Error::custom(UnknownWriteMode(s))),
        }
    }
}

/// Who created a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionOauthUser {
    /// Stable id of the user.
    pub user_id: Uuid,
    /// Given name.
    pub given_name: String,
    /// Family name.
    pub family_name: String,
}

/// The namespace of the user ids [`SessionOauthUser::from_name`] derives,
/// so that one name always gets the same id, on every machine.
const USER_NAMESPACE: Uuid = Uuid::from_u128(0x6f2b_2a0e_4c1d_4b7e_9a51_3d1e_8c44_a7f2);

impl SessionOauthUser {
    /// The user called `name` ("Given Family"; a name of one word has an
    /// empty family name), with the stable id derived from the name: the
    /// same one the `intake` command line gives `--user NAME`.
    ///
    /// ```
    /// let ada = intake::SessionOauthUser::from_name("Ada Lovelace");
    /// assert_eq!((ada.given_name.as_str(), ada.family_name.as_str()), ("Ada", "Lovelace"));
    /// assert_eq!(ada.user_id, intake::SessionOauthUser::from_name(" Ada Lovelace ").user_id);
    /// assert_ne!(ada.user_id, intake::SessionOauthUser::from_name("Ada").user_id);
    /// ```
    pub fn from_name(name: &str) -> SessionOauthUser {
        let name = name.trim();
        let (given, family) = name.split_once(' ').unwrap_or((name, ""));
        SessionOauthUser {
            user_id: Uuid::new_v5(&USER_NAMESPACE, name.as_bytes()),
            given_name: given.to_owned(),
            family_name: family.trim().to_owned(),
        }
    }
}

/// A session: the frame every ingested file belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// When the session was created.
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: SessionOauthUser,
    /// After this instant the session refuses new work; `None` never expires.
    #[serde(with = "rfc3339_opt", default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Unique id (optional on input, always set on output).
    #[serde(default = "Uuid::new_v4")]
    pub session_id: Uuid,
    /// What to do with names that already exist.
    #[serde(default)]
    pub write_mode: WriteMode,
}

/// The request to create a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CreateSession {
    /// Write mode (default `KEEP`).
    #[serde(default)]
    pub write_mode: WriteMode,
    /// Lifetime from creation; ignored when `expires_at` is set.
    #[serde(skip)]
    pub ttl: Lifetime,
    /// An explicit expiry instant.
    #[serde(skip)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// How long a new session lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// The default, 24 hours.
    #[default]
    Default,
    /// A given duration.
    Ttl(Duration),
    /// Never expires.
    Forever,
}

impl CreateSession {
    /// A request with the given write mode and the default lifetime.
    pub fn new(write_mode: WriteMode) -> CreateSession {
        CreateSession {
            write_mode,
            ..CreateSession::default()
        }
    }

    /// Sets the lifetime.
    pub fn lifetime(mut self, ttl: Lifetime) -> CreateSession {
        self.ttl = ttl;
        self
    }

    /// The expiry for a session created at `now`. A lifetime that reaches
    /// past the last instant RFC 3339 can write (9999-12-31T23:59:59.999999Z)
    /// ends there: the session must be writable as the data model says.
    pub fn expiry(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.expires_at.is_some() {
            return self.expires_at;
        }
        let (first, last) = rfc3339_range();
        let after = |d: Duration| match now.checked_add_signed(d) {
            Some(t) => t.clamp(first, last),
            None if d < Duration::zero() => first,
            None => last,
        };
        match self.ttl {
            Lifetime::Default => Some(after(DEFAULT_TTL)),
            Lifetime::Ttl(d) => Some(after(d)),
            Lifetime::Forever => None,
        }
    }
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SessionStatus {
    /// Accepting files.
    Open,
    /// Closed explicitly.
    Closed,
    /// Past its expiry and not closed.
    Expired,
}

impl SessionStatus {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Open => "OPEN",
            SessionStatus::Closed => "CLOSED",
            SessionStatus::Expired => "EXPIRED",
        }
    }
}

/// Per-outcome counts of a session's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IngestionStatus {
    /// Files not failed: ingested + overwritten + unchanged + kept + deleted.
    pub finished_files: u64,
    /// Failed files.
    pub failed_files: u64,
    /// New names.
    pub ingested: u64,
    /// Replaced names.
    pub overwritten: u64,
    /// Names whose content and metadata were already there.
    pub unchanged: u64,
    /// Names kept as they were (KEEP mode).
    pub kept: u64,
    /// Names deleted.
    pub deleted: u64,
    /// Bytes of content read for the session's files that were stored.
    pub bytes: u64,
}

impl IngestionStatus {
    /// The status of a session whose files came out as `c` says (an index
    /// stores the counters; the totals follow from them).
    pub fn from_counts(c: &crate::outcome::Counts) -> IngestionStatus {
        IngestionStatus {
            finished_files: c.ingested + c.overwritten + c.unchanged + c.kept + c.deleted,
            failed_files: c.failed,
            ingested: c.ingested,
            overwritten: c.overwritten,
            unchanged: c.unchanged,
            kept: c.kept,
            deleted: c.deleted,
            bytes: c.bytes,
        }
    }
}

/// A session as stored: the model plus its closing time and counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session.
    pub session: Session,
    /// When it was closed, if it was.
    pub closed_at: Option<DateTime<Utc>>,
    /// Counts of its files so far.
    pub ingestion: IngestionStatus,
    /// The session this one reverts, for a session made by
    /// [`crate::Workspace::revert_session`].
    pub reverts: Option<Uuid>,
}

impl SessionRecord {
    /// The status at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> SessionStatus {
        if self.closed_at.is_some() {
            SessionStatus::Closed
        } else if self.session.expires_at.is_some_and(|e| now >= e) {
            SessionStatus::Expired
        } else {
            SessionStatus::Open
        }
    }

    /// The JSON form of `session show`: the [`Session`] plus `status` and
    /// `ingestion_status`.
    pub fn to_json(&self, now: DateTime<Utc>) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.session).unwrap_or(serde_json::Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("status".into(), self.status(now).as_str().into());
            obj.insert(
                "closed_at".into(),
                self.closed_at
                    .map(format_ts)
                    .map_or(serde_json::Value::Null, Into::into),
            );
            obj.insert(
                "reverts".into(),
                self.reverts
                    .map(|id| id.to_string())
                    .map_or(serde_json::Value::Null, Into::into),
            );
            obj.insert(
                "ingestion_status".into(),
                serde_json::to_value(self.ingestion).unwrap_or(serde_json::Value::Null),
            );
        }
        v
    }
}

/// RFC 3339 in UTC with a `Z` and no more precision than needed.
pub fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The first and last instants RFC 3339 can write in UTC: its years have
/// four digits, 0000 to 9999.
fn rfc3339_range() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        DateTime::from_timestamp(-62_167_219_200, 0).unwrap_or(DateTime::<Utc>::MIN_UTC),
        DateTime::from_timestamp_micros(253_402_300_799_999_999)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

/// Parses an RFC 3339 timestamp into UTC. One whose UTC year falls outside
/// 0000 to 9999 (`0000-01-01T00:00:00+01:00`) is refused: written in UTC it
/// would not be RFC 3339, and intake could not read its own output back.
fn parse_ts(s: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("invalid RFC 3339 timestamp {s:?}: {e}"))?;
    if !(0..=9999).contains(&t.year()) {
        return Err(format!(
            "invalid RFC 3339 timestamp {s:?}: in UTC it falls outside the years 0000 to 9999"
        ));
    }
    Ok(t)
}

mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ts(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_ts(&s).map_err(serde::de::Error::custom)
    }
}

mod rfc3339_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_ts(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| super::parse_ts(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> SessionOauthUser {
        SessionOauthUser {
            user_id: Uuid::nil(),
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
        }
    }

    #[test]
    fn serializes_exactly_as_the_spec() {
        let s = Session {
            created_at: "2026-11-22T10:00:00Z".parse().unwrap(),
            created_by: user(),
            expires_at: None,
            session_id: Uuid::nil(),
            write_mode: WriteMode::Overwrite,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"created_at":"2026-11-22T10:00:00Z","created_by":{"user_id":"00000000-0000-0000-0000-000000000000","given_name":"Ada","family_name":"Lovelace"},"expires_at":null,"session_id":"00000000-0000-0000-0000-000000000000","write_mode":"OVERWRITE"}"#
        );
    }

    #[test]
    fn defaults_on_input() {
        let s: Session = serde_json::from_str(
            r#"{"created_at":"2026-11-22T10:00:00+01:00","created_by":{"user_id":"00000000-0000-0000-0000-000000000000","given_name":"A","family_name":"B"}}"#,
        )
        .unwrap();
        assert_eq!(s.write_mode, WriteMode::Keep);
        assert_eq!(s.expires_at, None);
        assert_eq!(format_ts(s.created_at), "2026-11-22T09:00:00Z");
        assert_ne!(s.session_id, Uuid::nil());
    }

    #[test]
    fn unknown_write_mode_is_an_error() {
        let e = serde_json::from_str::<CreateSession>(r#"{"write_mode":"MERGE"}"#).unwrap_err();
        assert!(
            e.to_string().contains("unknown write mode \"MERGE\""),
            "{e}"
        );
        assert!(serde_json::from_str::<CreateSession>(r#"{"write_mode":"keep"}"#).is_err());
        assert_eq!("keep".parse::<WriteMode>(), Ok(WriteMode::Keep));
        assert_eq!("OverWrite".parse::<WriteMode>(), Ok(WriteMode::Overwrite));
        assert_eq!(
            "merge".parse::<WriteMode>(),
            Err(UnknownWriteMode("merge".into()))
        );
    }

    /// Regression (found probing the `session_json` fuzz target's property):
    /// `0000-01-01T00:00:00+01:00` parsed, and was written back as
    /// `-0001-12-31T23:00:00Z`, which intake then refused to read.
    #[test]
    fn timestamp_outside_years_0000_to_9999_in_utc_is_refused() {
        let json = |ts: &str| {
            format!(
                r#"{{"created_at":"{ts}","created_by":{{"user_id":"00000000-0000-0000-0000-000000000000","given_name":"A","family_name":"B"}},"expires_at":"{ts}"}}"#
            )
        };
        for ts in ["0000-01-01T00:00:00+01:00", "9999-12-31T23:59:59-00:01"] {
            let e = serde_json::from_str::<Session>(&json(ts)).unwrap_err();
            assert!(
                e.to_string().contains("outside the years 0000 to 9999"),
                "{e}"
            );
        }
        // The edges themselves are fine, and read back as they were.
        for ts in [
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:59:00-00:59",
            "9999-12-31T23:59:59.999999Z",
            "9999-12-31T23:59:59+00:01",
        ] {
            let s: Session = serde_json::from_str(&json(ts)).unwrap();
            let back: Session = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            assert_eq!(back, s, "{ts}");
        }
    }

    /// Regression: `intake session create --ttl 100000000d` panicked with
    /// "`DateTime + TimeDelta` overflowed"; a smaller ttl past the year 9999
    /// gave an `expires_at` intake could not read back.
    #[test]
    fn ttl_past_the_year_9999_ends_there_instead_of_overflowing() {
        let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let expiry = |d| {
            CreateSession::new(WriteMode::Keep)
                .lifetime(Lifetime::Ttl(d))
                .expiry(now)
        };
        let last: DateTime<Utc> = "9999-12-31T23:59:59.999999Z".parse().unwrap();
        let first: DateTime<Utc> = "0000-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(expiry(Duration::days(100_000_000)), Some(last));
        assert_eq!(expiry(Duration::days(3_650_000)), Some(last));
        assert_eq!(expiry(Duration::MAX), Some(last));
        assert_eq!(expiry(Duration::MIN), Some(first));
        assert_eq!(expiry(Duration::hours(2)), Some(now + Duration::hours(2)));
    }

    #[test]
    fn status_follows_expiry_and_close() {
        let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let mut r = SessionRecord {
            session: Session {
                created_at: now,
                created_by: user(),
                expires_at: CreateSession::new(WriteMode::Keep).expiry(now),
                session_id: Uuid::nil(),
                write_mode: WriteMode::Keep,
            },
            closed_at: None,
            ingestion: IngestionStatus::default(),
            reverts: None,
        };
        assert_eq!(r.session.expires_at, Some(now + Duration::hours(24)));
        assert_eq!(r.status(now), SessionStatus::Open);
        assert_eq!(r.status(now + Duration::hours(24)), SessionStatus::Expired);
        r.closed_at = Some(now);
        assert_eq!(r.status(now + Duration::hours(24)), SessionStatus::Closed);
    }
}
