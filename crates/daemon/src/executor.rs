//! The executor boundary: the daemon hands each job to an [`Executor`] and reports the
//! [`JobOutcome`] it returns.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use podrunner_coordinator::{Job, JobCancel, JobOutcome, LogWriter};

/// Runs jobs. One instance serves every job of the runners that name it, concurrently.
///
/// Contract:
/// - write everything the user must see to `log` (it is masked before it leaves the process);
/// - watch `cancel.requested()`: stop the script, still run `after_script`, then return
///   [`JobOutcome::Canceled`]; on `cancel.aborted()` stop at once and clean up;
/// - always clean up (pods, secrets) before returning;
/// - return a [`JobOutcome`] that separates script failures (exit code) from system failures.
pub trait Executor: Send + Sync + 'static {
    /// Runs one job of `runner` to its end.
    fn run(
        &self,
        runner: &RunnerContext,
        job: Arc<Job>,
        log: LogWriter,
        cancel: JobCancel,
    ) -> BoxFuture<'_, JobOutcome>;

    /// Whether this executor can continue a job that an earlier runner process left running
    /// ([`Executor::resume`]). By default it cannot: such a job is cleaned up and failed.
    fn can_resume(&self) -> bool {
        false
    }

    /// Continues `job` of `runner`, which an earlier runner process left running (it was
    /// killed), from `position`: the newest position the executor recorded with
    /// [`LogWriter::mark`] that GitLab's trace matches, `None` to start from the beginning
    /// (nothing the executor wrote reached GitLab). The log continues where GitLab's trace
    /// ends; the contract is [`Executor::run`]'s, and every step the earlier process may have
    /// taken must be taken again without running anything twice. Called only when
    /// [`Executor::can_resume`] says so.
    fn resume(
        &self,
        runner: &RunnerContext,
        job: Arc<Job>,
        log: LogWriter,
        cancel: JobCancel,
        position: Option<serde_json::Value>,
    ) -> BoxFuture<'_, JobOutcome> {
        let _ = (runner, job, log, cancel, position);
        Box::pin(async {
            JobOutcome::system(
                podrunner_coordinator::FailureReason::RunnerSystemFailure,
                "this executor cannot resume a job",
            )
        })
    }

    /// Whether a job of `runner` could run now. The daemon asks before every job request and
    /// requests no job while this is an `Err` (its text says why, for the daemon log); keep it
    /// cheap when all is well. By default always ready.
    fn ready(&self, runner: &RunnerContext) -> BoxFuture<'_, Result<(), String>> {
        let _ = runner;
        Box::pin(async { Ok(()) })
    }

    /// Cleans up after job `job_id` of `runner`, which an earlier runner process left running
    /// (it was killed): deletes what the job created. `job` is the job as GitLab sent it, when
    /// the journal kept it (its variables may have moved it elsewhere). `Ok` says what was found
    /// and removed, in words for the job log (empty: nothing was left); `Err` says why it could
    /// not look. By default there is nothing to clean up.
    fn clean_up_left_job(
        &self,
        runner: &RunnerContext,
        job_id: u64,
        job: Option<Arc<Job>>,
    ) -> BoxFuture<'_, Result<Vec<String>, String>> {
        let _ = (runner, job_id, job);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Deletes objects of `runner` created by this runner process (its system id) whose job is
    /// not running: call `running` *after* listing, so a job that starts meanwhile is never
    /// swept. Returns what was deleted. By default there is nothing to sweep.
    fn sweep(
        &self,
        runner: &RunnerContext,
        running: RunningJobs,
    ) -> BoxFuture<'_, Result<Vec<String>, String>> {
        let _ = (runner, running);
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The ids of the jobs a runner is running now (each call reads them afresh).
pub type RunningJobs = Arc<dyn Fn() -> std::collections::HashSet<u64> + Send + Sync>;

/// What an executor learns about the runner a job came from.
#[derive(Debug, Clone)]
pub struct RunnerContext {
    /// The runner's name (`name` in `config.toml`).
    pub name: String,
    /// The runner's executor settings, as the binary set them.
    pub settings: ExecutorSettings,
    /// The system id this process announces for the runner (`.runner_system_id`): executors
    /// label what they create with it, so that a sweep never touches another process's jobs.
    pub system_id: String,
    /// The runner's GitLab client, for the job APIs beside the log (artifacts).
    pub coordinator: Option<podrunner_coordinator::Client>,
}

/// A runner's executor-specific settings, opaque to the daemon (which knows nothing of
/// `config.toml`): the binary stores a value the executor downcasts, and a fingerprint that
/// tells a reload whether they changed.
#[derive(Clone, Default)]
pub struct ExecutorSettings {
    value: Option<Arc<dyn Any + Send + Sync>>,
    fingerprint: String,
}

impl fmt::Debug for ExecutorSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorSettings").field("fingerprint", &self.fingerprint).finish()
    }
}

impl ExecutorSettings {
    /// Settings holding `value`; `fingerprint` must change whenever `value` does.
    pub fn new<T: Any + Send + Sync>(value: T, fingerprint: impl Into<String>) -> Self {
        Self { value: Some(Arc::new(value)), fingerprint: fingerprint.into() }
    }

    /// The value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.value.as_deref().and_then(|v| v.downcast_ref::<T>())
    }

    /// The fingerprint given at construction (empty without settings).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Executors by the name runners use in `executor = "..."`.
#[derive(Default, Clone)]
pub struct ExecutorRegistry {
    executors: BTreeMap<String, Arc<dyn Executor>>,
}

impl fmt::Debug for ExecutorRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorRegistry").field("names", &self.executors.keys()).finish()
    }
}

impl ExecutorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `executor` under `name`, replacing any previous one.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, executor: Arc<dyn Executor>) -> Self {
        self.executors.insert(name.into(), executor);
        self
    }

    /// The executor registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Executor>> {
        self.executors.get(name).cloned()
    }

    /// Registered names.
    pub fn names(&self) -> Vec<String> {
        self.executors.keys().cloned().collect()
    }
}
