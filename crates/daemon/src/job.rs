//! Running one job: the log, the executor, the job timeout, interruption at shutdown, and the
//! final report; for a job an earlier runner process left running, the same from where
//! GitLab's trace says it stood.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use podrunner_coordinator::{
    Checkpoint, CheckpointSink, FailureReason, Job, JobLog, JobOutcome, LogOptions,
};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::capacity::Slot;
use crate::daemon::{ActiveGuard, Runner, Shared};
use crate::journal::{JournalEntry, Unreported};
use crate::metrics::{FailureLabels, OutcomeLabels, RunnerLabels};

fn closing_line(outcome: &JobOutcome) -> String {
    match outcome {
        JobOutcome::Success => "\x1b[32;1mJob succeeded\x1b[0;m".to_owned(),
        JobOutcome::ScriptFailure { exit_code } => {
            format!(
                "\x1b[31;1mERROR: Job failed: command terminated with exit code {exit_code}\x1b[0;m"
            )
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

/// The daemon's own marks in the job log (any other mark is the executor's).
const DAEMON_MARK: &str = "podrunner";

/// How a job came to this process.
pub(crate) enum Start {
    /// Received from GitLab now.
    Received,
    /// Left running by an earlier process (its journal entry), continued from `from`.
    Resumed { entry: Box<JournalEntry>, from: Checkpoint },
}

/// Where a resumed job stood, from its log's newest saved mark.
enum Resume {
    /// Nothing of the job reached GitLab: from the beginning.
    FromStart,
    /// The executor had not written anything GitLab has.
    Executor(Option<Value>),
    /// The executor was done: only the final report is left.
    Ended(JobOutcome),
}

impl Resume {
    fn of(position: Option<&Value>) -> Self {
        let Some(position) = position else { return Self::FromStart };
        match position[DAEMON_MARK].as_str() {
            Some("started") => Self::Executor(None),
            Some("ended") => JobOutcome::from_json(&position["outcome"]).map_or_else(
                || {
                    Self::Ended(JobOutcome::system(
                        FailureReason::RunnerSystemFailure,
                        "the job ended, but its saved outcome could not be read",
                    ))
                },
                Self::Ended,
            ),
            _ => Self::Executor(Some(position.clone())),
        }
    }
}

/// How long a job handed over may take to send its log up to its newest checkpoint (the rest
/// is in the checkpoint, for the next process).
const HAND_OVER_SEND_LIMIT: Duration = Duration::from_secs(5);

/// Whether the job's log is checkpointed, so a later process can resume the job.
fn log_resumable(runner: &Runner, shared: &Shared) -> bool {
    runner.executor().can_resume() && shared.journal.is_some()
}

/// The sink that saves the job log's checkpoints in the journal, for an executor that can
/// resume jobs (it marks its log; another's log is sent as it is written).
fn checkpoint_sink(runner: &Runner, shared: &Shared, job_id: u64) -> Option<CheckpointSink> {
    if !log_resumable(runner, shared) {
        return None;
    }
    let journal = shared.journal.clone()?;
    Some(Arc::new(move |checkpoint| {
        journal.save_checkpoint(job_id, checkpoint).map_err(|e| {
            let mut text = e.to_string();
            if let Some(source) = std::error::Error::source(&e) {
                text.push_str(&format!(": {source}"));
            }
            text
        })
    }))
}

/// Runs `job` on the runner's executor and reports it. Holds the capacity `slots` and the
/// `_guard` until the final update is done.
pub(crate) async fn run_job(
    runner: Arc<Runner>,
    shared: Arc<Shared>,
    job: Arc<Job>,
    slots: (Slot, Slot),
    _guard: ActiveGuard,
    start: Start,
) {
    let labels = RunnerLabels { runner: runner.name().to_owned() };
    shared.metrics.jobs_running.get_or_create(&labels).inc();
    shared.running.insert(runner.name(), job.id);
    let checkpoints = checkpoint_sink(&runner, &shared, job.id);
    let (mut entry, options, resume, left_by) = match start {
        Start::Received => {
            info!(job.name = %job.job_info.name, "job received");
            let entry = JournalEntry::now(
                runner.name(),
                runner.url(),
                job.id,
                job.token.clone(),
                &runner.context().system_id,
                job.payload(),
            );
            (entry, LogOptions { checkpoints, resume: None }, None, None)
        }
        Start::Resumed { mut entry, from } => {
            let resume = Resume::of(Some(&from.position).filter(|p| !p.is_null()));
            let left_by = (entry.pid, from.offset, from.line_start);
            entry.pid = std::process::id();
            (*entry, LogOptions { checkpoints, resume: Some(from) }, Some(resume), Some(left_by))
        }
    };
    if let Some(journal) = &shared.journal
        && let Err(e) = journal.record(&entry)
    {
        warn!(error = %e, "failed to save the job in the journal: a killed runner would leave it to GitLab's timeout");
    }
    let log =
        JobLog::start_journaled(runner.client().clone(), &job, runner.job_log().clone(), options);
    let writer = log.writer();
    let cancel = log.cancel();
    if let Some((pid, offset, line_start)) = left_by {
        if !line_start {
            writer.write(b"\n");
        }
        let this = std::process::id();
        writer.warning(&if matches!(resume, Some(Resume::Ended(_))) {
            format!(
                "the runner process that ran this job (pid {pid}) ended before GitLab took the job's final state; runner process {this} sends it"
            )
        } else {
            format!(
                "the runner process that ran this job (pid {pid}) ended before the job did; runner process {this} resumes it where GitLab's log of it ends (byte {offset})"
            )
        });
    }
    if matches!(resume, None | Some(Resume::FromStart)) {
        writer.writeln(&format!(
            "\x1b[1mRunning with podrunner {} ({})\x1b[0;m\n\x1b[0;m  on {}\x1b[0;m",
            env!("CARGO_PKG_VERSION"),
            podrunner_coordinator::REVISION,
            runner.name()
        ));
        writer.mark(json!({ DAEMON_MARK: "started" }));
    }
    // A resumed job has had part of its time already.
    let timeout = job.runner_info.timeout.filter(|t| *t > 0).map(|t| {
        Duration::from_secs(if left_by.is_some() { t.saturating_sub(entry.age()) } else { t })
    });
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut ended = false;
    let mut run: BoxFuture<'_, JobOutcome> = match resume {
        None => runner.executor().run(
            runner.context(),
            Arc::clone(&job),
            writer.clone(),
            cancel.clone(),
        ),
        Some(Resume::FromStart) => runner.executor().resume(
            runner.context(),
            Arc::clone(&job),
            writer.clone(),
            cancel.clone(),
            None,
        ),
        Some(Resume::Executor(position)) => runner.executor().resume(
            runner.context(),
            Arc::clone(&job),
            writer.clone(),
            cancel.clone(),
            position,
        ),
        Some(Resume::Ended(outcome)) => {
            ended = true;
            Box::pin(async move { outcome })
        }
    };
    let mut timed_out = false;
    let mut interrupted = false;
    let mut aborted = false;
    let resumable = log_resumable(&runner, &shared);
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break Some(outcome),
            () = shared.hand_over.cancelled(), if resumable => break None,
            () = &mut deadline, if !timed_out => {
                timed_out = true;
                warn!("job timeout reached, aborting the job");
                cancel.abort();
            }
            () = shared.interrupt.cancelled(), if !interrupted => {
                interrupted = true;
                writer.error("the runner is shutting down, canceling the job (after_script runs)");
                cancel.request();
            }
            () = shared.abort.cancelled(), if !aborted => {
                aborted = true;
                interrupted = true;
                writer.error("the runner is stopping at once, aborting the job");
                cancel.abort();
            }
        }
    };
    drop(run);
    let Some(outcome) = outcome else {
        // Handed over: the executor's work is dropped where it stood (the pod runs on).
        let gitlab_has = log.hand_over(HAND_OVER_SEND_LIMIT).await;
        shared.counters.handed_over.fetch_add(1, Ordering::SeqCst);
        shared.metrics.jobs_handed_over.get_or_create(&labels).inc();
        shared.metrics.jobs_running.get_or_create(&labels).dec();
        shared.running.remove(runner.name(), job.id);
        info!(trace.offset = gitlab_has, "job handed over to the next runner process");
        drop(slots);
        return;
    };
    let outcome = if timed_out {
        JobOutcome::Timeout
    } else if interrupted {
        shared.counters.interrupted.fetch_add(1, Ordering::SeqCst);
        JobOutcome::system(FailureReason::RunnerInterrupted, "the runner was shut down")
    } else {
        outcome
    };
    if !ended {
        writer.writeln(&closing_line(&outcome));
        writer.mark(json!({ DAEMON_MARK: "ended", "outcome": outcome.to_json() }));
    }
    let mut unreported = false;
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
            unreported = keep_unreported(&shared, &mut entry, &outcome, &job, &writer);
            "report_failed".to_owned()
        }
    };
    if let Some(reason) = outcome.failure_reason() {
        shared
            .metrics
            .jobs_failed
            .get_or_create(&FailureLabels {
                runner: runner.name().to_owned(),
                failure_reason: reason.as_str().to_owned(),
            })
            .inc();
    }
    shared
        .metrics
        .jobs_finished
        .get_or_create(&OutcomeLabels { runner: runner.name().to_owned(), state })
        .inc();
    shared.metrics.jobs_running.get_or_create(&labels).dec();
    if !unreported
        && let Some(journal) = &shared.journal
        && let Err(e) = journal.forget(job.id)
    {
        warn!(error = %e, "failed to remove the job from the journal");
    }
    shared.running.remove(runner.name(), job.id);
    info!(job.outcome = outcome.label(), "job ended");
    drop(slots);
}

/// Keeps a job whose final update GitLab did not take in the journal, with the trace it did not
/// acknowledge, for the next start to send. Whether it was kept.
fn keep_unreported(
    shared: &Shared,
    entry: &mut JournalEntry,
    outcome: &JobOutcome,
    job: &Job,
    writer: &podrunner_coordinator::LogWriter,
) -> bool {
    let Some(journal) = &shared.journal else { return false };
    let (trace_offset, trace) = writer.unsent();
    let unreported = Unreported {
        state: outcome.state().as_str().to_owned(),
        failure_reason: outcome
            .failure_reason()
            .map(|r| r.resolve(&job.features.failure_reasons).to_owned()),
        exit_code: outcome.exit_code(),
        trace_offset,
    };
    match journal.record_unreported(entry, unreported, &trace) {
        Ok(()) => {
            warn!(
                trace.unsent = trace.len(),
                "the job's final state is kept for the next start to send"
            );
            true
        }
        Err(e) => {
            warn!(error = %e, "failed to keep the unreported job in the journal");
            false
        }
    }
}
