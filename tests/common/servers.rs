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

/// A PostgreSQL cluster of one test's own (a test that stops and starts
/// its server must not take the shared one from the others), made with
/// the machine's `initdb` in a temporary folder, on a free port. Stopped
/// and removed when dropped.
pub struct PrivatePg {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePg {
    /// A running cluster, or `None` (with the reason printed) when the
    /// machine has no PostgreSQL server binaries.
    pub fn start() -> Option<PrivatePg> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max();
        let Some(bin) = bin else {
            eprintln!("skipped: no PostgreSQL server binaries under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::tempdir().expect("a folder");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = PrivatePg { bin, dir, port };
        // initdb refuses to run as root: the cluster belongs to postgres.
        if pg.as_root() {
            let ok = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(pg.dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown postgres");
        }
        let data = pg.dir.path().join("data");
        pg.run(&format!(
            "{} -D {} -A trust -U postgres --no-sync >/dev/null",
            pg.bin.join("initdb").display(),
            data.display()
        ));
        pg.start_again();
        Some(pg)
    }

    fn as_root(&self) -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn run(&self, cmd: &str) {
        assert!(self.try_run(cmd), "{cmd}");
    }

    fn try_run(&self, cmd: &str) -> bool {
        let status = if self.as_root() {
            std::process::Command::new("su")
                .args(["postgres", "-s", "/bin/sh", "-c", cmd])
                .status()
        } else {
            std::process::Command::new("sh").args(["-c", cmd]).status()
        };
        status.is_ok_and(|s| s.success())
    }

    fn pg_ctl(&self, args: &str) -> String {
        format!(
            "{} -D {} -l {} -w {args} >/dev/null",
            self.bin.join("pg_ctl").display(),
            self.dir.path().join("data").display(),
            self.dir.path().join("log").display()
        )
    }

    /// Its address.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server, terminating its sessions.
    pub fn stop(&self) {
        self.run(&self.pg_ctl("-m fast stop"));
    }

    /// Starts the server (again).
    pub fn start_again(&self) {
        self.run(&self.pg_ctl(&format!(
            "-o '-c listen_addresses=127.0.0.1 -p {} -k {}' start",
            self.port,
            self.dir.path().display()
        )));
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        // Best effort: it may be stopped already.
        self.try_run(&self.pg_ctl("-m immediate stop"));
    }
}
