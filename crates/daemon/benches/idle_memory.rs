//! Idle memory (RSS) of the runner daemon: `cargo bench -p podrunner-daemon --bench idle_memory`
//! (run by `cargo xtask bench`).
//!
//! The bench re-executes itself as a child process that runs the real daemon loop (real
//! coordinator client, metrics listener, two runners polling every `check_interval`) against
//! `podrunner-coordinator-mock`, which lives in the parent and answers 204 (no job). After the
//! idle period the parent reads the child's `VmRSS` and `VmHWM` from `/proc/<pid>/status`, so the
//! mock's own memory is not counted. The child registers a placeholder executor only because
//! the daemon refuses runners without one; it is never called (no job is handed out), and it
//! exists only in this bench.
//!
//! The bench also measures `runner run` itself, with a config without runners (the shipped binary
//! refuses every runner until the Kubernetes executor exists): the binary named by
//! `IDLE_MEMORY_RUNNER_BIN`, else `runner` next to the bench's profile directory
//! (`cargo build --release -p podrunner`); without one that part says SKIPPED.
//!
//! Environment: `IDLE_MEMORY_SECONDS` (default 10). Exits 1 when the daemon's RSS reaches the
//! 20 MB target.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a bench reports on the terminal")]

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use podrunner_coordinator::{FailureReason, Job, JobCancel, JobOutcome, LogWriter};
use podrunner_coordinator_mock::MockCoordinator;
use podrunner_daemon::{
    Daemon, DaemonSettings, Executor, ExecutorRegistry, RunnerContext, RunnerSettings,
};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const CHILD_URL: &str = "IDLE_MEMORY_CHILD_URL";
const CHILD_TOKEN: &str = "IDLE_MEMORY_CHILD_TOKEN";
const TARGET_BYTES: u64 = 20_000_000;

/// Never called: the mock hands out no job.
struct Placeholder;

impl Executor for Placeholder {
    fn run(
        &self,
        _runner: &RunnerContext,
        _job: Arc<Job>,
        _log: LogWriter,
        _cancel: JobCancel,
    ) -> BoxFuture<'_, JobOutcome> {
        Box::pin(async {
            JobOutcome::system(
                FailureReason::RunnerSystemFailure,
                "the idle-memory bench runs no job",
            )
        })
    }
}

fn child(url: String, token: String) -> ExitCode {
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: failed to start the runtime: {e}");
                return ExitCode::from(2);
            }
        };
    runtime.block_on(async move {
        let runners = ["idle-a", "idle-b"]
            .into_iter()
            .map(|name| {
                RunnerSettings::new(
                    name,
                    url.clone(),
                    SecretString::from(token.clone()),
                    "placeholder",
                )
            })
            .collect();
        let mut settings = DaemonSettings::new(runners);
        settings.listen_address = Some("127.0.0.1:0".to_owned());
        let registry =
            ExecutorRegistry::new().with("placeholder", Arc::new(Placeholder) as Arc<dyn Executor>);
        let shutdown = CancellationToken::new();
        let daemon = match Daemon::new(settings, &registry) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        match daemon.start(shutdown.clone()).await {
            Ok(running) => {
                running.wait().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    })
}

/// `(VmRSS, VmHWM)` in bytes.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB ({} KiB)", bytes as f64 / 1e6, bytes / 1024)
}

/// Waits `idle`, then returns the child's memory; kills the child.
async fn measure(mut process: Child, idle: Duration) -> Option<(u64, u64)> {
    tokio::time::sleep(idle).await;
    let alive = matches!(process.try_wait(), Ok(None));
    let result = if alive { memory(process.id()) } else { None };
    let _ = process.kill();
    let _ = process.wait();
    result
}

fn main() -> ExitCode {
    if let (Ok(url), Ok(token)) = (std::env::var(CHILD_URL), std::env::var(CHILD_TOKEN)) {
        return child(url, token);
    }
    let idle = Duration::from_secs(
        std::env::var("IDLE_MEMORY_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10),
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: failed to start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let mock = MockCoordinator::start().await;
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                eprintln!("error: cannot find the bench executable: {e}");
                return ExitCode::from(2);
            }
        };
        let spawned = Command::new(exe)
            .env(CHILD_URL, mock.url())
            .env(CHILD_TOKEN, mock.runner_token())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn();
        let process = match spawned {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: failed to start the daemon child: {e}");
                return ExitCode::from(2);
            }
        };
        let Some((rss, hwm)) = measure(process, idle).await else {
            eprintln!("error: the daemon child ended early");
            return ExitCode::from(1);
        };
        let requests = mock.job_request_calls();
        println!(
            "idle_memory/daemon_loop: 2 runners polling (204, {requests} job requests in {}s): VmRSS {}, VmHWM {}",
            idle.as_secs(),
            mb(rss),
            mb(hwm)
        );
        let mut ok = requests > 0 && rss < TARGET_BYTES;
        if requests == 0 {
            eprintln!("error: the daemon child made no job request: nothing was measured");
        }
        match runner_bin() {
            Some(bin) => ok &= measure_binary(&bin, idle).await,
            None => println!(
                "idle_memory/runner_run: SKIPPED: no release `runner` binary next to the bench \
                 (build it with `cargo build --release -p podrunner` or set IDLE_MEMORY_RUNNER_BIN)"
            ),
        }
        println!("target: VmRSS < {}: {}", mb(TARGET_BYTES), if ok { "met" } else { "NOT met" });
        if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
    })
}

/// `IDLE_MEMORY_RUNNER_BIN`, else `runner` in the bench's own profile directory if it exists.
fn runner_bin() -> Option<String> {
    if let Ok(bin) = std::env::var("IDLE_MEMORY_RUNNER_BIN") {
        return Some(bin);
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("runner");
    candidate.is_file().then(|| candidate.to_string_lossy().into_owned())
}

async fn measure_binary(bin: &str, idle: Duration) -> bool {
    let dir = std::env::temp_dir().join(format!("idle-memory-{}", std::process::id()));
    let config = dir.join("config.toml");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&config, "listen_address = \"127.0.0.1:0\"\n"));
    if let Err(e) = written {
        eprintln!("error: failed to write {}: {e}", config.display());
        return false;
    }
    let spawned = Command::new(bin)
        .args(["run", "--log-level", "warn", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let result = match spawned {
        Ok(p) => measure(p, idle).await,
        Err(e) => {
            eprintln!("error: failed to start {bin}: {e}");
            None
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Some((rss, hwm)) => {
            println!(
                "idle_memory/runner_run ({bin}, no runners, metrics listener): VmRSS {}, VmHWM {}",
                mb(rss),
                mb(hwm)
            );
            rss < TARGET_BYTES
        }
        None => {
            eprintln!("error: `{bin} run` ended early");
            false
        }
    }
}
