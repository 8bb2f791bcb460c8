//! What the criterion benches share: where cargo and criterion keep their
//! output, and reading back the median criterion measured.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Criterion's directory for its results.
pub fn criterion_dir() -> PathBuf {
    std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("criterion"))
}

/// Criterion's median (ns per iteration) of the benchmark `id` (group,
/// function and, if any, parameter), if this process ran it (its estimate
/// is no older than `since`).
pub fn median_ns(id: &[&str], since: SystemTime) -> Option<f64> {
    let safe = |s: &str| s.replace(['?', '"', '/', '\\', '*', '<', '>', ':', '|', '^'], "_");
    let mut path = criterion_dir();
    for part in id.iter().filter(|p| !p.is_empty()) {
        path.push(safe(part));
    }
    path.push("new/estimates.json");
    let fresh = fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= since);
    if !fresh {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}
