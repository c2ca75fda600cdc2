//! A GitLab runner-API double for tests: what crate `gitlab-runner-mock` lacks.
//!
//! - jobs with `image`, `services`, masked/file variables and `token_mask_prefixes`;
//! - `verify`; long polling on `jobs/request` (`X-GitLab-Last-Update`; an unchanged
//!   `last_update` holds the 204 for a configurable time);
//! - graceful cancel (`canceling`, then `canceled` after the final update) and hard cancel;
//! - trace with `Content-Range` checks, 416 + `Range`, `trace_reset` (a patch from 0 replaces);
//! - job update with checksum validation (412), injected 412 and 202;
//! - a "down then back" switch: connection refused while down, or a status (502) for the next
//!   N requests;
//! - a record of every trace patch and job update, so tests can compare the final trace with
//!   what the job printed.
//!
//! The server runs HTTP/1.1 without keep-alive, so switching it down refuses new connections at
//! once.

mod artifacts;
mod job;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use http::{HeaderMap, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use artifacts::StoredArtifact;
pub use job::{DEFAULT_FAILURE_REASONS, JobHandle, JobState, MockJob, PatchRecord, UpdateRecord};

/// One HTTP request the mock saw (after the down switch let it through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Status answered.
    pub status: u16,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `X-Request-Id`.
    pub request_id: Option<String>,
    /// `Runner-Token` header present.
    pub runner_token_header: Option<String>,
    /// `Job-Token` header present.
    pub job_token_header: Option<String>,
}

/// One `POST /jobs/request` body, as received.
#[derive(Debug, Clone)]
pub struct JobRequestRecord {
    /// `last_update` sent by the runner.
    pub last_update: Option<String>,
    /// `info` as sent.
    pub info: Value,
    /// `token` in the body.
    pub token: Option<String>,
    /// `system_id`.
    pub system_id: Option<String>,
    /// Status answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Data {
    queue: VecDeque<JobHandle>,
    jobs: HashMap<u64, JobHandle>,
    next_id: u64,
    last_update: u64,
    requests: Vec<RequestRecord>,
    job_requests: Vec<JobRequestRecord>,
    runner_tokens: HashSet<String>,
    long_poll: Duration,
    update_interval_header: Option<u64>,
    fail_next: u32,
    fail_status: u16,
    artifacts: artifacts::ArtifactStore,
}

struct Inner {
    data: Mutex<Data>,
    down: watch::Sender<bool>,
    verify_calls: AtomicU32,
    job_request_calls: AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The runner token the mock accepts by default.
pub const RUNNER_TOKEN: &str = "glrt-mock-runner-token-0123";

/// A running mock coordinator. Stops when dropped.
pub struct MockCoordinator {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for MockCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockCoordinator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for MockCoordinator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn bind_reuse(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    mut down: watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    loop {
        if *down.borrow_and_update() {
            // Down: no listener, so connections are refused.
            listener = None;
            if down.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match bind_reuse(addr) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "mock coordinator could not rebind");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        loop {
            tokio::select! {
                accepted = l.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let svc = TowerToHyperService::new(router.clone());
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                changed = down.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *down.borrow() {
                        break;
                    }
                }
            }
        }
        drop(l);
    }
}

impl MockCoordinator {
    /// Starts the mock on 127.0.0.1 at a random port.
    ///
    /// # Panics
    ///
    /// When no local port can be bound (a test environment problem).
    pub async fn start() -> Self {
        Self::start_on(std::net::IpAddr::from([127, 0, 0, 1])).await
    }

    /// Starts the mock on `ip` at a random port (an address a cluster's pods reach, for a
    /// runner that runs in the cluster).
    ///
    /// # Panics
    ///
    /// When no port can be bound on `ip` (a test environment problem).
    pub async fn start_on(ip: std::net::IpAddr) -> Self {
        let (down, down_rx) = watch::channel(false);
        let mut data = Data { next_id: 1000, fail_status: 502, ..Data::default() };
        data.runner_tokens.insert(RUNNER_TOKEN.to_owned());
        let inner = Arc::new(Inner {
            data: Mutex::new(data),
            down,
            verify_calls: AtomicU32::new(0),
            job_request_calls: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/api/v4/runners/verify", post(verify))
            .route("/api/v4/jobs/request", post(request_job))
            .route("/api/v4/jobs/{id}/trace", patch(patch_trace))
            .route("/api/v4/jobs/{id}", put(update_job))
            .route(
                "/api/v4/jobs/{id}/artifacts",
                post(artifacts::upload)
                    .get(artifacts::download)
                    .layer(axum::extract::DefaultBodyLimit::disable()),
            )
            .route("/object-storage/artifacts/{id}/{name}", get(artifacts::object_storage))
            .layer(middleware::from_fn_with_state(Arc::clone(&inner), record_and_fail))
            .with_state(Arc::clone(&inner));
        let listener = bind_reuse(SocketAddr::new(ip, 0))
            .expect("test setup: bind a port for the mock coordinator");
        let addr = listener.local_addr().expect("test setup: local address of the listener");
        let server = tokio::spawn(accept_loop(listener, addr, router, down_rx));
        Self { inner, addr, server }
    }

    /// Base URL (`http://127.0.0.1:<port>`), to use as the runner's `url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The accepted runner token.
    pub fn runner_token(&self) -> &'static str {
        RUNNER_TOKEN
    }

    /// Accepts another runner token.
    pub fn add_runner_token(&self, token: &str) {
        self.inner.lock().runner_tokens.insert(token.to_owned());
    }

    /// Queues a job; returns its handle.
    pub fn enqueue(&self, job: &MockJob) -> JobHandle {
        let mut d = self.inner.lock();
        d.next_id += 1;
        let id = d.next_id;
        let token = format!("glcbt-64_mockjobtoken{id}xyz");
        let mut payload = job.payload(id, &token);
        if !job.dependencies.is_empty() {
            let dependencies: Vec<Value> = job
                .dependencies
                .iter()
                .map(|(dep, name)| {
                    let file = d
                        .artifacts
                        .archive(*dep)
                        .map(|a| json!({ "filename": a.file_name, "size": a.body.len() }));
                    json!({ "id": dep, "token": token, "name": name, "artifacts_file": file })
                })
                .collect();
            payload["dependencies"] = Value::Array(dependencies);
        }
        let handle = JobHandle {
            data: Arc::new(Mutex::new(job::JobData {
                id,
                payload,
                token,
                state: JobState::Pending,
                trace: Vec::new(),
                patches: Vec::new(),
                updates: Vec::new(),
                inject_patch_416: 0,
                inject_update_412: 0,
                inject_update_202: 0,
            })),
        };
        d.queue.push_back(handle.clone());
        d.jobs.insert(id, handle.clone());
        d.last_update += 1;
        handle
    }

    /// A job by id.
    pub fn job(&self, id: u64) -> Option<JobHandle> {
        self.inner.lock().jobs.get(&id).cloned()
    }

    /// How long a job request with an unchanged `last_update` is held before 204 (default 0).
    pub fn set_long_poll(&self, hold: Duration) {
        self.inner.lock().long_poll = hold;
    }

    /// Sends `X-GitLab-Trace-Update-Interval: <secs>` on trace and update responses (default:
    /// not sent).
    pub fn set_update_interval_header(&self, secs: Option<u64>) {
        self.inner.lock().update_interval_header = secs;
    }

    /// Answers the next `n` requests (any endpoint) with `status` (e.g. 502) without handling
    /// them.
    pub fn fail_next_requests(&self, n: u32, status: u16) {
        let mut d = self.inner.lock();
        d.fail_next = n;
        d.fail_status = status;
    }

    /// Every artifact uploaded, in order.
    pub fn artifacts(&self) -> Vec<StoredArtifact> {
        self.inner.lock().artifacts.stored.clone()
    }

    /// How many artifact uploads arrived (answered or not).
    pub fn artifact_upload_attempts(&self) -> u32 {
        self.inner.lock().artifacts.upload_attempts
    }

    /// Answers the next artifact uploads with these statuses (e.g. `[500]`), in order.
    pub fn fail_next_artifact_uploads(&self, statuses: &[u16]) {
        self.inner.lock().artifacts.upload_faults.extend(statuses.iter().copied());
    }

    /// Answers uploads larger than `bytes` with 413, as GitLab's maximum artifacts size does.
    pub fn set_max_artifact_size(&self, bytes: Option<u64>) {
        self.inner.lock().artifacts.max_size = bytes;
    }

    /// Serves downloads by a 302 to object storage (a presigned URL on this server).
    pub fn redirect_artifact_downloads(&self, redirect: bool) {
        self.inner.lock().artifacts.redirect_downloads = redirect;
    }

    /// Expires the artifacts of job `id`: downloads answer 404 from now on.
    pub fn expire_artifacts(&self, id: u64) {
        self.inner.lock().artifacts.expired.insert(id);
    }

    /// Down (connections refused) or up.
    pub fn set_down(&self, down: bool) {
        self.inner.down.send_replace(down);
    }

    /// Every request handled, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.lock().requests.clone()
    }

    /// Every job request body, in order.
    pub fn job_requests(&self) -> Vec<JobRequestRecord> {
        self.inner.lock().job_requests.clone()
    }

    /// Number of `verify` calls.
    pub fn verify_calls(&self) -> u32 {
        self.inner.verify_calls.load(Ordering::SeqCst)
    }

    /// Number of `jobs/request` calls.
    pub fn job_request_calls(&self) -> u64 {
        self.inner.job_request_calls.load(Ordering::SeqCst)
    }
}

async fn record_and_fail(
    State(inner): State<Arc<Inner>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let injected = {
        let mut d = inner.lock();
        if d.fail_next > 0 {
            d.fail_next -= 1;
            Some(d.fail_status)
        } else {
            None
        }
    };
    let response = match injected {
        Some(status) => {
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY).into_response()
        }
        None => next.run(request).await,
    };
    inner.lock().requests.push(RequestRecord {
        method,
        path,
        status: response.status().as_u16(),
        user_agent: header(&headers, "user-agent"),
        request_id: header(&headers, "x-request-id"),
        runner_token_header: header(&headers, "runner-token"),
        job_token_header: header(&headers, "job-token"),
    });
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn verify(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    inner.verify_calls.fetch_add(1, Ordering::SeqCst);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let token = v.get("token").and_then(Value::as_str).unwrap_or_default();
    if inner.lock().runner_tokens.contains(token) {
        json_response(StatusCode::OK, &json!({ "id": 7, "token": token, "token_expires_at": null }))
    } else {
        StatusCode::FORBIDDEN.into_response()
    }
}

async fn request_job(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    inner.job_request_calls.fetch_add(1, Ordering::SeqCst);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let token = v.get("token").and_then(Value::as_str).map(str::to_owned);
    let last_update = v.get("last_update").and_then(Value::as_str).map(str::to_owned);
    let mut record = JobRequestRecord {
        last_update: last_update.clone(),
        info: v.get("info").cloned().unwrap_or(Value::Null),
        token: token.clone(),
        system_id: v.get("system_id").and_then(Value::as_str).map(str::to_owned),
        status: 0,
    };
    let valid = token.as_ref().is_some_and(|t| inner.lock().runner_tokens.contains(t));
    if !valid {
        record.status = 403;
        inner.lock().job_requests.push(record);
        return StatusCode::FORBIDDEN.into_response();
    }
    let (hold, current) = {
        let d = inner.lock();
        (d.long_poll, d.last_update.to_string())
    };
    // Long polling: a runner that is up to date waits for a change (a new job) or the hold time.
    let deadline = tokio::time::Instant::now() + hold;
    let held = last_update.as_deref() == Some(current.as_str());
    loop {
        let popped = {
            let mut d = inner.lock();
            let job = d.queue.pop_front();
            (job, d.last_update.to_string())
        };
        match popped {
            (Some(job), lu) => {
                let payload = {
                    let mut j = job.lock();
                    j.state = JobState::Running;
                    j.payload.clone()
                };
                record.status = 201;
                inner.lock().job_requests.push(record);
                let mut response = json_response(StatusCode::CREATED, &payload);
                if let Ok(value) = lu.parse() {
                    response.headers_mut().insert("X-GitLab-Last-Update", value);
                }
                return response;
            }
            (None, lu) => {
                if !held || tokio::time::Instant::now() >= deadline {
                    record.status = 204;
                    inner.lock().job_requests.push(record);
                    let mut response = StatusCode::NO_CONTENT.into_response();
                    if let Ok(value) = lu.parse() {
                        response.headers_mut().insert("X-GitLab-Last-Update", value);
                    }
                    return response;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn with_job_headers(mut response: Response, state: JobState, interval: Option<u64>) -> Response {
    let h = response.headers_mut();
    h.insert("Job-Status", http::HeaderValue::from_static(state.as_str()));
    if let Some(secs) = interval
        && let Ok(v) = secs.to_string().parse()
    {
        h.insert("X-GitLab-Trace-Update-Interval", v);
    }
    response
}

/// `a-b` with plain integers; anything else (a `bytes ` unit included) is rejected.
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let (a, b) = value.split_once('-')?;
    if !a.bytes().all(|c| c.is_ascii_digit()) || !b.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

async fn patch_trace(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(job) = inner.lock().jobs.get(&id).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let interval = inner.lock().update_interval_header;
    let mut j = job.lock();
    if header(&headers, "job-token").as_deref() != Some(j.token.as_str()) {
        return StatusCode::FORBIDDEN.into_response();
    }
    if headers.get(http::header::CONTENT_TYPE).is_none() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let Some((start, end)) =
        header(&headers, "content-range").as_deref().and_then(parse_content_range)
    else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut record = PatchRecord { start, end, body: body.to_vec(), status: 0 };
    let response = if !j.state.is_active() {
        with_job_headers(StatusCode::FORBIDDEN.into_response(), j.state, None)
    } else if end < start || end - start + 1 != body.len() as u64 {
        StatusCode::BAD_REQUEST.into_response()
    } else if j.inject_patch_416 > 0 || (start != 0 && start != j.trace.len() as u64) {
        j.inject_patch_416 = j.inject_patch_416.saturating_sub(1);
        let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        if let Ok(v) = format!("0-{}", j.trace.len()).parse() {
            r.headers_mut().insert(http::header::RANGE, v);
        }
        with_job_headers(r, j.state, interval)
    } else {
        if start == 0 {
            // trace_reset: a patch from offset 0 replaces the stored trace.
            j.trace.clear();
        }
        j.trace.extend_from_slice(&body);
        with_job_headers(StatusCode::ACCEPTED.into_response(), j.state, interval)
    };
    record.status = response.status().as_u16();
    j.patches.push(record);
    response
}

async fn update_job(State(inner): State<Arc<Inner>>, Path(id): Path<u64>, body: Bytes) -> Response {
    let Some(job) = inner.lock().jobs.get(&id).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let interval = inner.lock().update_interval_header;
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut j = job.lock();
    if v.get("token").and_then(Value::as_str) != Some(j.token.as_str()) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let state = v.get("state").and_then(Value::as_str).unwrap_or_default().to_owned();
    let output = v.get("output");
    let mut record = UpdateRecord {
        state: state.clone(),
        failure_reason: v.get("failure_reason").and_then(Value::as_str).map(str::to_owned),
        exit_code: v.get("exit_code").and_then(Value::as_i64),
        checksum: output.and_then(|o| o.get("checksum")).and_then(Value::as_str).map(str::to_owned),
        bytesize: output.and_then(|o| o.get("bytesize")).and_then(Value::as_u64),
        status: 0,
    };
    let stored_checksum = format!("crc32:{:08x}", crc32fast::hash(&j.trace));
    let response = if !j.state.is_active() {
        with_job_headers(StatusCode::FORBIDDEN.into_response(), j.state, None)
    } else if state == "running" {
        with_job_headers(StatusCode::OK.into_response(), j.state, interval)
    } else if state != "success" && state != "failed" {
        StatusCode::BAD_REQUEST.into_response()
    } else if j.inject_update_412 > 0 {
        j.inject_update_412 -= 1;
        with_job_headers(StatusCode::PRECONDITION_FAILED.into_response(), j.state, interval)
    } else if record.checksum.as_ref().is_some_and(|c| *c != stored_checksum)
        || record.bytesize.is_some_and(|b| b != j.trace.len() as u64)
    {
        with_job_headers(StatusCode::PRECONDITION_FAILED.into_response(), j.state, interval)
    } else if j.inject_update_202 > 0 {
        j.inject_update_202 -= 1;
        with_job_headers(StatusCode::ACCEPTED.into_response(), j.state, interval)
    } else {
        j.state = match (j.state, state.as_str()) {
            (JobState::Canceling, _) => JobState::Canceled,
            (_, "success") => JobState::Success,
            _ => JobState::Failed,
        };
        with_job_headers(StatusCode::OK.into_response(), j.state, interval)
    };
    record.status = response.status().as_u16();
    j.updates.push(record);
    response
}
