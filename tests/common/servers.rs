//! The PostgreSQL and S3 servers the scale-out tests run against: their
//! addresses come from the environment (`.ci/servers.sh` starts both and
//! sets them). When one is not there, the test says so and skips.

use std::sync::atomic::{AtomicU32, Ordering};

/// `INTAKE_TEST_PG` and, if `s3`, `INTAKE_TEST_S3` (`Some(bucket)`); `None`
/// with the reason printed when one is missing.
pub fn addresses(s3: bool) -> Option<(String, Option<String>)> {
    let Ok(pg) = std::env::var("INTAKE_TEST_PG") else {
        eprintln!("skipped: INTAKE_TEST_PG is not set (source .ci/servers.sh; start_servers)");
        return None;
    };
    if !s3 {
        return Some((pg, None));
    }
    let Ok(bucket) = std::env::var("INTAKE_TEST_S3") else {
        eprintln!("skipped: INTAKE_TEST_S3 is not set (source .ci/servers.sh; start_servers)");
        return None;
    };
    Some((pg, Some(bucket)))
}

/// A schema name no other test (of any process) uses.
pub fn fresh_schema() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}
