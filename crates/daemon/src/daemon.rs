//! The request loop: asks GitLab for jobs for every runner within `concurrent`, `limit` and
//! `request_concurrency`, runs each job on its executor, reloads settings, and shuts down
//! gracefully.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use podrunner_coordinator::{Client, ClientConfig, JobLogConfig, VersionInfo, generate_system_id};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::capacity::Capacity;
use crate::error::{Error, Result};
use crate::executor::{Executor, ExecutorRegistry, RunnerContext};
use crate::journal::{Journal, JournalEntry};
use crate::leftovers::RunningSet;
use crate::metrics::{ErrorLabels, Metrics, RunnerLabels};
use crate::settings::{DaemonSettings, RunnerSettings};

/// What happened to the jobs during the daemon's life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Jobs whose final state GitLab accepted (or that GitLab had canceled).
    pub jobs_reported: u64,
    /// Jobs whose final update failed.
    pub jobs_report_failed: u64,
    /// Jobs canceled because they outlived `shutdown_timeout`.
    pub jobs_interrupted: u64,
    /// Jobs still running when the daemon gave up waiting (twice `shutdown_timeout`).
    pub jobs_abandoned: u64,
    /// Jobs left running for the next runner process to resume ([`RunningDaemon::job_hand_over`]).
    pub jobs_handed_over: u64,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Runners started.
    pub added: Vec<String>,
    /// Runners stopped (their running jobs go on to their end).
    pub removed: Vec<String>,
    /// Runners whose request workers were restarted with new settings.
    pub restarted: Vec<String>,
    /// Runners left as they were (a changed `limit` applies in place).
    pub unchanged: Vec<String>,
}

/// A runner's settings once checked, before it runs.
struct RunnerSpec {
    name: String,
    url: String,
    token: SecretString,
    executor_name: String,
    client: Client,
    executor: Arc<dyn Executor>,
    context: RunnerContext,
    limit: usize,
    request_concurrency: usize,
    strict_check_interval: bool,
    unhealthy_requests_limit: u32,
    unhealthy_interval: Duration,
    tls_ca_pem: Option<Vec<u8>>,
    labels: std::collections::BTreeMap<String, String>,
    system_id: Option<String>,
    job_log: JobLogConfig,
}

impl RunnerSpec {
    /// Same GitLab and token: the same runner as far as GitLab is concerned.
    fn same_identity(&self, other: &Self) -> bool {
        self.url == other.url && self.token.expose_secret() == other.token.expose_secret()
    }

    /// Everything but `limit` equal: the request workers can stay.
    fn same_settings(&self, other: &Self) -> bool {
        self.same_identity(other)
            && self.name == other.name
            && self.executor_name == other.executor_name
            && self.context.settings.fingerprint() == other.context.settings.fingerprint()
            && self.request_concurrency == other.request_concurrency
            && self.strict_check_interval == other.strict_check_interval
            && self.unhealthy_requests_limit == other.unhealthy_requests_limit
            && self.unhealthy_interval == other.unhealthy_interval
            && self.tls_ca_pem == other.tls_ca_pem
            && self.labels == other.labels
            && self.system_id == other.system_id
            && self.job_log == other.job_log
    }
}

/// A running runner: its client, executor and capacity.
pub(crate) struct Runner {
    spec: RunnerSpec,
    pub(crate) limit: Arc<Capacity>,
}

impl Runner {
    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn client(&self) -> &Client {
        &self.spec.client
    }

    pub(crate) fn url(&self) -> &str {
        &self.spec.url
    }

    pub(crate) fn executor(&self) -> &Arc<dyn Executor> {
        &self.spec.executor
    }

    pub(crate) fn context(&self) -> &RunnerContext {
        &self.spec.context
    }

    pub(crate) fn job_log(&self) -> &JobLogConfig {
        &self.spec.job_log
    }
}

/// Counts running jobs and wakes waiters when none is left.
#[derive(Default)]
pub(crate) struct Active {
    count: AtomicUsize,
    idle: Notify,
}

/// Held by a running job.
pub(crate) struct ActiveGuard(Arc<Active>);

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
pub(crate) struct Counters {
    pub(crate) reported: AtomicU64,
    pub(crate) report_failed: AtomicU64,
    pub(crate) interrupted: AtomicU64,
    pub(crate) handed_over: AtomicU64,
}

/// State shared by the request workers and the jobs.
pub(crate) struct Shared {
    pub(crate) metrics: Arc<Metrics>,
    global: Arc<Capacity>,
    active: Arc<Active>,
    pub(crate) counters: Counters,
    /// Fires after `shutdown_timeout`: running jobs are canceled (after_script runs).
    pub(crate) interrupt: CancellationToken,
    /// Fires when jobs must stop at once (a second signal, or a cancel that did not end them):
    /// running jobs are aborted; executors still clean up.
    pub(crate) abort: CancellationToken,
    /// Fires when running jobs are handed over to the next runner process: jobs that can be
    /// resumed stop where they stand (their pods keep running) and stay in the journal.
    pub(crate) hand_over: CancellationToken,
    check_interval_ms: AtomicU64,
    /// The job journal, when the daemon has a state directory.
    pub(crate) journal: Option<Journal>,
    /// The jobs each runner is running now (for the sweep).
    pub(crate) running: Arc<RunningSet>,
}

impl Shared {
    fn check_interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms.load(Ordering::SeqCst))
    }
}

fn non_zero_or(d: Duration, default: Duration) -> Duration {
    if d.is_zero() { default } else { d }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn build_runner(
    r: RunnerSettings,
    executors: &ExecutorRegistry,
    metrics: &Arc<Metrics>,
) -> Result<RunnerSpec> {
    let Some(executor) = executors.get(&r.executor) else {
        return Err(Error::UnknownExecutor {
            runner: r.name,
            executor: r.executor,
            supported: executors.names().join(", "),
        });
    };
    let mut info = VersionInfo::podrunner(r.name.clone(), r.executor.clone());
    info.labels = r.labels.clone();
    let system_id = r.system_id.clone().unwrap_or_else(generate_system_id);
    let mut config = ClientConfig::new(r.url.clone(), r.token.clone(), system_id.clone(), info);
    config.tls_ca_pem = r.tls_ca_pem.clone();
    config.observer = Some(metrics.observer(&r.name));
    let client =
        Client::new(config).map_err(|source| Error::Client { runner: r.name.clone(), source })?;
    let context = RunnerContext {
        name: r.name.clone(),
        settings: r.executor_settings,
        system_id,
        coordinator: Some(client.clone()),
    };
    Ok(RunnerSpec {
        context,
        name: r.name,
        url: r.url,
        token: r.token,
        executor_name: r.executor,
        client,
        executor,
        limit: r.limit,
        request_concurrency: r.request_concurrency.max(1),
        strict_check_interval: r.strict_check_interval,
        unhealthy_requests_limit: r.unhealthy_requests_limit.max(1),
        unhealthy_interval: r.unhealthy_interval,
        tls_ca_pem: r.tls_ca_pem,
        labels: r.labels,
        system_id: r.system_id,
        job_log: r.job_log,
    })
}

/// Checked global settings plus runner specs.
struct Plan {
    concurrent: usize,
    check_interval: Duration,
    shutdown_timeout: Duration,
    runners: Vec<RunnerSpec>,
}

/// The journal and the jobs it holds, read once at start.
struct Journaled {
    journal: Option<Journal>,
    left: Vec<JournalEntry>,
}

fn plan(
    settings: DaemonSettings,
    executors: &ExecutorRegistry,
    metrics: &Arc<Metrics>,
) -> Result<Plan> {
    if settings.runners.is_empty() {
        // As gitlab-runner: an install without runners idles until a reload adds one.
        warn!("no runner is configured: no job is requested until a reload adds one");
    }
    if settings.concurrent == 0 {
        return Err(Error::ZeroConcurrent);
    }
    let mut runners = Vec::new();
    for r in settings.runners {
        runners.push(build_runner(r, executors, metrics)?);
    }
    Ok(Plan {
        concurrent: settings.concurrent,
        check_interval: non_zero_or(settings.check_interval, Duration::from_secs(3)),
        shutdown_timeout: non_zero_or(settings.shutdown_timeout, Duration::from_secs(30)),
        runners,
    })
}

/// The daemon, ready to start.
pub struct Daemon {
    plan: Plan,
    metrics: Arc<Metrics>,
    listen_address: Option<String>,
    state_dir: Option<std::path::PathBuf>,
    executors: ExecutorRegistry,
}

impl fmt::Debug for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon")
            .field(
                "runners",
                &self.plan.runners.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            )
            .field("concurrent", &self.plan.concurrent)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Checks the settings and builds one client per runner. Does no IO. A daemon without
    /// runners is valid: it serves its metrics and waits for a reload that adds one.
    ///
    /// # Errors
    ///
    /// `concurrent = 0`, a runner whose executor is not in `executors` (the daemon
    /// refuses to start rather than pretend to run jobs), or a client that cannot be built.
    pub fn new(settings: DaemonSettings, executors: &ExecutorRegistry) -> Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let listen_address = settings.listen_address.clone();
        let state_dir = settings.state_dir.clone();
        let plan = plan(settings, executors, &metrics)?;
        Ok(Self { plan, metrics, listen_address, state_dir, executors: executors.clone() })
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
    /// With a state directory, jobs an earlier process left in its journal are cleaned up and
    /// reported failed first (in the background), and each runner's executor sweeps objects
    /// of jobs that are not running at start and every minute.
    ///
    /// # Errors
    ///
    /// The metrics listener cannot be bound, or the state directory cannot be created or read.
    pub async fn start(self, shutdown: CancellationToken) -> Result<RunningDaemon> {
        let journaled = match &self.state_dir {
            Some(dir) => {
                let journal = Journal::open(dir)?;
                let saved = journal.entries()?;
                for problem in &saved.unreadable {
                    warn!(problem = %problem, "an unreadable file in the state directory was left alone");
                }
                Journaled { journal: Some(journal), left: saved.entries }
            }
            None => Journaled { journal: None, left: Vec::new() },
        };
        let healthy = Arc::new(AtomicBool::new(true));
        let http_stop = CancellationToken::new();
        let metrics_addr = match &self.listen_address {
            Some(address) => {
                let listen_error = |source| Error::Listen { address: address.clone(), source };
                let listener =
                    tokio::net::TcpListener::bind(address.as_str()).await.map_err(listen_error)?;
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
        let (commands, receiver) = mpsc::channel(4);
        let metrics = Arc::clone(&self.metrics);
        let executors = self.executors.clone();
        let stops = JobStops::default();
        let handle = tokio::spawn(self.run(
            shutdown,
            healthy,
            http_stop,
            receiver,
            journaled,
            stops.clone(),
        ));
        Ok(RunningDaemon { metrics_addr, handle, commands, metrics, executors, stops })
    }

    async fn run(
        self,
        shutdown: CancellationToken,
        healthy: Arc<AtomicBool>,
        http_stop: CancellationToken,
        mut commands: mpsc::Receiver<Command>,
        journaled: Journaled,
        stops: JobStops,
    ) -> ShutdownReport {
        let Plan { concurrent, check_interval, mut shutdown_timeout, runners } = self.plan;
        let Journaled { journal, mut left } = journaled;
        self.metrics.concurrent.set(i64::try_from(concurrent).unwrap_or(i64::MAX));
        let shared = Arc::new(Shared {
            metrics: Arc::clone(&self.metrics),
            global: Capacity::new(concurrent),
            active: Arc::new(Active::default()),
            counters: Counters::default(),
            interrupt: CancellationToken::new(),
            abort: stops.abort,
            hand_over: stops.hand_over,
            check_interval_ms: AtomicU64::new(duration_ms(check_interval)),
            journal,
            running: Arc::default(),
        });
        let mut entries: Vec<Entry> = runners
            .into_iter()
            .map(|spec| {
                let (mine, others) = left
                    .drain(..)
                    .partition(|e: &JournalEntry| e.runner == spec.name && e.url == spec.url);
                left = others;
                let limit = Capacity::new(spec.limit);
                Entry::start(Arc::new(Runner { spec, limit }), &shared, &shutdown, mine)
            })
            .collect();
        for entry in &left {
            warn!(job.id = entry.job_id, runner = %entry.runner, "a job left by an earlier runner process belongs to no runner of the config; kept");
        }
        info!(runners = entries.len(), concurrent, "daemon started");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    Some(Command::Reload { plan, reply }) => {
                        shutdown_timeout = plan.shutdown_timeout;
                        let report = reload(&mut entries, plan, &shared, &shutdown);
                        info!(
                            runners.added = %report.added.join(","),
                            runners.removed = %report.removed.join(","),
                            runners.restarted = %report.restarted.join(","),
                            runners.unchanged = report.unchanged.len(),
                            "settings reloaded"
                        );
                        let _ = reply.send(report);
                    }
                    None => shutdown.cancelled().await,
                },
            }
        }
        healthy.store(false, Ordering::SeqCst);
        info!("shutdown requested: no new jobs, waiting for running jobs");
        for entry in entries {
            entry.stop().await;
        }
        let mut report = ShutdownReport::default();
        // Each step waits `shutdown_timeout` for the jobs to end: then they are canceled
        // (after_script runs), then aborted (executors still clean up), then abandoned.
        let idle_within = |limit| tokio::time::timeout(limit, shared.active.wait_idle());
        if idle_within(shutdown_timeout).await.is_err() {
            let running = shared.active.count.load(Ordering::SeqCst);
            warn!(jobs.running = running, "shutdown timeout reached, canceling running jobs");
            shared.interrupt.cancel();
            if idle_within(shutdown_timeout).await.is_err() {
                let running = shared.active.count.load(Ordering::SeqCst);
                warn!(jobs.running = running, "canceled jobs did not end, aborting them");
                shared.abort.cancel();
                if idle_within(shutdown_timeout).await.is_err() {
                    report.jobs_abandoned = shared.active.count.load(Ordering::SeqCst) as u64;
                    warn!(jobs.abandoned = report.jobs_abandoned, "jobs did not end, giving up");
                }
            }
        }
        http_stop.cancel();
        report.jobs_reported = shared.counters.reported.load(Ordering::SeqCst);
        report.jobs_report_failed = shared.counters.report_failed.load(Ordering::SeqCst);
        report.jobs_interrupted = shared.counters.interrupted.load(Ordering::SeqCst);
        report.jobs_handed_over = shared.counters.handed_over.load(Ordering::SeqCst);
        // The binary logs the outcome ("runner stopped", with these counts as fields).
        debug!(
            jobs.reported = report.jobs_reported,
            jobs.report_failed = report.jobs_report_failed,
            jobs.interrupted = report.jobs_interrupted,
            jobs.abandoned = report.jobs_abandoned,
            "daemon stopped"
        );
        report
    }
}

/// A runner with its request workers.
struct Entry {
    runner: Arc<Runner>,
    stop: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

impl Entry {
    fn start(
        runner: Arc<Runner>,
        shared: &Arc<Shared>,
        shutdown: &CancellationToken,
        left: Vec<JournalEntry>,
    ) -> Self {
        let stop = shutdown.child_token();
        // Jobs the executor can continue take their slots before any job is requested, and
        // count as running before the sweep looks.
        let (resumable, left): (Vec<_>, Vec<_>) = left.into_iter().partition(|e| {
            e.unreported.is_none() && e.payload.is_some() && runner.executor().can_resume()
        });
        for entry in resumable {
            shared.running.insert(runner.name(), entry.job_id);
            let slots = (runner.limit.try_acquire(), shared.global.try_acquire());
            let guard = shared.active.enter();
            let (runner, shared) = (Arc::clone(&runner), Arc::clone(shared));
            let span = info_span!("job", job.id = entry.job_id, runner.name = %runner.name());
            tokio::spawn(
                async move {
                    let runner_slot = match slots.0 {
                        Some(slot) => slot,
                        None => runner.limit.acquire().await,
                    };
                    let global_slot = match slots.1 {
                        Some(slot) => slot,
                        None => shared.global.acquire().await,
                    };
                    crate::leftovers::resume_left_job(
                        runner,
                        shared,
                        entry,
                        (runner_slot, global_slot),
                        guard,
                    )
                    .await;
                }
                .instrument(span),
            );
        }
        let mut workers: Vec<JoinHandle<()>> = (0..runner.spec.request_concurrency)
            .map(|worker| {
                let span =
                    info_span!("runner", runner.name = %runner.name(), runner.worker = worker);
                tokio::spawn(
                    request_loop(Arc::clone(&runner), Arc::clone(shared), stop.clone())
                        .instrument(span),
                )
            })
            .collect();
        let span = info_span!("housekeeping", runner.name = %runner.name());
        workers.push(tokio::spawn(
            crate::leftovers::look_after(
                Arc::clone(&runner),
                shared.journal.clone(),
                left,
                Arc::clone(&shared.running),
                stop.clone(),
            )
            .instrument(span),
        ));
        shared
            .metrics
            .limit
            .get_or_create(&RunnerLabels { runner: runner.name().to_owned() })
            .set(i64::try_from(runner.spec.limit).unwrap_or(i64::MAX));
        Self { runner, stop, workers }
    }

    async fn stop(self) {
        self.stop.cancel();
        for w in self.workers {
            let _ = w.await;
        }
    }
}

fn reload(
    entries: &mut Vec<Entry>,
    plan: Plan,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> ReloadReport {
    let mut report = ReloadReport::default();
    shared.global.set_limit(plan.concurrent);
    shared.metrics.concurrent.set(i64::try_from(plan.concurrent).unwrap_or(i64::MAX));
    shared.check_interval_ms.store(duration_ms(plan.check_interval), Ordering::SeqCst);
    let mut old: Vec<Option<Entry>> = std::mem::take(entries).into_iter().map(Some).collect();
    for spec in plan.runners {
        let found =
            old.iter().position(|e| e.as_ref().is_some_and(|e| e.runner.spec.same_identity(&spec)));
        let previous = found.and_then(|i| old[i].take());
        match previous {
            Some(entry) if entry.runner.spec.same_settings(&spec) => {
                entry.runner.limit.set_limit(spec.limit);
                report.unchanged.push(spec.name.clone());
                entries.push(entry);
            }
            Some(entry) => {
                // Keep the capacity so jobs still running count against the new limit.
                let limit = Arc::clone(&entry.runner.limit);
                limit.set_limit(spec.limit);
                entry.stop.cancel();
                report.restarted.push(spec.name.clone());
                entries.push(Entry::start(
                    Arc::new(Runner { spec, limit }),
                    shared,
                    shutdown,
                    Vec::new(),
                ));
            }
            None => {
                report.added.push(spec.name.clone());
                let limit = Capacity::new(spec.limit);
                entries.push(Entry::start(
                    Arc::new(Runner { spec, limit }),
                    shared,
                    shutdown,
                    Vec::new(),
                ));
            }
        }
    }
    for entry in old.into_iter().flatten() {
        report.removed.push(entry.runner.name().to_owned());
        entry.stop.cancel();
    }
    report
}

enum Command {
    Reload { plan: Plan, reply: oneshot::Sender<ReloadReport> },
}

/// A started daemon.
pub struct RunningDaemon {
    metrics_addr: Option<SocketAddr>,
    handle: JoinHandle<ShutdownReport>,
    commands: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    executors: ExecutorRegistry,
    stops: JobStops,
}

/// The signals that stop running jobs before their end, shared by the daemon and its handle.
#[derive(Debug, Clone, Default)]
struct JobStops {
    /// Abort every running job at once.
    abort: CancellationToken,
    /// Hand every resumable job over to the next runner process.
    hand_over: CancellationToken,
}

impl fmt::Debug for RunningDaemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningDaemon")
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl RunningDaemon {
    /// The daemon's metrics (as `/metrics` renders them).
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Where `/metrics` and `/health` are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Applies new settings without stopping running jobs: new runners start, removed ones stop
    /// requesting (their jobs run to their end), changed ones restart their request workers,
    /// and `concurrent`, `limit`, `check_interval` and `shutdown_timeout` take effect. The
    /// listen address is not rebound.
    ///
    /// # Errors
    ///
    /// The new settings are invalid (the daemon keeps the old ones), or the daemon has ended.
    pub async fn reload(&self, settings: DaemonSettings) -> Result<ReloadReport> {
        let plan = plan(settings, &self.executors, &self.metrics)?;
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Reload { plan, reply }).await.map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)
    }

    /// A token that, once canceled, aborts every running job at once (no after_script): their
    /// executors still delete what the jobs created, and GitLab gets `runner_interrupted`. For
    /// a second shutdown signal; the daemon still needs its `shutdown` to end.
    pub fn job_abort(&self) -> CancellationToken {
        self.stops.abort.clone()
    }

    /// A token that, once canceled, hands every running job that can be resumed over to the
    /// next runner process (an upgrade): each stops where it stands without ending (its pod
    /// keeps running, nothing is reported to GitLab), its log's newest checkpoint is saved
    /// and it stays in the journal; the next start resumes it. Jobs that cannot be resumed
    /// go on as the shutdown says. Cancel the shutdown token as well, or no job ever ends.
    pub fn job_hand_over(&self) -> CancellationToken {
        self.stops.hand_over.clone()
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

/// Sleeps `d` unless `stop` fires first; returns whether it slept the whole time.
async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = stop.cancelled() => false,
    }
}

fn request_backoff(check_interval: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(check_interval.min(Duration::from_secs(1)))
        .with_max_delay(check_interval.max(Duration::from_secs(60)))
        .without_max_times()
        .build()
}

async fn request_loop(runner: Arc<Runner>, shared: Arc<Shared>, stop: CancellationToken) {
    let labels = RunnerLabels { runner: runner.name().to_owned() };
    let mut last_update: Option<String> = None;
    let mut failures = 0u32;
    let mut backoff = request_backoff(shared.check_interval());
    let mut not_ready: Option<String> = None;
    loop {
        // Capacity first: never ask for a job that could not start.
        let runner_slot = tokio::select! {
            s = runner.limit.acquire() => s,
            () = stop.cancelled() => return,
        };
        let global_slot = tokio::select! {
            s = shared.global.acquire() => s,
            () = stop.cancelled() => return,
        };
        // Never ask for a job the executor cannot run (its cluster unreachable, say).
        let ready = tokio::select! {
            r = runner.executor().ready(runner.context()) => r,
            () = stop.cancelled() => return,
        };
        let ready_gauge = shared.metrics.executor_ready.get_or_create(&labels).clone();
        match ready {
            Ok(()) => {
                if let Some(reason) = not_ready.take() {
                    info!(was = %reason, "the executor can run jobs again: requesting jobs");
                }
                ready_gauge.set(1);
            }
            Err(reason) => {
                drop((runner_slot, global_slot));
                ready_gauge.set(0);
                if not_ready.as_deref() != Some(reason.as_str()) {
                    warn!(reason = %reason, "not requesting jobs: the executor cannot run them now");
                    not_ready = Some(reason);
                }
                if !pause(shared.check_interval(), &stop).await {
                    return;
                }
                continue;
            }
        }
        let result = tokio::select! {
            r = runner.client().request_job(last_update.as_deref()) => r,
            () = stop.cancelled() => return,
        };
        match result {
            Ok(response) => {
                failures = 0;
                backoff = request_backoff(shared.check_interval());
                if response.last_update.is_some() {
                    last_update = response.last_update;
                }
                if let Some(job) = response.job {
                    shared.metrics.jobs_started.get_or_create(&labels).inc();
                    let guard = shared.active.enter();
                    let span = info_span!("job", job.id = job.id, runner.name = %runner.name());
                    tokio::spawn(
                        crate::job::run_job(
                            Arc::clone(&runner),
                            Arc::clone(&shared),
                            Arc::from(job),
                            (runner_slot, global_slot),
                            guard,
                            crate::job::Start::Received,
                        )
                        .instrument(span),
                    );
                    if runner.spec.strict_check_interval
                        && !pause(shared.check_interval(), &stop).await
                    {
                        return;
                    }
                } else {
                    drop((runner_slot, global_slot));
                    if !pause(shared.check_interval(), &stop).await {
                        return;
                    }
                }
            }
            Err(e) => {
                drop((runner_slot, global_slot));
                shared
                    .metrics
                    .request_errors
                    .get_or_create(&ErrorLabels {
                        runner: runner.name().to_owned(),
                        kind: e.kind().to_owned(),
                    })
                    .inc();
                failures += 1;
                warn!(error = %e, error.kind = e.kind(), failures, "job request failed");
                let delay = if failures >= runner.spec.unhealthy_requests_limit {
                    warn!(pause = ?runner.spec.unhealthy_interval, "runner is unhealthy, pausing requests");
                    failures = 0;
                    runner.spec.unhealthy_interval
                } else {
                    backoff.next().unwrap_or(shared.check_interval())
                };
                if !pause(delay, &stop).await {
                    return;
                }
            }
        }
    }
}
