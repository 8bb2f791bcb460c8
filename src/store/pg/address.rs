//! A PostgreSQL workspace's address: `postgresql://USER@HOST:PORT/DB`,
//! with intake's own query parameters (`schema`, `pool_max`) taken out
//! before the rest goes to the client. The password never comes from the
//! address: only from `PGPASSWORD` or the password file (`PGPASSFILE`, or
//! `~/.pgpass`), so that it never reaches a log line, an error message or
//! the index.

use std::path::PathBuf;
use std::str::FromStr;

use tokio_postgres::config::Host;

use crate::store::StoreError;

/// Where a PostgreSQL index lives and how to reach it.
#[derive(Clone)]
pub struct PgAddress {
    pub(crate) config: tokio_postgres::Config,
    /// The schema that holds the workspace (one per workspace).
    pub(crate) schema: String,
    /// Most connections this process opens to it.
    pub(crate) pool_max: usize,
    /// How messages name it: the address without anything secret.
    pub(crate) label: String,
}

impl std::fmt::Debug for PgAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAddress")
            .field("at", &self.label)
            .finish_non_exhaustive()
    }
}

/// The schema when the address names none.
pub const DEFAULT_SCHEMA: &str = "intake";
/// Connections per process when the address does not say.
pub const DEFAULT_POOL_MAX: usize = 8;

fn bad(url: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::not_found(format!("workspace address {}: {why}", redact(url)))
}

/// `url` without a password, in its user part or its query.
pub(crate) fn redact(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let userinfo = base.split_once("://").and_then(|(scheme, rest)| {
        let (user, host) = rest.split_once('@')?;
        let (user, _) = user.split_once(':')?;
        Some(format!("{scheme}://{user}:***@{host}"))
    });
    let base = userinfo.unwrap_or_else(|| base.to_owned());
    let query: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.starts_with("password=") {
                "password=***"
            } else {
                p
            }
        })
        .collect();
    if query.is_empty() {
        base
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

impl PgAddress {
    /// Parses `postgresql://[USER@]HOST[:PORT][/DB][?schema=S&pool_max=N&…]`.
    /// A password in the address is refused.
    pub fn parse(url: &str) -> Result<PgAddress, StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut schema = DEFAULT_SCHEMA.to_owned();
        let mut pool_max = DEFAULT_POOL_MAX;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "schema" => schema = v.to_owned(),
                "pool_max" => {
                    pool_max = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(url, "pool_max must be a positive number"))?;
                }
                "password" => {
                    return Err(bad(
                        url,
                        "a password in the address is refused: give it in PGPASSWORD or ~/.pgpass",
                    ));
                }
                _ => rest.push(pair),
            }
        }
        if !valid_schema(&schema) {
            return Err(bad(
                url,
                format!(
                    "schema {schema:?} is not a plain name (lower-case letters, digits, _; 1-63 long)"
                ),
            ));
        }
        let client_url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&client_url).map_err(|e| bad(url, e))?;
        if config.get_password().is_some() {
            return Err(bad(
                url,
                "a password in the address is refused: give it in PGPASSWORD or ~/.pgpass",
            ));
        }
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .map_err(|_| bad(url, "no user in the address, PGUSER or USER"))?;
            config.user(user);
        }
        if config.get_dbname().is_none() {
            let user = config.get_user().unwrap_or_default().to_owned();
            config.dbname(user);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        config.application_name("intake");
        config.options(format!("-c search_path={schema}"));
        if let Some(pw) = password(&config) {
            config.password(pw);
        }
        Ok(PgAddress {
            config,
            label: format!("{base}?schema={schema}"),
            schema,
            pool_max,
        })
    }
}

fn valid_schema(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `PGPASSWORD`, else the first matching line of the password file.
fn password(config: &tokio_postgres::Config) -> Option<String> {
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        return Some(pw);
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(_)) | None => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let want = [
        host.as_str(),
        port.as_str(),
        config.get_dbname().unwrap_or_default(),
        config.get_user().unwrap_or_default(),
    ];
    text.lines().find_map(|line| pgpass_match(line, &want))
}

/// The password on a password-file line (`host:port:db:user:password`,
/// `*` matching anything, `\` escaping `:` and `\`) if its first four
/// fields match `want`.
fn pgpass_match(line: &str, want: &[&str; 4]) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    if fields.len() != 5 {
        return None;
    }
    let matches = fields[..4]
        .iter()
        .zip(want)
        .all(|(f, w)| f == "*" || f == w);
    matches.then(|| fields.pop()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_and_pool_are_ours_and_the_rest_is_the_clients() {
        let a = PgAddress::parse(
            "postgresql://bob@db.example:6543/files?schema=team_a&pool_max=3&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(a.schema, "team_a");
        assert_eq!(a.pool_max, 3);
        assert_eq!(a.config.get_user(), Some("bob"));
        assert_eq!(a.config.get_dbname(), Some("files"));
        assert_eq!(a.config.get_ports(), &[6543]);
        assert_eq!(
            a.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(5))
        );
        assert_eq!(
            a.label,
            "postgresql://bob@db.example:6543/files?schema=team_a"
        );

        let d = PgAddress::parse("postgres://bob@localhost").unwrap();
        assert_eq!(d.schema, DEFAULT_SCHEMA);
        assert_eq!(d.pool_max, DEFAULT_POOL_MAX);
        assert_eq!(d.config.get_dbname(), Some("bob"));
    }

    #[test]
    fn a_password_or_a_strange_schema_is_refused_without_echoing_it() {
        for url in [
            "postgresql://bob:hunter2@localhost/db",
            "postgresql://bob@localhost/db?password=hunter2",
        ] {
            let e = PgAddress::parse(url).unwrap_err().to_string();
            assert!(e.contains("PGPASSWORD"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = PgAddress::parse("postgresql://bob@localhost/db?schema=a;drop")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a plain name"), "{e}");
        assert!(PgAddress::parse("postgresql://bob@localhost/db?pool_max=0").is_err());
    }

    #[test]
    fn password_file_lines() {
        let want = ["h", "5432", "db", "bob"];
        assert_eq!(
            pgpass_match("h:5432:db:bob:pw", &want).as_deref(),
            Some("pw")
        );
        assert_eq!(
            pgpass_match("*:*:*:bob:p\\:w", &want).as_deref(),
            Some("p:w")
        );
        assert_eq!(pgpass_match("h:5432:db:eve:pw", &want), None);
        assert_eq!(pgpass_match("#h:5432:db:bob:pw", &want), None);
        assert_eq!(pgpass_match("h:5432:db", &want), None);
        assert_eq!(pgpass_match("*:*:*:*:a:b", &want).as_deref(), Some("a:b"));
    }
}
