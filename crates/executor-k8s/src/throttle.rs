//! How this process treats the Kubernetes API server when it is busy: one request budget (a
//! token bucket) for every request of every runner in the process, and retries of the answers
//! that mean "not now".
//!
//! - [`RequestBudget`]: at most [`DEFAULT_QPS`] requests a second on average, bursts up to
//!   [`DEFAULT_BURST`] (client-go's limiter, with the figures Buildkite's agent stack uses).
//!   Every attempt, retries included, takes a token; a request waits for one rather than fail.
//! - [`ApiRetry`]: `429 Too Many Requests`, `500`, `503` and `504` are retried up to
//!   [`MAX_RETRIES`] times with exponential backoff and jitter, waiting at least the server's
//!   `Retry-After` (an exec or attach only on `429`: its 5xx are the node's, for the stage loop). A retried `POST` is safe here because every object this executor creates has
//!   a name derived from the job: a replay that had in fact been executed gets `409` and the
//!   executor adopts its own object.
//!
//! The client stack is `Retry → Buffer → Throttle → kube's service`, so each attempt goes
//! through the budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use tokio::time::{Instant, Sleep};
use tower::retry::Policy;
use tower::util::rng::{HasherRng, Rng as _};
use tower::{BoxError, Layer, Service};
use tracing::debug;

/// Requests a second, on average, for the whole process.
pub const DEFAULT_QPS: u32 = 20;
/// Requests that may go at once after a quiet spell.
pub const DEFAULT_BURST: u32 = 40;
/// Retries of one request before its last answer is handed to the caller.
pub const MAX_RETRIES: u32 = 10;
/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A `Retry-After` longer than this is cut to it (a server asking for minutes is better seen
/// failing than waited on silently).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A token bucket shared by every client of the process.
#[derive(Debug)]
pub struct RequestBudget {
    per_second: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RequestBudget {
    /// A full bucket of `burst` tokens, refilled at `per_second`.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second: f64::from(per_second.max(1)),
            burst,
            bucket: Mutex::new(Bucket { tokens: burst, at: Instant::now() }),
        }
    }

    /// Takes a token now, or says how long until one is there.
    fn take(&self) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

impl Default for RequestBudget {
    /// [`DEFAULT_QPS`] and [`DEFAULT_BURST`].
    fn default() -> Self {
        Self::new(DEFAULT_QPS, DEFAULT_BURST)
    }
}

/// Makes every request take a token of `budget` first.
#[derive(Debug, Clone)]
pub struct ThrottleLayer(pub Arc<RequestBudget>);

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttled<S>;

    fn layer(&self, inner: S) -> Throttled<S> {
        Throttled { inner, budget: Arc::clone(&self.0), wait: None, token: false }
    }
}

/// A service that is ready only once it holds a token (see [`ThrottleLayer`]).
pub struct Throttled<S> {
    inner: S,
    budget: Arc<RequestBudget>,
    wait: Option<Pin<Box<Sleep>>>,
    token: bool,
}

impl<S> std::fmt::Debug for Throttled<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttled")
            .field("budget", &self.budget)
            .field("token", &self.token)
            .finish()
    }
}

impl<S, R> Service<R> for Throttled<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.token {
            if let Some(wait) = self.wait.as_mut() {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            match self.budget.take() {
                Ok(()) => self.token = true,
                Err(delay) => self.wait = Some(Box::pin(tokio::time::sleep(delay))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.token = false;
        self.inner.call(request)
    }
}

/// The retry policy of every Kubernetes request (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct ApiRetry {
    attempt: u32,
}

impl ApiRetry {
    /// Whether an answer means "try again later".
    fn retryable(status: StatusCode) -> bool {
        matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::INTERNAL_SERVER_ERROR
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        )
    }

    /// The delay before retry number `attempt` (0-based): exponential with jitter in
    /// [half, whole], never shorter than the server's `Retry-After`.
    fn delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let backoff = FIRST_BACKOFF.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF);
        let backoff = backoff.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        retry_after.map_or(backoff, |server| server.min(MAX_RETRY_AFTER).max(backoff))
    }
}

/// `Retry-After` in seconds (the form kube-apiserver sends).
fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    let value = response.headers().get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl<B> Policy<Request<Body>, Response<B>, BoxError> for ApiRetry {
    type Future = Sleep;

    fn retry(
        &mut self,
        request: &mut Request<Body>,
        result: &mut Result<Response<B>, BoxError>,
    ) -> Option<Sleep> {
        let response = result.as_ref().ok()?;
        // An exec or attach that fails with 5xx is the node's problem ("error dialing
        // backend"), which the stage loop looks into itself: only throttling is retried here.
        let upgrade = request.headers().contains_key(http::header::UPGRADE);
        let retryable = if upgrade {
            response.status() == StatusCode::TOO_MANY_REQUESTS
        } else {
            Self::retryable(response.status())
        };
        if !retryable || self.attempt >= MAX_RETRIES {
            return None;
        }
        let jitter = HasherRng::default().next_f64();
        let delay = Self::delay(self.attempt, retry_after(response), jitter);
        self.attempt += 1;
        debug!(
            http.method = %request.method(),
            url.path = request.uri().path(),
            http.status = response.status().as_u16(),
            retry.attempt = self.attempt,
            retry.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "the kubernetes api server asked to try again later"
        );
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        let body = request.body().try_clone()?;
        let mut copy = Request::new(body);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_a_burst_then_refills_at_its_rate() {
        let budget = RequestBudget::new(10, 3);
        for _ in 0..3 {
            assert_eq!(budget.take(), Ok(()));
        }
        let wait = budget.take().expect_err("the burst is spent");
        assert!(wait > Duration::from_millis(99) && wait <= Duration::from_millis(100), "{wait:?}");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(budget.take(), Ok(()));
        assert!(budget.take().is_err());
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(budget.take(), Ok(()), "refilled up to the burst, not past it");
        }
        assert!(budget.take().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_service_waits_for_a_token_instead_of_failing() {
        use tower::ServiceExt as _;
        let budget = Arc::new(RequestBudget::new(2, 1));
        let mut service =
            ThrottleLayer(budget).layer(tower::service_fn(|()| async { Ok::<_, BoxError>(()) }));
        let start = Instant::now();
        for _ in 0..3 {
            service.ready().await.expect("ready").call(()).await.expect("answer");
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1), "1 at once, then one every 500 ms");
    }

    #[test]
    fn only_answers_that_mean_later_are_retried() {
        for code in [429, 500, 503, 504] {
            assert!(ApiRetry::retryable(StatusCode::from_u16(code).expect("code")), "{code}");
        }
        for code in [200, 201, 400, 401, 403, 404, 409, 410, 422] {
            assert!(!ApiRetry::retryable(StatusCode::from_u16(code).expect("code")), "{code}");
        }
    }

    #[test]
    fn the_delay_doubles_is_capped_and_honours_retry_after() {
        assert_eq!(ApiRetry::delay(0, None, 1.0), Duration::from_millis(250));
        assert_eq!(ApiRetry::delay(0, None, 0.0), Duration::from_millis(125));
        assert_eq!(ApiRetry::delay(3, None, 1.0), Duration::from_secs(2));
        assert_eq!(ApiRetry::delay(9, None, 1.0), MAX_BACKOFF);
        assert_eq!(ApiRetry::delay(0, Some(Duration::from_secs(1)), 1.0), Duration::from_secs(1));
        assert_eq!(
            ApiRetry::delay(9, Some(Duration::from_secs(1)), 1.0),
            MAX_BACKOFF,
            "never shorter than the backoff"
        );
        assert_eq!(ApiRetry::delay(0, Some(Duration::from_secs(3600)), 1.0), MAX_RETRY_AFTER);
    }

    /// A server answering its n-th call (from 0) with `status(n)` and `Retry-After: 0`, behind
    /// the retry policy, and the count of calls it got.
    fn retried_server(
        status: impl Fn(u32) -> u16 + Clone + Send + 'static,
    ) -> (
        Arc<std::sync::atomic::AtomicU32>,
        impl tower::Service<Request<Body>, Response = Response<()>, Error = BoxError>,
    ) {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = Arc::clone(&calls);
        let server = tower::service_fn(move |_request: Request<Body>| {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let response = Response::builder()
                .status(status(n))
                .header("Retry-After", "0")
                .body(())
                .expect("response");
            std::future::ready(Ok::<_, BoxError>(response))
        });
        (calls, tower::retry::RetryLayer::new(ApiRetry::default()).layer(server))
    }

    #[tokio::test]
    async fn a_request_is_retried_until_the_server_takes_it_and_retry_after_is_read() {
        use std::sync::atomic::Ordering;
        use tower::ServiceExt as _;
        let (calls, service) = retried_server(|n| if n < 2 { 429 } else { 201 });
        let request = Request::post("/api/v1/namespaces/default/pods")
            .body(Body::from(b"{}".to_vec()))
            .expect("request");
        let response = service.oneshot(request).await.expect("answer");
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let answer: Response<()> =
            Response::builder().header("Retry-After", " 2 ").body(()).expect("response");
        assert_eq!(retry_after(&answer), Some(Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn an_exec_is_retried_on_429_only() {
        use std::sync::atomic::Ordering;
        use tower::ServiceExt as _;
        for (first, expected_calls) in [(500, 1), (503, 1), (429, 2)] {
            let (calls, service) = retried_server(move |n| if n == 0 { first } else { 101 });
            let request = Request::get("/api/v1/namespaces/default/pods/p/exec?command=true")
                .header(http::header::UPGRADE, "websocket")
                .header(http::header::CONNECTION, "Upgrade")
                .body(Body::empty())
                .expect("request");
            service.oneshot(request).await.expect("answer");
            assert_eq!(calls.load(Ordering::SeqCst), expected_calls, "first answer {first}");
        }
    }
}
