//! The `intake` binary: parses the command line and hands it to the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                cli::Exit::Usage.into()
            } else {
                cli::Exit::Ok.into()
            };
        }
    };
    cli::run(args)
}
