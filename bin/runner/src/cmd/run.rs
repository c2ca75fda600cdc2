//! `runner run`: the daemon. Loads and checks the config (same rules and diagnostics as
//! `check-config`), refuses runners it cannot serve, then requests and runs jobs until SIGTERM or
//! SIGINT; reloads on SIGHUP or when the file changes.
//!
//! The file is watched by polling its content every `--config-poll-interval` (3 s): no
//! file-watching crate is in the workspace, a poll of one small file costs nothing, and it also
//! sees edits through symlink swaps (ConfigMap mounts) that inotify watches miss.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use podrunner_config::{LoadOptions, Report, load_str};
use podrunner_daemon::{Daemon, DaemonSettings, ExecutorRegistry, RunningDaemon, ShutdownReport};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::RunArgs;
use crate::logging::{self, Logging};
use crate::settings::{self, Refusal};

/// The executors this build implements.
pub(crate) fn executors() -> ExecutorRegistry {
    ExecutorRegistry::new().with(
        "kubernetes",
        std::sync::Arc::new(podrunner_executor_k8s::KubernetesExecutor::new())
            as std::sync::Arc<dyn podrunner_daemon::Executor>,
    )
}

fn print_refusals(refusals: &[Refusal]) {
    for r in refusals {
        eprintln!("error: {r}");
    }
}

pub(crate) fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let (file, config) = match settings::load_config(&args.config)? {
        Ok(loaded) => loaded,
        Err(code) => {
            eprintln!("error: refusing to start: the config file has errors");
            return Ok(code);
        }
    };
    let logging = Logging::init(
        logging::format(args.log_format, config.log_format),
        &logging::level(args.log_level, config.log_level.as_deref()),
    )?;
    let registry = executors();
    let state_dir = settings::state_dir(&file.path, args.state_dir.as_deref());
    let mut system_id = settings::SystemId::load(&file.path, Some(&state_dir));
    let warnings = settings::runner_warnings(
        &file.path.display().to_string(),
        &file.text,
        &file.loaded.diagnostics,
    );
    let mut daemon_settings =
        match settings::daemon_settings(&config, &file.path, &warnings, &registry, &system_id.id) {
            Ok(s) => s,
            Err(refusals) => {
                print_refusals(&refusals);
                eprintln!(
                    "error: refusing to start: {} in {}",
                    podrunner_config::diagnostics::plural(refusals.len(), "problem"),
                    file.path.display()
                );
                return Ok(ExitCode::from(1));
            }
        };
    system_id.save();
    daemon_settings.state_dir = Some(state_dir);
    if let Some(address) = &args.listen_address {
        daemon_settings.listen_address = Some(address.clone());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let state = State {
        path: file.path.clone(),
        text: file.text.clone(),
        listen_address: daemon_settings.listen_address.clone(),
        listen_flag: args.listen_address.clone(),
        strict: args.config.strict,
        log_flag: args.log_level,
        logging,
        registry,
        system_id: system_id.id,
    };
    runtime.block_on(serve(
        state,
        daemon_settings,
        args.config_poll_interval,
        args.hand_over_on_stop,
    ))
}

/// What a reload needs to know.
struct State {
    path: PathBuf,
    /// The file's content last seen (loaded or refused), to notice changes.
    text: String,
    listen_address: Option<String>,
    /// `--listen-address`, which wins over the config's on every reload.
    listen_flag: Option<String>,
    strict: bool,
    log_flag: Option<crate::cli::LogLevelArg>,
    logging: Logging,
    registry: ExecutorRegistry,
    system_id: String,
}

async fn serve(
    mut state: State,
    settings: DaemonSettings,
    poll_interval: Duration,
    hand_over_on_stop: bool,
) -> anyhow::Result<ExitCode> {
    let mut sigterm = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;
    let mut sigusr2 = signal(SignalKind::user_defined2()).context("failed to handle SIGUSR2")?;
    let mut sigint = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("failed to handle SIGHUP")?;
    let shutdown = CancellationToken::new();
    let daemon = Daemon::new(settings, &state.registry)
        .context("failed to set up the daemon")?
        .start(shutdown.clone())
        .await
        .context("failed to start the daemon")?;
    info!(config.file = %state.path.display(), "runner started");
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    let (signal_name, hand_over) = loop {
        tokio::select! {
            _ = sigterm.recv() => break ("SIGTERM", hand_over_on_stop),
            _ = sigint.recv() => break ("SIGINT", hand_over_on_stop),
            _ = sigusr2.recv() => break ("SIGUSR2", true),
            _ = sighup.recv() => {
                info!("SIGHUP received, reloading the config");
                reload(&mut state, &daemon, true).await;
            }
            _ = poll.tick() => reload(&mut state, &daemon, false).await,
        }
    };
    if hand_over {
        info!(
            signal = signal_name,
            "handing the running jobs over to the next runner process: they go on in their pods, and the next start with this state directory resumes them"
        );
        daemon.job_hand_over().cancel();
    } else {
        info!(
            signal = signal_name,
            "shutting down: no new jobs, running jobs may finish within shutdown_timeout; send the signal again to force exit"
        );
    }
    shutdown.cancel();
    let abort = daemon.job_abort();
    let mut wait = std::pin::pin!(daemon.wait());
    let mut next_signal = async || {
        tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        }
    };
    let signal = match finish_unless_forced(&mut wait, next_signal()).await {
        Ok(report) => return Ok(finished(&report)),
        Err(signal) => signal,
    };
    error!(
        signal,
        "second signal received: aborting running jobs; the runner exits once their pods are deleted (within {}s; a third signal exits at once)",
        FORCED_CLEANUP_LIMIT.as_secs()
    );
    abort.cancel();
    let cleaned =
        tokio::time::timeout(FORCED_CLEANUP_LIMIT, finish_unless_forced(&mut wait, next_signal()));
    match cleaned.await {
        Ok(Ok(report)) => {
            finished(&report);
            Ok(ExitCode::from(1))
        }
        Ok(Err(signal)) => Ok(forced(signal)),
        Err(_) => Ok(forced("the cleanup limit")),
    }
}

/// How long a forced shutdown (a second signal) waits for aborted jobs to clean up.
const FORCED_CLEANUP_LIMIT: Duration = Duration::from_secs(30);

/// The shutdown report once running jobs are done, or the name of a second signal that came
/// first (then running jobs are abandoned).
async fn finish_unless_forced<T>(
    wait: impl Future<Output = T>,
    second_signal: impl Future<Output = &'static str>,
) -> Result<T, &'static str> {
    tokio::select! {
        report = wait => Ok(report),
        signal = second_signal => Err(signal),
    }
}

fn forced(cause: &str) -> ExitCode {
    error!(cause, "forcing exit: running jobs are abandoned (the next start ends them)");
    ExitCode::from(1)
}

fn finished(report: &ShutdownReport) -> ExitCode {
    info!(
        jobs.reported = report.jobs_reported,
        jobs.report_failed = report.jobs_report_failed,
        jobs.interrupted = report.jobs_interrupted,
        jobs.abandoned = report.jobs_abandoned,
        jobs.handed_over = report.jobs_handed_over,
        "runner stopped"
    );
    if report.jobs_abandoned > 0 || report.jobs_report_failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Reloads the file when `forced` (SIGHUP) or when its content changed since it was last seen.
/// An invalid file keeps the running settings and logs every diagnostic.
async fn reload(state: &mut State, daemon: &RunningDaemon, forced: bool) {
    let text = match tokio::fs::read_to_string(&state.path).await {
        Ok(text) => text,
        Err(e) => {
            if forced {
                error!(config.file = %state.path.display(), error = %e, "failed to read the config file, keeping the running settings");
            }
            return;
        }
    };
    if !forced && text == state.text {
        return;
    }
    state.text.clone_from(&text);
    let file = state.path.display().to_string();
    let loaded = load_str(&text, LoadOptions { strict: state.strict });
    if !loaded.diagnostics.is_empty() {
        let report = Report { file: &file, text: &text, diagnostics: &loaded.diagnostics };
        let rendered = report.to_text();
        if loaded.has_errors() {
            error!(config.file = %file, diagnostics = %rendered, "config reload refused, keeping the running settings");
            return;
        }
        warn!(config.file = %file, diagnostics = %rendered, "config warnings");
    }
    let Some(mut config) = loaded.config else {
        error!(config.file = %file, "config reload refused, keeping the running settings");
        return;
    };
    config.expand_credentials(|name| std::env::var(name).ok());
    let warnings = settings::runner_warnings(&file, &text, &loaded.diagnostics);
    let mut settings = match settings::daemon_settings(
        &config,
        &state.path,
        &warnings,
        &state.registry,
        &state.system_id,
    ) {
        Ok(s) => s,
        Err(refusals) => {
            for r in &refusals {
                error!(config.file = %file, reason = %r, "config reload refused, keeping the running settings");
            }
            return;
        }
    };
    if let Some(address) = &state.listen_flag {
        settings.listen_address = Some(address.clone());
    }
    if settings.listen_address != state.listen_address {
        warn!(
            listen_address = ?settings.listen_address,
            "listen_address changed: it takes effect at the next start"
        );
    }
    let level = logging::level(state.log_flag, config.log_level.as_deref());
    if let Err(e) = state.logging.set_level(&level) {
        warn!(error = format!("{e:#}"), "log level not changed");
    }
    match daemon.reload(settings).await {
        Ok(report) => info!(
            config.file = %file,
            runners.added = ?report.added,
            runners.removed = ?report.removed,
            runners.restarted = ?report.restarted,
            runners.unchanged = ?report.unchanged,
            "config reloaded"
        ),
        Err(e) => {
            error!(config.file = %file, error = %e, "config reload refused, keeping the running settings");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::finish_unless_forced;

    #[tokio::test]
    async fn a_second_signal_forces_the_exit_while_jobs_still_run() {
        let jobs_never_finish = std::future::pending::<u32>();
        let result = finish_unless_forced(jobs_never_finish, async { "SIGTERM" }).await;
        assert_eq!(result, Err("SIGTERM"));
    }

    #[tokio::test]
    async fn without_a_second_signal_the_report_is_awaited() {
        let result = finish_unless_forced(async { 7 }, std::future::pending()).await;
        assert_eq!(result, Ok(7));
    }
}
