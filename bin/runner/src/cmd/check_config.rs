//! `runner check-config`: every diagnostic of a config file, exit 1 on any error.

use std::process::ExitCode;

use crate::{cli::CheckConfigArgs, config_file};

pub(crate) fn run(args: &CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let file = config_file::load(&args.config)?;
    print!("{}", file.render(args.format)?);
    Ok(if file.loaded.has_errors() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
