//! The command line, declared once: help, `docs/cli.md` and completions come from these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A GitLab-Runner-compatible CI runner whose Kubernetes executor gives every container the
/// seccomp, AppArmor and SELinux settings you configure.
#[derive(Debug, Parser)]
#[command(name = "runner", version, propagate_version = true)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check a config.toml and print every problem with its file, line and column.
    CheckConfig(CheckConfigArgs),
}

/// Where the config file is.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// The config file. Default: ./config.toml if it exists, else /etc/gitlab-runner/config.toml
    /// as root or ~/.gitlab-runner/config.toml otherwise (gitlab-runner's locations).
    #[arg(long, short = 'c', env = "CONFIG_FILE", hide_env_values = true)]
    pub(crate) config: Option<PathBuf>,
    /// Treat every warning as an error (fail closed).
    #[arg(long, env = "RUNNER_STRICT_CONFIG")]
    pub(crate) strict: bool,
}

/// Output format of diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DiagnosticsFormat {
    /// `FILE:LINE:COL: severity: message` lines with the source line, then a summary.
    Text,
    /// A JSON array of `{severity, message, file, line, column, key_path}`.
    Json,
}

/// Arguments of `check-config`.
#[derive(Debug, Args)]
pub(crate) struct CheckConfigArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiagnosticsFormat::Text, env = "RUNNER_DIAGNOSTICS_FORMAT")]
    pub(crate) format: DiagnosticsFormat,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
