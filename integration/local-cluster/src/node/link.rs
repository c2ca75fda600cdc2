//! The node agent's connection to the API server, which a test can take down as if the kubelet
//! had stopped: while it is down the agent posts no status, events or terminations (the pods'
//! containers keep running in containerd, as they do when a kubelet dies), sends no heartbeat,
//! refuses streams, and keeps the pod creations and deletions it is told about. Brought back up,
//! it does what a restarted kubelet does: posts each pod's current status again and carries out
//! what it missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus, Secret};
use tokio::sync::watch;

use crate::contract::ClusterView;

/// Work the API server handed over while the agent was down.
pub(crate) enum Missed {
    Created(Box<Pod>, Arc<dyn ClusterView>),
    Deleted { namespace: String, name: String, grace: i64, cluster: Arc<dyn ClusterView> },
}

/// A pod by namespace and name.
type PodKey = (String, String);

/// The cluster a pod's worker reports to.
type View = Arc<dyn ClusterView>;

/// The agent's side of the link.
pub(crate) struct NodeLink {
    up: watch::Sender<bool>,
    /// The last status of each pod the agent posted or would have posted.
    statuses: Mutex<HashMap<PodKey, (PodStatus, View)>>,
    /// Terminations that happened while down.
    terminated: Mutex<Vec<(PodKey, View)>>,
    missed: Mutex<Vec<Missed>>,
}

impl std::fmt::Debug for NodeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLink").field("up", &*self.up.borrow()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NodeLink {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            up: watch::Sender::new(true),
            statuses: Mutex::default(),
            terminated: Mutex::default(),
            missed: Mutex::default(),
        })
    }

    pub(crate) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Takes the link down.
    pub(crate) fn go_down(&self) {
        self.up.send_replace(false);
    }

    /// Brings the link up; returns what was missed, for the agent to carry out, after posting
    /// every pod's status and the terminations again.
    pub(crate) fn come_up(&self) -> Vec<Missed> {
        self.up.send_replace(true);
        let statuses: Vec<_> = lock(&self.statuses)
            .iter()
            .map(|((ns, name), (status, cluster))| {
                (ns.clone(), name.clone(), status.clone(), Arc::clone(cluster))
            })
            .collect();
        for (ns, name, status, cluster) in statuses {
            cluster.set_pod_status(&ns, &name, status);
        }
        for ((ns, name), cluster) in lock(&self.terminated).drain(..) {
            cluster.pod_terminated(&ns, &name);
        }
        std::mem::take(&mut *lock(&self.missed))
    }

    /// Keeps `work` for when the link comes up, if it is down; else hands it back.
    pub(crate) fn defer(&self, work: Missed) -> Option<Missed> {
        if self.is_up() {
            return Some(work);
        }
        lock(&self.missed).push(work);
        None
    }

    /// `cluster` as the agent sees it through this link.
    pub(crate) fn gate(self: &Arc<Self>, cluster: Arc<dyn ClusterView>) -> Arc<dyn ClusterView> {
        Arc::new(Gated { link: Arc::clone(self), inner: cluster })
    }
}

/// A cluster view that drops what a dead kubelet could not send.
struct Gated {
    link: Arc<NodeLink>,
    inner: Arc<dyn ClusterView>,
}

impl ClusterView for Gated {
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.inner.secret(namespace, name)
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        self.inner.config_map(namespace, name)
    }

    fn kubernetes_service(&self) -> Option<std::net::SocketAddr> {
        self.inner.kubernetes_service()
    }

    fn set_pod_status(&self, namespace: &str, name: &str, status: PodStatus) {
        lock(&self.link.statuses).insert(
            (namespace.to_owned(), name.to_owned()),
            (status.clone(), Arc::clone(&self.inner)),
        );
        if self.link.is_up() {
            self.inner.set_pod_status(namespace, name, status);
        }
    }

    fn record_pod_event(
        &self,
        namespace: &str,
        pod: &str,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        if self.link.is_up() {
            self.inner.record_pod_event(namespace, pod, type_, reason, message);
        }
    }

    fn pod_terminated(&self, namespace: &str, name: &str) {
        lock(&self.link.statuses).remove(&(namespace.to_owned(), name.to_owned()));
        if self.link.is_up() {
            self.inner.pod_terminated(namespace, name);
        } else {
            lock(&self.link.terminated)
                .push(((namespace.to_owned(), name.to_owned()), Arc::clone(&self.inner)));
        }
    }

    fn node_heartbeat(&self, node: &str) {
        if self.link.is_up() {
            self.inner.node_heartbeat(node);
        }
    }
}
