//! Prometheus metrics and the health endpoint.
//!
//! Names follow GitLab Runner's where one exists (`gitlab_runner_jobs`,
//! `gitlab_runner_jobs_total`, `gitlab_runner_failed_jobs_total`, `gitlab_runner_concurrent`,
//! `gitlab_runner_limit`, `gitlab_runner_api_request_statuses_total`,
//! `gitlab_runner_api_request_duration_seconds`); the rest are prefixed `podrunner_`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use podrunner_coordinator::{ApiObserver, Endpoint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// `{runner}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerLabels {
    /// Runner name.
    pub runner: String,
}

/// `{runner, failure_reason}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Runner name.
    pub runner: String,
    /// Unmapped failure reason.
    pub failure_reason: String,
}

/// `{runner, state}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Runner name.
    pub runner: String,
    /// `success` or the failure reason; `report_failed` when the final update did not go
    /// through.
    pub state: String,
}

/// `{runner, endpoint, status}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiStatusLabels {
    /// Runner name.
    pub runner: String,
    /// API call.
    pub endpoint: String,
    /// HTTP status, or `error` when no response arrived.
    pub status: String,
}

/// `{runner, endpoint}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// Runner name.
    pub runner: String,
    /// API call.
    pub endpoint: String,
}

/// `{runner, kind}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Runner name.
    pub runner: String,
    /// Error kind.
    pub kind: String,
}

fn api_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// All metrics of the daemon.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Running jobs.
    pub jobs_running: Family<RunnerLabels, Gauge>,
    /// Jobs started.
    pub jobs_started: Family<RunnerLabels, Counter>,
    /// Jobs finished, by outcome.
    pub jobs_finished: Family<OutcomeLabels, Counter>,
    /// Failed jobs, by failure reason.
    pub jobs_failed: Family<FailureLabels, Counter>,
    /// Job request errors, by error kind.
    pub request_errors: Family<ErrorLabels, Counter>,
    /// API responses by status.
    pub api_statuses: Family<ApiStatusLabels, Counter>,
    /// API latency.
    pub api_duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
    /// `concurrent`.
    pub concurrent: Gauge,
    /// Per-runner `limit`.
    pub limit: Family<RunnerLabels, Gauge>,
    /// 1 while the runner's executor can run jobs (it requests them), 0 while it cannot.
    pub executor_ready: Family<RunnerLabels, Gauge>,
    /// Jobs an earlier runner process left running that this one resumed.
    pub jobs_resumed: Family<RunnerLabels, Counter>,
    /// Jobs this process handed over to the next one.
    pub jobs_handed_over: Family<RunnerLabels, Counter>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            jobs_running: Family::default(),
            jobs_started: Family::default(),
            jobs_finished: Family::default(),
            jobs_failed: Family::default(),
            request_errors: Family::default(),
            api_statuses: Family::default(),
            api_duration: Family::new_with_constructor(api_histogram as fn() -> Histogram),
            concurrent: Gauge::default(),
            limit: Family::default(),
            executor_ready: Family::default(),
            jobs_resumed: Family::default(),
            jobs_handed_over: Family::default(),
            registry: Registry::default(),
        };
        registry.register("gitlab_runner_jobs", "Jobs being run", m.jobs_running.clone());
        // The `_total` suffix is added by the encoder.
        registry.register("gitlab_runner_jobs", "Jobs started", m.jobs_started.clone());
        registry.register(
            "gitlab_runner_failed_jobs",
            "Failed jobs by failure reason",
            m.jobs_failed.clone(),
        );
        registry.register(
            "podrunner_jobs_finished",
            "Finished jobs by state",
            m.jobs_finished.clone(),
        );
        registry.register(
            "podrunner_job_request_errors",
            "Failed job requests by error kind",
            m.request_errors.clone(),
        );
        registry.register(
            "gitlab_runner_api_request_statuses",
            "API responses by endpoint and status",
            m.api_statuses.clone(),
        );
        registry.register(
            "gitlab_runner_api_request_duration_seconds",
            "API request latency",
            m.api_duration.clone(),
        );
        registry.register(
            "gitlab_runner_concurrent",
            "The concurrent setting",
            m.concurrent.clone(),
        );
        registry.register("gitlab_runner_limit", "The limit setting per runner", m.limit.clone());
        registry.register(
            "podrunner_executor_ready",
            "1 while the runner's executor can run jobs (it requests jobs only then)",
            m.executor_ready.clone(),
        );
        registry.register(
            "podrunner_jobs_resumed",
            "Jobs an earlier runner process left running, resumed by this one",
            m.jobs_resumed.clone(),
        );
        registry.register(
            "podrunner_jobs_handed_over",
            "Jobs handed over to the next runner process",
            m.jobs_handed_over.clone(),
        );
        Self { registry, ..m }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// An API observer that labels with `runner`.
    pub fn observer(self: &Arc<Self>, runner: &str) -> Arc<dyn ApiObserver> {
        Arc::new(RunnerObserver { metrics: Arc::clone(self), runner: runner.to_owned() })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

struct RunnerObserver {
    metrics: Arc<Metrics>,
    runner: String,
}

impl ApiObserver for RunnerObserver {
    fn observe(&self, endpoint: Endpoint, status: Option<u16>, elapsed: Duration) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.metrics
            .api_statuses
            .get_or_create(&ApiStatusLabels {
                runner: self.runner.clone(),
                endpoint: endpoint.as_str().to_owned(),
                status,
            })
            .inc();
        self.metrics
            .api_duration
            .get_or_create(&ApiLabels {
                runner: self.runner.clone(),
                endpoint: endpoint.as_str().to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(),
    )
}

async fn health_handler(State(state): State<HttpState>) -> impl IntoResponse {
    if state.healthy.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

/// Serves `/metrics` and `/health` until `stop` fires. Returns the bound address.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health_handler))
        .route("/-/health", get(health_handler))
        .with_state(HttpState { metrics, healthy });
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "metrics server failed");
        }
    });
    Ok(addr)
}
