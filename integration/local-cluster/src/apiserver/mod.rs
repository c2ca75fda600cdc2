//! A minimal Kubernetes API server: core/v1 namespaces, pods (with `status`, `log`, `exec` and
//! `attach`), secrets, config maps, service accounts, events and resource quotas (the `pods`
//! count is enforced at pod creation, as the ResourceQuota admission plugin does), over plain
//! HTTP on loopback.
//!
//! Objects live in an in-memory store; pods are handed to the node through
//! [`crate::contract::NodeRuntime`], and the node reports back through the
//! [`crate::contract::ClusterView`] this server implements.
//!
//! Watches behave as kube-apiserver's where clients depend on it: the server remembers the last
//! [`ApiServerSettings::watch_window`] changes, and a watch from an older resourceVersion gets an
//! `ERROR` event with `410 Expired` ("too old resource version"), so clients relist;
//! `allowWatchBookmarks=true` brings `BOOKMARK` events every
//! [`ApiServerSettings::bookmark_interval`], never past an event not yet sent; and a test can end
//! every open watch and refuse new ones with 503 ([`ApiServer::end_watches`]), as a restart does.
//! The node object is `Ready` while the node agent sends heartbeats, and marked as
//! kube-controller-manager marks a node whose kubelet died otherwise (`nodes.rs`).
//! A test can also overload the server ([`ApiServer::overload`]): a share of requests is answered
//! 429 with `Retry-After`, 500 or 503 before it is handled, as priority and fairness or a slow
//! etcd does.

mod audit;
mod handlers;
mod nodes;
mod pods;
mod selectors;
mod status;
mod store;
mod table;
mod tls;
mod validation;

use std::{
    net::SocketAddr,
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use self::audit::RequestRecord;
pub use self::validation::KubeVersion;
use crate::contract::{ClusterView, NodeRuntime};

/// Errors of the API server.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// Binding the listening socket failed.
    #[error("failed to bind the api server to {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Making the TLS certificates failed.
    #[error("failed to make the api server's tls certificates: {0}")]
    Tls(String),
}

/// Settings of an API server.
#[derive(Debug, Clone)]
pub struct ApiServerSettings {
    /// The Kubernetes version reported by `/version` and used for field gating.
    pub version: KubeVersion,
    /// The name of the one node; every pod is bound to it.
    pub node_name: String,
    /// The address to listen on (port 0 picks a free port).
    pub address: SocketAddr,
    /// How many changes the server remembers for watches, like kube-apiserver's watch cache and
    /// etcd compaction: a watch from a resourceVersion older than that gets `410 Gone` ("too old
    /// resource version"), and the client must list again. Small in tests that force a relist.
    pub watch_window: usize,
    /// How often a watch with `allowWatchBookmarks=true` gets a `BOOKMARK` event carrying the
    /// current resourceVersion (kube-apiserver: about once a minute).
    pub bookmark_interval: Duration,
    /// How long a node's heartbeat may stay away before the node is marked `Ready=Unknown` and
    /// its pods not ready (kube-controller-manager's `--node-monitor-grace-period`: 40 s, 50 s
    /// from Kubernetes 1.32).
    pub node_monitor_grace: Duration,
}

impl ApiServerSettings {
    /// Settings for a loopback server on a random port.
    pub fn new(version: KubeVersion) -> Self {
        Self {
            version,
            node_name: "local-node".to_owned(),
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            watch_window: DEFAULT_WATCH_WINDOW,
            bookmark_interval: Duration::from_secs(60),
            node_monitor_grace: Duration::from_secs(40),
        }
    }
}

/// The default watch window: a busy namespace outruns it in minutes, as a real watch cache does.
pub const DEFAULT_WATCH_WINDOW: usize = 1000;

/// Shared state of the server.
pub(crate) struct State {
    pub(crate) store: store::Store,
    pub(crate) settings: ApiServerSettings,
    pub(crate) node: Arc<dyn NodeRuntime>,
    pub(crate) requests: audit::RequestLog,
    /// Watch faults a test injects (as an API server restart does to watches).
    pub(crate) watch_faults: WatchFaults,
    /// An overload a test injects: some requests are refused before they are handled.
    pub(crate) overload: std::sync::Mutex<Option<ActiveOverload>>,
    /// When the node last sent a heartbeat (`None`: never).
    pub(crate) heartbeat: std::sync::Mutex<Option<std::time::Instant>>,
    /// Where in-cluster clients reach the server (TLS), and the CA they trust (PEM).
    pub(crate) in_cluster: (SocketAddr, String),
    me: Weak<State>,
}

/// An overload of the server: for `duration`, one request in `every` is answered `code`
/// (429, 500 or 503) before it is handled, with `Retry-After: retry_after` when set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overload {
    /// The status code refused requests get: 429, 500 or 503.
    pub code: u16,
    /// One request in `every` is refused (1: all of them).
    pub every: u32,
    /// The `Retry-After` seconds, if the server sends one.
    pub retry_after: Option<u64>,
    /// How long the overload lasts from when it is set.
    pub duration: Duration,
}

#[derive(Debug)]
pub(crate) struct ActiveOverload {
    overload: Overload,
    until: std::time::Instant,
    seen: u32,
}

impl State {
    /// The refusal for the next request, while an overload lasts.
    pub(crate) fn overload_refusal(&self) -> Option<status::ApiError> {
        let mut active = self.overload.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = active.as_mut()?;
        if std::time::Instant::now() >= current.until {
            *active = None;
            return None;
        }
        current.seen += 1;
        (current.seen % current.overload.every.max(1) == 0).then(|| {
            status::ApiError::overloaded(current.overload.code, current.overload.retry_after)
        })
    }
}

/// Open watches end when `generation` moves on; new ones are refused with 503 while `refused`.
#[derive(Debug)]
pub(crate) struct WatchFaults {
    pub(crate) generation: tokio::sync::watch::Sender<u64>,
    pub(crate) refused: std::sync::atomic::AtomicBool,
}

impl Default for WatchFaults {
    fn default() -> Self {
        Self {
            generation: tokio::sync::watch::Sender::new(0),
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl State {
    /// This state as the node's view of the cluster.
    pub(crate) fn view(&self) -> Option<Arc<dyn ClusterView>> {
        self.me.upgrade().map(|me| me as Arc<dyn ClusterView>)
    }
}

/// A running API server. Dropping it stops serving.
#[derive(Debug)]
pub struct ApiServer {
    address: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    tls_task: JoinHandle<()>,
}

impl ApiServer {
    /// Binds and starts serving in the background (on the current tokio runtime).
    pub async fn start(
        settings: ApiServerSettings,
        node: Arc<dyn NodeRuntime>,
    ) -> Result<Self, ApiServerError> {
        let listener = TcpListener::bind(settings.address)
            .await
            .map_err(|source| ApiServerError::Bind { address: settings.address, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| ApiServerError::Bind { address: settings.address, source })?;
        let (tls_listener, tls_address) = tls::bind()
            .await
            .map_err(|source| ApiServerError::Bind { address: settings.address, source })?;
        let tls = tls::Tls::generate().map_err(ApiServerError::Tls)?;
        let state = Arc::new_cyclic(|me| State {
            store: store::Store::new(settings.watch_window),
            settings,
            node,
            requests: audit::RequestLog::default(),
            watch_faults: WatchFaults::default(),
            overload: std::sync::Mutex::new(None),
            heartbeat: std::sync::Mutex::new(None),
            in_cluster: (tls_address, tls.ca_pem.clone()),
            me: me.clone(),
        });
        handlers::bootstrap(&state);
        nodes::bootstrap(&state);
        tokio::spawn(nodes::monitor(Arc::downgrade(&state)));
        let router = handlers::router(Arc::clone(&state));
        let tls_router = router.clone();
        let tls_task = tokio::spawn(async move { tls.serve(tls_listener, tls_router).await });
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stop.await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "api server stopped");
            }
        });
        tracing::info!(http.address = %address, https.address = %tls_address, "api server listening");
        Ok(Self { address, state, shutdown: Some(shutdown), task, tls_task })
    }

    /// Where in-cluster clients reach the server: `https://127.0.0.1:<port>`.
    pub fn https_address(&self) -> SocketAddr {
        self.state.in_cluster.0
    }

    /// The CA in-cluster clients trust (PEM): the `ca.crt` of service-account tokens.
    pub fn ca_pem(&self) -> &str {
        &self.state.in_cluster.1
    }

    /// The server's URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The listening address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The cluster view the node uses (the same object the server hands to the node).
    pub fn cluster_view(&self) -> Arc<dyn ClusterView> {
        Arc::clone(&self.state) as Arc<dyn ClusterView>
    }

    /// Every request answered so far, in order (the audit log's view: verb, resource,
    /// subresource, namespace, name, response code).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.requests.snapshot()
    }

    /// Ends every open watch stream, as an API server restart does; with `refuse`, new watches
    /// are answered `503 Service Unavailable` until [`ApiServer::accept_watches`] (clients retry
    /// with backoff, then resume from their last resourceVersion, or relist after a 410).
    pub fn end_watches(&self, refuse: bool) {
        self.state.watch_faults.refused.store(refuse, std::sync::atomic::Ordering::SeqCst);
        self.state.watch_faults.generation.send_modify(|g| *g += 1);
    }

    /// Accepts watches again after [`ApiServer::end_watches`] with `refuse`.
    pub fn accept_watches(&self) {
        self.state.watch_faults.refused.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Overloads the server from now on for `overload.duration` (replacing any overload).
    pub fn overload(&self, overload: Overload) {
        let until = std::time::Instant::now() + overload.duration;
        *self.state.overload.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(ActiveOverload { overload, until, seen: 0 });
    }

    /// Stops accepting requests and ends open streams.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.abort();
        self.tls_task.abort();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
