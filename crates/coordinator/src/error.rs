//! Errors of the coordinator client and the job log.

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which API call an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /api/v4/runners/verify`.
    Verify,
    /// `POST /api/v4/jobs/request`.
    RequestJob,
    /// `PATCH /api/v4/jobs/:id/trace`.
    PatchTrace,
    /// `PUT /api/v4/jobs/:id`.
    UpdateJob,
    /// `POST /api/v4/jobs/:id/artifacts`.
    UploadArtifacts,
    /// `GET /api/v4/jobs/:id/artifacts` (and its redirect).
    DownloadArtifacts,
}

impl Endpoint {
    /// Stable name, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::RequestJob => "request_job",
            Self::PatchTrace => "patch_trace",
            Self::UpdateJob => "update_job",
            Self::UploadArtifacts => "upload_artifacts",
            Self::DownloadArtifacts => "download_artifacts",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the coordinator client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured GitLab URL cannot be used.
    #[error("invalid coordinator url {url:?}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it failed.
        #[source]
        source: url::ParseError,
    },
    /// TLS settings could not be built (bad CA bundle, no platform roots).
    #[error("failed to set up tls: {message}")]
    Tls {
        /// What failed.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("failed to build the http client")]
    HttpClient {
        /// The reqwest error.
        #[source]
        source: reqwest::Error,
    },
    /// The request did not get an HTTP response (connection refused, reset, timeout).
    #[error("request to {endpoint} failed")]
    Transport {
        /// The API call.
        endpoint: Endpoint,
        /// The reqwest error.
        #[source]
        source: reqwest::Error,
    },
    /// The response body could not be decoded.
    #[error("failed to decode the {endpoint} response at {path:?}")]
    Decode {
        /// The API call.
        endpoint: Endpoint,
        /// Path of the failing field (`variables[2].value`).
        path: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// 403 on a runner call: the runner token is invalid or the runner was removed.
    #[error("the coordinator rejected the runner token ({endpoint} returned 403)")]
    Forbidden {
        /// The API call.
        endpoint: Endpoint,
    },
    /// A status the protocol does not expect for this call.
    #[error("unexpected http status {status} from {endpoint}")]
    UnexpectedStatus {
        /// The API call.
        endpoint: Endpoint,
        /// The status code.
        status: u16,
    },
    /// The coordinator aborted the job (403, `Job-Status: canceled` or `failed`, or 404).
    #[error("job {job_id} was aborted by the coordinator (job status {job_status:?})")]
    JobAborted {
        /// Job id.
        job_id: u64,
        /// The `Job-Status` header, when there was one.
        job_status: Option<String>,
    },
    /// The final job update did not go through after all retries.
    #[error("gave up on the final update of job {job_id} after {attempts} attempts")]
    FinalUpdateExhausted {
        /// Job id.
        job_id: u64,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<Error>,
    },
    /// The job log was used after it was finished, or its sender task died.
    #[error("the job log of job {job_id} is closed")]
    LogClosed {
        /// Job id.
        job_id: u64,
    },
}

impl Error {
    /// Stable machine-readable kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "invalid_url",
            Self::Tls { .. } => "tls",
            Self::HttpClient { .. } => "http_client",
            Self::Transport { .. } => "transport",
            Self::Decode { .. } => "decode",
            Self::Forbidden { .. } => "forbidden",
            Self::UnexpectedStatus { .. } => "unexpected_status",
            Self::JobAborted { .. } => "job_aborted",
            Self::FinalUpdateExhausted { .. } => "final_update_exhausted",
            Self::LogClosed { .. } => "log_closed",
        }
    }

    /// Whether retrying the same call may succeed: transport errors and 5xx statuses.
    /// 4xx statuses are never transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::UnexpectedStatus { status, .. } => *status >= 500,
            _ => false,
        }
    }
}
