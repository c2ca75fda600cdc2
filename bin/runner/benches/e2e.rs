//! End-to-end latency and request counts on the local cluster: `cargo bench -p podrunner --bench
//! e2e` (run by `cargo xtask bench`). Needs root and containerd, as the end-to-end tests; says
//! SKIPPED otherwise.
//!
//! The real `runner` binary (JSON log at debug level, `concurrent = 1`) runs 20 jobs (`echo first-line`,
//! `sleep 2`) from the GitLab double on a local cluster, then 5 jobs whose build container names a
//! `Localhost` seccomp profile the node does not have. From the runner's own log timestamps:
//!
//! - pickup → pod created (`job received` → `pod created`);
//! - pod created → Running noticed (`pod created` → `pod running`);
//! - pickup → first output of the user's script (`job received` → `stage output started` of
//!   `step_script`);
//! - pod created → missing profile noticed (`pod created` → `the pod cannot run the job`);
//!
//! and from the API server's audit log, the requests per job (pods: create, execs,
//! delete) against the goal of 4 + 2 × stages, and the requests shared by all jobs (version,
//! list and watch).
//!
//! Then the load phase: 50 jobs at once in one runner process (`concurrent = 50`), reporting the
//! runner's peak RSS and CPU time per job (from `/proc`), the API requests per job and the jobs'
//! wall time against one job's (phase 1).
//!
//! Then the artifact phase: a job uploads a 200 MiB artifact of random bytes (incompressible, at
//! the default and the fastest deflate level), and a job that depends on it downloads and
//! extracts it; reported from the job logs' own lines: pod → runner (tar over exec, zip
//! written), runner → GitLab, and back; and the runner's peak RSS over its RSS before.
//!
//! Exits 1 when a goal is missed: first line ≤ 1 s after the pod runs, missing profile ≤ 5 s,
//! requests per job ≤ 4 + 2 × 3, all 50 load jobs succeed with a peak RSS ≤ 64 MB, the artifact
//! jobs succeed with the runner's RSS growing by less than 32 MB.
#![allow(clippy::print_stdout, reason = "a bench reports on the terminal")]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use podrunner_coordinator_mock::{JobState, MockCoordinator, MockJob};
use podrunner_local_cluster::cluster;
use podrunner_local_cluster::kubernetes::shared::RequestRecord;
use podrunner_local_cluster::kubernetes::{self, ClusterInfo, KubernetesCluster, shared};
use podrunner_local_cluster::runner_process::RunnerProcess;

/// The bench's namespace on the cluster (set once at start).
static NAMESPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The cluster the bench runs on: the running local cluster, else one it starts (and stops).
struct BenchCluster {
    own: Option<KubernetesCluster>,
    info: ClusterInfo,
    namespace: String,
    client: kube::Client,
}

impl BenchCluster {
    async fn start(dir: &std::path::Path) -> Self {
        let (own, info) = match shared::shared_cluster() {
            Ok(info) => {
                println!(
                    "end-to-end bench: on the running local cluster (Kubernetes v{})",
                    info.version
                );
                (None, info)
            }
            Err(_) => {
                let cluster =
                    KubernetesCluster::start(kubernetes::Options::new(dir.join("cluster")))
                        .await
                        .expect("the local cluster starts");
                let t = cluster.timings();
                println!(
                    "cluster start (Kubernetes v{}): {:.1} s (etcd {:.1} s, API server ready {:.1} s, containerd with images {:.1} s, node Ready {:.1} s)",
                    cluster.info().version,
                    t.total.as_secs_f64(),
                    t.etcd.as_secs_f64(),
                    t.api_server.as_secs_f64(),
                    t.runtime.as_secs_f64(),
                    t.node_ready.as_secs_f64()
                );
                let info = cluster.info().clone();
                (Some(cluster), info)
            }
        };
        let client = info.client().await.expect("a client of the cluster");
        let namespace = shared::test_namespace(&client, "bench").await;
        let _ = NAMESPACE.set(namespace.clone());
        Self { own, info, namespace, client }
    }

    fn kubeconfig_path(&self) -> &std::path::Path {
        &self.info.kubeconfig
    }

    /// The runner's requests in the bench's namespace, from the audit log.
    fn requests(&self) -> Vec<RequestRecord> {
        shared::runner_requests_in(&self.info, &self.namespace)
    }

    async fn shutdown(self) {
        shared::delete_namespace(&self.client, &self.namespace).await;
        if let Some(mut cluster) = self.own {
            cluster.stop();
        }
    }
}

const JOBS: usize = 20;
const LOAD_JOBS: usize = 50;
/// The load phase's memory goal.
const LOAD_RSS_GOAL: u64 = 64 * 1024 * 1024;
const MISSING_PROFILE_JOBS: usize = 5;
/// The artifact phase's size and memory goal.
const ARTIFACT_BYTES: u64 = 200 * 1024 * 1024;
const ARTIFACT_RSS_GROWTH_GOAL: u64 = 32 * 1024 * 1024;
/// get_sources, step_script, cleanup_file_variables.
const STAGES: usize = 3;

fn main() -> ExitCode {
    if let Some(reason) = cluster::missing_prerequisites() {
        println!("SKIPPED: the end-to-end bench {reason}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            println!("error: failed to start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run())
}

/// Starts `runner run` with a JSON log at debug level (the events the bench times).
fn start_runner(config: &std::path::Path, kubeconfig: &std::path::Path) -> RunnerProcess {
    RunnerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_runner")),
        config,
        kubeconfig,
        &["--log-format", "json", "--log-level", "debug"],
        &[],
    )
    .expect("start runner run")
}

/// Stops the runner and returns its JSON log lines; other lines (config diagnostics,
/// refusals) are printed.
async fn stop_runner(mut runner: RunnerProcess) -> Vec<serde_json::Value> {
    runner.terminate();
    let _ = runner.wait(Duration::from_secs(30)).await;
    runner
        .lines()
        .iter()
        .filter_map(|line| match serde_json::from_str(line) {
            Ok(v) => Some(v),
            Err(_) => {
                println!("runner: {line}");
                None
            }
        })
        .collect()
}

fn config(mock: &MockCoordinator, extra: &str) -> String {
    config_with(mock, 1, extra)
}

fn config_with(mock: &MockCoordinator, concurrent: usize, extra: &str) -> String {
    format!(
        "concurrent = {concurrent}\ncheck_interval = 1\n\
         [[runners]]\nname = \"bench\"\nurl = \"{}\"\ntoken = \"{}\"\nexecutor = \"kubernetes\"\n\
         [runners.kubernetes]\nnamespace = \"{namespace}\"\nimage = \"localhost/busybox:latest\"\n\
         helper_image = \"localhost/helper:latest\"\npull_policy = \"if-not-present\"\n\
         cleanup_grace_period_seconds = 1\n{extra}\n",
        mock.url(),
        mock.runner_token(),
        namespace = NAMESPACE.get().map_or("default", String::as_str),
    )
}

/// Event times (seconds since the epoch) per job id, by message (and stage).
fn events(log: &[serde_json::Value]) -> BTreeMap<u64, BTreeMap<String, f64>> {
    let mut out: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
    for line in log {
        let job = line["job.id"].as_u64().or_else(|| line["span"]["job.id"].as_u64());
        let (Some(job), Some(message), Some(at)) =
            (job, line["message"].as_str(), line["timestamp"].as_str())
        else {
            continue;
        };
        let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) else { continue };
        let key = match line["stage"].as_str() {
            Some(stage) => format!("{message} {stage}"),
            None => message.to_owned(),
        };
        let seconds = at.timestamp_micros() as f64 / 1e6;
        out.entry(job).or_default().entry(key).or_insert(seconds);
    }
    out
}

fn spans(events: &BTreeMap<u64, BTreeMap<String, f64>>, from: &str, to: &str) -> Vec<f64> {
    events.values().filter_map(|e| Some(e.get(to)? - e.get(from)?)).collect()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let (median, p95) = (quantile(&values, 0.5), quantile(&values, 0.95));
    println!(
        "{name:<44} n={:<3} median {:>7.0} ms   p95 {:>7.0} ms",
        values.len(),
        median * 1e3,
        p95 * 1e3
    );
    (median, p95)
}

async fn wait_all(handles: &[podrunner_coordinator_mock::JobHandle]) -> bool {
    for h in handles {
        let state = h.wait_finished(Duration::from_secs(240)).await;
        if !matches!(state, JobState::Success | JobState::Failed) {
            println!("job {} did not finish: {state:?}", h.id());
            return false;
        }
    }
    true
}

async fn run() -> ExitCode {
    let dir = tempfile::Builder::new().prefix("bench").tempdir_in("/tmp").expect("temp dir");
    let cluster = BenchCluster::start(dir.path()).await;
    let mock = MockCoordinator::start_on(cluster.info.node_ip).await;
    mock.set_update_interval_header(Some(1));
    let mut ok = true;
    let config_path = dir.path().join("config.toml");
    if std::env::args().any(|a| a == "load") {
        // `cargo bench -p podrunner --bench e2e -- load`: that phase alone (no single-job
        // baseline, so no wall-time ratio).
        ok &= load_phase(&cluster, &mock, &config_path, f64::NAN).await;
        cluster.shutdown().await;
        return if ok { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
    if std::env::args().any(|a| a == "artifacts") {
        // `cargo bench -p podrunner --bench e2e -- artifacts`: that phase alone.
        ok &= artifact_phase(&cluster, &mock, &config_path).await;
        cluster.shutdown().await;
        return if ok { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }

    // Phase 1: ordinary jobs.
    std::fs::write(&config_path, config(&mock, "")).expect("write config");
    let handles: Vec<_> = (0..JOBS)
        .map(|i| {
            mock.enqueue(
                &MockJob::new(format!("bench-{i}"))
                    .image("localhost/busybox:latest")
                    .variable("GIT_STRATEGY", "none")
                    .script(&["echo first-line", "sleep 2"]),
            )
        })
        .collect();
    let runner = start_runner(&config_path, cluster.kubeconfig_path());
    ok &= wait_all(&handles).await;
    let succeeded = handles.iter().filter(|h| h.state() == JobState::Success).count();
    // Why the others failed: each distinct last error line, with how many jobs ended on it.
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for handle in handles.iter().filter(|h| h.state() != JobState::Success) {
        let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
        let last = trace
            .lines()
            .rfind(|l| l.contains("ERROR"))
            .unwrap_or("(no error line)")
            .chars()
            .take(300)
            .collect::<String>();
        *failures.entry(last).or_default() += 1;
    }
    for (line, count) in &failures {
        println!("load: {count} jobs failed with: {line}");
    }
    let log = stop_runner(runner).await;
    let requests = cluster.requests();
    let e = events(&log);
    println!(
        "end-to-end bench: {JOBS} jobs on the local cluster (Kubernetes v{}), {succeeded} succeeded",
        cluster.info.version
    );
    report("pickup -> pod created", spans(&e, "job received", "pod created"));
    let (running_median, _) =
        report("pod created -> Running noticed", spans(&e, "pod created", "pod running"));
    let (first_median, first_p95) = report(
        "pickup -> first line of the user's script",
        spans(&e, "job received", "stage output started step_script"),
    );
    let (after_running, _) = report(
        "Running noticed -> first line of the script",
        spans(&e, "pod running", "stage output started step_script"),
    );
    let (single_job_wall, _) =
        report("one job alone: pickup -> end", spans(&e, "job received", "job ended"));
    let pod_requests: Vec<_> = requests
        .iter()
        .filter(|r| r.resource == "pods" && (r.name.is_some() || r.verb == "create"))
        .collect();
    let shared = requests.len() - pod_requests.len();
    let per_job = pod_requests.len() as f64 / JOBS as f64;
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for r in &pod_requests {
        let kind = format!(
            "{} pods{}",
            r.verb,
            r.subresource.as_ref().map(|s| format!("/{s}")).unwrap_or_default()
        );
        *by_kind.entry(kind).or_default() += 1;
    }
    println!(
        "API requests per job: {per_job:.1} (goal <= {}), {by_kind:?}; shared by all jobs: {shared}",
        4 + 2 * STAGES
    );
    if per_job > (4 + 2 * STAGES) as f64 {
        println!("FAIL: {per_job:.1} API requests per job");
        ok = false;
    }
    if succeeded != JOBS {
        println!("FAIL: {} jobs did not succeed", JOBS - succeeded);
        ok = false;
    }
    if after_running > 1.0 {
        println!(
            "FAIL: the first script line came {after_running:.2} s after the pod ran (goal <= 1 s)"
        );
        ok = false;
    }
    println!(
        "(pod start itself: median {:.0} ms; pickup -> first line p95 {:.0} ms, median {:.0} ms)",
        running_median * 1e3,
        first_p95 * 1e3,
        first_median * 1e3
    );

    // Phase 2: a Localhost profile the node does not have.
    let extra = "[runners.kubernetes.build_container_security_context]\n\
                 seccomp_profile_type = \"Localhost\"\nseccomp_profile_localhost_profile = \"profiles/absent.json\"\n";
    std::fs::write(&config_path, config(&mock, extra)).expect("write config");
    let handles: Vec<_> = (0..MISSING_PROFILE_JOBS)
        .map(|i| {
            mock.enqueue(
                &MockJob::new(format!("missing-{i}"))
                    .image("localhost/busybox:latest")
                    .variable("GIT_STRATEGY", "none"),
            )
        })
        .collect();
    let runner = start_runner(&config_path, cluster.kubeconfig_path());
    ok &= wait_all(&handles).await;
    let log = stop_runner(runner).await;
    let e = events(&log);
    let (_, noticed_p95) = report(
        "pod created -> missing profile noticed",
        spans(&e, "pod created", "the pod cannot run the job"),
    );
    if noticed_p95.is_nan() || noticed_p95 > 5.0 {
        println!(
            "FAIL: a missing profile was noticed {noticed_p95:.2} s after the pod's creation (goal <= 5 s)"
        );
        ok = false;
    }
    ok &= load_phase(&cluster, &mock, &config_path, single_job_wall).await;
    ok &= artifact_phase(&cluster, &mock, &config_path).await;
    cluster.shutdown().await;
    if ok {
        println!("ok: every end-to-end goal met");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// 50 jobs at once in one runner process: peak RSS, CPU per job, requests per job, wall times.
async fn load_phase(
    cluster: &BenchCluster,
    mock: &MockCoordinator,
    config_path: &std::path::Path,
    single_job_wall: f64,
) -> bool {
    std::fs::write(config_path, config_with(mock, LOAD_JOBS, "")).expect("write config");
    let before = cluster.requests().len();
    let handles: Vec<_> = (0..LOAD_JOBS)
        .map(|i| {
            mock.enqueue(
                &MockJob::new(format!("load-{i}"))
                    .image("localhost/busybox:latest")
                    .variable("GIT_STRATEGY", "none")
                    .script(&["echo first-line", "sleep 2"]),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let runner = start_runner(config_path, cluster.kubeconfig_path());
    let mut usage = (0, 0.0);
    let deadline = started + Duration::from_secs(600);
    while handles.iter().any(|h| !matches!(h.state(), JobState::Success | JobState::Failed))
        && std::time::Instant::now() < deadline
    {
        if let Some(now) = runner.usage() {
            usage = now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(now) = runner.usage() {
        usage = now;
    }
    let all_wall = started.elapsed().as_secs_f64();
    let succeeded = handles.iter().filter(|h| h.state() == JobState::Success).count();
    let log = stop_runner(runner).await;
    let e = events(&log);
    println!(
        "load: {LOAD_JOBS} jobs at once in one runner process, {succeeded} succeeded, all done in {all_wall:.1} s"
    );
    let (wall_median, wall_p95) =
        report("each job under load: pickup -> end", spans(&e, "job received", "job ended"));
    let pod_requests = cluster.requests()[before..]
        .iter()
        .filter(|r| r.resource == "pods" && (r.name.is_some() || r.verb == "create"))
        .count();
    let per_job = pod_requests as f64 / LOAD_JOBS as f64;
    let (rss, cpu) = usage;
    println!(
        "load: peak RSS {:.1} MB (goal <= {} MB), CPU {:.0} ms per job, {per_job:.1} API requests per job, job wall time {:.2}x one job alone (median; p95 {:.2}x)",
        rss as f64 / 1048576.0,
        LOAD_RSS_GOAL / 1048576,
        cpu / LOAD_JOBS as f64 * 1e3,
        wall_median / single_job_wall,
        wall_p95 / single_job_wall
    );
    let mut ok = true;
    if succeeded != LOAD_JOBS {
        println!("FAIL: {} of {LOAD_JOBS} load jobs did not succeed", LOAD_JOBS - succeeded);
        ok = false;
    }
    if rss == 0 || rss > LOAD_RSS_GOAL {
        println!("FAIL: peak RSS {rss} bytes");
        ok = false;
    }
    if per_job > (4 + 2 * STAGES) as f64 {
        println!("FAIL: {per_job:.1} API requests per job under load");
        ok = false;
    }
    ok
}

/// The seconds in the job-log line that starts with `prefix` and has `in <secs>s`.
fn seconds_after(trace: &str, prefix: &str, marker: &str) -> Option<f64> {
    let line = trace.lines().find(|l| l.contains(prefix))?;
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split('s').next()?.trim().parse().ok()
}

/// A 200 MiB artifact up and down: the rates from the job logs, the runner's memory.
async fn artifact_phase(
    cluster: &BenchCluster,
    mock: &MockCoordinator,
    config_path: &std::path::Path,
) -> bool {
    std::fs::write(config_path, config(mock, "")).expect("write config");
    let runner = start_runner(config_path, cluster.kubeconfig_path());
    let warm_up = mock.enqueue(
        &MockJob::new("warm-up")
            .image("localhost/busybox:latest")
            .variable("GIT_STRATEGY", "none")
            .script(&["echo warm"]),
    );
    let mut ok = wait_all(std::slice::from_ref(&warm_up)).await;
    let baseline = runner.rss().unwrap_or(0);
    let mib = ARTIFACT_BYTES / 1024 / 1024;
    let mut uploaded = None;
    // Random bytes do not compress (stored, as the runner decides from their start); a build
    // log does (deflated at the level); the raw format writes the file as it arrives: the
    // transport's own rate.
    let random = format!("head -c {ARTIFACT_BYTES} /dev/urandom > big.bin");
    // A hex dump of random bytes deflates about 2:1, as build output may.
    // (`od` ends on SIGPIPE, which pipefail would make the script's status.)
    let text = format!("{{ od -t x1 /dev/urandom || :; }} | head -c {ARTIFACT_BYTES} > big.bin");
    for (data, script, level, format) in [
        ("random", &random, "default", "zip"),
        ("text", &text, "default", "zip"),
        ("text", &text, "fastest", "zip"),
        ("random", &random, "default", "raw"),
    ] {
        let job = mock.enqueue(
            &MockJob::new(format!("artifact-{data}-{level}-{format}"))
                .image("localhost/busybox:latest")
                .variable("GIT_STRATEGY", "none")
                .variable("ARTIFACT_COMPRESSION_LEVEL", level)
                .script(&[script.as_str()])
                .extra(
                    "artifacts",
                    serde_json::json!([{"name": "big", "paths": ["big.bin"], "artifact_format": format}]),
                ),
        );
        ok &= wait_all(std::slice::from_ref(&job)).await;
        let trace = String::from_utf8_lossy(&job.trace()).into_owned();
        let collect = seconds_after(&trace, "Collected 1 files", ") in ");
        let upload = seconds_after(&trace, "Uploaded big", ") in ");
        let whole = trace.contains(&format!("({mib}.0 MiB uncompressed)"));
        match (job.state(), collect, upload) {
            (JobState::Success, Some(c), Some(u)) if whole => {
                println!(
                    "artifact {mib} MiB of {data}, {format}, ARTIFACT_COMPRESSION_LEVEL={level}: pod -> runner (tar over exec, archive written) {c:.1} s = {:.0} MiB/s; then the upload {u:.1} s; end to end {:.0} MiB/s",
                    mib as f64 / c.max(0.01),
                    mib as f64 / (c + u).max(0.01)
                );
                for line in trace
                    .lines()
                    .filter(|l| l.starts_with("Collected") || l.starts_with("Uploaded"))
                {
                    println!("  job log: {line}");
                }
                if (data, format) == ("random", "zip") {
                    uploaded = Some(job.id());
                }
            }
            (state, _, _) => {
                println!("FAIL: the {level} artifact job ended {state:?}:\n{trace}");
                ok = false;
            }
        }
    }
    if let Some(id) = uploaded {
        let job = mock.enqueue(
            &MockJob::new("artifact-download")
                .image("localhost/busybox:latest")
                .variable("GIT_STRATEGY", "none")
                .depends_on(id, "artifact-random-default-zip")
                .script(&[&format!("test \"$(wc -c < big.bin)\" -eq {ARTIFACT_BYTES}")]),
        );
        ok &= wait_all(std::slice::from_ref(&job)).await;
        let trace = String::from_utf8_lossy(&job.trace()).into_owned();
        let fetched = seconds_after(&trace, "Extracted 1 files", "MiB in ");
        let extracted = seconds_after(&trace, "Extracted 1 files", "extracted in ");
        match (job.state(), fetched, extracted) {
            (JobState::Success, Some(f), Some(x)) => println!(
                "artifact {mib} MiB download: GitLab -> runner {f:.1} s = {:.0} MiB/s; runner -> pod (zip read, tar over exec, extracted) {x:.1} s = {:.0} MiB/s",
                mib as f64 / f.max(0.01),
                mib as f64 / x.max(0.01)
            ),
            (state, _, _) => {
                println!("FAIL: the download job ended {state:?}:\n{trace}");
                ok = false;
            }
        }
    }
    let (peak, cpu) = runner.usage().unwrap_or((0, 0.0));
    let growth = peak.saturating_sub(baseline);
    println!(
        "artifact: runner RSS {:.1} MB before, peak {:.1} MB: growth {:.1} MB (goal < {} MB); CPU {cpu:.1} s in all",
        baseline as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        growth as f64 / 1048576.0,
        ARTIFACT_RSS_GROWTH_GOAL / 1048576
    );
    if baseline == 0 || growth >= ARTIFACT_RSS_GROWTH_GOAL {
        println!("FAIL: the runner's RSS grew by {growth} bytes moving the artifact");
        ok = false;
    }
    stop_runner(runner).await;
    ok
}
