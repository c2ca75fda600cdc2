//! `runner list`: the configured runners with name, URL, executor and a shortened token (never
//! the whole token).

use std::process::ExitCode;

use crate::cli::ListArgs;
use crate::settings;

pub(crate) fn run(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let (file, config) = match settings::load_config(&args.config)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let _logging = crate::logging::Logging::init(
        crate::logging::format(None, config.log_format),
        &crate::logging::level(args.log_level, config.log_level.as_deref()),
    )?;
    eprintln!("Listing configured runners from {}", file.path.display());
    for runner in &config.runners {
        let raw = &runner.raw;
        println!(
            "{}\tExecutor={}\tToken={}\tURL={}",
            runner.display_name(),
            raw.executor.as_deref().unwrap_or("(none)"),
            raw.token.as_deref().map_or_else(|| "(none)".to_owned(), settings::shorten_token),
            raw.url.as_deref().unwrap_or("(none)"),
        );
    }
    Ok(ExitCode::SUCCESS)
}
