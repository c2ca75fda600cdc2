//! The command line, declared once: help, `docs/cli.md` and completions come from these types.

use std::{path::PathBuf, sync::LazyLock};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `0.1.0 (1a2b3c4d)`: the version and the git commit it was built from.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!("{} ({})", env!("CARGO_PKG_VERSION"), podrunner_coordinator::REVISION)
});

/// A GitLab-Runner-compatible CI runner whose Kubernetes executor gives every container the
/// seccomp, AppArmor and SELinux settings you configure.
#[derive(Debug, Parser)]
#[command(name = "runner", version = VERSION.as_str(), propagate_version = true)]
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
    /// Run the daemon: ask GitLab for jobs for every [[runners]] entry and run them.
    Run(RunArgs),
    /// Check every runner's token with GitLab; exit 1 if any is invalid.
    Verify(VerifyArgs),
    /// List the configured runners (name, URL, executor, shortened token).
    List(ListArgs),
    /// Print the Pod the Kubernetes executor would submit for a job (a dry run, no cluster needed).
    RenderPod(RenderPodArgs),
}

/// Where the config file is.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// The config file. Default: ./config.toml if it exists, else /etc/gitlab-runner/config.toml
    /// as root or ~/.gitlab-runner/config.toml otherwise (gitlab-runner's locations).
    #[arg(long, short = 'c', env = "CONFIG_FILE", hide_env_values = true)]
    pub(crate) config: Option<PathBuf>,
    /// Treat every warning as an error (fail closed).
    #[arg(long, env = "RUNNER_STRICT_CONFIG", hide_env_values = true)]
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
    #[arg(long, value_enum, default_value_t = DiagnosticsFormat::Text, env = "RUNNER_DIAGNOSTICS_FORMAT", hide_env_values = true)]
    pub(crate) format: DiagnosticsFormat,
}

/// Daemon log level (`--log-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogLevelArg {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default.
    Info,
    /// Everything, including each API request.
    Debug,
    /// Even more.
    Trace,
}

impl LogLevelArg {
    /// The tracing level name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// Daemon log format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    podrunner_config::values::GoDuration::parse(text)?
        .positive()
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Log level; overrides `log_level` from the config file.
    #[arg(long, value_enum, env = "RUNNER_LOG_LEVEL", hide_env_values = true)]
    pub(crate) log_level: Option<LogLevelArg>,
    /// Log format; overrides `log_format` from the config file (`runner` there means text).
    #[arg(long, value_enum, env = "RUNNER_LOG_FORMAT", hide_env_values = true)]
    pub(crate) log_format: Option<LogFormatArg>,
    /// How often the config file is checked for changes (a Go duration such as `3s`); a
    /// changed file is reloaded, as on SIGHUP.
    #[arg(long, value_parser = parse_duration, default_value = "3s", env = "RUNNER_CONFIG_POLL_INTERVAL", hide_env_values = true)]
    pub(crate) config_poll_interval: std::time::Duration,
    /// The state directory: the files of each running job (its token, payload and newest
    /// checkpoint, 0600), so that after the runner was killed the next start resumes those jobs
    /// (or, where that cannot be, ends them in GitLab and deletes their pods). By default
    /// `.runner_jobs` beside the config file.
    #[arg(long, value_name = "DIR", env = "RUNNER_STATE_DIR", hide_env_values = true)]
    pub(crate) state_dir: Option<std::path::PathBuf>,
    /// On SIGTERM and SIGINT, hand the running jobs over to the next runner process instead of
    /// waiting for them: they go on in their pods, the runner exits at once and the next start
    /// (with the same state directory) resumes them. SIGUSR2 always does this.
    #[arg(long, env = "RUNNER_HAND_OVER_ON_STOP", hide_env_values = true)]
    pub(crate) hand_over_on_stop: bool,
    /// Where `/metrics` and `/health` are served (`host:port`), instead of the config's
    /// `listen_address`.
    #[arg(long, value_name = "ADDRESS", env = "LISTEN_ADDRESS", hide_env_values = true)]
    pub(crate) listen_address: Option<String>,
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Log level of the daemon log on stderr (`debug` shows each request); overrides
    /// `log_level` from the config file.
    #[arg(long, value_enum, env = "RUNNER_LOG_LEVEL", hide_env_values = true)]
    pub(crate) log_level: Option<LogLevelArg>,
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Log level of the daemon log on stderr (`debug` shows each request); overrides
    /// `log_level` from the config file.
    #[arg(long, value_enum, env = "RUNNER_LOG_LEVEL", hide_env_values = true)]
    pub(crate) log_level: Option<LogLevelArg>,
}

/// Output format of `render-pod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PodOutputFormat {
    /// A YAML manifest.
    Yaml,
    /// A JSON manifest.
    Json,
}

/// Arguments of `render-pod`.
#[derive(Debug, Args)]
pub(crate) struct RenderPodArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// The `[[runners]]` entry to use, by name. Default: the first kubernetes runner.
    #[arg(long, env = "RUNNER_RENDER_RUNNER", hide_env_values = true)]
    pub(crate) runner: Option<String>,
    /// A GitLab `jobs/request` response body (JSON). Default: a built-in sample job with one
    /// service.
    #[arg(long, env = "RUNNER_RENDER_JOB", hide_env_values = true)]
    pub(crate) job: Option<PathBuf>,
    /// The target cluster's Kubernetes version, `1.NN` (1.19 to 1.37). Below 1.30, AppArmor
    /// profiles become annotations. Default: the newest supported version.
    #[arg(long, value_name = "1.NN", env = "RUNNER_KUBERNETES_VERSION", hide_env_values = true)]
    pub(crate) kubernetes_version: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PodOutputFormat::Yaml, env = "RUNNER_RENDER_OUTPUT", hide_env_values = true)]
    pub(crate) output: PodOutputFormat,
    /// Also print, on stderr before the pod, the effective security of every container with
    /// where each value comes from: the table every job log shows.
    #[arg(long)]
    pub(crate) summary: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
