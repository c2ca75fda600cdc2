//! The artifact stages of a job (`stage-scripts.md` §1, stages 4 and 8): before the script,
//! each dependency's artifacts are downloaded from GitLab and extracted into the project
//! directory; after it, each `artifacts:` entry whose `when` matches is collected from the
//! pod and uploaded. The runner does the HTTP and writes the archives; the helper container
//! only lists, tars and untars ([`crate::transfer`]), so any image with busybox serves.
//!
//! The job log says what upstream's helper says (`Uploading artifacts...`, `<path>: found N
//! matching artifact files and directories`, the coordinator's answer), plus what was moved:
//! the file count, sizes, time and rate.

use std::io::{BufWriter, Write as _};
use std::time::Duration;

use podrunner_coordinator::wire::{Artifact, Dependency};
use podrunner_coordinator::{ArtifactError, ArtifactUpload, Attempt, JobCredentials};
use tokio::time::Instant;
use tokio_util::io::SyncIoBridge;
use tracing::{info, warn};

use super::{JobPod, JobRun, StageStop};
use crate::archive::{self, Format, Listing, Note, Summary};
use crate::script::Stage;
use crate::transfer;

/// Upstream's `[runners.artifact] upload_timeout` default.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

impl JobRun<'_> {
    /// `[runners.artifact] upload_timeout`, else upstream's hour.
    fn upload_timeout(&self) -> Duration {
        self.config
            .raw
            .artifact
            .as_ref()
            .and_then(|a| a.upload_timeout)
            .and_then(podrunner_config::values::GoDuration::positive)
            .unwrap_or(UPLOAD_TIMEOUT)
    }
}
/// The time a download may take (upstream's helper has no limit but the job's).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// The pipe between an exec's stream and the archive writer.
const PIPE: usize = 1024 * 1024;

/// Why one transfer failed: the pod's own failure ends the job as a system failure, anything
/// else fails the stage as upstream's helper command does (exit code 1, a `FATAL:` line).
pub(super) enum TransferError {
    Stop(StageStop),
    Fatal(String),
}

impl From<String> for TransferError {
    fn from(message: String) -> Self {
        Self::Fatal(message)
    }
}

/// A size for the log: `512 B`, `1.5 KiB`, `200.0 MiB`, `2.0 GiB`.
pub(super) fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let value = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", value / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", value / 1_048_576.0),
        _ => format!("{:.1} GiB", value / 1_073_741_824.0),
    }
}

fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    #[allow(clippy::cast_precision_loss)]
    let value = bytes as f64 / (1024.0 * 1024.0) / secs;
    format!("{value:.1} MiB/s")
}

pub(super) fn counted(summary: &Summary) -> String {
    let mut parts = vec![format!("{} files", summary.files)];
    if summary.dirs > 0 {
        parts.push(format!("{} directories", summary.dirs));
    }
    if summary.symlinks > 0 {
        parts.push(format!("{} symbolic links", summary.symlinks));
    }
    let mut text = parts.join(", ");
    if summary.stored > 0 {
        let _ = std::fmt::Write::write_fmt(
            &mut text,
            format_args!(" ({} stored uncompressed: they did not compress)", summary.stored),
        );
    }
    text
}

/// Whether the `artifacts:` entry is uploaded by `stage` (`when`: on_success by default).
fn uploaded_by(artifact: &Artifact, stage: Stage) -> bool {
    let when = artifact.when.as_deref().unwrap_or("on_success");
    let collects = !artifact.paths.is_empty() || artifact.untracked;
    collects
        && match stage {
            Stage::UploadArtifactsOnSuccess => matches!(when, "on_success" | "always"),
            Stage::UploadArtifactsOnFailure => matches!(when, "on_failure" | "always"),
            _ => false,
        }
}

impl JobRun<'_> {
    /// Whether `stage` (a transfer stage) has anything to do for this job.
    pub(super) fn has_transfers(&self, stage: Stage) -> bool {
        match stage {
            Stage::DownloadArtifacts => self.downloads().next().is_some(),
            Stage::UploadArtifactsOnSuccess | Stage::UploadArtifactsOnFailure => {
                self.job.artifacts.iter().any(|a| uploaded_by(a, stage))
            }
            Stage::RestoreCache | Stage::ArchiveCache | Stage::ArchiveCacheOnFailure => {
                self.has_cache_work(stage)
            }
            _ => false,
        }
    }

    fn downloads(&self) -> impl Iterator<Item = &Dependency> {
        self.job.dependencies.iter().filter(|d| d.artifacts_file.is_some())
    }

    /// A job variable's value (the last one of that name wins, as in the scripts).
    pub(super) fn variable<'p>(&self, pod: &'p JobPod, key: &str) -> Option<&'p str> {
        pod.layout.variables.iter().rev().find(|v| v.key == key).map(|v| v.value.as_str())
    }

    pub(super) fn expand(&self, pod: &JobPod, text: &str) -> String {
        podrunner_config::expand::expand_variables(text, |name| self.variable(pod, name))
    }

    /// Runs the transfer stage: `Ok(0)` when everything moved, `Ok(1)` when a transfer failed
    /// (said in the log), `Err` when the pod can no longer run the job or the job was aborted.
    pub(super) async fn transfer(&self, pod: &JobPod, stage: Stage) -> Result<i32, StageStop> {
        let work = async {
            match stage {
                Stage::RestoreCache | Stage::ArchiveCache | Stage::ArchiveCacheOnFailure => {
                    super::cache::cache_result(self.cache_stage(pod, stage).await)
                        .map_err(TransferError::Stop)?;
                }
                Stage::DownloadArtifacts => {
                    for dependency in self.downloads() {
                        self.download(pod, dependency).await?;
                    }
                }
                _ => {
                    for artifact in self.job.artifacts.iter().filter(|a| uploaded_by(a, stage)) {
                        self.upload(pod, artifact).await?;
                    }
                }
            }
            Ok::<(), TransferError>(())
        };
        let result = tokio::select! {
            result = work => result,
            () = self.cancel.aborted().cancelled() => return Err(StageStop::Aborted),
        };
        match result {
            Ok(()) => Ok(0),
            Err(TransferError::Stop(stop)) => Err(stop),
            Err(TransferError::Fatal(message)) => {
                warn!(job.id = self.job.id, stage = stage.name(), error = %message, "transfer failed");
                self.log.fatal(&message);
                Ok(1)
            }
        }
    }

    /// An exec failure: the pod's own failure if it has one, else the exec's error.
    fn exec_failed(&self, pod: &JobPod, message: String) -> TransferError {
        match pod.failure() {
            Some(failure) => TransferError::Stop(StageStop::Failed(failure)),
            None => TransferError::Fatal(message),
        }
    }

    pub(super) async fn exec_helper(
        &self,
        pod: &JobPod,
        program: &str,
        args: &[String],
        stdin: Option<&mut (dyn tokio::io::AsyncRead + Send + Unpin)>,
        stdout: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
    ) -> Result<transfer::ExecEnd, TransferError> {
        let command = transfer::command(program, args);
        let end = transfer::exec(&pod.api, &pod.name, "helper", command, stdin, stdout)
            .await
            .map_err(|e| self.exec_failed(pod, e))?;
        if end.code != 0 {
            return Err(self.exec_failed(
                pod,
                format!(
                    "the helper container's command exited with code {}: {}",
                    end.code, end.stderr
                ),
            ));
        }
        Ok(end)
    }

    /// Collects one `artifacts:` entry in the pod and uploads it.
    async fn upload(&self, pod: &JobPod, artifact: &Artifact) -> Result<(), TransferError> {
        self.log.notice("Uploading artifacts...");
        let client = self
            .coordinator
            .as_ref()
            .ok_or_else(|| "this runner process has no GitLab client to upload with".to_owned())?;
        let format = Format::from_gitlab(
            artifact.artifact_format.as_deref(),
            self.variable(pod, "ARTIFACT_COMPRESSION_LEVEL"),
        )?;
        let selection =
            self.select_in_pod(pod, &artifact.paths, &artifact.exclude, artifact.untracked).await?;
        if selection.paths.is_empty() {
            self.log.error("No files to upload");
            return Ok(());
        }
        let name = artifact.name.as_deref().map(|n| self.expand(pod, n));
        let upload = ArtifactUpload {
            file_name: format.file_name(name.as_deref()),
            artifact_type: artifact.artifact_type.clone(),
            artifact_format: artifact.artifact_format.clone(),
            expire_in: artifact.expire_in.clone(),
        };
        let started = Instant::now();
        let (file, summary) = self.collect(pod, &selection, format).await?;
        let collected = started.elapsed();
        let size = file.as_file().metadata().map(|m| m.len()).unwrap_or(0);
        self.log.writeln(&format!(
            "Collected {} ({} uncompressed) into {} ({}) in {:.1}s",
            counted(&summary),
            mib(summary.bytes),
            upload.file_name,
            mib(size),
            collected.as_secs_f64()
        ));
        let kind = artifact.artifact_type.clone().unwrap_or_else(|| "archive".to_owned());
        let prefix = format!("Uploading artifacts as {kind:?} to coordinator...");
        let job = JobCredentials::from(&*self.job);
        let log = self.log.clone();
        let id = self.job.id;
        let sent = Instant::now();
        let result = client
            .upload_artifact(
                &job,
                file.path(),
                &upload,
                self.upload_timeout(),
                &mut |a: Attempt| {
                    let status = a.status.map(|s| format!(" status={s}")).unwrap_or_default();
                    match (a.status, a.retry_in) {
                        (Some(201), _) => log.writeln(&format!(
                            "{prefix} {}  id={id} responseStatus={}",
                            a.message, a.message
                        )),
                        (_, Some(wait)) => log.warning(&format!(
                            "{prefix} {}  id={id}{status} (attempt {} of {}; retrying in {}s)",
                            a.message,
                            a.number,
                            a.of,
                            wait.as_secs()
                        )),
                        (_, None) => log.error(&format!("{prefix} {}  id={id}{status}", a.message)),
                    }
                },
            )
            .await;
        match result {
            Ok(_) => {
                let elapsed = sent.elapsed();
                info!(job.id = id, artifact = %upload.file_name, bytes = size, ms = elapsed.as_millis() as u64, "artifacts uploaded");
                self.log.writeln(&format!(
                    "Uploaded {} ({}) in {:.1}s ({})",
                    upload.file_name,
                    mib(size),
                    elapsed.as_secs_f64(),
                    rate(size, elapsed)
                ));
                Ok(())
            }
            Err(ArtifactError::TooLarge { message }) => Err(TransferError::Fatal(format!(
                "too large archive: GitLab answered {message:?} for {} of {}; this GitLab's maximum artifacts size (the instance's or the project's setting) is smaller: raise it or upload less (exclude, fewer paths)",
                upload.file_name,
                mib(size)
            ))),
            Err(e) => Err(TransferError::Fatal(e.to_string())),
        }
    }

    /// Lists the project directory in the helper and selects what `paths`, `exclude` and
    /// `untracked` name (variables expanded), saying in the log what each matched.
    pub(super) async fn select_in_pod(
        &self,
        pod: &JobPod,
        paths: &[String],
        exclude: &[String],
        untracked: bool,
    ) -> Result<archive::Selection, TransferError> {
        let project = pod.layout.project_dir.clone();
        let mut listed = Vec::new();
        let flag = if untracked { "1" } else { "0" };
        let end = self
            .exec_helper(
                pod,
                transfer::LIST_PROGRAM,
                &[project.clone(), flag.to_owned()],
                None,
                &mut listed,
            )
            .await?;
        if !end.stderr.is_empty() {
            self.log.warning(&end.stderr);
        }
        let listing = Listing::parse(&listed);
        let paths: Vec<String> = paths.iter().map(|p| self.expand(pod, p)).collect();
        let exclude: Vec<String> = exclude.iter().map(|p| self.expand(pod, p)).collect();
        let selection = archive::select(&listing, &project, &paths, &exclude, untracked);
        for note in &selection.notes {
            match note {
                Note::Found { pattern, count } => self.log.writeln(&format!(
                    "{pattern}: found {count} matching artifact files and directories"
                )),
                Note::Warning(text) => self.log.warning(text),
                Note::Info(text) => self.log.writeln(text),
            }
        }
        Ok(selection)
    }

    /// Tars the selection in the helper and writes it, as it streams, into a temporary file in
    /// `format`.
    pub(super) async fn collect(
        &self,
        pod: &JobPod,
        selection: &archive::Selection,
        format: Format,
    ) -> Result<(tempfile::NamedTempFile, Summary), TransferError> {
        let file = tempfile::NamedTempFile::new()
            .map_err(|e| format!("failed to create a temporary file for the archive: {e}"))?;
        let out = file.reopen().map_err(|e| format!("failed to open the archive file: {e}"))?;
        let (mut pipe_in, pipe_out) = tokio::io::duplex(PIPE);
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = BufWriter::with_capacity(PIPE, out);
            let summary = archive::write_archive(SyncIoBridge::new(pipe_out), &mut out, format)?;
            out.flush()?;
            Ok::<Summary, std::io::Error>(summary)
        });
        let list = selection.nul_list();
        let mut stdin: &[u8] = &list;
        let exec = self
            .exec_helper(
                pod,
                transfer::ARCHIVE_PROGRAM,
                &[pod.layout.project_dir.clone(), list.len().to_string()],
                Some(&mut stdin),
                &mut pipe_in,
            )
            .await;
        drop(pipe_in);
        let written = writer.await.map_err(|e| format!("the archive writer failed: {e}"))?;
        let end = exec?;
        if !end.stderr.is_empty() {
            self.log.warning(&end.stderr);
        }
        let summary = written.map_err(|e| format!("failed to write the archive: {e}"))?;
        Ok((file, summary))
    }

    /// Downloads one dependency's artifacts and extracts them into the project directory.
    async fn download(&self, pod: &JobPod, dependency: &Dependency) -> Result<(), TransferError> {
        self.log.notice(&format!(
            "Downloading artifacts for {} ({})...",
            dependency.name, dependency.id
        ));
        let client = self.coordinator.as_ref().ok_or_else(|| {
            "this runner process has no GitLab client to download with".to_owned()
        })?;
        let file = tempfile::NamedTempFile::new()
            .map_err(|e| format!("failed to create a temporary file for the archive: {e}"))?;
        let credentials = JobCredentials { id: dependency.id, token: dependency.token.clone() };
        let log = self.log.clone();
        let id = dependency.id;
        let prefix = "Downloading artifacts from coordinator...";
        let started = Instant::now();
        let result = client
            .download_artifact(&credentials, file.path(), DOWNLOAD_TIMEOUT, &mut |a: Attempt| {
                let status = a.status.map(|s| format!(" status={s}")).unwrap_or_default();
                match a.retry_in {
                    Some(wait) => log.warning(&format!(
                        "{prefix} failed  id={id}{status} error={:?} (attempt {} of {}; retrying in {}s)",
                        a.message,
                        a.number,
                        a.of,
                        wait.as_secs()
                    )),
                    None => {
                        let what = match a.status {
                            Some(404) => "not found",
                            Some(401) => "unauthorized",
                            Some(403) => "forbidden",
                            _ => "failed",
                        };
                        log.error(&format!("{prefix} {what}  id={id}{status} error={:?}", a.message));
                    }
                }
            })
            .await;
        let downloaded = match result {
            Ok(done) => done,
            Err(ArtifactError::NotFound { .. }) => {
                return Err(TransferError::Fatal(format!(
                    "file does not exist: the artifacts of {} ({id}) are gone from GitLab (expired or deleted); run that job again or keep its artifacts longer (artifacts:expire_in)",
                    dependency.name
                )));
            }
            Err(e) => return Err(TransferError::Fatal(e.to_string())),
        };
        let host = downloaded.redirected_to.map(|h| format!(" host={h}")).unwrap_or_default();
        self.log.writeln(&format!("{prefix} ok  id={id}{host} responseStatus=200 OK"));
        let fetched = started.elapsed();
        let extracted = Instant::now();
        let summary = self
            .extract(pod, file.path(), &format!("the artifacts of {} ({id})", dependency.name))
            .await?;
        self.log.writeln(&format!(
            "Extracted {} ({}) into {} (downloaded {} in {:.1}s, extracted in {:.1}s)",
            counted(&summary),
            mib(summary.bytes),
            pod.layout.project_dir,
            mib(downloaded.bytes),
            fetched.as_secs_f64(),
            extracted.elapsed().as_secs_f64()
        ));
        Ok(())
    }
}

impl JobRun<'_> {
    /// Extracts the zip at `zip` (`what` names it in errors) into the project directory: a tar
    /// stream of a length known beforehand, untarred by the helper.
    pub(super) async fn extract(
        &self,
        pod: &JobPod,
        zip: &std::path::Path,
        what: &str,
    ) -> Result<Summary, TransferError> {
        let path = zip.to_owned();
        let sizing = tokio::task::spawn_blocking(move || {
            let zip = std::fs::File::open(&path)?;
            let mut counter = archive::Counter::default();
            archive::zip_to_tar(std::io::BufReader::new(zip), &mut counter, true)?;
            Ok::<u64, std::io::Error>(counter.0)
        })
        .await
        .map_err(|e| format!("the archive reader failed: {e}"))?
        .map_err(|e| format!("{what} are not a readable zip: {e}"))?;
        let (pipe_in, mut pipe_out) = tokio::io::duplex(PIPE);
        let path = zip.to_owned();
        let reader = tokio::task::spawn_blocking(move || {
            let zip = std::fs::File::open(&path)?;
            let mut out = SyncIoBridge::new(pipe_in);
            let summary = archive::zip_to_tar(std::io::BufReader::new(zip), &mut out, false)?;
            out.shutdown()?;
            Ok::<Summary, std::io::Error>(summary)
        });
        let exec = self
            .exec_helper(
                pod,
                transfer::EXTRACT_PROGRAM,
                &[pod.layout.project_dir.clone(), sizing.to_string()],
                Some(&mut pipe_out),
                &mut tokio::io::sink(),
            )
            .await;
        // The reader ends once nothing takes its stream any more.
        drop(pipe_out);
        let summary = reader.await.map_err(|e| format!("the archive reader failed: {e}"))?;
        let end = exec?;
        if !end.stderr.is_empty() {
            self.log.warning(&end.stderr);
        }
        summary.map_err(|e| format!("failed to read {what}: {e}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(when: Option<&str>, paths: &[&str]) -> Artifact {
        let mut a = Artifact::default();
        a.when = when.map(str::to_owned);
        a.paths = paths.iter().map(|p| (*p).to_owned()).collect();
        a
    }

    #[test]
    fn when_decides_which_upload_stage_takes_an_artifact() {
        let success = Stage::UploadArtifactsOnSuccess;
        let failure = Stage::UploadArtifactsOnFailure;
        assert!(uploaded_by(&artifact(None, &["out/"]), success));
        assert!(!uploaded_by(&artifact(None, &["out/"]), failure));
        assert!(uploaded_by(&artifact(Some("on_failure"), &["out/"]), failure));
        assert!(!uploaded_by(&artifact(Some("on_failure"), &["out/"]), success));
        assert!(uploaded_by(&artifact(Some("always"), &["out/"]), success));
        assert!(uploaded_by(&artifact(Some("always"), &["out/"]), failure));
        assert!(!uploaded_by(&artifact(Some("always"), &[]), success), "nothing to collect");
    }

    #[test]
    fn sizes_and_rates_read_in_mebibytes() {
        assert_eq!(mib(200 * 1024 * 1024), "200.0 MiB");
        assert_eq!(mib(512), "512 B");
        assert_eq!(mib(1536), "1.5 KiB");
        assert_eq!(mib(2 << 30), "2.0 GiB");
        assert_eq!(rate(100 * 1024 * 1024, Duration::from_secs(2)), "50.0 MiB/s");
        let summary = Summary { files: 3, dirs: 1, ..Summary::default() };
        assert_eq!(counted(&summary), "3 files, 1 directories");
    }
}
