//! The demo behind `cargo xtask demo`: the real `runner` binary runs the feature request's cases
//! (`examples/demo.toml`, one runner each) on a local cluster, with one GitLab double per
//! runner; each job's log is printed as GitLab would show it, then one summary line per job.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use podrunner_coordinator_mock::{JobHandle, JobState, MockCoordinator, MockJob};

use crate::apiserver::KubeVersion;
use crate::cluster::{ClusterOptions, LocalCluster};
use crate::runner_process::RunnerProcess;

/// One case: the runner of `examples/demo.toml` that runs it, what it shows, its script.
struct Case {
    runner: &'static str,
    title: &'static str,
    script: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        runner: "buildkit-unconfined",
        title: "build container seccomp and AppArmor Unconfined (rootless BuildKit)",
        script: &["grep Seccomp: /proc/self/status"],
    },
    Case {
        runner: "aks-runtime-default",
        title: "pod RuntimeDefault, inherited by build and helper (AKS policy)",
        script: &["grep Seccomp: /proc/self/status"],
    },
    Case {
        runner: "localhost-deny-mkdir",
        title: "build container Localhost profile that denies mkdir",
        script: &["grep Seccomp: /proc/self/status", "mkdir /tmp/demo"],
    },
    Case {
        runner: "localhost-missing",
        title: "build container Localhost profile the node does not have",
        script: &["echo this never runs"],
    },
];

/// How one job ended, as GitLab received it.
#[derive(Debug, Clone)]
pub struct DemoResult {
    /// The runner (case) name.
    pub runner: String,
    /// The job's final state.
    pub state: JobState,
    /// `exit_code` of the final update.
    pub exit_code: Option<i64>,
    /// `failure_reason` of the final update.
    pub failure_reason: Option<String>,
    /// The job log.
    pub trace: String,
    /// From the job's pickup to its final state.
    pub took: Duration,
}

impl DemoResult {
    /// The one-line summary: runner, outcome, and what the log proves.
    pub fn summary(&self) -> String {
        let seccomp = self
            .trace
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(|v| format!(", Seccomp: {}", v.trim()))
            .unwrap_or_default();
        let denied =
            if self.trace.contains("Operation not permitted") { ", mkdir denied" } else { "" };
        let outcome = match (self.state, &self.failure_reason, self.exit_code) {
            (JobState::Success, _, _) => "success".to_owned(),
            (_, Some(reason), Some(code)) => format!("failed ({reason}, exit code {code})"),
            (_, Some(reason), None) => format!("failed ({reason})"),
            (state, None, _) => state.as_str().to_owned(),
        };
        format!(
            "{:<22} {outcome}{seccomp}{denied}, {:.1} s after the runner started",
            self.runner,
            self.took.as_secs_f64()
        )
    }
}

/// What differs from what each case must show (empty when the demo proved its point).
pub fn problems(results: &[DemoResult]) -> Vec<String> {
    let mut out = Vec::new();
    for r in results {
        let ok = match r.runner.as_str() {
            "buildkit-unconfined" => {
                r.state == JobState::Success && r.trace.contains("Seccomp:\t0\n")
            }
            "aks-runtime-default" => {
                r.state == JobState::Success && r.trace.contains("Seccomp:\t2\n")
            }
            "localhost-deny-mkdir" => {
                r.exit_code == Some(1) && r.trace.contains("Operation not permitted")
            }
            "localhost-missing" => {
                r.failure_reason.as_deref() == Some("runner_configuration_error")
                    && r.trace.contains("Security Profiles Operator")
            }
            _ => false,
        };
        if !ok {
            out.push(format!("{} did not show what it should: {}", r.runner, r.summary()));
        }
    }
    out
}

/// Starts the cluster, the doubles and `runner run --config <config>`, runs one job per case,
/// writes every job log and the summary to `out`, stops everything, and returns the results.
///
/// # Errors
///
/// When the cluster cannot start, the runner cannot be started or a job does not finish.
pub async fn run(
    runner: &Path,
    config: &Path,
    out: &mut impl Write,
) -> anyhow::Result<Vec<DemoResult>> {
    let dir = tempfile::Builder::new().prefix("demo").tempdir_in("/tmp").context("temp dir")?;
    writeln!(
        out,
        "demo: starting the local cluster (API server + containerd node, Kubernetes 1.33)..."
    )?;
    let started = Instant::now();
    let options =
        ClusterOptions::new(dir.path()).kubernetes_version(KubeVersion { minor: 33, patch: 0 });
    let cluster =
        LocalCluster::start(options).await.context("failed to start the local cluster")?;
    writeln!(
        out,
        "demo: cluster ready in {:.1} s; starting {} GitLab doubles and `runner run --config {}`",
        started.elapsed().as_secs_f64(),
        CASES.len(),
        config.display()
    )?;
    let mut doubles = Vec::new();
    let mut envs = Vec::new();
    let mut jobs: Vec<(&Case, JobHandle)> = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let mock = MockCoordinator::start().await;
        mock.set_update_interval_header(Some(1));
        // Each runner its own token, as GitLab gives them.
        let token = format!("glrt-demo{}-{}", i + 1, &case.runner[..4]);
        mock.add_runner_token(&token);
        envs.push((format!("DEMO_GITLAB_URL_{}", i + 1), mock.url()));
        envs.push((format!("DEMO_TOKEN_{}", i + 1), token));
        let job = MockJob::new(case.runner)
            .image("localhost/busybox:latest")
            .variable("GIT_STRATEGY", "none")
            .failure_reasons(&[
                "script_failure",
                "runner_system_failure",
                "runner_configuration_error",
                "image_pull_failure",
            ])
            .script(case.script);
        jobs.push((case, mock.enqueue(&job)));
        doubles.push(mock);
    }
    let mut child = RunnerProcess::start(runner, config, cluster.kubeconfig_path(), &[], &envs)
        .with_context(|| format!("failed to start {}", runner.display()))?;
    let picked = Instant::now();
    let mut results = Vec::new();
    for (case, handle) in &jobs {
        let state = handle.wait_finished(Duration::from_secs(90)).await;
        if !matches!(state, JobState::Success | JobState::Failed) {
            bail!(
                "the {} job did not finish ({state:?}); the runner's log:\n{}",
                case.runner,
                child.log()
            );
        }
        let update = handle.final_update();
        results.push(DemoResult {
            runner: case.runner.to_owned(),
            state,
            exit_code: update.as_ref().and_then(|u| u.exit_code),
            failure_reason: update.and_then(|u| u.failure_reason),
            trace: String::from_utf8_lossy(&handle.trace()).into_owned(),
            took: picked.elapsed(),
        });
    }
    for (result, (case, _)) in results.iter().zip(&jobs) {
        writeln!(out, "\n==== job log: {} ({})", case.runner, case.title)?;
        out.write_all(result.trace.as_bytes())?;
    }
    writeln!(out, "\n==== summary")?;
    for result in &results {
        writeln!(out, "{}", result.summary())?;
    }
    child.terminate();
    let _ = child.wait(Duration::from_secs(30)).await;
    cluster.shutdown().await;
    writeln!(
        out,
        "demo: done in {:.1} s; everything it started is stopped",
        started.elapsed().as_secs_f64()
    )?;
    Ok(results)
}
