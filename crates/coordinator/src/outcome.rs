//! Job outcomes and GitLab failure reasons (`gitlab-runner.md` §4.4).

use crate::wire::JobState;

/// Failure reasons the runner can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureReason {
    /// The job script failed.
    ScriptFailure,
    /// The runner or its infrastructure failed.
    RunnerSystemFailure,
    /// The job ran past its timeout.
    JobExecutionTimeout,
    /// The image could not be pulled.
    ImagePullFailure,
    /// Anything else.
    UnknownFailure,
    /// The runner's configuration is wrong for this job.
    RunnerConfigurationError,
    /// A dependency outside the runner failed (artifacts download, cache, ...).
    RunnerExternalDependencyFailure,
    /// The runner was stopped while the job ran.
    RunnerInterrupted,
    /// The job was canceled (runner-internal; GitLab usually does not list it).
    JobCanceled,
}

impl FailureReason {
    /// The reason as the runner names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScriptFailure => "script_failure",
            Self::RunnerSystemFailure => "runner_system_failure",
            Self::JobExecutionTimeout => "job_execution_timeout",
            Self::ImagePullFailure => "image_pull_failure",
            Self::UnknownFailure => "unknown_failure",
            Self::RunnerConfigurationError => "runner_configuration_error",
            Self::RunnerExternalDependencyFailure => "runner_external_dependency_failure",
            Self::RunnerInterrupted => "runner_interrupted",
            Self::JobCanceled => "job_canceled",
        }
    }

    /// The reason of a wire name (one [`FailureReason::as_str`] returns).
    pub fn from_wire(name: &str) -> Option<Self> {
        [
            Self::ScriptFailure,
            Self::RunnerSystemFailure,
            Self::JobExecutionTimeout,
            Self::ImagePullFailure,
            Self::UnknownFailure,
            Self::RunnerConfigurationError,
            Self::RunnerExternalDependencyFailure,
            Self::RunnerInterrupted,
            Self::JobCanceled,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }

    /// The value to send, given the `features.failure_reasons` GitLab announced:
    /// `script_failure`, `runner_system_failure` and `job_execution_timeout` always pass;
    /// an unlisted reason is mapped (image pull and external dependency failures to
    /// `runner_system_failure`, configuration errors to `script_failure`), and anything else
    /// unlisted becomes `unknown_failure`.
    pub fn resolve(self, supported: &[String]) -> &'static str {
        let always = matches!(
            self,
            Self::ScriptFailure | Self::RunnerSystemFailure | Self::JobExecutionTimeout
        );
        if always || supported.iter().any(|s| s == self.as_str()) {
            return self.as_str();
        }
        match self {
            Self::ImagePullFailure | Self::RunnerExternalDependencyFailure => {
                Self::RunnerSystemFailure.as_str()
            }
            Self::RunnerConfigurationError => Self::ScriptFailure.as_str(),
            _ => Self::UnknownFailure.as_str(),
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a job ended, as the executor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobOutcome {
    /// Every step succeeded.
    Success,
    /// The user's script failed with this exit code (`script_failure`).
    ScriptFailure {
        /// Exit code of the failed script.
        exit_code: i32,
    },
    /// The job ran past its timeout (`job_execution_timeout`).
    Timeout,
    /// The job was canceled (gracefully through `canceling`, or aborted).
    Canceled,
    /// The runner, not the script, failed: pod unschedulable, image pull, API errors.
    SystemFailure {
        /// The reason reported to GitLab.
        reason: FailureReason,
        /// What happened, for the job log and daemon logs.
        message: String,
    },
}

impl JobOutcome {
    /// A system failure with a reason and message.
    pub fn system(reason: FailureReason, message: impl Into<String>) -> Self {
        Self::SystemFailure { reason, message: message.into() }
    }

    /// The state to report.
    pub fn state(&self) -> JobState {
        match self {
            Self::Success => JobState::Success,
            _ => JobState::Failed,
        }
    }

    /// The failure reason before mapping, `None` on success.
    pub fn failure_reason(&self) -> Option<FailureReason> {
        match self {
            Self::Success => None,
            Self::ScriptFailure { .. } => Some(FailureReason::ScriptFailure),
            Self::Timeout => Some(FailureReason::JobExecutionTimeout),
            Self::Canceled => Some(FailureReason::JobCanceled),
            Self::SystemFailure { reason, .. } => Some(*reason),
        }
    }

    /// The exit code to report: only for script failures, and never 0 (omitted on the wire).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::ScriptFailure { exit_code } if *exit_code != 0 => Some(*exit_code),
            _ => None,
        }
    }

    /// The outcome as JSON (for a journal), read back by [`JobOutcome::from_json`].
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Self::Success => json!({"outcome": "success"}),
            Self::ScriptFailure { exit_code } => {
                json!({"outcome": "script_failure", "exit_code": exit_code})
            }
            Self::Timeout => json!({"outcome": "timeout"}),
            Self::Canceled => json!({"outcome": "canceled"}),
            Self::SystemFailure { reason, message } => {
                json!({"outcome": "system_failure", "reason": reason.as_str(), "message": message})
            }
        }
    }

    /// An outcome written by [`JobOutcome::to_json`].
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        Some(match value["outcome"].as_str()? {
            "success" => Self::Success,
            "script_failure" => {
                Self::ScriptFailure { exit_code: i32::try_from(value["exit_code"].as_i64()?).ok()? }
            }
            "timeout" => Self::Timeout,
            "canceled" => Self::Canceled,
            "system_failure" => Self::SystemFailure {
                reason: FailureReason::from_wire(value["reason"].as_str()?)?,
                message: value["message"].as_str()?.to_owned(),
            },
            _ => return None,
        })
    }

    /// Stable label for metrics (`success` or the unmapped failure reason).
    pub fn label(&self) -> &'static str {
        self.failure_reason().map_or("success", FailureReason::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_survive_a_round_trip_through_json() {
        for outcome in [
            JobOutcome::Success,
            JobOutcome::ScriptFailure { exit_code: 3 },
            JobOutcome::Timeout,
            JobOutcome::Canceled,
            JobOutcome::system(FailureReason::RunnerInterrupted, "stopped"),
        ] {
            assert_eq!(JobOutcome::from_json(&outcome.to_json()), Some(outcome));
        }
        assert_eq!(JobOutcome::from_json(&serde_json::json!({"outcome": "odd"})), None);
    }

    fn reasons(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn always_supported_reasons_pass_even_when_gitlab_lists_nothing() {
        for r in [
            FailureReason::ScriptFailure,
            FailureReason::RunnerSystemFailure,
            FailureReason::JobExecutionTimeout,
        ] {
            assert_eq!(r.resolve(&[]), r.as_str());
        }
    }

    #[test]
    fn unlisted_reasons_map_as_gitlab_runner_does() {
        let none = reasons(&[]);
        assert_eq!(FailureReason::ImagePullFailure.resolve(&none), "runner_system_failure");
        assert_eq!(
            FailureReason::RunnerExternalDependencyFailure.resolve(&none),
            "runner_system_failure"
        );
        assert_eq!(FailureReason::RunnerConfigurationError.resolve(&none), "script_failure");
        assert_eq!(FailureReason::RunnerInterrupted.resolve(&none), "unknown_failure");
        assert_eq!(FailureReason::JobCanceled.resolve(&none), "unknown_failure");
    }

    #[test]
    fn listed_reasons_are_sent_unchanged() {
        let listed = reasons(&["image_pull_failure", "runner_interrupted"]);
        assert_eq!(FailureReason::ImagePullFailure.resolve(&listed), "image_pull_failure");
        assert_eq!(FailureReason::RunnerInterrupted.resolve(&listed), "runner_interrupted");
    }

    #[test]
    fn script_failure_reports_its_exit_code_but_never_zero() {
        let o = JobOutcome::ScriptFailure { exit_code: 3 };
        assert_eq!((o.state(), o.exit_code()), (JobState::Failed, Some(3)));
        assert_eq!(JobOutcome::ScriptFailure { exit_code: 0 }.exit_code(), None);
        assert_eq!(JobOutcome::Success.exit_code(), None);
        assert_eq!(JobOutcome::Success.failure_reason(), None);
        let sys = JobOutcome::system(FailureReason::ImagePullFailure, "pull failed");
        assert_eq!(sys.exit_code(), None);
        assert_eq!(sys.failure_reason(), Some(FailureReason::ImagePullFailure));
    }
}
