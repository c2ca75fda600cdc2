//! The contract between the API server and the node agent.
//!
//! The API server owns every object (pods, secrets, config maps, events, resource versions,
//! watches). The node agent owns the containers. They talk only through these two traits:
//!
//! - the API server calls [`NodeRuntime`] when a pod is created or deleted, to open an exec or
//!   attach stream, and to find a container's CRI log file;
//! - the node agent calls [`ClusterView`] to read the secrets and config maps a pod mounts, to
//!   publish pod status, to record events and to finish a pod's deletion.
//!
//! Both traits are object safe (`Arc<dyn …>`); async methods return boxed futures.

use std::{future::Future, path::PathBuf, pin::Pin, sync::Arc};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus, Secret};

/// A boxed, sendable future, for async trait methods that must stay object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the node agent may see of and do to the cluster state (implemented by the API server).
pub trait ClusterView: Send + Sync + 'static {
    /// A secret, if it exists.
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret>;
    /// A config map, if it exists.
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap>;
    /// Where the `kubernetes` Service reaches the API server (TLS), which the kubelet puts in
    /// every container's `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`. By default
    /// none (no such variables).
    fn kubernetes_service(&self) -> Option<std::net::SocketAddr> {
        None
    }
    /// Replaces the pod's status (the `status` subresource), bumping its resourceVersion and
    /// notifying watchers. Ignored if the pod no longer exists.
    fn set_pod_status(&self, namespace: &str, name: &str, status: PodStatus);
    /// Records an event about the pod (`type_` is `Normal` or `Warning`), as a kubelet does.
    fn record_pod_event(
        &self,
        namespace: &str,
        pod: &str,
        type_: &str,
        reason: &str,
        message: &str,
    );
    /// Called by the node once every container of a pod being deleted has stopped and its
    /// sandbox is removed: the API server then removes the object (watchers see DELETED).
    fn pod_terminated(&self, namespace: &str, name: &str);
    /// The node's heartbeat (a kubelet renewing its Lease and posting its status): a node that
    /// has sent one and then stays silent past the node monitor grace period is marked
    /// `Ready=Unknown` and its pods not ready, as kube-controller-manager does. By default
    /// nothing (a node that never sends one is never marked).
    fn node_heartbeat(&self, node: &str) {
        let _ = node;
    }
}

/// Parameters of an exec or attach request, as the API server received them.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub pod: String,
    /// Container name (the API server resolves a missing one to the only/first container).
    pub container: String,
    /// The command for exec; empty for attach.
    pub command: Vec<String>,
    /// Whether stdin is streamed.
    pub stdin: bool,
    /// Whether stdout is streamed.
    pub stdout: bool,
    /// Whether stderr is streamed.
    pub stderr: bool,
    /// Whether a TTY is requested.
    pub tty: bool,
}

/// Errors the node reports back to the API server.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The pod or container is not known to the node or is not running.
    #[error("container {container:?} of pod {namespace}/{pod} is not running")]
    NotRunning {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        pod: String,
        /// Container name.
        container: String,
    },
    /// The container runtime rejected the request.
    #[error("container runtime request failed: {message}")]
    Runtime {
        /// The runtime's own message.
        message: String,
    },
    /// The node agent (the kubelet) is down: nothing on the node can be reached.
    #[error("error dialing backend: dial tcp {address}: connect: connection refused")]
    Unreachable {
        /// The kubelet's address.
        address: String,
    },
}

/// What the API server needs from the node (implemented by the node agent).
pub trait NodeRuntime: Send + Sync + 'static {
    /// A pod was created (defaulted, validated, stored, `spec.nodeName` set). The node starts it
    /// in the background and reports progress through [`ClusterView::set_pod_status`].
    fn pod_created(&self, pod: Pod, cluster: Arc<dyn ClusterView>);
    /// A pod got a deletion timestamp. The node stops its containers (SIGTERM, then SIGKILL after
    /// `grace_period_seconds`), removes the sandbox, then calls [`ClusterView::pod_terminated`].
    fn pod_deleted(
        &self,
        namespace: &str,
        name: &str,
        grace_period_seconds: i64,
        cluster: Arc<dyn ClusterView>,
    );
    /// Asks the runtime for a streaming URL for exec or attach (CRI `Exec`/`Attach`), which the
    /// API server then proxies, as the kubelet does.
    fn stream_url(
        &self,
        request: StreamRequest,
        attach: bool,
    ) -> BoxFuture<'_, Result<String, NodeError>>;
    /// Whether the node agent is up (`true`) and a way to learn when it goes down: the API
    /// server ends the exec and attach streams it proxies through a node that went down, as
    /// kube-apiserver's connections to a dead kubelet end. By default always up.
    fn link(&self) -> tokio::sync::watch::Receiver<bool> {
        tokio::sync::watch::channel(true).1
    }
    /// The CRI log file of a container (`<RFC 3339 time> <stdout|stderr> <F|P> <text>` lines),
    /// if the container was created. The API server reads and follows it for `pods/log`.
    fn container_log_path(&self, namespace: &str, pod: &str, container: &str) -> Option<PathBuf>;
}
