//! The runner daemon core: asks GitLab for jobs for several runners, runs each job through an
//! [`Executor`], streams its log and reports the outcome, within `concurrent` / `limit` /
//! `request_concurrency`, with graceful shutdown, Prometheus metrics and a health check.
//!
//! Settings are plain structs ([`DaemonSettings`], [`RunnerSettings`]); the binary maps the
//! validated `config.toml` onto them.

mod capacity;
mod daemon;
pub mod error;
pub mod executor;
mod job;
pub mod journal;
mod leftovers;
pub mod metrics;
mod settings;

pub use daemon::{Daemon, ReloadReport, RunningDaemon, ShutdownReport};
pub use error::{Error, Result};
pub use executor::{Executor, ExecutorRegistry, ExecutorSettings, RunnerContext, RunningJobs};
pub use journal::{Journal, JournalEntry};
pub use metrics::Metrics;
pub use settings::{DaemonSettings, RunnerSettings};
