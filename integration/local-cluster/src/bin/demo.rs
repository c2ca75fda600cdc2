//! `demo --runner <runner binary> --config <config>`: runs the feature request's cases through
//! the real runner on a local cluster and prints each job log and a summary (see
//! `podrunner_local_cluster::demo`). `cargo xtask demo` builds the runner and calls it.

#![allow(clippy::print_stdout, clippy::print_stderr)] // reason: a CLI prints its results

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use podrunner_local_cluster::{cluster, demo};

/// Run the demo jobs on a local cluster.
#[derive(Debug, Parser)]
#[command(name = "demo")]
struct Cli {
    /// The `runner` binary.
    #[arg(long)]
    runner: PathBuf,
    /// The config with the demo's runners.
    #[arg(long, default_value = "examples/demo.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(reason) = cluster::missing_prerequisites() {
        eprintln!(
            "demo: the local cluster {reason}. Run it as root after `bash scripts/install-prereqs.sh` \
             (`sudo cargo xtask demo`), or see the pod without a cluster: \
             `cargo run -q -p podrunner -- render-pod --config examples/config.toml`"
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo: failed to start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout();
    match runtime.block_on(demo::run(&cli.runner, &cli.config, &mut out)) {
        Ok(results) => {
            let problems = demo::problems(&results);
            for p in &problems {
                eprintln!("demo: {p}");
            }
            if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::from(1)
        }
    }
}
