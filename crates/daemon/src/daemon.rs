//! The request loop: asks GitLab for jobs for every runner within `concurrent`, `limit` and
//! `request_concurrency`, runs each job on its executor, and shuts down gracefully.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use podrunner_coordinator::{
    Client, ClientConfig, FailureReason, Job, JobLog, JobLogConfig, JobOutcome, VersionInfo,
    generate_system_id,
};
use secrecy::SecretString;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::{Error, Result};
use crate::executor::{Executor, ExecutorRegistry};
use crate::metrics::{ErrorLabels, FailureLabels, Metrics, OutcomeLabels, RunnerLabels};

/// Settings of one `[[runners]]` entry that the daemon uses.
pub struct RunnerSettings {
    /// `name` (description); also the metrics label.
    pub name: String,
    /// `url`.
    pub url: String,
    /// `token`.
    pub token: SecretString,
    /// The system id to announce; generated when `None`.
    pub system_id: Option<String>,
    /// `executor`: looked up in the [`ExecutorRegistry`].
    pub executor: String,
    /// `limit`: jobs at once for this runner; 0 means no limit.
    pub limit: usize,
    /// `request_concurrency`: job requests in flight at once (at least 1).
    pub request_concurrency: usize,
    /// `strict_check_interval`: wait `check_interval` even right after receiving a job.
    pub strict_check_interval: bool,
    /// `unhealthy_requests_limit` (at least 1; gitlab-runner's default is 3).
    pub unhealthy_requests_limit: u32,
    /// `unhealthy_interval` (gitlab-runner's default is 60 minutes).
    pub unhealthy_interval: Duration,
    /// PEM of `tls-ca-file`, read by the caller.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Job log settings: set `output_limit` from `output_limit` (KiB × 1024) and
    /// `final_update_retry_limit` from `job_status_final_update_retry_limit`.
    pub job_log: JobLogConfig,
    /// Runner labels announced in `info.labels`.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl RunnerSettings {
    /// Settings with gitlab-runner's defaults.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        token: SecretString,
        executor: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            token,
            system_id: None,
            executor: executor.into(),
            limit: 0,
            request_concurrency: 1,
            strict_check_interval: false,
            unhealthy_requests_limit: 3,
            unhealthy_interval: Duration::from_secs(3600),
            tls_ca_pem: None,
            job_log: JobLogConfig::default(),
            labels: std::collections::BTreeMap::new(),
        }
    }
}

impl fmt::Debug for RunnerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerSettings")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &"[MASKED]")
            .field("executor", &self.executor)
            .field("limit", &self.limit)
            .field("request_concurrency", &self.request_concurrency)
            .finish_non_exhaustive()
    }
}

/// Global settings of the daemon.
#[derive(Debug)]
pub struct DaemonSettings {
    /// `concurrent`: jobs at once across all runners (at least 1).
    pub concurrent: usize,
    /// `check_interval`: pause between job requests that returned no job (3 s by default).
    pub check_interval: Duration,
    /// `shutdown_timeout`: how long running jobs may go on after a shutdown request (30 s).
    pub shutdown_timeout: Duration,
    /// `listen_address` (`host:port`) for `/metrics` and `/health`; `None`: no listener.
    pub listen_address: Option<String>,
    /// The runners.
    pub runners: Vec<RunnerSettings>,
}

impl DaemonSettings {
    /// gitlab-runner's defaults: `concurrent = 1`, `check_interval = 3s`,
    /// `shutdown_timeout = 30s`, no listener.
    pub fn new(runners: Vec<RunnerSettings>) -> Self {
        Self {
            concurrent: 1,
            check_interval: Duration::from_secs(3),
            shutdown_timeout: Duration::from_secs(30),
            listen_address: None,
            runners,
        }
    }
}

/// What happened to the jobs during the daemon's life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Jobs whose final state was accepted by GitLab.
    pub jobs_reported: u64,
    /// Jobs whose final update failed.
    pub jobs_report_failed: u64,
    /// Jobs canceled because they outlived `shutdown_timeout`.
    pub jobs_interrupted: u64,
    /// Jobs still running when the daemon gave up waiting (twice `shutdown_timeout`).
    pub jobs_abandoned: u64,
}

struct Runner {
    name: String,
    client: Client,
    executor: Arc<dyn Executor>,
    limit: Arc<Semaphore>,
    request_concurrency: usize,
    strict_check_interval: bool,
    unhealthy_requests_limit: u32,
    unhealthy_interval: Duration,
    job_log: JobLogConfig,
}

/// Counts running jobs and wakes waiters when none is left.
#[derive(Default)]
struct Active {
    count: AtomicUsize,
    idle: Notify,
}

struct ActiveGuard(Arc<Active>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Active {
    fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(Arc::clone(self))
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Default)]
struct Counters {
    reported: AtomicU64,
    report_failed: AtomicU64,
    interrupted: AtomicU64,
}

struct Shared {
    metrics: Arc<Metrics>,
    global: Arc<Semaphore>,
    active: Arc<Active>,
    counters: Counters,
    /// Fires after `shutdown_timeout`: running jobs are canceled.
    interrupt: CancellationToken,
    check_interval: Duration,
}

/// The daemon, ready to start.
pub struct Daemon {
    runners: Vec<Arc<Runner>>,
    metrics: Arc<Metrics>,
    concurrent: usize,
    check_interval: Duration,
    shutdown_timeout: Duration,
    listen_address: Option<String>,
}

impl fmt::Debug for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon")
            .field("runners", &self.runners.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .field("concurrent", &self.concurrent)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Checks the settings and builds one client per runner. Does no IO.
    ///
    /// # Errors
    ///
    /// No runner, `concurrent = 0`, a runner whose executor is not in `executors` (the daemon
    /// refuses to start rather than pretend to run jobs), or a client that cannot be built.
    pub fn new(settings: DaemonSettings, executors: &ExecutorRegistry) -> Result<Self> {
        if settings.runners.is_empty() {
            return Err(Error::NoRunners);
        }
        if settings.concurrent == 0 {
            return Err(Error::ZeroConcurrent);
        }
        let metrics = Arc::new(Metrics::new());
        metrics.concurrent.set(i64::try_from(settings.concurrent).unwrap_or(i64::MAX));
        let mut runners = Vec::new();
        for r in settings.runners {
            let Some(executor) = executors.get(&r.executor) else {
                return Err(Error::UnknownExecutor {
                    runner: r.name,
                    executor: r.executor,
                    supported: executors.names().join(", "),
                });
            };
            let mut info = VersionInfo::podrunner(r.name.clone(), r.executor.clone());
            info.labels = r.labels;
            let mut config = ClientConfig::new(
                r.url,
                r.token,
                r.system_id.unwrap_or_else(generate_system_id),
                info,
            );
            config.tls_ca_pem = r.tls_ca_pem;
            config.observer = Some(metrics.observer(&r.name));
            let client = Client::new(config)
                .map_err(|source| Error::Client { runner: r.name.clone(), source })?;
            // A Semaphore holds at most `Semaphore::MAX_PERMITS`; 0 means no limit.
            let limit = if r.limit == 0 { Semaphore::MAX_PERMITS } else { r.limit };
            metrics
                .limit
                .get_or_create(&RunnerLabels { runner: r.name.clone() })
                .set(i64::try_from(r.limit).unwrap_or(i64::MAX));
            runners.push(Arc::new(Runner {
                name: r.name,
                client,
                executor,
                limit: Arc::new(Semaphore::new(limit)),
                request_concurrency: r.request_concurrency.max(1),
                strict_check_interval: r.strict_check_interval,
                unhealthy_requests_limit: r.unhealthy_requests_limit.max(1),
                unhealthy_interval: r.unhealthy_interval,
                job_log: r.job_log,
            }));
        }
        let check_interval = if settings.check_interval.is_zero() {
            Duration::from_secs(3)
        } else {
            settings.check_interval
        };
        let shutdown_timeout = if settings.shutdown_timeout.is_zero() {
            Duration::from_secs(30)
        } else {
            settings.shutdown_timeout
        };
        Ok(Self {
            runners,
            metrics,
            concurrent: settings.concurrent,
            check_interval,
            shutdown_timeout,
            listen_address: settings.listen_address,
        })
    }

    /// The daemon's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Binds the metrics listener (if any) and starts requesting jobs. The daemon runs until
    /// `shutdown` fires: then it stops requesting, lets running jobs finish for up to
    /// `shutdown_timeout`, cancels the rest (reported as `runner_interrupted`), waits up to
    /// another `shutdown_timeout` for their final updates, and ends.
    ///
    /// # Errors
    ///
    /// The metrics listener cannot be bound.
    pub async fn start(self, shutdown: CancellationToken) -> Result<RunningDaemon> {
        let healthy = Arc::new(AtomicBool::new(true));
        let http_stop = CancellationToken::new();
        let metrics_addr = match &self.listen_address {
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address.as_str())
                    .await
                    .map_err(|source| Error::Listen { address: address.clone(), source })?;
                let addr = crate::metrics::serve(
                    listener,
                    Arc::clone(&self.metrics),
                    Arc::clone(&healthy),
                    http_stop.clone(),
                )
                .await
                .map_err(|source| Error::Listen { address: address.clone(), source })?;
                info!(server.address = %addr, "metrics listener started");
                Some(addr)
            }
            None => None,
        };
        let handle = tokio::spawn(self.run(shutdown, healthy, http_stop));
        Ok(RunningDaemon { metrics_addr, handle })
    }

    async fn run(
        self,
        shutdown: CancellationToken,
        healthy: Arc<AtomicBool>,
        http_stop: CancellationToken,
    ) -> ShutdownReport {
        let shared = Arc::new(Shared {
            metrics: Arc::clone(&self.metrics),
            global: Arc::new(Semaphore::new(self.concurrent)),
            active: Arc::new(Active::default()),
            counters: Counters::default(),
            interrupt: CancellationToken::new(),
            check_interval: self.check_interval,
        });
        let mut workers = Vec::new();
        for runner in &self.runners {
            for worker in 0..runner.request_concurrency {
                let span = info_span!("runner", runner.name = %runner.name, runner.worker = worker);
                workers.push(tokio::spawn(
                    request_loop(Arc::clone(runner), Arc::clone(&shared), shutdown.clone())
                        .instrument(span),
                ));
            }
        }
        info!(runners = self.runners.len(), concurrent = self.concurrent, "daemon started");
        shutdown.cancelled().await;
        healthy.store(false, Ordering::SeqCst);
        info!("shutdown requested: no new jobs, waiting for running jobs");
        for w in workers {
            let _ = w.await;
        }
        let mut report = ShutdownReport::default();
        if tokio::time::timeout(self.shutdown_timeout, shared.active.wait_idle()).await.is_err() {
            let running = shared.active.count.load(Ordering::SeqCst);
            warn!(jobs.running = running, "shutdown timeout reached, canceling running jobs");
            shared.interrupt.cancel();
            if tokio::time::timeout(self.shutdown_timeout, shared.active.wait_idle()).await.is_err()
            {
                report.jobs_abandoned = shared.active.count.load(Ordering::SeqCst) as u64;
                warn!(jobs.abandoned = report.jobs_abandoned, "jobs did not end, giving up");
            }
        }
        http_stop.cancel();
        report.jobs_reported = shared.counters.reported.load(Ordering::SeqCst);
        report.jobs_report_failed = shared.counters.report_failed.load(Ordering::SeqCst);
        report.jobs_interrupted = shared.counters.interrupted.load(Ordering::SeqCst);
        info!(?report, "daemon stopped");
        report
    }
}

/// A started daemon.
#[derive(Debug)]
pub struct RunningDaemon {
    metrics_addr: Option<SocketAddr>,
    handle: JoinHandle<ShutdownReport>,
}

impl RunningDaemon {
    /// Where `/metrics` and `/health` are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Waits for the daemon to end (after its shutdown token fired).
    pub async fn wait(self) -> ShutdownReport {
        match self.handle.await {
            Ok(report) => report,
            Err(e) => {
                warn!(error = %e, "daemon task failed");
                ShutdownReport::default()
            }
        }
    }
}

/// Sleeps `d` unless `shutdown` fires first; returns whether it slept the whole time.
async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = shutdown.cancelled() => false,
    }
}

async fn request_loop(runner: Arc<Runner>, shared: Arc<Shared>, shutdown: CancellationToken) {
    let labels = RunnerLabels { runner: runner.name.clone() };
    let mut last_update: Option<String> = None;
    let mut failures = 0u32;
    let mut backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(shared.check_interval.min(Duration::from_secs(1)))
        .with_max_delay(shared.check_interval.max(Duration::from_secs(60)))
        .without_max_times()
        .build();
    loop {
        // Capacity first: never ask for a job that could not start.
        let runner_permit = tokio::select! {
            p = Arc::clone(&runner.limit).acquire_owned() => p,
            () = shutdown.cancelled() => return,
        };
        let global_permit = tokio::select! {
            p = Arc::clone(&shared.global).acquire_owned() => p,
            () = shutdown.cancelled() => return,
        };
        let (Ok(runner_permit), Ok(global_permit)) = (runner_permit, global_permit) else {
            return;
        };
        let result = tokio::select! {
            r = runner.client.request_job(last_update.as_deref()) => r,
            () = shutdown.cancelled() => return,
        };
        match result {
            Ok(response) => {
                failures = 0;
                backoff = ExponentialBuilder::default()
                    .with_jitter()
                    .with_min_delay(shared.check_interval.min(Duration::from_secs(1)))
                    .with_max_delay(shared.check_interval.max(Duration::from_secs(60)))
                    .without_max_times()
                    .build();
                if response.last_update.is_some() {
                    last_update = response.last_update;
                }
                if let Some(job) = response.job {
                    shared.metrics.jobs_started.get_or_create(&labels).inc();
                    let guard = shared.active.enter();
                    let span = info_span!("job", job.id = job.id, runner.name = %runner.name);
                    tokio::spawn(
                        run_job(
                            Arc::clone(&runner),
                            Arc::clone(&shared),
                            Arc::from(job),
                            (runner_permit, global_permit),
                            guard,
                        )
                        .instrument(span),
                    );
                    if runner.strict_check_interval
                        && !pause(shared.check_interval, &shutdown).await
                    {
                        return;
                    }
                } else {
                    drop((runner_permit, global_permit));
                    if !pause(shared.check_interval, &shutdown).await {
                        return;
                    }
                }
            }
            Err(e) => {
                drop((runner_permit, global_permit));
                shared
                    .metrics
                    .request_errors
                    .get_or_create(&ErrorLabels {
                        runner: runner.name.clone(),
                        kind: e.kind().to_owned(),
                    })
                    .inc();
                failures += 1;
                warn!(error = %e, error.kind = e.kind(), failures, "job request failed");
                let delay = if failures >= runner.unhealthy_requests_limit {
                    warn!(pause = ?runner.unhealthy_interval, "runner is unhealthy, pausing requests");
                    failures = 0;
                    runner.unhealthy_interval
                } else {
                    backoff.next().unwrap_or(shared.check_interval)
                };
                if !pause(delay, &shutdown).await {
                    return;
                }
            }
        }
    }
}

fn closing_line(outcome: &JobOutcome) -> String {
    match outcome {
        JobOutcome::Success => "\x1b[32;1mJob succeeded\x1b[0;m".to_owned(),
        JobOutcome::ScriptFailure { exit_code } => {
            format!("\x1b[31;1mERROR: Job failed: exit code {exit_code}\x1b[0;m")
        }
        JobOutcome::Timeout => {
            "\x1b[31;1mERROR: Job failed: execution took longer than the job timeout\x1b[0;m"
                .to_owned()
        }
        JobOutcome::Canceled => "\x1b[31;1mERROR: Job failed: canceled\x1b[0;m".to_owned(),
        JobOutcome::SystemFailure { message, .. } => {
            format!("\x1b[31;1mERROR: Job failed (system failure): {message}\x1b[0;m")
        }
        _ => "\x1b[31;1mERROR: Job failed\x1b[0;m".to_owned(),
    }
}

async fn run_job(
    runner: Arc<Runner>,
    shared: Arc<Shared>,
    job: Arc<Job>,
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    _guard: ActiveGuard,
) {
    let labels = RunnerLabels { runner: runner.name.clone() };
    shared.metrics.jobs_running.get_or_create(&labels).inc();
    info!(job.name = %job.job_info.name, "job received");
    let log = JobLog::start(runner.client.clone(), &job, runner.job_log.clone());
    let writer = log.writer();
    let cancel = log.cancel();
    writer.writeln(&format!(
        "\x1b[1mRunning with podrunner {}\x1b[0;m\n\x1b[0;m  on {}\x1b[0;m",
        env!("CARGO_PKG_VERSION"),
        runner.name
    ));
    let timeout = job.runner_info.timeout.filter(|t| *t > 0).map(Duration::from_secs);
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut run = runner.executor.run(Arc::clone(&job), writer.clone(), cancel.clone());
    let mut timed_out = false;
    let mut interrupted = false;
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            () = &mut deadline, if !timed_out => {
                timed_out = true;
                warn!("job timeout reached, aborting the job");
                cancel.abort();
            }
            () = shared.interrupt.cancelled(), if !interrupted => {
                interrupted = true;
                writer.writeln("\x1b[31;1mERROR: the runner is shutting down, canceling the job\x1b[0;m");
                cancel.abort();
            }
        }
    };
    let outcome = if timed_out {
        JobOutcome::Timeout
    } else if interrupted {
        shared.counters.interrupted.fetch_add(1, Ordering::SeqCst);
        JobOutcome::system(FailureReason::RunnerInterrupted, "the runner was shut down")
    } else {
        outcome
    };
    writer.writeln(&closing_line(&outcome));
    let state = match log.finish(&outcome).await {
        Ok(report) => {
            debug!(trace.bytes = report.bytes_sent, "final update accepted");
            shared.counters.reported.fetch_add(1, Ordering::SeqCst);
            outcome.label().to_owned()
        }
        Err(podrunner_coordinator::Error::JobAborted { .. }) => {
            info!("job was canceled on the coordinator");
            shared.counters.reported.fetch_add(1, Ordering::SeqCst);
            "aborted".to_owned()
        }
        Err(e) => {
            warn!(error = %e, error.kind = e.kind(), "final job update failed");
            shared.counters.report_failed.fetch_add(1, Ordering::SeqCst);
            "report_failed".to_owned()
        }
    };
    if let Some(reason) = outcome.failure_reason() {
        shared
            .metrics
            .jobs_failed
            .get_or_create(&FailureLabels {
                runner: runner.name.clone(),
                failure_reason: reason.as_str().to_owned(),
            })
            .inc();
    }
    shared
        .metrics
        .jobs_finished
        .get_or_create(&OutcomeLabels { runner: runner.name.clone(), state })
        .inc();
    shared.metrics.jobs_running.get_or_create(&labels).dec();
    info!(job.outcome = outcome.label(), "job ended");
    drop(permits);
}
