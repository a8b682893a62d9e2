#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a CLI prints its results")]

//! `kickoff-sender`: the command-line face of the sender library. It parses
//! the command line and hands it to [`cli::run`]; every command lives in
//! `cli/`, one module per command group.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    cli::init_logging();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = cli::hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
