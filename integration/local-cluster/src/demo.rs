//! The feature request's cases and a few of the lifecycle's, as jobs for the runners of
//! `examples/demo.toml` (one GitLab double per runner), and what each must show. Two drivers
//! share them: the demo behind `cargo xtask demo` ([`run`]: the real `runner` binary against a
//! local cluster) and the kind suite (`integration/kind`: the runner deployed in a kind cluster
//! with `deploy/overlays/kind`). Each job's log is printed as GitLab would show it, then one
//! summary line per job.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use podrunner_coordinator_mock::{JobHandle, JobState, MockCoordinator, MockJob};

use crate::kubernetes::{self, ClusterInfo, KubernetesCluster, shared};
use crate::runner_process::RunnerProcess;

/// What a case needs of the node beyond a container runtime with seccomp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing more.
    Nothing,
    /// AppArmor enabled in the node's kernel.
    AppArmor,
}

/// One case: the runner of `examples/demo.toml` that runs it, what it shows, its job.
#[derive(Debug)]
pub struct Case {
    /// The case's name (the summary's first column).
    pub name: &'static str,
    /// The runner (`name` in `examples/demo.toml`) whose double hands the job out.
    pub runner: &'static str,
    /// What the case shows.
    pub title: &'static str,
    /// The job's script.
    pub script: &'static [&'static str],
    /// The job's `after_script`.
    pub after_script: &'static [&'static str],
    /// The job's timeout in seconds (`None`: GitLab's default).
    pub timeout: Option<u64>,
    /// What the node must have.
    pub needs: Needs,
}

/// Every case, in the order the jobs are handed out.
pub const CASES: &[Case] = &[
    Case {
        name: "buildkit-unconfined",
        runner: "buildkit-unconfined",
        title: "build container seccomp and AppArmor Unconfined (rootless BuildKit)",
        script: &["grep Seccomp: /proc/self/status"],
        after_script: &[],
        timeout: None,
        needs: Needs::Nothing,
    },
    Case {
        name: "aks-runtime-default",
        runner: "aks-runtime-default",
        title: "pod RuntimeDefault, inherited by build and helper (AKS policy)",
        script: &["grep Seccomp: /proc/self/status"],
        after_script: &[],
        timeout: None,
        needs: Needs::Nothing,
    },
    Case {
        name: "localhost-deny-mkdir",
        runner: "localhost-deny-mkdir",
        title: "build container Localhost profile that denies mkdir",
        script: &["grep Seccomp: /proc/self/status", "mkdir /tmp/demo"],
        after_script: &[],
        timeout: None,
        needs: Needs::Nothing,
    },
    Case {
        name: "localhost-missing",
        runner: "localhost-missing",
        title: "build container Localhost profile the node does not have",
        script: &["echo this never runs"],
        after_script: &[],
        timeout: None,
        needs: Needs::Nothing,
    },
    Case {
        name: "apparmor-runtime-default",
        runner: "apparmor-runtime-default",
        title: "build container AppArmor RuntimeDefault, enforced by the node's kernel",
        script: &["cat /proc/self/attr/current"],
        after_script: &[],
        timeout: None,
        needs: Needs::AppArmor,
    },
    Case {
        name: "exit-3-after-script",
        runner: "aks-runtime-default",
        title: "a script failing with exit code 3; after_script still runs",
        script: &["echo working", "exit 3"],
        after_script: &["echo after_script ran"],
        timeout: None,
        needs: Needs::Nothing,
    },
    Case {
        name: "job-timeout",
        runner: "aks-runtime-default",
        title: "a job past its timeout fails as job_execution_timeout",
        script: &["echo sleeping", "sleep 600"],
        after_script: &[],
        timeout: Some(5),
        needs: Needs::Nothing,
    },
];

/// The runners of `examples/demo.toml` in the order of their `DEMO_GITLAB_URL_<n>` numbers.
pub fn runners() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for case in CASES {
        if !out.contains(&case.runner) {
            out.push(case.runner);
        }
    }
    out
}

/// How one job ended, as GitLab received it.
#[derive(Debug, Clone)]
pub struct DemoResult {
    /// The case's name.
    pub case: String,
    /// The job's final state.
    pub state: JobState,
    /// `exit_code` of the final update.
    pub exit_code: Option<i64>,
    /// `failure_reason` of the final update.
    pub failure_reason: Option<String>,
    /// The job log.
    pub trace: String,
    /// From the runner's start to the job's final state.
    pub took: Duration,
}

impl DemoResult {
    /// The one-line summary: case, outcome, and what the log proves.
    pub fn summary(&self) -> String {
        let seccomp = self
            .trace
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(|v| format!(", Seccomp: {}", v.trim()))
            .unwrap_or_default();
        let denied =
            if self.trace.contains("Operation not permitted") { ", mkdir denied" } else { "" };
        let apparmor = if self.trace.contains("(enforce)") { ", AppArmor enforced" } else { "" };
        let outcome = match (self.state, &self.failure_reason, self.exit_code) {
            (JobState::Success, _, _) => "success".to_owned(),
            (_, Some(reason), Some(code)) => format!("failed ({reason}, exit code {code})"),
            (_, Some(reason), None) => format!("failed ({reason})"),
            (state, None, _) => state.as_str().to_owned(),
        };
        format!(
            "{:<22} {outcome}{seccomp}{denied}{apparmor}, {:.1} s after the runner started",
            self.case,
            self.took.as_secs_f64()
        )
    }
}

/// What differs from what each case must show (empty when every case proved its point).
pub fn problems(results: &[DemoResult]) -> Vec<String> {
    let mut out = Vec::new();
    for r in results {
        let reason = r.failure_reason.as_deref();
        let ok = match r.case.as_str() {
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
                reason == Some("runner_configuration_error")
                    && r.trace.contains("Security Profiles Operator")
            }
            "apparmor-runtime-default" => {
                r.state == JobState::Success && r.trace.contains(" (enforce)\n")
            }
            "exit-3-after-script" => {
                reason == Some("script_failure")
                    && r.exit_code == Some(3)
                    && r.trace.contains("\nafter_script ran\n")
            }
            "job-timeout" => reason == Some("job_execution_timeout"),
            _ => false,
        };
        if !ok {
            out.push(format!("{} did not show what it should: {}", r.case, r.summary()));
        }
    }
    out
}

/// One GitLab double per runner of `examples/demo.toml`, each with its cases' jobs queued.
#[derive(Debug)]
pub struct Doubles {
    doubles: Vec<MockCoordinator>,
    envs: Vec<(String, String)>,
    jobs: Vec<(&'static Case, JobHandle)>,
    skipped: Vec<(&'static Case, String)>,
}

impl Doubles {
    /// Starts the doubles on `bind` (their URLs name `advertise`, the address the runner
    /// reaches them at) and queues every case's job, except those `skip` gives a reason for.
    pub async fn start(
        bind: IpAddr,
        advertise: &str,
        skip: impl Fn(&Case) -> Option<String>,
    ) -> Self {
        let mut doubles = Vec::new();
        let mut envs = Vec::new();
        for (i, runner) in runners().into_iter().enumerate() {
            let mock = MockCoordinator::start_on(bind).await;
            mock.set_update_interval_header(Some(1));
            // Each runner its own token, as GitLab gives them.
            let token = format!("glrt-demo{}-{}", i + 1, &runner[..4]);
            mock.add_runner_token(&token);
            let port = mock.url().rsplit(':').next().unwrap_or_default().to_owned();
            envs.push((format!("DEMO_GITLAB_URL_{}", i + 1), format!("http://{advertise}:{port}")));
            envs.push((format!("DEMO_TOKEN_{}", i + 1), token));
            doubles.push((runner, mock));
        }
        let mut jobs = Vec::new();
        let mut skipped = Vec::new();
        for case in CASES {
            if let Some(reason) = skip(case) {
                skipped.push((case, reason));
                continue;
            }
            let Some((_, mock)) = doubles.iter().find(|(r, _)| *r == case.runner) else {
                continue;
            };
            let mut job = MockJob::new(case.name)
                .image(crate::node::images::BUSYBOX_IMAGE)
                .variable("GIT_STRATEGY", "none")
                .failure_reasons(&[
                    "script_failure",
                    "runner_system_failure",
                    "runner_configuration_error",
                    "image_pull_failure",
                    "job_execution_timeout",
                ])
                .script(case.script)
                .after_script(case.after_script);
            if let Some(timeout) = case.timeout {
                job = job.timeout(timeout);
            }
            jobs.push((case, mock.enqueue(&job)));
        }
        Self { doubles: doubles.into_iter().map(|(_, m)| m).collect(), envs, jobs, skipped }
    }

    /// `DEMO_GITLAB_URL_<n>` and `DEMO_TOKEN_<n>` for the runner's environment.
    pub fn envs(&self) -> &[(String, String)] {
        &self.envs
    }

    /// The cases not run, each with why.
    pub fn skipped(&self) -> &[(&'static Case, String)] {
        &self.skipped
    }

    /// Waits for every job (each at most `wait`) and returns how they ended; `since` is when
    /// the runner started. A job that does not finish is an error with `runner_log()`.
    ///
    /// # Errors
    ///
    /// A job did not finish in time.
    pub async fn collect(
        &self,
        since: Instant,
        wait: Duration,
        runner_log: impl Fn() -> String,
    ) -> anyhow::Result<Vec<DemoResult>> {
        let _ = &self.doubles;
        let mut results = Vec::new();
        for (case, handle) in &self.jobs {
            let state = handle.wait_finished(wait).await;
            if !matches!(state, JobState::Success | JobState::Failed) {
                bail!(
                    "the {} job did not finish ({state:?}); the runner's log:\n{}",
                    case.name,
                    runner_log()
                );
            }
            let update = handle.final_update();
            results.push(DemoResult {
                case: case.name.to_owned(),
                state,
                exit_code: update.as_ref().and_then(|u| u.exit_code),
                failure_reason: update.and_then(|u| u.failure_reason),
                trace: String::from_utf8_lossy(&handle.trace()).into_owned(),
                took: since.elapsed(),
            });
        }
        Ok(results)
    }

    /// Writes each job's log, then the summary (skipped cases said so).
    ///
    /// # Errors
    ///
    /// `out` cannot be written.
    pub fn report(&self, results: &[DemoResult], out: &mut impl Write) -> std::io::Result<()> {
        for (result, (case, _)) in results.iter().zip(&self.jobs) {
            writeln!(out, "\n==== job log: {} ({})", case.name, case.title)?;
            out.write_all(result.trace.as_bytes())?;
        }
        writeln!(out, "\n==== summary")?;
        for result in results {
            writeln!(out, "{}", result.summary())?;
        }
        for (case, reason) in &self.skipped {
            writeln!(out, "{:<22} SKIPPED: {reason}", case.name)?;
        }
        Ok(())
    }
}

/// Why a case cannot run on this host's kernel (the local cluster's node is this host).
pub fn unsupported_here(case: &Case) -> Option<String> {
    match case.needs {
        Needs::Nothing => None,
        Needs::AppArmor if apparmor_enabled() => None,
        Needs::AppArmor => Some(
            "AppArmor is not enabled in this kernel (/sys/module/apparmor/parameters/enabled)"
                .to_owned(),
        ),
    }
}

/// Whether this host's kernel has AppArmor enabled.
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y")
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
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("demo").tempdir_in("/tmp").context("temp dir")?;
    // The local cluster that runs already (the test suite's), else one of its own.
    let (own, info): (Option<KubernetesCluster>, ClusterInfo) = match shared::shared_cluster() {
        Ok(info) => {
            writeln!(out, "demo: using the running local cluster (Kubernetes v{})", info.version)?;
            (None, info)
        }
        Err(_) => {
            let options = kubernetes::Options::new(dir.path());
            writeln!(
                out,
                "demo: starting a local cluster: Kubernetes v{} (etcd, kube-apiserver, controller-manager, scheduler, kubelet on containerd)...",
                options.version
            )?;
            let cluster = KubernetesCluster::start(options)
                .await
                .context("failed to start the local cluster")?;
            let info = cluster.info().clone();
            (Some(cluster), info)
        }
    };
    writeln!(
        out,
        "demo: cluster ready in {:.1} s; starting {} GitLab doubles and `runner run --config {}`",
        started.elapsed().as_secs_f64(),
        runners().len(),
        config.display()
    )?;
    let address = info.node_ip.to_string();
    let doubles = Doubles::start(info.node_ip, &address, unsupported_here).await;
    let mut child = RunnerProcess::start(runner, config, &info.kubeconfig, &[], doubles.envs())
        .with_context(|| format!("failed to start {}", runner.display()))?;
    let results = doubles.collect(Instant::now(), Duration::from_secs(90), || child.log()).await?;
    doubles.report(&results, out)?;
    child.terminate();
    let _ = child.wait(Duration::from_secs(30)).await;
    if let Some(mut cluster) = own {
        let left = cluster.stop();
        if !left.0.is_empty() {
            bail!("the local cluster left behind: {}", left.0.join(", "));
        }
    }
    writeln!(
        out,
        "demo: done in {:.1} s; everything it started is stopped",
        started.elapsed().as_secs_f64()
    )?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runner_of_the_cases_is_in_the_demo_config_in_the_same_order() {
        let config = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo.toml"),
        )
        .expect("examples/demo.toml");
        let names: Vec<&str> = config
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .collect();
        assert_eq!(names, runners());
        for (i, _) in runners().iter().enumerate() {
            assert!(config.contains(&format!("url = \"$DEMO_GITLAB_URL_{}\"", i + 1)));
            assert!(config.contains(&format!("token = \"$DEMO_TOKEN_{}\"", i + 1)));
        }
    }

    #[test]
    fn an_empty_failed_job_passes_no_case() {
        for case in CASES {
            let result = DemoResult {
                case: case.name.to_owned(),
                state: JobState::Failed,
                exit_code: None,
                failure_reason: None,
                trace: String::new(),
                took: Duration::ZERO,
            };
            let problems = problems(&[result]);
            assert_eq!(problems.len(), 1, "{}: an empty failed job must not pass", case.name);
        }
    }
}
