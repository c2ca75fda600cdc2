//! A minimal Kubernetes API server: core/v1 namespaces, pods (with `status`, `log`, `exec` and
//! `attach`), secrets, config maps, service accounts, events and resource quotas (the `pods`
//! count is enforced at pod creation, as the ResourceQuota admission plugin does), over plain
//! HTTP on loopback.
//!
//! Objects live in an in-memory store; pods are handed to the node through
//! [`crate::contract::NodeRuntime`], and the node reports back through the
//! [`crate::contract::ClusterView`] this server implements.

mod audit;
mod handlers;
mod pods;
mod selectors;
mod status;
mod store;
mod table;
mod validation;

use std::{
    net::SocketAddr,
    sync::{Arc, Weak},
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
}

impl ApiServerSettings {
    /// Settings for a loopback server on a random port.
    pub fn new(version: KubeVersion) -> Self {
        Self {
            version,
            node_name: "local-node".to_owned(),
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// Shared state of the server.
pub(crate) struct State {
    pub(crate) store: store::Store,
    pub(crate) settings: ApiServerSettings,
    pub(crate) node: Arc<dyn NodeRuntime>,
    pub(crate) requests: audit::RequestLog,
    me: Weak<State>,
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
        let state = Arc::new_cyclic(|me| State {
            store: store::Store::new(),
            settings,
            node,
            requests: audit::RequestLog::default(),
            me: me.clone(),
        });
        handlers::bootstrap(&state);
        let router = handlers::router(Arc::clone(&state));
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stop.await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "api server stopped");
            }
        });
        tracing::info!(http.address = %address, "api server listening");
        Ok(Self { address, state, shutdown: Some(shutdown), task })
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

    /// Stops accepting requests and ends open streams.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.abort();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
