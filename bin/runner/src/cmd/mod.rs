//! One module per subcommand, each exposing `run(args) -> anyhow::Result<ExitCode>`.

mod check_config;
mod list;
mod render_pod;
pub(crate) mod run;
mod verify;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the chosen subcommand.
pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig(args) => check_config::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::List(args) => list::run(&args),
        Command::RenderPod(args) => render_pod::run(&args),
    }
}
