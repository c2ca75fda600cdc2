//! The executor boundary: the daemon hands each job to an [`Executor`] and reports the
//! [`JobOutcome`] it returns.

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
    /// Runs one job to its end.
    fn run(&self, job: Arc<Job>, log: LogWriter, cancel: JobCancel) -> BoxFuture<'_, JobOutcome>;
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
