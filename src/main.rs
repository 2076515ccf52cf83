//! The `strata` command line: argument parsing, progress and output. Every decision lives in
//! the library crates.

mod cli;
mod commands;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    end_quietly_on_a_closed_pipe();
    let args = cli::Cli::parse();
    init_logging(args.verbose);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            output::print_error(&failure);
            ExitCode::from(failure.exit_code)
        }
    }
}

/// Status of a process a closed pipe's SIGPIPE ended: 128 + 13, what a shell reports for
/// `yes | head -1` under `pipefail`.
const EXIT_CLOSED_PIPE: i32 = 141;

/// `strata verify ... | head -4`: the reader is gone, and Rust (which ignores SIGPIPE, for the
/// servers and child pipes of this process) panics in the next `println!`. End as a Unix tool
/// killed by SIGPIPE does instead: no message, status 141, never a success that did not happen.
/// (`man` and `completions`, whose output is all they do, handle the closed pipe themselves
/// and succeed, as filters do.)
fn end_quietly_on_a_closed_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        // std's words for a failed print (library/std/src/io/stdio.rs), and EPIPE's number,
        // which no locale translates.
        let printing = message.starts_with("failed printing to std");
        if printing && message.ends_with("(os error 32)") {
            std::process::exit(EXIT_CLOSED_PIPE);
        }
        report(info);
    }));
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(output::colour())
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}
