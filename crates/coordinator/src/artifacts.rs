//! GitLab's job artifacts API (`gitlab-runner.md` §4.5): uploading a job's archive
//! (`POST /api/v4/jobs/:id/artifacts`, multipart field `file`) and downloading a dependency's
//! (`GET /api/v4/jobs/:id/artifacts`), with upstream's retries.
//!
//! As upstream's `artifacts-uploader`: 201 is done; 413 (too large) and 403 end at once; 503
//! is tried up to 6 times, any other answer or a lost connection up to 3 times; a 307 moves the
//! upload to the host it names. As upstream's `artifacts-downloader`: 200 is done, 404 and
//! 401/403 end at once, anything else is tried up to 3 times. A download's redirect (to object
//! storage) is followed by hand, without the job token: only GitLab gets it.
//!
//! Archives stream from and to files: nothing of them is held in memory.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{LOCATION, USER_AGENT};
use secrecy::ExposeSecret as _;
use tokio::io::AsyncWriteExt as _;
use url::Url;

use crate::client::{Client, JobCredentials};
use crate::error::Endpoint;

/// Upstream's attempts for an upload answered with anything but 503.
const UPLOAD_TRIES: u32 = 3;
/// Upstream's attempts for an upload answered with 503 (GitLab busy).
const UNAVAILABLE_TRIES: u32 = 6;
/// Upstream's attempts for a download.
const DOWNLOAD_TRIES: u32 = 3;

/// One archive to upload, as the job's `artifacts[]` entry asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactUpload {
    /// The file name GitLab stores (`artifacts.zip`, `junit.gz`).
    pub file_name: String,
    /// `artifact_type` (`archive`, `junit`, ...).
    pub artifact_type: Option<String>,
    /// `artifact_format` (`zip`, `gzip`, `raw`).
    pub artifact_format: Option<String>,
    /// `expire_in` (`1 week`), passed on as GitLab parses it.
    pub expire_in: Option<String>,
}

/// What one attempt got: for the job log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The attempt, from 1.
    pub number: u32,
    /// How many attempts this kind of answer allows.
    pub of: u32,
    /// The HTTP status (`None`: no answer).
    pub status: Option<u16>,
    /// GitLab's message (`201 Created`, `413 Request Entity Too Large`) or the transport error.
    pub message: String,
    /// When the next attempt starts (`None`: none follows).
    pub retry_in: Option<Duration>,
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes written.
    pub bytes: u64,
    /// The object storage host GitLab redirected to, if it did.
    pub redirected_to: Option<String>,
}

/// Why an upload or download did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// 413: the archive is larger than the instance or project allows.
    #[error("too large archive: {message}")]
    TooLarge {
        /// GitLab's message.
        message: String,
    },
    /// 401 or 403: the job token is not (or no longer) allowed.
    #[error("forbidden: {message}")]
    Forbidden {
        /// GitLab's message.
        message: String,
    },
    /// 404: the job has no artifacts (they expired or were deleted).
    #[error("not found: {message}")]
    NotFound {
        /// GitLab's message.
        message: String,
    },
    /// Every attempt failed.
    #[error("{message} (after {attempts} attempts)")]
    Failed {
        /// The last attempt's status or error.
        message: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The archive file could not be read or written.
    #[error("failed to use the archive file: {source}")]
    File {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ArtifactError {
    /// A stable name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound { .. } => "not_found",
            Self::Failed { .. } => "failed",
            Self::File { .. } => "file",
        }
    }
}

/// The wait before attempt `next` (from 2): 1 s, 2 s, 4 s ... at most 16 s.
fn backoff(next: u32) -> Duration {
    Duration::from_secs(1u64 << next.saturating_sub(2).min(4))
}

/// GitLab's `{"message": ...}` or the status line.
async fn status_text(response: reqwest::Response) -> String {
    let status = response.status();
    let line = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let body = response.bytes().await.unwrap_or_default();
    let message =
        serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| match &v["message"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        });
    message.unwrap_or_else(|| line.trim_end().to_owned())
}

fn transport_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The same API path under the scheme, host and port of `location` (upstream's 307 handling).
fn moved_to(url: &Url, location: &str) -> Option<Url> {
    let target = url.join(location).ok()?;
    let mut moved = url.clone();
    moved.set_scheme(target.scheme()).ok()?;
    moved.set_host(target.host_str()).ok()?;
    moved.set_port(target.port()).ok()?;
    Some(moved)
}

impl Client {
    /// Uploads `file` as the job's artifact `upload`, retrying as upstream does; `attempt` hears
    /// of every attempt. Returns GitLab's message for the 201.
    ///
    /// # Errors
    ///
    /// [`ArtifactError`]: 413, 403, every attempt failed, or the file could not be read.
    pub async fn upload_artifact(
        &self,
        job: &JobCredentials,
        file: &Path,
        upload: &ArtifactUpload,
        timeout: Duration,
        attempt: &mut (dyn FnMut(Attempt) + Send),
    ) -> Result<String, ArtifactError> {
        let mut url = self.api_url(&format!("jobs/{}/artifacts", job.id));
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in [
                ("expire_in", &upload.expire_in),
                ("artifact_format", &upload.artifact_format),
                ("artifact_type", &upload.artifact_type),
            ] {
                if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                    query.append_pair(key, value);
                }
            }
        }
        let mut number = 0;
        loop {
            number += 1;
            let handle = tokio::fs::File::open(file)
                .await
                .map_err(|source| ArtifactError::File { source })?;
            let length =
                handle.metadata().await.map_err(|source| ArtifactError::File { source })?.len();
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                handle,
                256 * 1024,
            ));
            let part = reqwest::multipart::Part::stream_with_length(body, length)
                .file_name(upload.file_name.clone())
                .mime_str("application/octet-stream")
                .map_err(|e| ArtifactError::Failed { message: e.to_string(), attempts: number })?;
            let form = reqwest::multipart::Form::new().part("file", part);
            let builder = self
                .artifacts_http()
                .post(url.clone())
                .header(USER_AGENT, self.user_agent())
                .header("Job-Token", job.token.expose_secret())
                .timeout(timeout)
                .multipart(form);
            let started = std::time::Instant::now();
            let result = builder.send().await;
            self.observe(Endpoint::UploadArtifacts, &result, started.elapsed());
            let (status, message, tries) = match result {
                Err(e) => (None, transport_text(&e), UPLOAD_TRIES),
                Ok(response) => {
                    let status = response.status();
                    let location = response
                        .headers()
                        .get(LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let message = status_text(response).await;
                    match status {
                        StatusCode::CREATED => {
                            attempt(Attempt {
                                number,
                                of: number,
                                status: Some(201),
                                message: message.clone(),
                                retry_in: None,
                            });
                            return Ok(message);
                        }
                        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::FORBIDDEN => {
                            attempt(Attempt {
                                number,
                                of: number,
                                status: Some(status.as_u16()),
                                message: message.clone(),
                                retry_in: None,
                            });
                            return Err(if status == StatusCode::FORBIDDEN {
                                ArtifactError::Forbidden { message }
                            } else {
                                ArtifactError::TooLarge { message }
                            });
                        }
                        StatusCode::TEMPORARY_REDIRECT => {
                            match location.as_deref().and_then(|l| moved_to(&url, l)) {
                                Some(moved) => {
                                    url = moved;
                                    (
                                        Some(307),
                                        format!(
                                            "{message}: moved to {}",
                                            url.origin().ascii_serialization()
                                        ),
                                        UPLOAD_TRIES,
                                    )
                                }
                                None => {
                                    (Some(307), format!("{message}: empty location"), UPLOAD_TRIES)
                                }
                            }
                        }
                        StatusCode::SERVICE_UNAVAILABLE => (Some(503), message, UNAVAILABLE_TRIES),
                        other => (Some(other.as_u16()), message, UPLOAD_TRIES),
                    }
                }
            };
            let retry_in = (number < tries).then(|| backoff(number + 1));
            attempt(Attempt { number, of: tries, status, message: message.clone(), retry_in });
            match retry_in {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(ArtifactError::Failed { message, attempts: number }),
            }
        }
    }

    /// Downloads the artifacts of the job `dependency` (its own token) into `dest`, following
    /// GitLab's redirect to object storage without the token, retrying as upstream does.
    ///
    /// # Errors
    ///
    /// [`ArtifactError`]: 404, 401/403, every attempt failed, or `dest` could not be written.
    pub async fn download_artifact(
        &self,
        dependency: &JobCredentials,
        dest: &Path,
        timeout: Duration,
        attempt: &mut (dyn FnMut(Attempt) + Send),
    ) -> Result<Downloaded, ArtifactError> {
        let url = self.api_url(&format!("jobs/{}/artifacts", dependency.id));
        let mut number = 0;
        loop {
            number += 1;
            let (status, message) = match self.download_once(dependency, &url, dest, timeout).await
            {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err((status, message))) => {
                    let stop = match status {
                        404 => Some(ArtifactError::NotFound { message: message.clone() }),
                        401 | 403 => Some(ArtifactError::Forbidden { message: message.clone() }),
                        _ => None,
                    };
                    if let Some(stop) = stop {
                        attempt(Attempt {
                            number,
                            of: number,
                            status: Some(status),
                            message,
                            retry_in: None,
                        });
                        return Err(stop);
                    }
                    (Some(status), message)
                }
                Err(DownloadFault::File(source)) => return Err(ArtifactError::File { source }),
                Err(DownloadFault::Transport(message)) => (None, message),
            };
            let retry_in = (number < DOWNLOAD_TRIES).then(|| backoff(number + 1));
            attempt(Attempt {
                number,
                of: DOWNLOAD_TRIES,
                status,
                message: message.clone(),
                retry_in,
            });
            match retry_in {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(ArtifactError::Failed { message, attempts: number }),
            }
        }
    }

    /// One GET (and its redirect): `Ok(Err((status, message)))` for an answer that is not 200.
    async fn download_once(
        &self,
        dependency: &JobCredentials,
        url: &Url,
        dest: &Path,
        timeout: Duration,
    ) -> Result<Result<Downloaded, (u16, String)>, DownloadFault> {
        let started = std::time::Instant::now();
        let result = self
            .artifacts_http()
            .get(url.clone())
            .header(USER_AGENT, self.user_agent())
            .header("Job-Token", dependency.token.expose_secret())
            .timeout(timeout)
            .send()
            .await;
        self.observe(Endpoint::DownloadArtifacts, &result, started.elapsed());
        let mut response = result.map_err(|e| DownloadFault::Transport(transport_text(&e)))?;
        let mut redirected_to = None;
        if matches!(response.status(), StatusCode::FOUND | StatusCode::TEMPORARY_REDIRECT) {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok());
            let Some(location) = location else {
                return Ok(Err((
                    response.status().as_u16(),
                    "redirect without a location".to_owned(),
                )));
            };
            redirected_to = location.host_str().map(str::to_owned);
            // Object storage takes a presigned URL: the job token stays with GitLab.
            response = self
                .artifacts_http()
                .get(location)
                .header(USER_AGENT, self.user_agent())
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| DownloadFault::Transport(transport_text(&e)))?;
        }
        let status = response.status();
        if status != StatusCode::OK {
            return Ok(Err((status.as_u16(), status_text(response).await)));
        }
        let mut file = tokio::fs::File::create(dest).await.map_err(DownloadFault::File)?;
        let mut bytes = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| DownloadFault::Transport(transport_text(&e)))?;
            file.write_all(&chunk).await.map_err(DownloadFault::File)?;
            bytes += chunk.len() as u64;
        }
        file.flush().await.map_err(DownloadFault::File)?;
        Ok(Ok(Downloaded { bytes, redirected_to }))
    }
}

enum DownloadFault {
    File(std::io::Error),
    Transport(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_sixteen_seconds() {
        let waits: Vec<u64> = (2..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 16, 16]);
    }

    #[test]
    fn a_307_moves_the_upload_to_the_named_host_and_keeps_the_api_path() {
        let url =
            Url::parse("https://gitlab.example.com/api/v4/jobs/7/artifacts?artifact_type=archive")
                .expect("url");
        let moved = moved_to(&url, "https://gitlab-2.example.com:8443/whatever").expect("moved");
        assert_eq!(
            moved.as_str(),
            "https://gitlab-2.example.com:8443/api/v4/jobs/7/artifacts?artifact_type=archive"
        );
    }
}
