//! `runner`: a GitLab-Runner-compatible CI runner with a security-first Kubernetes executor.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (config errors, an invalid token,
//! a failed job); 2 the command could not run (unreadable file, bad arguments).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program prints its results"
)]

mod cli;
#[cfg(test)]
mod cli_docs;
mod cmd;
mod config_file;
mod logging;
mod settings;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the daemon and `render-pod` make many small, short-lived allocations (pods, JSON,
/// YAML), where glibc malloc's fastbin consolidation doubled the measured render time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
