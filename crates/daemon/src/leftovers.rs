//! What an earlier runner process left behind, and what this one must not leave. At start, each
//! job in the journal is taken up: one a process left running (killed mid-job) is resumed
//! where GitLab's trace of it ends, when its executor can resume and the journal has its
//! payload and a checkpoint that matches GitLab's trace ([`resume_left_job`]); otherwise it is
//! cleaned up by its executor and reported failed with a job-log line saying what happened. One
//! whose final state GitLab did not take gets the rest of its log and that state. Then, every
//! [`SWEEP_INTERVAL`], the executor deletes objects of this process that belong to no running
//! job.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use podrunner_coordinator::{
    Checkpoint, Error as CoordinatorError, FailureReason, Job, JobCredentials, JobState, JobUpdate,
    LeftReport, report_left_job, trace_end,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::capacity::Slot;
use crate::daemon::{ActiveGuard, Runner, Shared};
use crate::executor::RunningJobs;
use crate::journal::{Journal, JournalEntry};

/// How often the executor sweeps objects of jobs that are not running.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Attempts at each of the trace patch and the final update of a left job.
const REPORT_ATTEMPTS: u32 = 6;

/// The jobs each runner (by name) is running now.
#[derive(Debug, Default)]
pub(crate) struct RunningSet(Mutex<HashMap<String, HashSet<u64>>>);

impl RunningSet {
    pub(crate) fn insert(&self, runner: &str, job_id: u64) {
        self.lock().entry(runner.to_owned()).or_default().insert(job_id);
    }

    pub(crate) fn remove(&self, runner: &str, job_id: u64) {
        if let Some(jobs) = self.lock().get_mut(runner) {
            jobs.remove(&job_id);
        }
    }

    fn of(&self, runner: &str) -> HashSet<u64> {
        self.lock().get(runner).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<u64>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Cleans up and reports each job `left` by an earlier process of `runner`, then sweeps every
/// [`SWEEP_INTERVAL`] until `stop`.
pub(crate) async fn look_after(
    runner: Arc<Runner>,
    journal: Option<Journal>,
    left: Vec<JournalEntry>,
    running: Arc<RunningSet>,
    stop: CancellationToken,
) {
    for entry in left {
        end_left_job(&runner, journal.as_ref(), entry, None).await;
    }
    let name = runner.name().to_owned();
    let running_now: RunningJobs = Arc::new(move || running.of(&name));
    loop {
        match runner.executor().sweep(runner.context(), Arc::clone(&running_now)).await {
            Ok(deleted) if !deleted.is_empty() => {
                info!(deleted = %deleted.join(", "), "swept objects of jobs that are not running");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "the sweep of objects left by jobs failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(SWEEP_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Why a left job is not resumed.
enum NotResumed {
    /// GitLab no longer runs it (canceled, timed out, erased: a 403 or 404).
    Ended(Option<String>),
    /// It cannot be continued (the text says why, for the job log).
    Cannot(String),
}

/// Resumes `entry`, a job an earlier process of `runner` left running: finds where GitLab's
/// trace ends and the checkpoint that matches it, then runs the job from there with the held
/// capacity `slots`. A job that cannot be resumed is cleaned up and reported failed, saying why.
pub(crate) async fn resume_left_job(
    runner: Arc<Runner>,
    shared: Arc<Shared>,
    entry: JournalEntry,
    slots: (Slot, Slot),
    guard: ActiveGuard,
) {
    let job_id = entry.job_id;
    match resume_point(&runner, &shared, &entry).await {
        Ok((job, from)) => {
            info!(
                job.left_by.pid = entry.pid,
                trace.offset = from.offset,
                "resuming a job an earlier runner process left running"
            );
            let labels = crate::metrics::RunnerLabels { runner: runner.name().to_owned() };
            shared.metrics.jobs_resumed.get_or_create(&labels).inc();
            let start = crate::job::Start::Resumed { entry: Box::new(entry), from };
            crate::job::run_job(runner, shared, Arc::new(job), slots, guard, start).await;
        }
        Err(NotResumed::Ended(status)) => {
            info!(
                job.status = status.as_deref().unwrap_or("unknown"),
                "a job left running by an earlier runner process had already ended in GitLab; cleaning up"
            );
            let job = left_job(&entry).ok().map(Arc::new);
            if let Err(e) = runner.executor().clean_up_left_job(runner.context(), job_id, job).await
            {
                warn!(error = %e, "failed to clean up after a job left by an earlier runner process");
            }
            if let Some(journal) = &shared.journal
                && let Err(e) = journal.forget(job_id)
            {
                warn!(error = %e, "failed to remove a job from the journal");
            }
            shared.running.remove(runner.name(), job_id);
        }
        Err(NotResumed::Cannot(why)) => {
            warn!(job.left_by.pid = entry.pid, reason = %why, "a job left running by an earlier runner process cannot be resumed");
            end_left_job(&runner, shared.journal.as_ref(), entry, Some(&why)).await;
            shared.running.remove(runner.name(), job_id);
        }
    }
}

/// The job of a journal entry, from the payload it kept; `Err` says why there is none.
fn left_job(entry: &JournalEntry) -> Result<Job, String> {
    let payload = entry.payload.as_ref().ok_or_else(|| "its payload was not saved".to_owned())?;
    let bytes = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
    let job = Job::from_payload(&bytes)
        .map_err(|(path, e)| format!("its saved payload does not decode at {path}: {e}"))?;
    if job.id != entry.job_id {
        return Err(format!("its saved payload is of job {}", job.id));
    }
    Ok(job)
}

/// The job and where its log continues.
async fn resume_point(
    runner: &Runner,
    shared: &Shared,
    entry: &JournalEntry,
) -> Result<(Job, Checkpoint), NotResumed> {
    let cannot = |why: String| NotResumed::Cannot(why);
    let job = left_job(entry).map_err(cannot)?;
    let credentials = JobCredentials { id: entry.job_id, token: entry.job_token.clone() };
    let mut delay = Duration::from_millis(500);
    let mut attempt = 0;
    let end = loop {
        attempt += 1;
        match trace_end(runner.client(), &credentials).await {
            Ok(end) => break end,
            Err(CoordinatorError::JobAborted { job_status, .. }) => {
                return Err(NotResumed::Ended(job_status));
            }
            Err(e) if attempt >= REPORT_ATTEMPTS => {
                return Err(cannot(format!("GitLab did not say where its log ends: {e}")));
            }
            Err(e) => {
                warn!(error = %e, attempt, "failed to ask GitLab where the job's log ends, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    };
    let checkpoint = match &shared.journal {
        Some(journal) => journal.checkpoint(entry.job_id).map_err(cannot)?,
        None => None,
    };
    match checkpoint {
        Some(checkpoint) => checkpoint
            .resume_at(end)
            .map_err(|e| cannot(format!("its log cannot be continued: {e}"))),
        None if end == 0 => Ok(Checkpoint::empty()),
        None => Err(cannot(format!(
            "GitLab has {end} bytes of its log, and no checkpoint of it was saved"
        ))),
    }
    .map(|from| (job, from))
}

async fn end_left_job(
    runner: &Runner,
    journal: Option<&Journal>,
    entry: JournalEntry,
    not_resumed: Option<&str>,
) {
    let job_id = entry.job_id;
    let (report, what) = match &entry.unreported {
        // The job ended; only GitLab did not hear it: send what it missed.
        Some(unreported) => {
            let update = JobUpdate {
                state: JobState::from_wire(&unreported.state).unwrap_or(JobState::Failed),
                failure_reason: unreported
                    .failure_reason
                    .as_deref()
                    .and_then(FailureReason::from_wire)
                    .map(FailureReason::as_str),
                exit_code: unreported.exit_code,
                output: None,
            };
            let trace = journal.map(|j| j.unsent_trace(job_id)).unwrap_or_default();
            let report = LeftReport { trace, offset: Some(unreported.trace_offset), update };
            (report, format!("its final state ({}) and the rest of its log", unreported.state))
        }
        None => {
            let job = left_job(&entry).ok().map(Arc::new);
            let cleaned = runner.executor().clean_up_left_job(runner.context(), job_id, job).await;
            let what = match &cleaned {
                Ok(deleted) if deleted.is_empty() => {
                    "found nothing of the job left to delete".to_owned()
                }
                Ok(deleted) => format!("deleted {}", deleted.join(" and ")),
                Err(e) => format!("could not delete what the job left: {e}"),
            };
            let why = not_resumed
                .map(|w| format!(" could not resume the job ({w}) and"))
                .unwrap_or_default();
            let message = format!(
                "the runner process that ran this job (pid {}) ended before the job did; the runner process started after it{why} {what}",
                entry.pid
            );
            (LeftReport::failed(&message), what)
        }
    };
    let credentials = JobCredentials { id: job_id, token: entry.job_token.clone() };
    let ended = match report_left_job(runner.client(), &credentials, &report, REPORT_ATTEMPTS).await
    {
        Ok(()) => {
            info!(job.id = job_id, job.left_by.pid = entry.pid, sent = %what, "a job left by an earlier runner process was reported");
            true
        }
        Err(CoordinatorError::JobAborted { job_status, .. }) => {
            info!(job.id = job_id, job.status = job_status.as_deref().unwrap_or("unknown"), sent = %what, "a job left by an earlier runner process had already ended in GitLab");
            true
        }
        Err(e) => {
            warn!(job.id = job_id, error = %e, sent = %what, "failed to report a job left by an earlier runner process; kept for the next start");
            false
        }
    };
    if ended
        && let Some(journal) = journal
        && let Err(e) = journal.forget(job_id)
    {
        warn!(job.id = job_id, error = %e, "failed to remove a job from the journal");
    }
}
