//! Printing: text for people, one JSON object per line for programs, a
//! progress bar only on a terminal.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use intake::{FileReport, Outcome, Summary};
use serde_json::json;

use super::Cli;

/// Sets up logging on stderr: warnings by default, `-v` info, `-vv` debug;
/// `RUST_LOG` overrides.
pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let serving = matches!(&cli.command, super::args::Command::Serve(_));
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        // A server logs one line per request.
        (_, 0) if serving => "info",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json_logs = match &cli.command {
        super::args::Command::Watch(w) => w.log_format == super::args::LogFormat::Json,
        super::args::Command::Serve(s) => s.log_format == super::args::LogFormat::Json,
        _ => false,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .with_target(false);
    let _ = if json_logs {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Whether log lines on stderr may be coloured: only on a terminal, and
/// not when `NO_COLOR` is set to anything but the empty string
/// (no-color.org).
pub fn colour(on_terminal: bool) -> bool {
    on_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints each file's report as it comes.
pub struct Printer {
    json: bool,
    quiet: bool,
    verbose: bool,
    dry_run: bool,
    bar: Option<ProgressBar>,
    refused_noted: bool,
}

impl Printer {
    /// A printer for the given flags.
    pub fn new(cli: &Cli, dry_run: bool) -> Printer {
        let bar = (!cli.quiet && !cli.json && std::io::stderr().is_terminal()).then(|| {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{spinner} {pos} files, {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        Printer {
            json: cli.json,
            quiet: cli.quiet,
            verbose: cli.verbose > 0,
            dry_run,
            bar,
            refused_noted: false,
        }
    }

    /// Prints every file's line, not only failures (for commands that
    /// change a few names on purpose).
    pub fn every_file(mut self) -> Printer {
        self.verbose = !self.quiet;
        self
    }

    /// One file.
    pub fn file(&mut self, r: &FileReport, bytes_so_far: u64) {
        if let Some(pb) = &self.bar {
            pb.inc(1);
            pb.set_message(human_bytes(bytes_so_far));
        }
        if self.json {
            let mut v = r.to_json();
            if self.dry_run {
                v["dry_run"] = true.into();
            }
            println_locked(&v.to_string());
            return;
        }
        let line = || {
            let mut s = format!("{:<11} {}", r.outcome.as_str(), r.name);
            if let Some(reason) = r.reason {
                s.push_str(&format!(" ({reason})"));
            }
            if let Some(m) = &r.message {
                s.push_str(&format!(": {m}"));
            }
            printable(&s).into_owned()
        };
        match r.outcome {
            Outcome::Failed => self.above_bar(|| eprintln!("{}", line())),
            Outcome::Refused if !self.refused_noted => {
                self.refused_noted = true;
                let msg = printable(r.message.as_deref().unwrap_or_default()).into_owned();
                self.above_bar(|| eprintln!("intake: {msg}; every further file is refused"));
            }
            _ if self.verbose || (self.dry_run && !self.quiet) => {
                self.above_bar(|| println_locked(&line()));
            }
            _ => {}
        }
    }

    fn above_bar(&self, f: impl FnOnce()) {
        match &self.bar {
            Some(pb) => pb.suspend(f),
            None => f(),
        }
    }

    /// The end of a run.
    pub fn summary(&self, s: &Summary, dry_run: bool) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
        let c = &s.counts;
        if self.json {
            let v = json!({
                "type": "summary",
                "session_id": s.session_id.to_string(),
                "counts": {
                    "ingested": c.ingested,
                    "overwritten": c.overwritten,
                    "unchanged": c.unchanged,
                    "kept": c.kept,
                    "deleted": c.deleted,
                    "failed": c.failed,
                    "refused": c.refused,
                },
                "finished_files": c.finished(),
                "failed_files": c.failed,
                "bytes": c.bytes,
                "elapsed_ms": s.elapsed.as_millis() as u64,
                "dry_run": dry_run,
            });
            println_locked(&v.to_string());
            return;
        }
        if self.quiet {
            return;
        }
        let counts: Vec<String> = Outcome::ALL
            .iter()
            .filter(|o| c.get(**o) > 0 || matches!(o, Outcome::Ingested | Outcome::Failed))
            .map(|o| format!("{} {}", c.get(*o), o.as_str()))
            .collect();
        let secs = s.elapsed.as_secs_f64();
        println_locked(&format!(
            "{}{} files: {}; {} in {:.2}s (session {})",
            if dry_run {
                "dry run, nothing changed: "
            } else {
                ""
            },
            c.total(),
            counts.join(", "),
            human_bytes(c.bytes),
            secs,
            s.session_id
        ));
    }
}

/// `s` with its control characters escaped (`\u{1b}`), for a terminal: a
/// file name may hold any byte but `/` and NUL, and one that reached the
/// terminal raw could move the cursor, retitle the window or clear it.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Prints a line to stdout; a closed pipe (`| head`) ends quietly.
pub fn println_locked(s: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{s}").is_err() {
        std::process::exit(0);
    }
}

/// `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
