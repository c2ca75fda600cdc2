//! Running one job: the log, the executor, the job timeout, interruption at shutdown, and the
//! final report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use podrunner_coordinator::{FailureReason, Job, JobLog, JobOutcome};
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

/// Runs `job` on the runner's executor and reports it. Holds the capacity `slots` and the
/// `_guard` until the final update is done.
pub(crate) async fn run_job(
    runner: Arc<Runner>,
    shared: Arc<Shared>,
    job: Arc<Job>,
    slots: (Slot, Slot),
    _guard: ActiveGuard,
) {
    let labels = RunnerLabels { runner: runner.name().to_owned() };
    shared.metrics.jobs_running.get_or_create(&labels).inc();
    info!(job.name = %job.job_info.name, "job received");
    shared.running.insert(runner.name(), job.id);
    let mut entry = JournalEntry::now(
        runner.name(),
        runner.url(),
        job.id,
        job.token.clone(),
        &runner.context().system_id,
    );
    if let Some(journal) = &shared.journal
        && let Err(e) = journal.record(&entry)
    {
        warn!(error = %e, "failed to save the job in the journal: a killed runner would leave it to GitLab's timeout");
    }
    let log = JobLog::start(runner.client().clone(), &job, runner.job_log().clone());
    let writer = log.writer();
    let cancel = log.cancel();
    writer.writeln(&format!(
        "\x1b[1mRunning with podrunner {} ({})\x1b[0;m\n\x1b[0;m  on {}\x1b[0;m",
        env!("CARGO_PKG_VERSION"),
        podrunner_coordinator::REVISION,
        runner.name()
    ));
    let timeout = job.runner_info.timeout.filter(|t| *t > 0).map(Duration::from_secs);
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut run =
        runner.executor().run(runner.context(), Arc::clone(&job), writer.clone(), cancel.clone());
    let mut timed_out = false;
    let mut interrupted = false;
    let mut aborted = false;
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
    let outcome = if timed_out {
        JobOutcome::Timeout
    } else if interrupted {
        shared.counters.interrupted.fetch_add(1, Ordering::SeqCst);
        JobOutcome::system(FailureReason::RunnerInterrupted, "the runner was shut down")
    } else {
        outcome
    };
    writer.writeln(&closing_line(&outcome));
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
