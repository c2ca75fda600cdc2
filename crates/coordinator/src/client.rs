//! The HTTP client for GitLab's runner API (`gitlab-runner.md` §4).
//!
//! Each method makes exactly one HTTP request and classifies the response as the protocol
//! says; retry policy lives with the callers ([`crate::JobLog`] for trace and final updates,
//! [`Client::verify`] for itself, the daemon's request loop for job requests), so a 4xx is
//! never retried blindly.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, HeaderMap, RANGE, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};
use tracing::debug;
use url::Url;

use crate::error::{Endpoint, Error, Result};
use crate::wire::{
    self, Job, JobRequest, JobUpdate, UpdateJobBody, VerifyRequest, VerifyResponseBody, VersionInfo,
};

/// `Job-Status` response header.
pub const JOB_STATUS_HEADER: &str = "Job-Status";
/// `X-GitLab-Trace-Update-Interval` response header.
pub const UPDATE_INTERVAL_HEADER: &str = "X-GitLab-Trace-Update-Interval";
/// `X-GitLab-Last-Update` response header (long polling).
pub const LAST_UPDATE_HEADER: &str = "X-GitLab-Last-Update";
/// Upper bound GitLab-Runner applies to the server's update interval.
pub const MAX_UPDATE_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// Receives one call per HTTP request (for metrics): endpoint, status (`None` when no response
/// arrived) and duration.
pub trait ApiObserver: Send + Sync {
    /// Called after every request.
    fn observe(&self, endpoint: Endpoint, status: Option<u16>, elapsed: Duration);
}

/// Settings for one runner's client.
pub struct ClientConfig {
    /// GitLab URL as configured (`https://gitlab.example.com`); a trailing `/ci` is dropped.
    pub url: String,
    /// The runner authentication token.
    pub token: SecretString,
    /// The runner's system id (`s_` + 12 characters).
    pub system_id: String,
    /// What the runner announces about itself.
    pub info: VersionInfo,
    /// Extra root certificates (PEM), from `tls-ca-file`.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Timeout of one request, including the server's long polling (50 s by default).
    pub request_timeout: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Sees every request's status and duration.
    pub observer: Option<Arc<dyn ApiObserver>>,
}

impl ClientConfig {
    /// A config with default timeouts (request 75 s, connect 10 s) and no extra CA.
    pub fn new(
        url: impl Into<String>,
        token: SecretString,
        system_id: impl Into<String>,
        info: VersionInfo,
    ) -> Self {
        Self {
            url: url.into(),
            token,
            system_id: system_id.into(),
            info,
            tls_ca_pem: None,
            request_timeout: Duration::from_secs(75),
            connect_timeout: Duration::from_secs(10),
            observer: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("token", &"[MASKED]")
            .field("system_id", &self.system_id)
            .field("info", &self.info)
            .field("tls_ca_pem", &self.tls_ca_pem.as_ref().map(Vec::len))
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// Generates a system id the way gitlab-runner does for a fresh install: `s_` + 12 hex digits.
pub fn generate_system_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("s_{}", &hex[..12])
}

/// The job status GitLab reports in `Job-Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteJobStatus {
    /// `running`.
    Running,
    /// `canceling`: graceful cancel, after_script still runs.
    Canceling,
    /// `canceled`: abort.
    Canceled,
    /// `failed`: abort.
    Failed,
    /// `success`.
    Success,
    /// Anything else (`pending`, ...).
    Other(String),
}

impl RemoteJobStatus {
    fn parse(s: &str) -> Self {
        match s.trim() {
            "running" => Self::Running,
            "canceling" => Self::Canceling,
            "canceled" => Self::Canceled,
            "failed" => Self::Failed,
            "success" => Self::Success,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Running => "running",
            Self::Canceling => "canceling",
            Self::Canceled => "canceled",
            Self::Failed => "failed",
            Self::Success => "success",
            Self::Other(s) => s,
        }
    }

    /// `canceled` and `failed` abort the job at once.
    pub fn is_abort(&self) -> bool {
        matches!(self, Self::Canceled | Self::Failed)
    }
}

/// Headers GitLab sends back on trace and update calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerHints {
    /// `Job-Status`.
    pub job_status: Option<RemoteJobStatus>,
    /// `X-GitLab-Trace-Update-Interval`, capped at 15 minutes; `None` when absent or 0.
    pub update_interval: Option<Duration>,
}

impl ServerHints {
    fn from_headers(headers: &HeaderMap) -> Self {
        let job_status = headers
            .get(JOB_STATUS_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(RemoteJobStatus::parse);
        let update_interval = headers
            .get(UPDATE_INTERVAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s).min(MAX_UPDATE_INTERVAL));
        Self { job_status, update_interval }
    }
}

/// Result of `PATCH /jobs/:id/trace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchOutcome {
    /// 202: the chunk was stored.
    Accepted,
    /// 416: the server's offset differs; resend from `server_offset` (from the `Range` header).
    RangeMismatch {
        /// The end of the server's `Range: a-b`, i.e. where to resend from.
        server_offset: Option<u64>,
    },
    /// 403: the job is not running any more (abort).
    Forbidden,
    /// 404: the job is gone (stop sending).
    NotFound,
    /// Any other status: retry later.
    Failed {
        /// The status code.
        status: u16,
    },
}

/// Result of `PUT /jobs/:id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// 200: done.
    Done,
    /// 202: accepted but not complete (two-phase commit); resend after the update interval.
    Accepted,
    /// 412: trace validation failed; resend the whole trace, then update again.
    TraceInvalid,
    /// 403: the job may not be updated any more (abort).
    Forbidden,
    /// 404: the job is gone (abort).
    NotFound,
    /// Any other status: retry with backoff.
    Failed {
        /// The status code.
        status: u16,
    },
}

/// A response classified by the protocol, plus the server's hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<T> {
    /// What the status means.
    pub outcome: T,
    /// `Job-Status` and update interval.
    pub hints: ServerHints,
}

/// Result of `POST /runners/verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// 200: the token is valid.
    Valid {
        /// Runner id, when GitLab sent one.
        id: Option<u64>,
        /// Token expiry, as GitLab sent it.
        token_expires_at: Option<String>,
    },
    /// 403: the token is invalid or the runner was removed.
    Invalid,
}

/// Result of `POST /jobs/request` other than an error.
#[derive(Debug)]
pub struct JobRequestResult {
    /// The job (201), or `None` (204).
    pub job: Option<Box<Job>>,
    /// `X-GitLab-Last-Update`, to echo as `last_update` in the next request.
    pub last_update: Option<String>,
}

/// The identity of a running job: id and job token.
#[derive(Clone)]
pub struct JobCredentials {
    /// Job id.
    pub id: u64,
    /// Job token.
    pub token: SecretString,
}

impl fmt::Debug for JobCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobCredentials").field("id", &self.id).field("token", &"[MASKED]").finish()
    }
}

impl From<&Job> for JobCredentials {
    fn from(job: &Job) -> Self {
        Self { id: job.id, token: job.token.clone() }
    }
}

struct Inner {
    http: reqwest::Client,
    /// For artifacts: no overall timeout (each request sets its own) and no automatic
    /// redirects (a download's redirect is followed without the job token).
    artifacts_http: reqwest::Client,
    base: Url,
    token: SecretString,
    system_id: String,
    info: VersionInfo,
    user_agent: String,
    observer: Option<Arc<dyn ApiObserver>>,
}

/// A client for one runner (one URL and runner token). Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base.as_str())
            .field("system_id", &self.inner.system_id)
            .finish_non_exhaustive()
    }
}

/// `<url without trailing "/" and "/ci">/api/v4/`.
pub fn api_base(url: &str) -> Result<Url> {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/ci").unwrap_or(trimmed);
    let parsed = Url::parse(&format!("{trimmed}/api/v4/"))
        .map_err(|source| Error::InvalidUrl { url: url.to_owned(), source })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::InvalidUrl {
            url: url.to_owned(),
            source: url::ParseError::RelativeUrlWithoutBase,
        });
    }
    Ok(parsed)
}

/// A rustls client config on the `ring` provider (the one kube uses), verifying against the
/// platform roots plus any extra roots from `tls-ca-file`.
fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut extra = Vec::new();
    if let Some(pem) = extra_ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| Error::Tls { message: format!("bad ca certificate: {e}") })?;
            extra.push(cert);
        }
        if extra.is_empty() {
            return Err(Error::Tls { message: "the ca file holds no certificate".to_owned() });
        }
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, Arc::clone(&provider))
            .map_err(|e| Error::Tls { message: e.to_string() })?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls { message: e.to_string() })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Client {
    /// Builds the client. Does no IO.
    ///
    /// # Errors
    ///
    /// An unusable URL, a bad CA bundle, or a reqwest builder failure.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let base = api_base(&config.url)?;
        let tls = tls_config(config.tls_ca_pem.as_deref())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|source| Error::HttpClient { source })?;
        let artifacts_http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(config.tls_ca_pem.as_deref())?)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| Error::HttpClient { source })?;
        let info = &config.info;
        let user_agent = format!(
            "gitlab-runner {} (podrunner; rust; {}/{})",
            if info.version.is_empty() { env!("CARGO_PKG_VERSION") } else { &info.version },
            info.platform,
            info.architecture
        );
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                artifacts_http,
                base,
                token: config.token,
                system_id: config.system_id,
                info: config.info,
                user_agent,
                observer: config.observer,
            }),
        })
    }

    /// The `/api/v4/` base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// What the runner announces.
    pub fn info(&self) -> &VersionInfo {
        &self.inner.info
    }

    fn url(&self, path: &str) -> Url {
        self.inner.base.join(path).expect("invariant: relative api paths always join")
    }

    pub(crate) fn api_url(&self, path: &str) -> Url {
        self.url(path)
    }

    pub(crate) fn artifacts_http(&self) -> &reqwest::Client {
        &self.inner.artifacts_http
    }

    pub(crate) fn user_agent(&self) -> &str {
        &self.inner.user_agent
    }

    pub(crate) fn observe(
        &self,
        endpoint: Endpoint,
        result: &reqwest::Result<reqwest::Response>,
        elapsed: Duration,
    ) {
        if let Some(observer) = &self.inner.observer {
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            observer.observe(endpoint, status, elapsed);
        }
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        self.inner
            .http
            .request(method, url)
            .header(USER_AGENT, &self.inner.user_agent)
            .header("X-Request-Id", request_id())
    }

    async fn send(
        &self,
        endpoint: Endpoint,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let started = std::time::Instant::now();
        let result = builder.send().await;
        if let Some(observer) = &self.inner.observer {
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            observer.observe(endpoint, status, started.elapsed());
        }
        let response = result.map_err(|source| Error::Transport { endpoint, source })?;
        debug!(
            coordinator.endpoint = endpoint.as_str(),
            http.response.status_code = response.status().as_u16(),
            "coordinator response"
        );
        Ok(response)
    }

    /// `POST /api/v4/runners/verify`, retrying transient failures (network, 5xx) with
    /// exponential backoff and jitter, at most three times.
    ///
    /// # Errors
    ///
    /// Transport errors and unexpected statuses after the retries.
    pub async fn verify(&self) -> Result<Verification> {
        (|| self.verify_once())
            .retry(
                ExponentialBuilder::default()
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(3),
            )
            .when(Error::is_transient)
            .await
    }

    async fn verify_once(&self) -> Result<Verification> {
        let body = VerifyRequest {
            info: &self.inner.info,
            token: self.inner.token.expose_secret(),
            system_id: &self.inner.system_id,
        };
        let builder = self
            .request(reqwest::Method::POST, self.url("runners/verify"))
            .header("Runner-Token", self.inner.token.expose_secret())
            .json(&body);
        let response = self.send(Endpoint::Verify, builder).await?;
        match response.status() {
            StatusCode::OK | StatusCode::CREATED => {
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|source| Error::Transport { endpoint: Endpoint::Verify, source })?;
                // Older GitLab answers in plain text; a 200 is what counts.
                let parsed: Option<VerifyResponseBody> = wire::decode_json(&bytes).ok();
                Ok(Verification::Valid {
                    id: parsed.as_ref().and_then(|p| p.id),
                    token_expires_at: parsed.and_then(|p| p.token_expires_at),
                })
            }
            StatusCode::FORBIDDEN => Ok(Verification::Invalid),
            status => {
                Err(Error::UnexpectedStatus { endpoint: Endpoint::Verify, status: status.as_u16() })
            }
        }
    }

    /// `POST /api/v4/jobs/request`: one attempt, no retry (the request loop polls again).
    ///
    /// `last_update` is the previous response's `X-GitLab-Last-Update`.
    ///
    /// # Errors
    ///
    /// 403 ([`Error::Forbidden`]), other unexpected statuses (503 is transient), transport
    /// errors and an undecodable job (the error names the failing field's path).
    pub async fn request_job(&self, last_update: Option<&str>) -> Result<JobRequestResult> {
        let endpoint = Endpoint::RequestJob;
        let body = JobRequest {
            info: &self.inner.info,
            token: self.inner.token.expose_secret(),
            system_id: &self.inner.system_id,
            last_update,
        };
        let builder = self
            .request(reqwest::Method::POST, self.url("jobs/request"))
            .header("Runner-Token", self.inner.token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body);
        let response = self.send(endpoint, builder).await?;
        let last_update = response
            .headers()
            .get(LAST_UPDATE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match response.status() {
            StatusCode::CREATED => {
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|source| Error::Transport { endpoint, source })?;
                let job = Job::from_payload(&bytes).map_err(|(path, source)| Error::Decode {
                    endpoint,
                    path,
                    source,
                })?;
                Ok(JobRequestResult { job: Some(Box::new(job)), last_update })
            }
            StatusCode::NO_CONTENT => Ok(JobRequestResult { job: None, last_update }),
            StatusCode::FORBIDDEN => Err(Error::Forbidden { endpoint }),
            status => Err(Error::UnexpectedStatus { endpoint, status: status.as_u16() }),
        }
    }

    /// `PATCH /api/v4/jobs/:id/trace` with `chunk` starting at byte `offset`.
    ///
    /// `Content-Range` is `start-end`, inclusive, without a unit. An empty chunk is a caller
    /// bug and is answered locally with [`PatchOutcome::Accepted`] without a request.
    ///
    /// # Errors
    ///
    /// Transport errors only; every status is classified into [`PatchOutcome`].
    pub async fn patch_trace(
        &self,
        job: &JobCredentials,
        offset: u64,
        chunk: Vec<u8>,
        debug_trace: bool,
    ) -> Result<Response<PatchOutcome>> {
        if chunk.is_empty() {
            return Ok(Response { outcome: PatchOutcome::Accepted, hints: ServerHints::default() });
        }
        let end = offset + chunk.len() as u64 - 1;
        let mut url = self.url(&format!("jobs/{}/trace", job.id));
        url.query_pairs_mut()
            .append_pair("debug_trace", if debug_trace { "true" } else { "false" });
        let builder = self
            .request(reqwest::Method::PATCH, url)
            .header("Job-Token", job.token.expose_secret())
            .header(CONTENT_RANGE, format!("{offset}-{end}"))
            .header(CONTENT_TYPE, "text/plain")
            .body(chunk);
        let response = self.send(Endpoint::PatchTrace, builder).await?;
        let hints = ServerHints::from_headers(response.headers());
        let outcome = match response.status() {
            StatusCode::ACCEPTED => PatchOutcome::Accepted,
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let server_offset = response
                    .headers()
                    .get(RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_range_end);
                PatchOutcome::RangeMismatch { server_offset }
            }
            StatusCode::FORBIDDEN => PatchOutcome::Forbidden,
            StatusCode::NOT_FOUND => PatchOutcome::NotFound,
            status => PatchOutcome::Failed { status: status.as_u16() },
        };
        Ok(Response { outcome, hints })
    }

    /// `PUT /api/v4/jobs/:id`: one attempt.
    ///
    /// # Errors
    ///
    /// Transport errors only; every status is classified into [`UpdateOutcome`].
    pub async fn update_job(
        &self,
        job: &JobCredentials,
        update: &JobUpdate,
    ) -> Result<Response<UpdateOutcome>> {
        let checksum = update.output.as_ref().map(|o| o.checksum.as_str());
        let body = UpdateJobBody {
            info: &self.inner.info,
            token: job.token.expose_secret(),
            state: update.state,
            failure_reason: update.failure_reason,
            checksum,
            output: update.output.as_ref(),
            exit_code: update.exit_code.filter(|c| *c != 0),
        };
        let builder = self
            .request(reqwest::Method::PUT, self.url(&format!("jobs/{}", job.id)))
            .header("Job-Token", job.token.expose_secret())
            .json(&body);
        let response = self.send(Endpoint::UpdateJob, builder).await?;
        let hints = ServerHints::from_headers(response.headers());
        let outcome = match response.status() {
            StatusCode::OK => UpdateOutcome::Done,
            StatusCode::ACCEPTED => UpdateOutcome::Accepted,
            StatusCode::PRECONDITION_FAILED => UpdateOutcome::TraceInvalid,
            StatusCode::FORBIDDEN => UpdateOutcome::Forbidden,
            StatusCode::NOT_FOUND => UpdateOutcome::NotFound,
            status => UpdateOutcome::Failed { status: status.as_u16() },
        };
        Ok(Response { outcome, hints })
    }
}

/// The end of a `Range: a-b` header (also tolerates a `bytes=` or `bytes ` unit).
pub(crate) fn parse_range_end(value: &str) -> Option<u64> {
    let v = value.trim();
    let v = v.strip_prefix("bytes=").or_else(|| v.strip_prefix("bytes ")).unwrap_or(v);
    let (_, end) = v.split_once('-')?;
    end.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_strips_trailing_slash_and_legacy_ci_suffix() {
        for (input, want) in [
            ("https://gitlab.example.com", "https://gitlab.example.com/api/v4/"),
            ("https://gitlab.example.com/", "https://gitlab.example.com/api/v4/"),
            ("https://gitlab.example.com/ci", "https://gitlab.example.com/api/v4/"),
            ("https://gitlab.example.com/ci/", "https://gitlab.example.com/api/v4/"),
            ("http://host:8080/gitlab", "http://host:8080/gitlab/api/v4/"),
        ] {
            assert_eq!(api_base(input).map(|u| u.to_string()).ok().as_deref(), Some(want));
        }
    }

    #[test]
    fn api_base_rejects_urls_without_http_scheme() {
        assert_eq!(api_base("gitlab.example.com").map_err(|e| e.kind()).err(), Some("invalid_url"));
        assert_eq!(api_base("ftp://x").map_err(|e| e.kind()).err(), Some("invalid_url"));
    }

    #[test]
    fn range_header_end_is_the_resend_offset() {
        assert_eq!(parse_range_end("0-42"), Some(42));
        assert_eq!(parse_range_end("bytes=0-7"), Some(7));
        assert_eq!(parse_range_end("garbage"), None);
    }

    #[test]
    fn server_hints_parse_status_and_cap_interval() {
        let mut h = HeaderMap::new();
        h.insert(JOB_STATUS_HEADER, "canceling".parse().expect("valid header"));
        h.insert(UPDATE_INTERVAL_HEADER, "999999".parse().expect("valid header"));
        let hints = ServerHints::from_headers(&h);
        assert_eq!(hints.job_status, Some(RemoteJobStatus::Canceling));
        assert_eq!(hints.update_interval, Some(MAX_UPDATE_INTERVAL));
        h.insert(UPDATE_INTERVAL_HEADER, "0".parse().expect("valid header"));
        assert_eq!(ServerHints::from_headers(&h).update_interval, None);
    }

    #[test]
    fn system_ids_look_like_gitlab_runner_ones() {
        let id = generate_system_id();
        assert!(id.starts_with("s_") && id.len() == 14, "{id}");
    }
}
