//! The `intake` command line: parse, call the library, print, pick an exit
//! code. Nothing here decides anything about files.

pub mod args;
mod commands;
mod config;
mod output;
mod serve_cmd;
mod signals;
mod slots;
mod user;
mod watch_cmd;

use std::process::ExitCode;

pub use args::Cli;

/// Exit codes (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every file finished.
    Ok = 0,
    /// Some files failed.
    Failed = 1,
    /// A usage or set-up error.
    Usage = 2,
    /// The session is expired or closed.
    Session = 3,
    /// Stopped by SIGINT/SIGTERM before every file was attempted.
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    output::init_logging(&cli);
    match commands::dispatch(&cli) {
        Ok(code) => code.into(),
        Err(e) => {
            let code = exit_for(&e);
            eprintln!("intake: error: {}", output::printable(&error_text(&e)));
            code.into()
        }
    }
}

/// The error and its causes on one line, like `{:#}`, but without a cause
/// that the message before it already ends with: the library's errors show
/// their source in their own message (for callers that print only that), so
/// the full chain would say everything twice.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !text.ends_with(&s) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&s);
        }
        // The library's errors say all of their causes themselves.
        if cause.downcast_ref::<intake::Error>().is_some() {
            break;
        }
    }
    text
}

fn exit_for(e: &anyhow::Error) -> Exit {
    match e.downcast_ref::<intake::Error>() {
        Some(intake::Error::SessionExpired { .. } | intake::Error::SessionClosed { .. }) => {
            Exit::Session
        }
        _ => Exit::Usage,
    }
}
