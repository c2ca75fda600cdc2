//! The daemon's own settings: plain structs the binary fills from the validated config.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use podrunner_coordinator::JobLogConfig;
use secrecy::SecretString;

use crate::executor::ExecutorSettings;

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
    /// `executor`: looked up in the [`ExecutorRegistry`](crate::ExecutorRegistry).
    pub executor: String,
    /// What the executor needs of this runner's config (handed to every job's
    /// [`Executor::run`](crate::Executor::run)); a changed fingerprint restarts the runner.
    pub executor_settings: ExecutorSettings,
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
    pub labels: BTreeMap<String, String>,
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
            executor_settings: ExecutorSettings::default(),
            limit: 0,
            request_concurrency: 1,
            strict_check_interval: false,
            unhealthy_requests_limit: 3,
            unhealthy_interval: Duration::from_secs(3600),
            tls_ca_pem: None,
            job_log: JobLogConfig::default(),
            labels: BTreeMap::new(),
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
    /// Where the job journal lives (see [`crate::journal`]); `None`: no journal, so a killed
    /// process leaves its jobs to GitLab's own timeout.
    pub state_dir: Option<std::path::PathBuf>,
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
            state_dir: None,
        }
    }
}
