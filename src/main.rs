//! The `intake` binary: parses the command line and hands it to the library.

#![deny(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// The pipeline allocates a file's name and path on one thread and frees
/// them on another; mimalloc's per-thread free lists take that in stride
/// where the system allocator's arenas contend.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
