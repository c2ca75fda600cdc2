//! The request loop with a test executor against `podrunner-coordinator-mock`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use podrunner_coordinator::wire::StepName;
use podrunner_coordinator::{FailureReason, Job, JobCancel, JobLogConfig, JobOutcome, LogWriter};
use podrunner_coordinator_mock::{JobState, MockCoordinator, MockJob};
use podrunner_daemon::{
    Daemon, DaemonSettings, Executor, ExecutorRegistry, RunnerContext, RunnerSettings,
    RunningDaemon,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// Interprets script lines like a tiny shell: `echo TEXT`, `sleep MS` (stops on cancel),
/// `print TEXT` and `pause MS` (like echo without a newline and sleep, without echoing the
/// command),
/// `exit N`, `system-fail MSG`. Runs `after_script` (echo only) unless aborted. Records how many
/// jobs run at once, overall and per value of the job variable `SIDE`.
#[derive(Default)]
struct ShellSim {
    /// While set, `ready` refuses with this reason.
    not_ready: Mutex<Option<String>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    per_side: Mutex<HashMap<String, (usize, usize)>>,
    /// The jobs `clean_up_left_job` was asked about.
    cleaned_up: Mutex<Vec<u64>>,
    /// Marks the log after each script line and resumes after the marked line.
    resumable: bool,
    /// The positions jobs were resumed from.
    resumed_from: Mutex<Vec<Option<serde_json::Value>>>,
}

impl ShellSim {
    fn enter(&self, side: &str) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let mut m = self.per_side.lock().expect("lock");
        let e = m.entry(side.to_owned()).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
    }

    fn leave(&self, side: &str) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        if let Some(e) = self.per_side.lock().expect("lock").get_mut(side) {
            e.0 -= 1;
        }
    }

    fn max_for(&self, side: &str) -> usize {
        self.per_side.lock().expect("lock").get(side).map_or(0, |e| e.1)
    }

    async fn script(
        &self,
        lines: &[String],
        from: usize,
        log: &LogWriter,
        cancel: &JobCancel,
    ) -> JobOutcome {
        for (i, line) in lines.iter().enumerate().skip(from) {
            if self.resumable && i > from {
                log.mark(serde_json::json!({ "line": i }));
            }
            let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            if !matches!(cmd, "print" | "pause") {
                log.writeln(&format!("$ {line}"));
            }
            match cmd {
                "echo" => log.writeln(arg),
                "print" => log.write(arg.as_bytes()),
                "sleep" | "pause" => {
                    let ms = arg.parse().unwrap_or(0);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        () = cancel.requested().cancelled() => return JobOutcome::Canceled,
                    }
                }
                "exit" => {
                    let code = arg.parse().unwrap_or(1);
                    if code != 0 {
                        return JobOutcome::ScriptFailure { exit_code: code };
                    }
                    return JobOutcome::Success;
                }
                "system-fail" => {
                    return JobOutcome::system(FailureReason::RunnerSystemFailure, arg);
                }
                _ => return JobOutcome::ScriptFailure { exit_code: 127 },
            }
        }
        JobOutcome::Success
    }
}

impl Executor for ShellSim {
    fn clean_up_left_job(
        &self,
        _runner: &RunnerContext,
        job_id: u64,
        _job: Option<Arc<Job>>,
    ) -> BoxFuture<'_, Result<Vec<String>, String>> {
        self.cleaned_up.lock().expect("lock").push(job_id);
        Box::pin(async move { Ok(vec![format!("the sandbox of job {job_id}")]) })
    }

    fn ready(&self, _runner: &RunnerContext) -> BoxFuture<'_, Result<(), String>> {
        let reason = self.not_ready.lock().expect("lock").clone();
        Box::pin(async move { reason.map_or(Ok(()), Err) })
    }

    fn can_resume(&self) -> bool {
        self.resumable
    }

    fn resume(
        &self,
        runner: &RunnerContext,
        job: Arc<Job>,
        log: LogWriter,
        cancel: JobCancel,
        position: Option<serde_json::Value>,
    ) -> BoxFuture<'_, JobOutcome> {
        self.resumed_from.lock().expect("lock").push(position.clone());
        let from = position.and_then(|p| p["line"].as_u64()).unwrap_or(0);
        self.run_from(runner, job, log, cancel, usize::try_from(from).unwrap_or(0))
    }

    fn run(
        &self,
        runner: &RunnerContext,
        job: Arc<Job>,
        log: LogWriter,
        cancel: JobCancel,
    ) -> BoxFuture<'_, JobOutcome> {
        self.run_from(runner, job, log, cancel, 0)
    }
}

impl ShellSim {
    fn run_from(
        &self,
        _runner: &RunnerContext,
        job: Arc<Job>,
        log: LogWriter,
        cancel: JobCancel,
        from: usize,
    ) -> BoxFuture<'_, JobOutcome> {
        Box::pin(async move {
            let side = job
                .variable("SIDE")
                .map(|v| v.value.expose_secret().to_owned())
                .unwrap_or_default();
            self.enter(&side);
            let script = job.step(&StepName::Script).map(|s| s.script.clone()).unwrap_or_default();
            let outcome = self.script(&script, from, &log, &cancel).await;
            if !cancel.is_aborted()
                && let Some(after) = job.step(&StepName::AfterScript)
            {
                for line in &after.script {
                    if let Some(text) = line.strip_prefix("echo ") {
                        log.writeln(text);
                    }
                }
            }
            self.leave(&side);
            outcome
        })
    }
}

fn runner(name: &str, mock: &MockCoordinator) -> RunnerSettings {
    let mut r =
        RunnerSettings::new(name, mock.url(), SecretString::from(mock.runner_token()), "shell-sim");
    r.job_log = JobLogConfig {
        update_interval: Duration::from_millis(20),
        // A silent job learns about `canceling` from the touch (as in gitlab-runner).
        force_send_interval: Duration::from_millis(100),
        retry_min_delay: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(100),
        ..JobLogConfig::default()
    };
    r.unhealthy_requests_limit = 1000;
    r
}

fn settings(runners: Vec<RunnerSettings>) -> DaemonSettings {
    let mut s = DaemonSettings::new(runners);
    s.check_interval = Duration::from_millis(20);
    s.shutdown_timeout = Duration::from_secs(5);
    s
}

fn registry(sim: &Arc<ShellSim>) -> ExecutorRegistry {
    ExecutorRegistry::new().with("shell-sim", Arc::clone(sim) as Arc<dyn Executor>)
}

/// A daemon started with `settings` and a fresh shell-simulating executor.
struct Started {
    sim: Arc<ShellSim>,
    shutdown: CancellationToken,
    daemon: RunningDaemon,
}

async fn start(settings: DaemonSettings) -> Started {
    start_with(Arc::new(ShellSim::default()), settings).await
}

/// A daemon started with `settings` and the given executor (set up before the start).
async fn start_with(sim: Arc<ShellSim>, settings: DaemonSettings) -> Started {
    let shutdown = CancellationToken::new();
    let daemon = Daemon::new(settings, &registry(&sim))
        .expect("daemon")
        .start(shutdown.clone())
        .await
        .expect("start");
    Started { sim, shutdown, daemon }
}

async fn wait_all(jobs: &[podrunner_coordinator_mock::JobHandle]) {
    for j in jobs {
        let s = j.wait_finished(WAIT).await;
        assert!(
            matches!(s, JobState::Success | JobState::Failed | JobState::Canceled),
            "job {} ended: {s:?}",
            j.id()
        );
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream =
        tokio::net::TcpStream::connect(addr).await.expect("connect to the metrics listener");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("send request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read response");
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn two_runners_share_the_global_concurrent_limit() {
    let (a, b) = (MockCoordinator::start().await, MockCoordinator::start().await);
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(
            a.enqueue(
                &MockJob::new(format!("a{i}"))
                    .variable("SIDE", "a")
                    .script(&["sleep 150", "echo done"]),
            ),
        );
        jobs.push(
            b.enqueue(
                &MockJob::new(format!("b{i}"))
                    .variable("SIDE", "b")
                    .script(&["sleep 150", "echo done"]),
            ),
        );
    }
    let mut s = settings(vec![runner("a", &a), runner("b", &b)]);
    s.concurrent = 2;
    let Started { sim, shutdown, daemon } = start(s).await;
    wait_all(&jobs).await;
    shutdown.cancel();
    let report = daemon.wait().await;
    assert_eq!(report.jobs_reported, 6);
    assert!(jobs.iter().all(|j| j.state() == JobState::Success));
    assert_eq!(sim.max_running.load(Ordering::SeqCst), 2, "concurrent = 2 is used and respected");
}

#[tokio::test]
async fn runner_limit_caps_its_jobs_even_with_several_request_workers() {
    let mock = MockCoordinator::start().await;
    let jobs: Vec<_> = (0..3)
        .map(|i| {
            mock.enqueue(
                &MockJob::new(format!("j{i}")).variable("SIDE", "x").script(&["sleep 100"]),
            )
        })
        .collect();
    let mut r = runner("limited", &mock);
    r.limit = 1;
    r.request_concurrency = 3;
    let mut s = settings(vec![r]);
    s.concurrent = 5;
    let Started { sim, shutdown, daemon } = start(s).await;
    wait_all(&jobs).await;
    shutdown.cancel();
    daemon.wait().await;
    assert_eq!(sim.max_for("x"), 1);
}

#[tokio::test]
async fn outcomes_are_reported_with_exit_code_and_failure_reason() {
    let mock = MockCoordinator::start().await;
    let ok = mock.enqueue(&MockJob::new("ok").script(&["echo hello"]));
    let fail = mock.enqueue(&MockJob::new("fail").script(&["echo bye", "exit 3"]));
    let sys = mock.enqueue(&MockJob::new("sys").script(&["system-fail node gone"]));
    let mut s = settings(vec![runner("r", &mock)]);
    s.concurrent = 3;
    let Started { shutdown, daemon, .. } = start(s).await;
    wait_all(&[ok.clone(), fail.clone(), sys.clone()]).await;
    shutdown.cancel();
    daemon.wait().await;
    assert_eq!(ok.state(), JobState::Success);
    let trace = String::from_utf8_lossy(&ok.trace()).into_owned();
    assert!(trace.starts_with("\x1b[1mRunning with podrunner"), "{trace}");
    assert!(trace.contains("hello\n") && trace.contains("Job succeeded"));
    let f = fail.final_update().expect("final update");
    assert_eq!(
        (f.state.as_str(), f.exit_code, f.failure_reason.as_deref()),
        ("failed", Some(3), Some("script_failure"))
    );
    assert!(
        String::from_utf8_lossy(&fail.trace())
            .contains("ERROR: Job failed: command terminated with exit code 3")
    );
    let f = sys.final_update().expect("final update");
    assert_eq!((f.exit_code, f.failure_reason.as_deref()), (None, Some("runner_system_failure")));
    assert!(String::from_utf8_lossy(&sys.trace()).contains("(system failure): node gone"));
}

#[tokio::test]
async fn graceful_shutdown_lets_running_jobs_finish_and_takes_no_new_job() {
    let mock = MockCoordinator::start().await;
    let running = mock.enqueue(&MockJob::new("long").script(&["sleep 400", "echo finished"]));
    let Started { shutdown, daemon, .. } = start(settings(vec![runner("r", &mock)])).await;
    assert!(running.wait_trace_contains(b"$ sleep 400", WAIT).await);
    let started = Instant::now();
    shutdown.cancel();
    let later = mock.enqueue(&MockJob::new("later"));
    let report = daemon.wait().await;
    assert!(started.elapsed() >= Duration::from_millis(250), "waited for the running job");
    assert_eq!((report.jobs_reported, report.jobs_interrupted, report.jobs_abandoned), (1, 0, 0));
    assert_eq!(running.state(), JobState::Success);
    assert!(String::from_utf8_lossy(&running.trace()).contains("finished\n"));
    assert_eq!(later.state(), JobState::Pending, "no job is taken after shutdown");
}

#[tokio::test]
async fn jobs_outliving_the_shutdown_timeout_are_canceled_as_runner_interrupted() {
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(
        &MockJob::new("endless")
            .script(&["sleep 60000"])
            .after_script(&["echo after"])
            .failure_reasons(&["script_failure", "runner_interrupted"]),
    );
    let mut s = settings(vec![runner("r", &mock)]);
    s.shutdown_timeout = Duration::from_millis(200);
    let Started { shutdown, daemon, .. } = start(s).await;
    assert!(job.wait_trace_contains(b"$ sleep 60000", WAIT).await);
    shutdown.cancel();
    let report = daemon.wait().await;
    assert_eq!((report.jobs_interrupted, report.jobs_reported), (1, 1));
    let f = job.final_update().expect("final update");
    assert_eq!(
        (f.state.as_str(), f.failure_reason.as_deref()),
        ("failed", Some("runner_interrupted"))
    );
    let trace = String::from_utf8_lossy(&job.trace()).into_owned();
    assert!(trace.contains("the runner is shutting down"), "{trace}");
    assert!(trace.contains("after\n"), "a job canceled at shutdown runs after_script: {trace}");
}

#[tokio::test]
async fn a_job_abort_at_a_second_signal_skips_after_script_and_is_reported_interrupted() {
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(
        &MockJob::new("endless")
            .script(&["sleep 60000"])
            .after_script(&["echo after"])
            .failure_reasons(&["script_failure", "runner_interrupted"]),
    );
    let mut s = settings(vec![runner("r", &mock)]);
    s.shutdown_timeout = Duration::from_secs(60);
    let Started { shutdown, daemon, .. } = start(s).await;
    assert!(job.wait_trace_contains(b"$ sleep 60000", WAIT).await);
    shutdown.cancel();
    let started = Instant::now();
    daemon.job_abort().cancel();
    let report = daemon.wait().await;
    assert!(started.elapsed() < Duration::from_secs(10), "not after the shutdown timeout");
    assert_eq!((report.jobs_interrupted, report.jobs_reported, report.jobs_abandoned), (1, 1, 0));
    let f = job.final_update().expect("final update");
    assert_eq!(f.failure_reason.as_deref(), Some("runner_interrupted"));
    let trace = String::from_utf8_lossy(&job.trace()).into_owned();
    assert!(trace.contains("the runner is stopping at once, aborting the job"), "{trace}");
    assert!(!trace.contains("after\n"), "an aborted job skips after_script: {trace}");
}

#[tokio::test]
async fn graceful_cancel_from_gitlab_still_runs_after_script() {
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(
        &MockJob::new("cancel").script(&["sleep 60000"]).after_script(&["echo cleaned up"]),
    );
    let Started { shutdown, daemon, .. } = start(settings(vec![runner("r", &mock)])).await;
    assert!(job.wait_trace_contains(b"$ sleep 60000", WAIT).await);
    job.cancel_gracefully();
    assert_eq!(job.wait_finished(WAIT).await, JobState::Canceled);
    let trace = String::from_utf8_lossy(&job.trace()).into_owned();
    assert!(trace.contains("cleaned up\n"), "{trace}");
    assert!(trace.contains("ERROR: Job failed: canceled"));
    shutdown.cancel();
    daemon.wait().await;
}

#[tokio::test]
async fn job_timeout_aborts_the_job_with_job_execution_timeout() {
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(&MockJob::new("slow").script(&["sleep 60000"]).timeout(1));
    let Started { shutdown, daemon, .. } = start(settings(vec![runner("r", &mock)])).await;
    assert_eq!(job.wait_finished(WAIT).await, JobState::Failed);
    let f = job.final_update().expect("final update");
    assert_eq!(f.failure_reason.as_deref(), Some("job_execution_timeout"));
    shutdown.cancel();
    daemon.wait().await;
}

#[tokio::test]
async fn runner_with_an_unknown_executor_refuses_to_start() {
    let mock = MockCoordinator::start().await;
    let mut r = runner("r", &mock);
    r.executor = "docker".to_owned();
    let err = Daemon::new(settings(vec![r]), &registry(&Arc::new(ShellSim::default())))
        .expect_err("refused");
    assert_eq!(err.kind(), "unknown_executor");
    assert!(err.to_string().contains("\"docker\""), "{err}");
    assert_eq!(mock.job_request_calls(), 0, "no job was requested");
}

#[tokio::test]
async fn metrics_and_health_endpoints_report_jobs_and_api_statuses() {
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(&MockJob::new("m"));
    let mut s = settings(vec![runner("metrics-runner", &mock)]);
    s.listen_address = Some("127.0.0.1:0".to_owned());
    let Started { shutdown, daemon, .. } = start(s).await;
    let addr = daemon.metrics_addr().expect("listener bound");
    job.wait_finished(WAIT).await;
    // The counters are updated right after the final update; give the task a moment.
    let mut body = String::new();
    for _ in 0..100 {
        body = http_get(addr, "/metrics").await.1;
        if body.contains(
            "podrunner_jobs_finished_total{runner=\"metrics-runner\",state=\"success\"} 1",
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for needle in [
        "gitlab_runner_jobs_total{runner=\"metrics-runner\"} 1",
        "gitlab_runner_jobs{runner=\"metrics-runner\"} 0",
        "podrunner_jobs_finished_total{runner=\"metrics-runner\",state=\"success\"} 1",
        "gitlab_runner_api_request_statuses_total{runner=\"metrics-runner\",endpoint=\"request_job\",status=\"201\"} 1",
        "gitlab_runner_api_request_statuses_total{runner=\"metrics-runner\",endpoint=\"update_job\",status=\"200\"}",
        "gitlab_runner_api_request_duration_seconds_bucket{",
        "gitlab_runner_concurrent 1",
    ] {
        assert!(body.contains(needle), "missing {needle} in:\n{body}");
    }
    assert_eq!(http_get(addr, "/health").await, (200, "ok\n".to_owned()));
    shutdown.cancel();
    daemon.wait().await;
}

#[tokio::test]
async fn coordinator_outage_is_survived_and_counted() {
    let mock = MockCoordinator::start().await;
    mock.set_down(true);
    let mut s = settings(vec![runner("r", &mock)]);
    s.listen_address = Some("127.0.0.1:0".to_owned());
    let Started { shutdown, daemon, .. } = start(s).await;
    let addr = daemon.metrics_addr().expect("listener bound");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let job = mock.enqueue(&MockJob::new("after-outage"));
    mock.set_down(false);
    assert_eq!(job.wait_finished(WAIT).await, JobState::Success);
    let body = http_get(addr, "/metrics").await.1;
    assert!(
        body.contains("podrunner_job_request_errors_total{runner=\"r\",kind=\"transport\"}"),
        "{body}"
    );
    shutdown.cancel();
    daemon.wait().await;
}

#[tokio::test]
async fn reload_adds_and_removes_runners_while_running_jobs_go_on() {
    let (a, b) = (MockCoordinator::start().await, MockCoordinator::start().await);
    let long = a.enqueue(&MockJob::new("long").script(&["sleep 400", "echo end of long"]));
    let mut s = settings(vec![runner("a", &a)]);
    s.concurrent = 4;
    let Started { shutdown, daemon, .. } = start(s).await;
    assert!(long.wait_trace_contains(b"$ sleep 400", WAIT).await);
    let mut s = settings(vec![runner("b", &b)]);
    s.concurrent = 4;
    let report = daemon.reload(s).await.expect("reload");
    assert_eq!((report.added, report.removed), (vec!["b".to_owned()], vec!["a".to_owned()]));
    let on_b = b.enqueue(&MockJob::new("on-b"));
    assert_eq!(on_b.wait_finished(WAIT).await, JobState::Success);
    assert_eq!(
        long.wait_finished(WAIT).await,
        JobState::Success,
        "the removed runner's job finished"
    );
    let on_a = a.enqueue(&MockJob::new("on-a"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(on_a.state(), JobState::Pending, "a removed runner takes no job");
    shutdown.cancel();
    daemon.wait().await;
}

#[tokio::test]
async fn invalid_reload_keeps_the_old_settings() {
    let mock = MockCoordinator::start().await;
    let Started { shutdown, daemon, .. } = start(settings(vec![runner("r", &mock)])).await;
    let mut bad = runner("r", &mock);
    bad.executor = "docker".to_owned();
    let err = daemon.reload(settings(vec![bad])).await.expect_err("unknown executor is refused");
    assert_eq!(err.kind(), "unknown_executor");
    let job = mock.enqueue(&MockJob::new("still-served"));
    assert_eq!(job.wait_finished(WAIT).await, JobState::Success);
    let report = daemon.reload(settings(vec![runner("r", &mock)])).await.expect("same settings");
    assert_eq!(report.unchanged, ["r"]);
    shutdown.cancel();
    daemon.wait().await;
}

#[tokio::test]
async fn reload_raises_concurrent_for_waiting_jobs() {
    let mock = MockCoordinator::start().await;
    let jobs: Vec<_> = (0..2)
        .map(|i| mock.enqueue(&MockJob::new(format!("j{i}")).script(&["sleep 500"])))
        .collect();
    let mut r = runner("r", &mock);
    r.request_concurrency = 2;
    let Started { sim, shutdown, daemon } = start(settings(vec![r])).await;
    assert!(jobs[0].wait_trace_contains(b"$ sleep 500", WAIT).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sim.running.load(Ordering::SeqCst), 1, "concurrent = 1");
    let mut r = runner("r", &mock);
    r.request_concurrency = 2;
    let mut s = settings(vec![r]);
    s.concurrent = 2;
    let report = daemon.reload(s).await.expect("reload");
    assert_eq!(report.unchanged, ["r"]);
    assert!(jobs[1].wait_trace_contains(b"$ sleep 500", WAIT).await);
    assert_eq!(
        sim.max_running.load(Ordering::SeqCst),
        2,
        "the second job started before the first ended"
    );
    wait_all(&jobs).await;
    shutdown.cancel();
    daemon.wait().await;
}

#[tokio::test]
async fn daemon_without_runners_idles_until_a_reload_adds_one() {
    let mock = MockCoordinator::start().await;
    let mut s = settings(Vec::new());
    s.listen_address = Some("127.0.0.1:0".to_owned());
    let Started { shutdown, daemon, .. } = start(s).await;
    let addr = daemon.metrics_addr().expect("listener bound");
    let job = mock.enqueue(&MockJob::new("waits-for-a-runner"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(mock.job_request_calls(), 0, "no runner, no request");
    assert_eq!(http_get(addr, "/health").await.0, 200);
    let report = daemon.reload(settings(vec![runner("r", &mock)])).await.expect("reload");
    assert_eq!(report.added, ["r"]);
    assert_eq!(job.wait_finished(WAIT).await, JobState::Success);
    let report = daemon.reload(settings(Vec::new())).await.expect("reload to no runner");
    assert_eq!(report.removed, ["r"]);
    // Let a request that was already in flight at the reload end.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let calls = mock.job_request_calls();
    let later = mock.enqueue(&MockJob::new("nobody-takes-it"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(later.state(), JobState::Pending);
    assert_eq!(mock.job_request_calls(), calls, "requests stopped after the runner was removed");
    shutdown.cancel();
    daemon.wait().await;
}

/// The trace after the daemon's "Running with ..." header.
fn job_output(trace: &[u8], runner: &str) -> String {
    let trace = String::from_utf8_lossy(trace).into_owned();
    let header_end = format!("  on {runner}\x1b[0;m\n");
    match trace.split_once(&header_end) {
        Some((_, rest)) => rest.to_owned(),
        None => panic!("no header in {trace:?}"),
    }
}

#[tokio::test]
async fn coordinator_down_during_a_job_loses_and_duplicates_no_log_bytes() {
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(&MockJob::new("outage").script(&[
        "echo before the outage",
        "sleep 400",
        "echo during the outage",
        "sleep 400",
        "echo after the outage",
    ]));
    let Started { shutdown, daemon, .. } = start(settings(vec![runner("r", &mock)])).await;
    assert!(job.wait_trace_contains(b"before the outage\n", WAIT).await);
    mock.set_down(true);
    tokio::time::sleep(Duration::from_millis(600)).await;
    mock.set_down(false);
    assert_eq!(job.wait_finished(WAIT).await, JobState::Success);
    assert_eq!(
        job_output(&job.trace(), "r"),
        "$ echo before the outage\nbefore the outage\n$ sleep 400\n\
         $ echo during the outage\nduring the outage\n$ sleep 400\n\
         $ echo after the outage\nafter the outage\n\x1b[32;1mJob succeeded\x1b[0;m\n",
        "the final trace is exactly what the job printed"
    );
    assert!(
        mock.requests().iter().filter(|r| r.path.ends_with("/trace")).count() >= 2,
        "the trace went out in several patches"
    );
    shutdown.cancel();
    daemon.wait().await;
}

#[tokio::test]
async fn masked_value_printed_in_two_pieces_never_reaches_the_coordinator() {
    let mock = MockCoordinator::start().await;
    let secret = "Sup3r-S3cret-Value";
    let job = mock.enqueue(&MockJob::new("mask").masked_variable("PASSWORD", secret).script(&[
        "print <Sup3r-S3",
        "pause 150",
        "print cret-Value>\n",
    ]));
    let Started { shutdown, daemon, .. } = start(settings(vec![runner("r", &mock)])).await;
    assert_eq!(job.wait_finished(WAIT).await, JobState::Success);
    let output = job_output(&job.trace(), "r");
    assert!(output.starts_with("<[MASKED]>\n"), "{output:?}");
    for p in job.patches() {
        assert!(
            !p.body.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is in a patch"
        );
    }
    shutdown.cancel();
    daemon.wait().await;
}

#[tokio::test]
async fn no_job_is_requested_while_the_executor_is_not_ready_and_the_metric_says_so() {
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(&MockJob::new("waits"));
    let sim = Arc::new(ShellSim::default());
    *sim.not_ready.lock().expect("lock") = Some(
        "the kubernetes api server at https://k8s.example:6443 could not be reached".to_owned(),
    );
    let mut s = settings(vec![runner("gated", &mock)]);
    s.listen_address = Some("127.0.0.1:0".to_owned());
    let Started { shutdown, daemon, .. } = start_with(Arc::clone(&sim), s).await;
    let addr = daemon.metrics_addr().expect("listener bound");
    // Fifteen check intervals.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.job_request_calls(), 0, "no job is requested while the executor cannot run it");
    assert_eq!(job.state(), JobState::Pending);
    let body = http_get(addr, "/metrics").await.1;
    assert!(body.contains("podrunner_executor_ready{runner=\"gated\"} 0"), "{body}");
    *sim.not_ready.lock().expect("lock") = None;
    assert_eq!(job.wait_finished(WAIT).await, JobState::Success);
    let body = http_get(addr, "/metrics").await.1;
    assert!(body.contains("podrunner_executor_ready{runner=\"gated\"} 1"), "{body}");
    shutdown.cancel();
    daemon.wait().await;
}

#[test]
fn a_job_left_by_a_killed_process_is_failed_at_the_next_start_after_its_log() {
    let state = tempfile::tempdir().expect("state dir");
    let outer = tokio::runtime::Runtime::new().expect("runtime");
    let mock = outer.block_on(MockCoordinator::start());
    let job = mock.enqueue(&MockJob::new("left").script(&["echo before", "sleep 600000"]));
    let with_state = |mock: &MockCoordinator| {
        let mut s = settings(vec![runner("r", mock)]);
        s.state_dir = Some(state.path().to_path_buf());
        s
    };
    // The first process runs the job and dies with its runtime, as with SIGKILL: no cleanup,
    // no final update.
    let first = tokio::runtime::Runtime::new().expect("runtime");
    first.block_on(async {
        let Started { daemon, .. } = start(with_state(&mock)).await;
        assert!(job.wait_trace_contains(b"$ sleep 600000", WAIT).await);
        std::mem::forget(daemon);
    });
    first.shutdown_background();
    let saved = state.path().join(format!("job-{}.json", job.id()));
    assert!(saved.exists(), "the killed process left its journal entry");
    assert_eq!(job.state(), JobState::Running);
    outer.block_on(async {
        let sim = Arc::new(ShellSim::default());
        let Started { shutdown, daemon, .. } = start_with(Arc::clone(&sim), with_state(&mock)).await;
        assert_eq!(job.wait_finished(WAIT).await, JobState::Failed);
        let f = job.final_update().expect("final update");
        assert_eq!(f.failure_reason.as_deref(), Some("runner_system_failure"));
        assert_eq!(f.checksum, None, "the new process does not know the earlier log's bytes");
        let trace = String::from_utf8_lossy(&job.trace()).into_owned();
        let expected = format!(
            "$ echo before\nbefore\n$ sleep 600000\n\n\x1b[31;1mERROR: Job failed (system failure): the runner process that ran this job (pid {}) ended before the job did; the runner process started after it deleted the sandbox of job {}\x1b[0;m\n",
            std::process::id(),
            job.id()
        );
        assert!(trace.ends_with(&expected), "the line comes after the earlier log:\n{trace:?}");
        assert_eq!(*sim.cleaned_up.lock().expect("lock"), [job.id()]);
        let deadline = Instant::now() + WAIT;
        while saved.exists() {
            assert!(Instant::now() < deadline, "the entry is removed once reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        daemon.wait().await;
    });
}

#[tokio::test]
async fn a_job_ending_while_gitlab_is_down_is_reported_once_it_is_back() {
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(&MockJob::new("end-in-outage").script(&["echo working", "sleep 200"]));
    let Started { shutdown, daemon, .. } = start(settings(vec![runner("r", &mock)])).await;
    assert!(job.wait_trace_contains(b"$ sleep 200", WAIT).await);
    mock.set_down(true);
    // The job ends 200 ms into the outage; its final update fails until GitLab is back.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(job.state(), JobState::Running, "GitLab heard nothing during the outage");
    mock.set_down(false);
    assert_eq!(job.wait_finished(WAIT).await, JobState::Success);
    assert_eq!(
        job_output(&job.trace(), "r"),
        "$ echo working\nworking\n$ sleep 200\n\x1b[32;1mJob succeeded\x1b[0;m\n"
    );
    shutdown.cancel();
    let report = daemon.wait().await;
    assert_eq!((report.jobs_reported, report.jobs_report_failed), (1, 0));
}

#[tokio::test]
async fn a_final_state_gitlab_did_not_take_is_sent_by_the_next_start_with_the_rest_of_the_log() {
    let state = tempfile::tempdir().expect("state dir");
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(&MockJob::new("unreported").script(&[
        "echo early",
        "sleep 300",
        "echo late",
        "exit 3",
    ]));
    let with_state = |mock: &MockCoordinator| {
        let mut s = settings(vec![runner("r", mock)]);
        s.state_dir = Some(state.path().to_path_buf());
        s
    };
    let Started { shutdown, daemon, .. } = start(with_state(&mock)).await;
    assert!(job.wait_trace_contains(b"early\n", WAIT).await);
    // Down before "late" is printed and until the final update's retries are spent.
    mock.set_down(true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    shutdown.cancel();
    let report = daemon.wait().await;
    assert_eq!(report.jobs_report_failed, 1, "the final update ran out of retries");
    let saved = state.path().join(format!("job-{}.json", job.id()));
    assert!(saved.exists(), "kept for the next start");
    assert_eq!(job.state(), JobState::Running);
    mock.set_down(false);
    let Started { shutdown, daemon, .. } = start(with_state(&mock)).await;
    assert_eq!(job.wait_finished(WAIT).await, JobState::Failed);
    let f = job.final_update().expect("final update");
    assert_eq!((f.failure_reason.as_deref(), f.checksum), (Some("script_failure"), None));
    assert_eq!(
        job_output(&job.trace(), "r"),
        "$ echo early\nearly\n$ sleep 300\n$ echo late\nlate\n$ exit 3\n\
         \x1b[31;1mERROR: Job failed: command terminated with exit code 3\x1b[0;m\n",
        "the log is whole: the part GitLab missed came from the state directory"
    );
    let deadline = Instant::now() + WAIT;
    while saved.exists() {
        assert!(Instant::now() < deadline, "the entry is removed once reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!state.path().join(format!("job-{}.trace", job.id())).exists());
    shutdown.cancel();
    daemon.wait().await;
}

/// Runs the first process of a runner with a state directory in its own runtime until
/// `until` holds, then drops that runtime as SIGKILL would: no cleanup, no final update.
fn kill_first_process(
    state: &std::path::Path,
    mock: &MockCoordinator,
    until: impl std::future::Future<Output = ()>,
) {
    let first = tokio::runtime::Runtime::new().expect("runtime");
    first.block_on(async {
        let sim = Arc::new(ShellSim { resumable: true, ..ShellSim::default() });
        let mut s = settings(vec![runner("r", mock)]);
        s.state_dir = Some(state.to_path_buf());
        let Started { daemon, .. } = start_with(sim, s).await;
        until.await;
        std::mem::forget(daemon);
    });
    first.shutdown_background();
}

#[test]
fn a_job_left_by_a_killed_process_is_resumed_after_its_last_mark_and_finishes_whole() {
    let state = tempfile::tempdir().expect("state dir");
    let outer = tokio::runtime::Runtime::new().expect("runtime");
    let mock = outer.block_on(MockCoordinator::start());
    let job =
        mock.enqueue(&MockJob::new("resumed").masked_variable("SECRET", "s3cr3tvalue").script(&[
            "echo before s3cr3tvalue",
            "sleep 500",
            "echo after",
            "exit 4",
        ]));
    kill_first_process(state.path(), &mock, async {
        assert!(job.wait_trace_contains(b"before [MASKED]\n", WAIT).await);
    });
    assert_eq!(job.state(), JobState::Running);
    let checkpoint = state.path().join(format!("job-{}.checkpoint", job.id()));
    assert!(checkpoint.exists(), "the killed process saved a checkpoint");
    let saved = std::fs::read(&checkpoint).expect("checkpoint");
    assert!(
        !String::from_utf8_lossy(&saved).contains("s3cr3tvalue"),
        "the checkpoint's trace is masked"
    );
    let gitlab_had = job.trace().len();
    outer.block_on(async {
        let sim = Arc::new(ShellSim { resumable: true, ..ShellSim::default() });
        let mut s = settings(vec![runner("r", &mock)]);
        s.state_dir = Some(state.path().to_path_buf());
        let Started { shutdown, daemon, .. } = start_with(Arc::clone(&sim), s).await;
        assert_eq!(job.wait_finished(WAIT).await, JobState::Failed);
        assert_eq!(*sim.resumed_from.lock().expect("lock"), [Some(serde_json::json!({"line": 1}))]);
        assert!(sim.cleaned_up.lock().expect("lock").is_empty(), "nothing was deleted");
        let f = job.final_update().expect("final update");
        assert_eq!((f.failure_reason.as_deref(), f.exit_code), (Some("script_failure"), Some(4)));
        let trace = job.trace();
        assert_eq!(
            f.checksum.as_deref(),
            Some(format!("crc32:{:08x}", crc32fast::hash(&trace)).as_str()),
            "the checksum covers the whole log, the earlier process's part included"
        );
        assert_eq!(
            job_output(&trace, "r"),
            format!(
                "$ echo before [MASKED]\nbefore [MASKED]\n\
                 \x1b[0;33mWARNING: the runner process that ran this job (pid {pid}) ended before the job did; runner process {pid} resumes it where GitLab's log of it ends (byte {gitlab_had})\x1b[0;m\n\
                 $ sleep 500\n$ echo after\nafter\n$ exit 4\n\
                 \x1b[31;1mERROR: Job failed: command terminated with exit code 4\x1b[0;m\n",
                pid = std::process::id()
            ),
            "every line once, in order"
        );
        let entry = state.path().join(format!("job-{}.json", job.id()));
        let deadline = Instant::now() + WAIT;
        while entry.exists() || checkpoint.exists() {
            assert!(Instant::now() < deadline, "the journal forgets the job once reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        daemon.wait().await;
    });
}

#[test]
fn a_job_that_ended_before_its_process_was_killed_is_only_reported_by_the_next_start() {
    let state = tempfile::tempdir().expect("state dir");
    let outer = tokio::runtime::Runtime::new().expect("runtime");
    let mock = outer.block_on(MockCoordinator::start());
    let job =
        mock.enqueue(&MockJob::new("ended").script(&["echo working", "pause 300", "echo done"]));
    kill_first_process(state.path(), &mock, async {
        assert!(job.wait_trace_contains(b"working\n", WAIT).await);
        // GitLab goes away before the job ends; the process is killed while it retries.
        mock.set_down(true);
        tokio::time::sleep(Duration::from_millis(700)).await;
    });
    assert_eq!(job.state(), JobState::Running);
    mock.set_down(false);
    outer.block_on(async {
        let sim = Arc::new(ShellSim { resumable: true, ..ShellSim::default() });
        let mut s = settings(vec![runner("r", &mock)]);
        s.state_dir = Some(state.path().to_path_buf());
        let Started { shutdown, daemon, .. } = start_with(Arc::clone(&sim), s).await;
        assert_eq!(job.wait_finished(WAIT).await, JobState::Success);
        assert!(sim.resumed_from.lock().expect("lock").is_empty(), "the executor is not run again");
        let trace = job.trace();
        let output = job_output(&trace, "r");
        assert_eq!(
            output,
            format!(
                "$ echo working\nworking\n$ echo done\ndone\n\x1b[32;1mJob succeeded\x1b[0;m\n\
                 \x1b[0;33mWARNING: the runner process that ran this job (pid {pid}) ended before GitLab took the job's final state; runner process {pid} sends it\x1b[0;m\n",
                pid = std::process::id()
            )
        );
        let f = job.final_update().expect("final update");
        assert_eq!(
            f.checksum.as_deref(),
            Some(format!("crc32:{:08x}", crc32fast::hash(&trace)).as_str())
        );
        shutdown.cancel();
        daemon.wait().await;
    });
}

#[tokio::test]
async fn a_job_handed_over_at_shutdown_is_resumed_by_the_next_process() {
    let state = tempfile::tempdir().expect("state dir");
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(&MockJob::new("handed").script(&["echo one", "sleep 400", "echo two"]));
    let with_state = |mock: &MockCoordinator| {
        let mut s = settings(vec![runner("r", mock)]);
        s.state_dir = Some(state.path().to_path_buf());
        s
    };
    let sim = Arc::new(ShellSim { resumable: true, ..ShellSim::default() });
    let Started { shutdown, daemon, .. } = start_with(Arc::clone(&sim), with_state(&mock)).await;
    assert!(job.wait_trace_contains(b"one\n", WAIT).await);
    daemon.job_hand_over().cancel();
    shutdown.cancel();
    let metrics = daemon.metrics_handle();
    let report = tokio::time::timeout(Duration::from_secs(2), daemon.wait())
        .await
        .expect("the daemon stops at once, not after the job");
    assert_eq!((report.jobs_handed_over, report.jobs_reported), (1, 0));
    let rendered = metrics.render();
    assert!(rendered.contains("podrunner_jobs_handed_over_total{runner=\"r\"} 1"), "{rendered}");
    assert_eq!(job.state(), JobState::Running, "nothing was reported");
    assert!(state.path().join(format!("job-{}.json", job.id())).exists());
    let sim = Arc::new(ShellSim { resumable: true, ..ShellSim::default() });
    let Started { shutdown, daemon, .. } = start_with(Arc::clone(&sim), with_state(&mock)).await;
    assert_eq!(job.wait_finished(WAIT).await, JobState::Success);
    assert_eq!(*sim.resumed_from.lock().expect("lock"), [Some(serde_json::json!({"line": 1}))]);
    let rendered = daemon.metrics_handle().render();
    assert!(rendered.contains("podrunner_jobs_resumed_total{runner=\"r\"} 1"), "{rendered}");
    let output = job_output(&job.trace(), "r");
    assert!(
        output.starts_with(
            "$ echo one\none\n\x1b[0;33mWARNING: the runner process that ran this job"
        ),
        "{output:?}"
    );
    assert!(
        output.ends_with("$ sleep 400\n$ echo two\ntwo\n\x1b[32;1mJob succeeded\x1b[0;m\n"),
        "{output:?}"
    );
    shutdown.cancel();
    daemon.wait().await;
}
