//! The `intake` command line: parse, call the library, print, pick an exit
//! code. Nothing here decides anything about files.

pub mod args;
mod commands;
mod output;
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
            eprintln!("intake: error: {e:#}");
            code.into()
        }
    }
}

fn exit_for(e: &anyhow::Error) -> Exit {
    match e.downcast_ref::<intake::Error>() {
        Some(intake::Error::SessionExpired { .. } | intake::Error::SessionClosed { .. }) => {
            Exit::Session
        }
        _ => Exit::Usage,
    }
}
