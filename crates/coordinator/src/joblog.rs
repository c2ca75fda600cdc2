//! The job log: one per job. It masks, buffers and streams the job's output to GitLab, and
//! reports the final state (`gitlab-runner.md` §4.3, §4.4).
//!
//! - [`LogWriter::write`] masks first (secrets split across writes included: see
//!   [`crate::mask`]), then appends to an in-memory trace capped at `output_limit`.
//! - A background task sends the unsent part with `PATCH /trace` every update interval, one
//!   request at a time and in order; `202` moves the sent offset, `416` moves it to the end of
//!   the server's `Range`, and transport errors or other statuses are retried on the next tick.
//!   When nothing was sent for the force-send interval it touches the job (`PUT state=running`).
//! - [`JobLog::finish`] flushes the masker, drains the trace (with backoff), then sends the final
//!   `PUT` (`202`: resend after the update interval; `412`: resend the whole trace and retry;
//!   `403`/`404`: aborted; other failures: exponential backoff with jitter, at most
//!   `final_update_retry_limit` times). The checksum is CRC-32 over every byte sent.
//! - A log with a checkpoint sink ([`LogOptions`]) sends the trace only up to its newest mark
//!   ([`LogWriter::mark`]), saving each mark with the unacknowledged trace before it (a
//!   [`Checkpoint`]) first: GitLab never has a byte that the newest saved checkpoint does not
//!   account for. A later runner process resumes from it ([`Checkpoint::resume_at`] with
//!   [`trace_end`]): the log continues at GitLab's end, its checksum included.
//! - `Job-Status: canceling` fires [`JobCancel::requested`]; `canceled`, `failed` or a 403 fire
//!   [`JobCancel::aborted`] as well.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::{
    Client, JobCredentials, PatchOutcome, RemoteJobStatus, ServerHints, UpdateOutcome,
};
use crate::error::{Error, Result};
use crate::mask::Masker;
use crate::outcome::JobOutcome;
use crate::wire::{Job, JobState, JobUpdate, TraceOutput};

/// Settings of a job log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLogConfig {
    /// Interval between trace patches until the server suggests one (default 3 s).
    pub update_interval: Duration,
    /// Whether the server's `X-GitLab-Trace-Update-Interval` replaces `update_interval`.
    pub follow_server_interval: bool,
    /// Touch the job when nothing was sent for this long (default 30 s).
    pub force_send_interval: Duration,
    /// Maximum trace size in bytes (`output_limit` KiB; default 4 MiB).
    pub output_limit: usize,
    /// Maximum bytes per patch (default 1 MiB).
    pub max_patch_size: usize,
    /// Failed attempts allowed for the final drain and update (default 10).
    pub final_update_retry_limit: u32,
    /// First backoff delay of the final update (default 1 s).
    pub retry_min_delay: Duration,
    /// Largest backoff delay of the final update (default 60 s).
    pub retry_max_delay: Duration,
    /// How many `202` answers to the final update are waited out (default 100).
    pub max_accepted_polls: u32,
    /// `debug_trace` query parameter.
    pub debug_trace: bool,
}

impl Default for JobLogConfig {
    fn default() -> Self {
        Self {
            update_interval: Duration::from_secs(3),
            follow_server_interval: true,
            force_send_interval: Duration::from_secs(30),
            output_limit: 4096 * 1024,
            max_patch_size: 1024 * 1024,
            final_update_retry_limit: 10,
            retry_min_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(60),
            max_accepted_polls: 100,
            debug_trace: false,
        }
    }
}

/// Cancellation signals of one job, for the executor to watch.
#[derive(Debug, Clone, Default)]
pub struct JobCancel {
    requested: CancellationToken,
    aborted: CancellationToken,
}

impl JobCancel {
    /// Fresh, not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires on a graceful cancel (`canceling`, or a daemon shutdown past its timeout) and on
    /// abort: stop the script, still run `after_script` unless aborted.
    pub fn requested(&self) -> &CancellationToken {
        &self.requested
    }

    /// Fires on abort (`canceled`, `failed`, 403): stop everything now.
    pub fn aborted(&self) -> &CancellationToken {
        &self.aborted
    }

    /// Requests a graceful cancel.
    pub fn request(&self) {
        self.requested.cancel();
    }

    /// Aborts (also fires `requested`).
    pub fn abort(&self) {
        self.requested.cancel();
        self.aborted.cancel();
    }

    /// Whether a cancel was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.is_cancelled()
    }

    /// Whether the job was aborted.
    pub fn is_aborted(&self) -> bool {
        self.aborted.is_cancelled()
    }

    fn apply(&self, job_id: u64, hints: &ServerHints) {
        match &hints.job_status {
            Some(RemoteJobStatus::Canceling) if !self.is_requested() => {
                info!(job.id = job_id, "coordinator requested a graceful cancel");
                self.request();
            }
            Some(s) if s.is_abort() && !self.is_aborted() => {
                info!(job.id = job_id, job.status = s.as_str(), "coordinator aborted the job");
                self.abort();
            }
            _ => {}
        }
    }
}

/// The runner's phases, shown as collapsible sections in GitLab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Creating the pod.
    PrepareExecutor,
    /// Waiting for the pod to run.
    PrepareScript,
    /// Fetching the sources.
    GetSources,
    /// `before_script` + `script`.
    StepScript,
    /// `after_script`.
    AfterScript,
    /// Restoring the cache.
    RestoreCache,
    /// Downloading the dependencies' artifacts.
    DownloadArtifacts,
    /// Saving the cache after the job succeeded.
    ArchiveCache,
    /// Saving the cache after the job failed.
    ArchiveCacheOnFailure,
    /// Uploading artifacts after the job succeeded.
    UploadArtifactsOnSuccess,
    /// Uploading artifacts after the job failed.
    UploadArtifactsOnFailure,
    /// Removing file variables and the runner's files.
    CleanupFileVariables,
}

impl Section {
    /// The section name used in the markers.
    pub fn name(self) -> &'static str {
        match self {
            Self::PrepareExecutor => "prepare_executor",
            Self::PrepareScript => "prepare_script",
            Self::GetSources => "get_sources",
            Self::StepScript => "step_script",
            Self::AfterScript => "after_script",
            Self::RestoreCache => "restore_cache",
            Self::DownloadArtifacts => "download_artifacts",
            Self::ArchiveCache => "archive_cache",
            Self::ArchiveCacheOnFailure => "archive_cache_on_failure",
            Self::UploadArtifactsOnSuccess => "upload_artifacts_on_success",
            Self::UploadArtifactsOnFailure => "upload_artifacts_on_failure",
            Self::CleanupFileVariables => "cleanup_file_variables",
        }
    }

    /// The header gitlab-runner shows for the phase.
    pub fn header(self) -> &'static str {
        match self {
            Self::PrepareExecutor => "Preparing the \"kubernetes\" executor",
            Self::PrepareScript => "Preparing environment",
            Self::GetSources => "Getting source from Git repository",
            Self::StepScript => "Executing \"step_script\" stage of the job script",
            Self::AfterScript => "Running after_script",
            Self::RestoreCache => "Restoring cache",
            Self::DownloadArtifacts => "Downloading artifacts",
            Self::ArchiveCache => "Saving cache for successful job",
            Self::ArchiveCacheOnFailure => "Saving cache for failed job",
            Self::UploadArtifactsOnSuccess => "Uploading artifacts for successful job",
            Self::UploadArtifactsOnFailure => "Uploading artifacts for failed job",
            Self::CleanupFileVariables => "Cleaning up project directory and file based variables",
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Keeps only the characters GitLab accepts in section names.
fn section_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
        .collect()
}

/// `section_start:<unix>:<name>[collapsed=true]\r\e[0K<header>\n`.
pub fn section_start_marker(unix: u64, name: &str, header: &str, collapsed: bool) -> String {
    let opts = if collapsed { "[collapsed=true]" } else { "" };
    format!(
        "section_start:{unix}:{}{opts}\r\x1b[0K\x1b[36;1m{header}\x1b[0;m\n",
        section_name(name)
    )
}

/// `section_end:<unix>:<name>\r\e[0K\n`.
pub fn section_end_marker(unix: u64, name: &str) -> String {
    format!("section_end:{unix}:{}\r\x1b[0K\n", section_name(name))
}

struct State {
    masker: Masker,
    /// The masked trace (what was or will be sent) after `base`, at most about `output_limit`
    /// bytes in all.
    trace: Vec<u8>,
    /// Trace bytes before `trace[0]`, which GitLab has (0 unless the log was resumed).
    base: u64,
    /// CRC-32 of those bytes.
    base_crc: u32,
    /// Bytes of `trace` the server has acknowledged.
    sent: usize,
    /// The newest mark (see [`LogWriter::mark`]).
    mark: Option<Mark>,
    /// With a checkpoint sink: the end of the newest saved checkpoint in `trace`; nothing after
    /// it is sent, so GitLab never has a byte a resumed run could not account for.
    saved: usize,
    /// A checkpoint failed to save (said once in the daemon log).
    sink_failed: bool,
    /// Whether GitLab's trace before `trace[0]` ends a line (or is empty).
    base_line_start: bool,
    /// CRC-32 of GitLab's trace up to `trace[..crc_upto]`: the trace only grows, so the next
    /// checksum hashes only what came since.
    crc_value: u32,
    crc_upto: usize,
    truncated: bool,
    closed: bool,
    /// The server said 403/404 to a patch: stop sending.
    gone: bool,
    interval: Duration,
    last_contact: Instant,
}

/// A position of the job recorded in the trace.
struct Mark {
    /// Where in `trace` it was taken.
    at: usize,
    position: serde_json::Value,
    in_token: bool,
    truncated: bool,
}

struct Shared {
    state: Mutex<State>,
    config: JobLogConfig,
    checkpoints: Option<CheckpointSink>,
    job: JobCredentials,
    cancel: JobCancel,
    failure_reasons: Vec<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the trace half-written in a way that
        // matters more than losing the log; keep going with the inner value.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn append_masked(&self, state: &mut State, masked: &[u8]) {
        if state.truncated || masked.is_empty() {
            return;
        }
        let limit = self.config.output_limit;
        let before = usize::try_from(state.base).unwrap_or(usize::MAX);
        let room = limit.saturating_sub(before.saturating_add(state.trace.len()));
        if masked.len() <= room {
            state.trace.extend_from_slice(masked);
        } else {
            state.trace.extend_from_slice(&masked[..room]);
            state.truncated = true;
            let notice = format!(
                "\n\x1b[31;1mJob's log exceeded limit of {limit} bytes.\nJob execution will continue but no more output will be collected.\x1b[0;m\n"
            );
            state.trace.extend_from_slice(notice.as_bytes());
        }
    }

    fn write(&self, data: &[u8]) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        let mut out = Vec::with_capacity(data.len());
        state.masker.push(data, &mut out);
        self.append_masked(&mut state, &out);
    }

    /// Writes `data` and records the mark `position(held)`, `held` being how many bytes at the
    /// end of what was written so far the masker still holds back (`flush`: none, it emits them).
    fn write_marked(
        &self,
        data: &[u8],
        flush: bool,
        position: impl FnOnce(usize) -> serde_json::Value,
    ) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        let mut out = Vec::with_capacity(data.len());
        state.masker.push(data, &mut out);
        if flush {
            state.masker.flush(&mut out);
        }
        self.append_masked(&mut state, &out);
        let held = state.masker.pending_len();
        state.mark = Some(Mark {
            at: state.trace.len(),
            position: position(held),
            in_token: state.masker.in_token(),
            truncated: state.truncated,
        });
    }

    fn apply_hints(&self, hints: &ServerHints) {
        self.cancel.apply(self.job.id, hints);
        if self.config.follow_server_interval
            && let Some(interval) = hints.update_interval
        {
            self.lock().interval = interval;
        }
    }
}

/// What one send attempt did.
enum SendStep {
    /// Nothing left to send.
    Idle,
    /// Progress (or an offset correction): try again at once.
    Progress,
    /// Failed; retry later.
    Retry(Error),
    /// The job is gone or aborted: stop sending.
    Gone(Option<RemoteJobStatus>),
}

/// CRC-32 of GitLab's trace up to `trace[..upto]`, extending the one computed last.
fn crc_through(state: &mut State, upto: usize) -> u32 {
    if upto < state.crc_upto {
        (state.crc_value, state.crc_upto) = (state.base_crc, 0);
    }
    let done = state.base + state.crc_upto as u64;
    let mut hasher = crc32fast::Hasher::new_with_initial_len(state.crc_value, done);
    hasher.update(&state.trace[state.crc_upto..upto]);
    (state.crc_value, state.crc_upto) = (hasher.finalize(), upto);
    state.crc_value
}

/// The checksum of the final update over GitLab's trace up to `trace[..upto]`.
fn checksum_of(state: &mut State, upto: usize) -> TraceOutput {
    TraceOutput {
        checksum: format!("crc32:{:08x}", crc_through(state, upto)),
        bytesize: state.base + upto as u64,
    }
}

/// With a checkpoint sink, saves the newest mark not saved yet (before any byte up to it is
/// sent); returns how far `trace` may be sent.
fn save_checkpoint(shared: &Shared) -> usize {
    let Some(sink) = &shared.checkpoints else { return shared.lock().trace.len() };
    let (at, checkpoint) = {
        let mut state = shared.lock();
        // Once closed, only the final flush follows the last mark: everything is sent.
        let sendable = if state.closed { state.trace.len() } else { state.saved };
        match state.mark.as_ref().map(|m| m.at) {
            Some(at) if at > state.saved => {
                let sent = state.sent.min(at);
                let crc = crc_through(&mut state, sent);
                let Some(mark) = &state.mark else { return sendable };
                let checkpoint = Checkpoint {
                    offset: state.base + sent as u64,
                    crc,
                    pending: state.trace[sent..mark.at].to_vec(),
                    in_token: mark.in_token,
                    truncated: mark.truncated,
                    line_start: state.trace[..mark.at]
                        .last()
                        .map_or(state.base_line_start, |b| *b == b'\n'),
                    position: mark.position.clone(),
                };
                (mark.at, checkpoint)
            }
            _ => return sendable,
        }
    };
    let saved = sink(&checkpoint);
    let mut state = shared.lock();
    if let Err(e) = saved
        && !state.sink_failed
    {
        // The live log matters more: it is sent anyway, and a later process that finds
        // GitLab ahead of the checkpoint does not resume the job.
        warn!(job.id = shared.job.id, error = %e, "failed to save the job's checkpoint: a restarted runner could not resume this job");
        state.sink_failed = true;
    }
    state.saved = state.saved.max(at);
    if state.closed { state.trace.len() } else { state.saved }
}

async fn send_once(shared: &Shared, client: &Client) -> SendStep {
    let sendable = save_checkpoint(shared);
    let (offset, chunk) = {
        let state = shared.lock();
        if state.gone {
            return SendStep::Gone(None);
        }
        let limit = sendable.min(state.trace.len());
        if state.sent >= limit {
            return SendStep::Idle;
        }
        let end = limit.min(state.sent + shared.config.max_patch_size);
        (state.sent, state.trace[state.sent..end].to_vec())
    };
    let len = chunk.len();
    let base = shared.lock().base;
    let response = match client
        .patch_trace(&shared.job, base + offset as u64, chunk, shared.config.debug_trace)
        .await
    {
        Ok(r) => r,
        Err(e) => return SendStep::Retry(e),
    };
    shared.apply_hints(&response.hints);
    let mut state = shared.lock();
    match response.outcome {
        PatchOutcome::Accepted => {
            state.sent = offset + len;
            state.last_contact = Instant::now();
            SendStep::Progress
        }
        PatchOutcome::RangeMismatch { server_offset: Some(server) } => {
            let server = usize::try_from(server.saturating_sub(state.base))
                .unwrap_or(usize::MAX)
                .min(state.trace.len());
            debug!(
                job.id = shared.job.id,
                trace.offset = server,
                "trace range mismatch, resending"
            );
            state.sent = server;
            SendStep::Progress
        }
        PatchOutcome::RangeMismatch { server_offset: None } => {
            SendStep::Retry(Error::UnexpectedStatus {
                endpoint: crate::error::Endpoint::PatchTrace,
                status: 416,
            })
        }
        PatchOutcome::Forbidden | PatchOutcome::NotFound => {
            state.gone = true;
            drop(state);
            shared.cancel.abort();
            SendStep::Gone(response.hints.job_status)
        }
        PatchOutcome::Failed { status } => SendStep::Retry(Error::UnexpectedStatus {
            endpoint: crate::error::Endpoint::PatchTrace,
            status,
        }),
    }
}

async fn touch(shared: &Shared, client: &Client) {
    let output = {
        let mut state = shared.lock();
        let sent = state.sent;
        checksum_of(&mut state, sent)
    };
    let update = JobUpdate {
        state: JobState::Running,
        failure_reason: None,
        exit_code: None,
        output: Some(output),
    };
    match client.update_job(&shared.job, &update).await {
        Ok(r) => {
            shared.apply_hints(&r.hints);
            match r.outcome {
                UpdateOutcome::Forbidden | UpdateOutcome::NotFound => shared.cancel.abort(),
                _ => shared.lock().last_contact = Instant::now(),
            }
        }
        Err(e) => debug!(job.id = shared.job.id, error.kind = e.kind(), "job touch failed"),
    }
}

/// The background sender: one patch cycle per update interval until stopped.
async fn run_sender(shared: Arc<Shared>, client: Client, stop: CancellationToken) {
    loop {
        let interval = shared.lock().interval;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        loop {
            match send_once(&shared, &client).await {
                SendStep::Progress => {
                    if stop.is_cancelled() {
                        return;
                    }
                }
                SendStep::Idle => {
                    let idle_for = shared.lock().last_contact.elapsed();
                    if idle_for >= shared.config.force_send_interval {
                        touch(&shared, &client).await;
                    }
                    break;
                }
                SendStep::Retry(e) => {
                    debug!(
                        job.id = shared.job.id,
                        error.kind = e.kind(),
                        "trace patch failed, will retry"
                    );
                    break;
                }
                SendStep::Gone(_) => return,
            }
        }
    }
}

/// A handle that writes into the job log. Cheap to clone; every clone writes to the same trace.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogWriter").field("job.id", &self.shared.job.id).finish_non_exhaustive()
    }
}

impl LogWriter {
    /// The trace GitLab has not acknowledged: the offset it starts at and its bytes (masked).
    /// After a [`JobLog::finish`] that failed, what a later process must still send.
    pub fn unsent(&self) -> (u64, Vec<u8>) {
        let state = self.shared.lock();
        let sent = state.sent.min(state.trace.len());
        (state.base + sent as u64, state.trace[sent..].to_vec())
    }

    /// Records that everything written so far brings the job to `position` (the executor's
    /// own description of where it stands). Bytes the masker held back are emitted first.
    /// With a checkpoint sink ([`LogOptions::checkpoints`]) the trace is sent only up to the
    /// newest mark, each mark saved before its bytes go out, so a later runner process can
    /// resume the job from the mark that matches what GitLab has.
    pub fn mark(&self, position: serde_json::Value) {
        self.shared.write_marked(&[], true, |_| position);
    }

    /// Writes `data` (command output) and records the mark `position(held)`: `held` is how many
    /// bytes at the end of the output the masker still holds back (a possible start of a
    /// secret), which a resumed run must read again.
    pub fn write_marked(&self, data: &[u8], position: impl FnOnce(usize) -> serde_json::Value) {
        self.shared.write_marked(data, false, position);
    }

    /// Appends output (masked before it is stored). Writes after [`JobLog::finish`] are dropped.
    pub fn write(&self, data: &[u8]) {
        self.shared.write(data);
    }

    /// Appends a line (a `\n` is added).
    pub fn writeln(&self, line: &str) {
        let mut data = Vec::with_capacity(line.len() + 1);
        data.extend_from_slice(line.as_bytes());
        data.push(b'\n');
        self.shared.write(&data);
    }

    /// A yellow `WARNING: ` line, as upstream's `Warningln`.
    pub fn warning(&self, text: &str) {
        self.writeln(&format!("\x1b[0;33mWARNING: {text}\x1b[0;m"));
    }

    /// A bold green line, as upstream's `Noticef` (`Uploading artifacts...`).
    pub fn notice(&self, text: &str) {
        self.writeln(&format!("\x1b[32;1m{text}\x1b[0;m"));
    }

    /// A bold red `FATAL: ` line, as upstream's helper ends a failed command.
    pub fn fatal(&self, text: &str) {
        self.writeln(&format!("\x1b[31;1mFATAL: {text}\x1b[0;m"));
    }

    /// A bold red `ERROR: ` line, as upstream's `Errorln`.
    pub fn error(&self, text: &str) {
        self.writeln(&format!("\x1b[31;1mERROR: {text}\x1b[0;m"));
    }

    /// Opens a collapsible section.
    pub fn section_start(&self, name: &str, header: &str, collapsed: bool) {
        self.write(section_start_marker(unix_now(), name, header, collapsed).as_bytes());
    }

    /// Closes a collapsible section.
    pub fn section_end(&self, name: &str) {
        self.write(section_end_marker(unix_now(), name).as_bytes());
    }

    /// Opens the section of one of the runner's phases.
    pub fn begin(&self, section: Section) {
        self.section_start(section.name(), section.header(), false);
    }

    /// Closes the section of one of the runner's phases.
    pub fn end(&self, section: Section) {
        self.section_end(section.name());
    }

    /// The job's cancellation signals.
    pub fn cancel(&self) -> &JobCancel {
        &self.shared.cancel
    }
}

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the final update achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishReport {
    /// Bytes of trace sent (and acknowledged).
    pub bytes_sent: u64,
    /// `crc32:%08x` of the sent trace.
    pub checksum: String,
    /// PUT requests made for the final update.
    pub update_attempts: u32,
    /// How often the whole trace was resent after a 412.
    pub trace_resets: u32,
    /// Whether the trace was cut at `output_limit`.
    pub truncated: bool,
}

/// The job log of one running job.
pub struct JobLog {
    shared: Arc<Shared>,
    client: Client,
    stop: CancellationToken,
    sender: Option<JoinHandle<()>>,
}

impl fmt::Debug for JobLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobLog").field("job.id", &self.shared.job.id).finish_non_exhaustive()
    }
}

impl JobLog {
    /// Starts the log of `job`: masks its masked variables, its token and its dependencies'
    /// tokens, plus tokens with `features.token_mask_prefixes`. Spawns the sender task, so it
    /// must be called inside a tokio runtime.
    pub fn start(client: Client, job: &Job, config: JobLogConfig) -> Self {
        Self::start_journaled(client, job, config, LogOptions::default())
    }

    /// Starts the log of `job` as [`JobLog::start`] does, with checkpoints saved through
    /// `options.checkpoints` and, for a job resumed from one, the trace continuing there.
    pub fn start_journaled(
        client: Client,
        job: &Job,
        config: JobLogConfig,
        options: LogOptions,
    ) -> Self {
        let secrets = job.secrets_to_mask();
        let masker = Masker::new(
            secrets.iter(),
            job.features.token_mask_prefixes.iter().map(String::as_str),
        );
        Self::start_with_options(
            client,
            JobCredentials::from(job),
            masker,
            job.features.failure_reasons.clone(),
            config,
            options,
        )
    }

    /// Starts a log with an explicit masker (for callers that build the job themselves).
    pub fn start_with(
        client: Client,
        job: JobCredentials,
        masker: Masker,
        failure_reasons: Vec<String>,
        config: JobLogConfig,
    ) -> Self {
        Self::start_with_options(
            client,
            job,
            masker,
            failure_reasons,
            config,
            LogOptions::default(),
        )
    }

    /// [`JobLog::start_with`] with checkpoints and a resume point.
    pub fn start_with_options(
        client: Client,
        job: JobCredentials,
        mut masker: Masker,
        failure_reasons: Vec<String>,
        config: JobLogConfig,
        options: LogOptions,
    ) -> Self {
        let LogOptions { checkpoints, resume } = options;
        let resume = resume.unwrap_or_else(Checkpoint::empty);
        masker.set_in_token(resume.in_token);
        let at = resume.pending.len();
        let state = State {
            masker,
            trace: resume.pending,
            base: resume.offset,
            base_crc: resume.crc,
            sent: 0,
            mark: (!resume.position.is_null()).then(|| Mark {
                at,
                position: resume.position.clone(),
                in_token: resume.in_token,
                truncated: resume.truncated,
            }),
            saved: at,
            sink_failed: false,
            base_line_start: resume.line_start || resume.offset == 0,
            crc_value: resume.crc,
            crc_upto: 0,
            truncated: resume.truncated,
            closed: false,
            gone: false,
            interval: config.update_interval,
            last_contact: Instant::now(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            config,
            checkpoints,
            job,
            cancel: JobCancel::new(),
            failure_reasons,
        });
        let stop = CancellationToken::new();
        let sender = tokio::spawn(run_sender(Arc::clone(&shared), client.clone(), stop.clone()));
        Self { shared, client, stop, sender: Some(sender) }
    }

    /// A writer handle.
    pub fn writer(&self) -> LogWriter {
        LogWriter { shared: Arc::clone(&self.shared) }
    }

    /// The job's cancellation signals.
    pub fn cancel(&self) -> JobCancel {
        self.shared.cancel.clone()
    }

    /// The job id.
    pub fn job_id(&self) -> u64 {
        self.shared.job.id
    }

    /// The masked trace so far, after what a resumed log started from (tests and diagnostics).
    pub fn trace_snapshot(&self) -> Vec<u8> {
        self.shared.lock().trace.clone()
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.shared.config.retry_min_delay)
            .with_max_delay(self.shared.config.retry_max_delay)
            .with_max_times(self.shared.config.final_update_retry_limit as usize)
            .build()
    }

    /// Sends everything not yet acknowledged, retrying failures with backoff.
    async fn drain(
        &self,
        attempts: &mut u32,
        backoff: &mut impl Iterator<Item = Duration>,
    ) -> Result<()> {
        loop {
            match send_once(&self.shared, &self.client).await {
                SendStep::Idle => return Ok(()),
                SendStep::Progress => {}
                SendStep::Gone(status) => {
                    return Err(Error::JobAborted {
                        job_id: self.shared.job.id,
                        job_status: status.map(|s| s.as_str().to_owned()),
                    });
                }
                SendStep::Retry(e) => {
                    *attempts += 1;
                    let Some(delay) = backoff.next() else {
                        return Err(Error::FinalUpdateExhausted {
                            job_id: self.shared.job.id,
                            attempts: *attempts,
                            last: Box::new(e),
                        });
                    };
                    debug!(
                        job.id = self.shared.job.id,
                        error.kind = e.kind(),
                        "final trace drain failed, backing off"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Stops the log without ending the job, for a later runner process to resume it: saves
    /// the newest mark's checkpoint and sends the trace up to it (for at most `within`; what is
    /// not sent stays in the checkpoint). Returns how many bytes of the trace GitLab has.
    pub async fn hand_over(mut self, within: Duration) -> u64 {
        self.stop.cancel();
        if let Some(sender) = self.sender.take()
            && let Err(e) = sender.await
        {
            warn!(job.id = self.shared.job.id, error = %e, "trace sender task failed");
        }
        let send = async {
            loop {
                match send_once(&self.shared, &self.client).await {
                    SendStep::Progress => {}
                    SendStep::Idle | SendStep::Gone(_) => return,
                    SendStep::Retry(e) => {
                        debug!(
                            job.id = self.shared.job.id,
                            error.kind = e.kind(),
                            "trace patch failed while handing the job over"
                        );
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(within, send).await;
        let state = self.shared.lock();
        state.base + state.sent as u64
    }

    /// Ends the log: flushes held-back output, sends the rest of the trace, and reports
    /// `outcome` with `PUT /jobs/:id` as the protocol says.
    ///
    /// # Errors
    ///
    /// [`Error::JobAborted`] when GitLab refuses the job (403/404), and
    /// [`Error::FinalUpdateExhausted`] when the retries ran out.
    pub async fn finish(mut self, outcome: &JobOutcome) -> Result<FinishReport> {
        {
            let mut state = self.shared.lock();
            let mut out = Vec::new();
            state.masker.finish(&mut out);
            self.shared.append_masked(&mut state, &out);
            state.closed = true;
        }
        self.stop.cancel();
        if let Some(sender) = self.sender.take()
            && let Err(e) = sender.await
        {
            warn!(job.id = self.shared.job.id, error = %e, "trace sender task failed");
        }

        let job_id = self.shared.job.id;
        let failure_reason =
            outcome.failure_reason().map(|r| r.resolve(&self.shared.failure_reasons));
        let mut backoff = self.backoff();
        let mut failures = 0u32;
        let mut update_attempts = 0u32;
        let mut trace_resets = 0u32;
        let mut accepted_polls = 0u32;
        // A resumed log cannot resend the trace before its base: after a 412 it reports
        // without a checksum, as runners without one did.
        let mut without_checksum = false;
        loop {
            self.drain(&mut failures, &mut backoff).await?;
            let (output, truncated) = {
                let mut state = self.shared.lock();
                let sent = state.sent;
                (checksum_of(&mut state, sent), state.truncated)
            };
            let update = JobUpdate {
                state: outcome.state(),
                failure_reason,
                exit_code: outcome.exit_code(),
                output: (!without_checksum).then(|| output.clone()),
            };
            update_attempts += 1;
            let result = self.client.update_job(&self.shared.job, &update).await;
            let error = match result {
                Ok(response) => {
                    self.shared.apply_hints(&response.hints);
                    match response.outcome {
                        UpdateOutcome::Done => {
                            info!(
                                job.id = job_id,
                                job.state = update.state.as_str(),
                                trace.bytes = output.bytesize,
                                "job finished"
                            );
                            return Ok(FinishReport {
                                bytes_sent: output.bytesize,
                                checksum: output.checksum,
                                update_attempts,
                                trace_resets,
                                truncated,
                            });
                        }
                        UpdateOutcome::Accepted => {
                            accepted_polls += 1;
                            if accepted_polls > self.shared.config.max_accepted_polls {
                                Error::UnexpectedStatus {
                                    endpoint: crate::error::Endpoint::UpdateJob,
                                    status: 202,
                                }
                            } else {
                                let interval = self.shared.lock().interval;
                                tokio::time::sleep(interval).await;
                                continue;
                            }
                        }
                        UpdateOutcome::TraceInvalid => {
                            trace_resets += 1;
                            let mut state = self.shared.lock();
                            if state.base > 0 {
                                without_checksum = true;
                            } else {
                                state.sent = 0;
                            }
                            drop(state);
                            Error::UnexpectedStatus {
                                endpoint: crate::error::Endpoint::UpdateJob,
                                status: 412,
                            }
                        }
                        UpdateOutcome::Forbidden | UpdateOutcome::NotFound => {
                            self.shared.cancel.abort();
                            return Err(Error::JobAborted {
                                job_id,
                                job_status: response
                                    .hints
                                    .job_status
                                    .map(|s| s.as_str().to_owned()),
                            });
                        }
                        UpdateOutcome::Failed { status } => Error::UnexpectedStatus {
                            endpoint: crate::error::Endpoint::UpdateJob,
                            status,
                        },
                    }
                }
                Err(e) => e,
            };
            failures += 1;
            let Some(delay) = backoff.next() else {
                return Err(Error::FinalUpdateExhausted {
                    job_id,
                    attempts: failures,
                    last: Box::new(error),
                });
            };
            if trace_resets > 0 && matches!(error, Error::UnexpectedStatus { status: 412, .. }) {
                // Resend the whole trace right away, then retry the update.
                continue;
            }
            debug!(
                job.id = job_id,
                error.kind = error.kind(),
                "final job update failed, backing off"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Saves a [`Checkpoint`] where a later runner process finds it; `Err` says why it could not.
pub type CheckpointSink = Arc<dyn Fn(&Checkpoint) -> std::result::Result<(), String> + Send + Sync>;

/// Options of a job log that can be resumed by a later runner process.
#[derive(Default)]
pub struct LogOptions {
    /// Where each checkpoint is saved before the trace up to it is sent.
    pub checkpoints: Option<CheckpointSink>,
    /// Where the trace continues (a resumed job): a checkpoint rebased at GitLab's end.
    pub resume: Option<Checkpoint>,
}

impl fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogOptions")
            .field("checkpoints", &self.checkpoints.is_some())
            .field("resume", &self.resume)
            .finish()
    }
}

/// A mark of the job log as saved: the trace GitLab may have up to it, and the position. A
/// log resumes from one rebased at GitLab's end ([`Checkpoint::resume_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Where `pending` starts in GitLab's trace (what GitLab had acknowledged).
    pub offset: u64,
    /// CRC-32 of GitLab's trace before `offset`.
    pub crc: u32,
    /// The trace from `offset` to the mark (masked; sent after this checkpoint was saved).
    pub pending: Vec<u8>,
    /// The masker was inside a prefixed token at the mark.
    pub in_token: bool,
    /// The trace had been cut at `output_limit`.
    pub truncated: bool,
    /// The trace up to the mark ends a line (or is empty).
    pub line_start: bool,
    /// Where the job stood at the mark (see [`LogWriter::mark`]); `null` before any mark.
    pub position: serde_json::Value,
}

/// GitLab's trace ends outside what a checkpoint accounts for (a checkpoint failed to save,
/// or the trace was changed by someone else).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gitlab's trace ends at byte {gitlab}, outside the saved checkpoint's bytes {from}..{to}")]
pub struct StaleCheckpoint {
    /// Where GitLab's trace ends.
    pub gitlab: u64,
    /// Where the checkpoint's trace starts.
    pub from: u64,
    /// Where it ends.
    pub to: u64,
}

impl Checkpoint {
    /// The start of a log: nothing sent, no mark.
    pub fn empty() -> Self {
        Self {
            offset: 0,
            crc: 0,
            pending: Vec::new(),
            in_token: false,
            truncated: false,
            line_start: true,
            position: serde_json::Value::Null,
        }
    }

    /// This checkpoint rebased where GitLab's trace ends (`gitlab_end`): what a resumed log
    /// starts from, the rest of `pending` sent first.
    ///
    /// # Errors
    ///
    /// [`StaleCheckpoint`] when `gitlab_end` is before `offset` or after the mark.
    pub fn resume_at(&self, gitlab_end: u64) -> std::result::Result<Checkpoint, StaleCheckpoint> {
        let to = self.offset + self.pending.len() as u64;
        let stale = StaleCheckpoint { gitlab: gitlab_end, from: self.offset, to };
        let have = usize::try_from(gitlab_end.checked_sub(self.offset).ok_or(stale.clone())?)
            .map_err(|_| stale.clone())?;
        let Some(acknowledged) = self.pending.get(..have) else { return Err(stale) };
        let mut hasher = crc32fast::Hasher::new_with_initial_len(self.crc, self.offset);
        hasher.update(acknowledged);
        Ok(Checkpoint {
            offset: gitlab_end,
            crc: hasher.finalize(),
            pending: self.pending[have..].to_vec(),
            in_token: self.in_token,
            truncated: self.truncated,
            line_start: self.line_start,
            position: self.position.clone(),
        })
    }
}

/// Where GitLab's trace of `job` ends, asked with a patch no trace reaches (its `416` says).
///
/// # Errors
///
/// [`Error::JobAborted`] when GitLab no longer takes the job (403/404), transport errors and
/// other answers.
pub async fn trace_end(client: &Client, job: &JobCredentials) -> Result<u64> {
    let response = client.patch_trace(job, 1 << 40, b"\n".to_vec(), false).await?;
    match response.outcome {
        PatchOutcome::RangeMismatch { server_offset: Some(end) } => Ok(end),
        PatchOutcome::Forbidden | PatchOutcome::NotFound => Err(Error::JobAborted {
            job_id: job.id,
            job_status: response.hints.job_status.map(|s| s.as_str().to_owned()),
        }),
        PatchOutcome::Accepted => Err(Error::UnexpectedStatus {
            endpoint: crate::error::Endpoint::PatchTrace,
            status: 202,
        }),
        PatchOutcome::RangeMismatch { server_offset: None } => Err(Error::UnexpectedStatus {
            endpoint: crate::error::Endpoint::PatchTrace,
            status: 416,
        }),
        PatchOutcome::Failed { status } => {
            Err(Error::UnexpectedStatus { endpoint: crate::error::Endpoint::PatchTrace, status })
        }
    }
}

/// What a later process sends for a job an earlier one did not finish reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftReport {
    /// Bytes to append to the job's trace.
    pub trace: Vec<u8>,
    /// Where `trace` starts in GitLab's trace, if known (else it goes after what GitLab has).
    pub offset: Option<u64>,
    /// The final update (sent without a checksum: the trace before `trace` is not known here).
    pub update: JobUpdate,
}

impl LeftReport {
    /// A job that an earlier runner process left running: `message` as an error line after
    /// what GitLab has, and `failed` with `runner_system_failure`.
    pub fn failed(message: &str) -> Self {
        let line = format!("\n\x1b[31;1mERROR: Job failed (system failure): {message}\x1b[0;m\n");
        Self {
            trace: line.into_bytes(),
            offset: None,
            update: JobUpdate {
                state: JobState::Failed,
                failure_reason: Some(crate::outcome::FailureReason::RunnerSystemFailure.as_str()),
                exit_code: None,
                output: None,
            },
        }
    }
}

/// Sends what an earlier runner process could not: the rest of the trace, then the final
/// update. A trace whose offset is known continues there (a `416` tells how much of it GitLab
/// already has, which is not sent again); one without goes after GitLab's trace (never from 0,
/// which would replace it under `trace_reset`). Each step is tried at most `attempts` times.
///
/// # Errors
///
/// [`Error::JobAborted`] when GitLab no longer takes the job (403/404: canceled, timed out or
/// erased), [`Error::FinalUpdateExhausted`] when the attempts ran out.
pub async fn report_left_job(
    client: &Client,
    job: &JobCredentials,
    report: &LeftReport,
    attempts: u32,
) -> Result<()> {
    let mut backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(attempts as usize)
        .build();
    let aborted = |status: Option<RemoteJobStatus>| Error::JobAborted {
        job_id: job.id,
        job_status: status.map(|s| s.as_str().to_owned()),
    };
    let exhausted = |tries: u32, last: Error| Error::FinalUpdateExhausted {
        job_id: job.id,
        attempts: tries,
        last: Box::new(last),
    };
    // No trace is this long: the first answer is a 416 saying where GitLab's trace ends.
    let mut offset = report.offset.unwrap_or(1 << 40);
    let mut rest = report.trace.as_slice();
    let mut tries = 0;
    while !rest.is_empty() {
        tries += 1;
        let error = match client.patch_trace(job, offset, rest.to_vec(), false).await {
            Ok(r) => match r.outcome {
                PatchOutcome::Accepted => break,
                PatchOutcome::RangeMismatch { server_offset: Some(end) } if end != offset => {
                    // GitLab has more (an answer lost): skip what it has; or less: continue
                    // at its end.
                    let have = usize::try_from(end.saturating_sub(offset)).unwrap_or(usize::MAX);
                    rest = rest.get(have..).unwrap_or_default();
                    offset = end;
                    continue;
                }
                PatchOutcome::Forbidden | PatchOutcome::NotFound => {
                    return Err(aborted(r.hints.job_status));
                }
                PatchOutcome::RangeMismatch { .. } => Error::UnexpectedStatus {
                    endpoint: crate::error::Endpoint::PatchTrace,
                    status: 416,
                },
                PatchOutcome::Failed { status } => {
                    Error::UnexpectedStatus { endpoint: crate::error::Endpoint::PatchTrace, status }
                }
            },
            Err(e) => e,
        };
        let Some(delay) = backoff.next() else { return Err(exhausted(tries, error)) };
        tokio::time::sleep(delay).await;
    }
    tries = 0;
    loop {
        tries += 1;
        let error = match client.update_job(job, &report.update).await {
            Ok(r) => match r.outcome {
                UpdateOutcome::Done => return Ok(()),
                UpdateOutcome::Forbidden | UpdateOutcome::NotFound => {
                    return Err(aborted(r.hints.job_status));
                }
                UpdateOutcome::Accepted => Error::UnexpectedStatus {
                    endpoint: crate::error::Endpoint::UpdateJob,
                    status: 202,
                },
                UpdateOutcome::TraceInvalid => Error::UnexpectedStatus {
                    endpoint: crate::error::Endpoint::UpdateJob,
                    status: 412,
                },
                UpdateOutcome::Failed { status } => {
                    Error::UnexpectedStatus { endpoint: crate::error::Endpoint::UpdateJob, status }
                }
            },
            Err(e) => e,
        };
        let Some(delay) = backoff.next() else { return Err(exhausted(tries, error)) };
        tokio::time::sleep(delay).await;
    }
}

impl Drop for JobLog {
    fn drop(&mut self) {
        // A log dropped without `finish` stops sending.
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_markers_follow_gitlab_format() {
        assert_eq!(
            section_start_marker(1_560_896_352, "step_script", "Running", true),
            "section_start:1560896352:step_script[collapsed=true]\r\x1b[0K\x1b[36;1mRunning\x1b[0;m\n"
        );
        assert_eq!(
            section_end_marker(1_560_896_353, "my section!"),
            "section_end:1560896353:my_section_\r\x1b[0K\n"
        );
    }

    #[test]
    fn cancel_signals_distinguish_graceful_from_abort() {
        let c = JobCancel::new();
        c.apply(
            1,
            &ServerHints { job_status: Some(RemoteJobStatus::Canceling), update_interval: None },
        );
        assert!(c.is_requested() && !c.is_aborted());
        c.apply(
            1,
            &ServerHints { job_status: Some(RemoteJobStatus::Canceled), update_interval: None },
        );
        assert!(c.is_requested() && c.is_aborted());
    }
}
