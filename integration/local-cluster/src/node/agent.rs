//! The kubelet of the local cluster: [`NodeAgent`] implements [`NodeRuntime`] on top of CRI.
//!
//! For each created pod a tokio task (the pod worker) does what a kubelet's pod worker does:
//! AppArmor admission, volumes, `RunPodSandbox` (host network, no hostname), init containers one
//! after the other (each to completion; a failure ends the pod as `Failed`), then all containers.
//! Before creating a container it checks the image through CRI `ImageStatus` (`Never` and a
//! missing image give `ErrImageNeverPull`; otherwise a missing image is pulled, which fails here
//! as there is no registry: `ErrImagePull`, then `ImagePullBackOff`), resolves the environment,
//! checks `runAsNonRoot` and translates the security context. Running containers are polled with
//! `ContainerStatus` every [`NodeConfig::poll_interval`]; every change is published through
//! [`ClusterView::set_pod_status`] and failures are recorded as Warning events.
//!
//! Deviations from a kubelet, on purpose: only `restartPolicy: Never` (containers are never
//! restarted); an image already present counts as pulled even under `imagePullPolicy: Always`
//! (there is no registry to pull from); no probes (a running container is ready); the
//! service-account token names the account instead of being signed; the pod's IP is the node's
//! (host network), so `KUBERNETES_SERVICE_HOST` is the API server's TLS address itself.

use super::link::{Missed, NodeLink};
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_cri::v1::{
    AttachRequest, ContainerConfig, ContainerMetadata, ContainerStatusRequest,
    CreateContainerRequest, ExecRequest, ImageSpec, ImageStatusRequest, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig, ListPodSandboxRequest,
    PodSandboxConfig, PodSandboxMetadata, PullImageRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tokio_util::sync::CancellationToken;

use super::{
    CriClient, Error, Result, env, security,
    status::{CModel, CState, PodModel, cri_time},
    volumes,
};
use crate::contract::{BoxFuture, ClusterView, NodeError, NodeRuntime, StreamRequest};

/// Kubelet-style back-off for failed container starts and image pulls.
/// The kubelet's floor for the SIGTERM-to-SIGKILL window (`minimumGracePeriodInSeconds`): even a
/// deletion with a shorter grace period gives each container this long.
const MINIMUM_GRACE_PERIOD_SECONDS: i64 = 2;

const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long an image pull may take before it counts as failed.
const PULL_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed pull, `ErrImagePull` turns into `ImagePullBackOff` this much later.
const PULL_BACKOFF_SHOWN_AFTER: Duration = Duration::from_secs(1);

/// Settings of the node agent.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name.
    pub node_name: String,
    /// The node's IP, reported as `hostIP` and (host network) `podIP`.
    pub node_ip: String,
    /// `Localhost` seccomp profiles resolve to `<seccomp_root>/<localhostProfile>`.
    pub seccomp_root: PathBuf,
    /// Per-pod directories (`<pods_dir>/<uid>/volumes/…`).
    pub pods_dir: PathBuf,
    /// CRI log directories (`<logs_dir>/<ns>_<name>_<uid>/<container>/0.log`).
    pub logs_dir: PathBuf,
    /// How often running containers are polled.
    pub poll_interval: Duration,
}

/// The node agent. Cheap to clone; all clones share the same pods.
#[derive(Debug, Clone)]
pub struct NodeAgent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cri: CriClient,
    config: NodeConfig,
    apparmor_enabled: bool,
    pods: Mutex<HashMap<(String, String), Arc<PodEntry>>>,
    /// `false` while images are still being imported in the background.
    imports: tokio::sync::watch::Receiver<bool>,
    /// The connection to the API server (down while a test has "stopped the kubelet").
    link: Arc<NodeLink>,
}

/// What the agent keeps per pod, shared between the pod worker and the other entry points.
#[derive(Debug)]
struct PodEntry {
    uid: String,
    cancel: CancellationToken,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    shared: Mutex<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    sandbox_id: Option<String>,
    containers: HashMap<String, ContainerRef>,
    model: Option<PodModel>,
}

#[derive(Debug, Clone)]
struct ContainerRef {
    id: Option<String>,
    log_path: PathBuf,
    running: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NodeAgent {
    /// An agent driving the runtime behind `cri`.
    pub fn new(cri: CriClient, config: NodeConfig) -> Self {
        Self::with_pending_imports(cri, config, tokio::sync::watch::channel(true).1)
    }

    /// Like [`NodeAgent::new`], but image checks wait until `imports` turns `true` (images
    /// still being imported in the background), so a missing image is only reported once every
    /// import has finished.
    pub fn with_pending_imports(
        cri: CriClient,
        config: NodeConfig,
        imports: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                cri,
                config,
                apparmor_enabled: security::host_apparmor_enabled(),
                pods: Mutex::new(HashMap::new()),
                imports,
                link: NodeLink::new(),
            }),
        }
    }

    /// Stops the agent as if the kubelet process died: no status, events or heartbeats reach
    /// the API server, streams through the node end and new ones are refused; containers keep
    /// running. Pod creations and deletions are kept for [`NodeAgent::start_again`].
    pub fn stop(&self) {
        self.inner.link.go_down();
    }

    /// Starts the agent again after [`NodeAgent::stop`]: it posts every pod's status, then
    /// carries out the creations and deletions it missed.
    pub fn start_again(&self) {
        for missed in self.inner.link.come_up() {
            match missed {
                Missed::Created(pod, cluster) => self.pod_created(*pod, cluster),
                Missed::Deleted { namespace, name, grace, cluster } => {
                    self.pod_deleted(&namespace, &name, grace, cluster);
                }
            }
        }
    }

    /// Whether the agent is running (not [`NodeAgent::stop`]ped).
    pub fn is_up(&self) -> bool {
        self.inner.link.is_up()
    }

    /// The agent's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Stops and removes every pod sandbox the runtime knows (used at shutdown).
    pub async fn remove_all_sandboxes(&self) {
        let entries: Vec<Arc<PodEntry>> = lock(&self.inner.pods).drain().map(|(_, e)| e).collect();
        for entry in &entries {
            entry.cancel.cancel();
        }
        let mut cri = self.inner.cri.clone();
        let Ok(list) = cri.runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await
        else {
            return;
        };
        for sandbox in list.into_inner().items {
            let id = sandbox.id;
            if let Err(status) = cri
                .runtime
                .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() })
                .await
            {
                tracing::warn!(sandbox.id = %id, error = status.message(), "failed to stop sandbox");
            }
            if let Err(status) = cri
                .runtime
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.clone() })
                .await
            {
                tracing::warn!(sandbox.id = %id, error = status.message(), "failed to remove sandbox");
            }
        }
    }

    fn entry(&self, namespace: &str, pod: &str) -> Option<Arc<PodEntry>> {
        lock(&self.inner.pods).get(&(namespace.to_owned(), pod.to_owned())).cloned()
    }
}

fn pod_key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

impl NodeRuntime for NodeAgent {
    fn pod_created(&self, pod: Pod, cluster: Arc<dyn ClusterView>) {
        let Some(Missed::Created(pod, cluster)) =
            self.inner.link.defer(Missed::Created(Box::new(pod), cluster))
        else {
            return;
        };
        let pod = *pod;
        let cluster = self.inner.link.gate(cluster);
        let key = pod_key(&pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let entry = Arc::new(PodEntry {
            uid: uid.clone(),
            cancel: CancellationToken::new(),
            worker: Mutex::new(None),
            shared: Mutex::new(Shared::default()),
        });
        {
            let mut pods = lock(&self.inner.pods);
            if pods.get(&key).is_some_and(|e| e.uid == uid) {
                return;
            }
            pods.insert(key.clone(), Arc::clone(&entry));
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!(k8s.pod.name = %key.1, "pod_created called outside a tokio runtime");
            return;
        };
        let worker = Worker::new(Arc::clone(&self.inner), Arc::clone(&entry), pod, cluster);
        let task = handle.spawn(worker.run());
        *lock(&entry.worker) = Some(task);
    }

    fn pod_deleted(
        &self,
        namespace: &str,
        name: &str,
        grace_period_seconds: i64,
        cluster: Arc<dyn ClusterView>,
    ) {
        let missed = Missed::Deleted {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            grace: grace_period_seconds,
            cluster,
        };
        let Some(Missed::Deleted { cluster, .. }) = self.inner.link.defer(missed) else {
            return;
        };
        let cluster = self.inner.link.gate(cluster);
        let entry = self.entry(namespace, name);
        let inner = Arc::clone(&self.inner);
        let (ns, name) = (namespace.to_owned(), name.to_owned());
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!(k8s.pod.name = %name, "pod_deleted called outside a tokio runtime");
            return;
        };
        handle.spawn(async move {
            if let Some(entry) = entry {
                kill_pod(&inner, &entry, &ns, &name, grace_period_seconds, cluster.as_ref()).await;
                let mut pods = lock(&inner.pods);
                let key = (ns.clone(), name.clone());
                if pods.get(&key).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                    pods.remove(&key);
                }
            }
            cluster.pod_terminated(&ns, &name);
        });
    }

    fn stream_url(
        &self,
        request: StreamRequest,
        attach: bool,
    ) -> BoxFuture<'_, Result<String, NodeError>> {
        Box::pin(async move {
            if !self.inner.link.is_up() {
                let address = format!("{}:10250", self.inner.config.node_ip);
                return Err(NodeError::Unreachable { address });
            }
            let not_running = || NodeError::NotRunning {
                namespace: request.namespace.clone(),
                pod: request.pod.clone(),
                container: request.container.clone(),
            };
            let entry = self.entry(&request.namespace, &request.pod).ok_or_else(not_running)?;
            let id = {
                let shared = lock(&entry.shared);
                match shared.containers.get(&request.container) {
                    Some(ContainerRef { id: Some(id), running: true, .. }) => id.clone(),
                    _ => return Err(not_running()),
                }
            };
            let mut cri = self.inner.cri.clone();
            let result = if attach {
                cri.runtime
                    .attach(AttachRequest {
                        container_id: id,
                        stdin: request.stdin,
                        tty: request.tty,
                        stdout: request.stdout,
                        stderr: request.stderr,
                    })
                    .await
                    .map(|r| r.into_inner().url)
            } else {
                cri.runtime
                    .exec(ExecRequest {
                        container_id: id,
                        cmd: request.command.clone(),
                        tty: request.tty,
                        stdin: request.stdin,
                        stdout: request.stdout,
                        stderr: request.stderr,
                    })
                    .await
                    .map(|r| r.into_inner().url)
            };
            result.map_err(|status| NodeError::Runtime { message: status.message().to_owned() })
        })
    }

    fn link(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.link.watch()
    }

    fn container_log_path(&self, namespace: &str, pod: &str, container: &str) -> Option<PathBuf> {
        let entry = self.entry(namespace, pod)?;
        let shared = lock(&entry.shared);
        shared.containers.get(container).filter(|c| c.id.is_some()).map(|c| c.log_path.clone())
    }
}

/// Stops a pod's containers (SIGTERM, SIGKILL after the grace period), publishes their final
/// state, removes the sandbox and the pod's directories.
async fn kill_pod(
    inner: &Inner,
    entry: &PodEntry,
    ns: &str,
    name: &str,
    grace: i64,
    cluster: &dyn ClusterView,
) {
    entry.cancel.cancel();
    let worker = lock(&entry.worker).take();
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    let (sandbox_id, containers) = {
        let shared = lock(&entry.shared);
        (shared.sandbox_id.clone(), shared.containers.clone())
    };
    let mut stops = Vec::new();
    for (cname, c) in &containers {
        let (Some(id), true) = (c.id.clone(), c.running) else {
            continue;
        };
        cluster.record_pod_event(
            ns,
            name,
            "Normal",
            "Killing",
            &format!("Stopping container {cname}"),
        );
        let mut cri = inner.cri.clone();
        stops.push(async move {
            if let Err(status) = cri
                .runtime
                .stop_container(StopContainerRequest {
                    container_id: id.clone(),
                    timeout: grace.max(MINIMUM_GRACE_PERIOD_SECONDS),
                })
                .await
            {
                tracing::warn!(container.id = %id, error = status.message(), "failed to stop container");
            }
        });
    }
    futures::future::join_all(stops).await;

    // Final container states, as the kubelet reports them before the object goes away.
    let model = lock(&entry.shared).model.clone();
    if let Some(mut model) = model {
        let mut cri = inner.cri.clone();
        for c in model.init.iter_mut().chain(model.main.iter_mut()) {
            if let (Some(id), CState::Running { .. }) = (c.container_id.clone(), &c.state) {
                c.state = poll_state(&mut cri, &id).await.unwrap_or_else(|| gone_state(&c.state));
            }
        }
        cluster.set_pod_status(ns, name, model.status());
    }

    if let Some(id) = sandbox_id {
        let mut cri = inner.cri.clone();
        if let Err(status) =
            cri.runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await
        {
            tracing::warn!(sandbox.id = %id, error = status.message(), "failed to stop sandbox");
        }
        if let Err(status) = cri
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.clone() })
            .await
        {
            tracing::warn!(sandbox.id = %id, error = status.message(), "failed to remove sandbox");
        }
    }
    let pod_dir = inner.config.pods_dir.join(&entry.uid);
    super::containerd::unmount_under(&pod_dir);
    let _ = std::fs::remove_dir_all(&pod_dir);
    let _ =
        std::fs::remove_dir_all(inner.config.logs_dir.join(format!("{ns}_{name}_{}", entry.uid)));
    tracing::info!(k8s.namespace.name = %ns, k8s.pod.name = %name, "pod terminated");
}

/// The state of a container that can no longer be found.
fn gone_state(previous: &CState) -> CState {
    let started_at = match previous {
        CState::Running { started_at } => *started_at,
        _ => None,
    };
    CState::Terminated {
        exit_code: 137,
        reason: "ContainerStatusUnknown".to_owned(),
        message: Some("The container could not be located when the pod was terminated".to_owned()),
        started_at,
        finished_at: None,
    }
}

/// The container's state from CRI `ContainerStatus`; `None` if the runtime does not know it.
async fn poll_state(cri: &mut CriClient, id: &str) -> Option<CState> {
    let status = cri
        .runtime
        .container_status(ContainerStatusRequest { container_id: id.to_owned(), verbose: false })
        .await
        .ok()?
        .into_inner()
        .status?;
    Some(match status.state {
        // CONTAINER_RUNNING
        1 => CState::Running { started_at: cri_time(status.started_at) },
        // CONTAINER_EXITED
        2 => CState::Terminated {
            exit_code: status.exit_code,
            reason: if status.reason.is_empty() {
                if status.exit_code == 0 { "Completed" } else { "Error" }.to_owned()
            } else {
                status.reason
            },
            message: (!status.message.is_empty()).then_some(status.message),
            started_at: cri_time(status.started_at),
            finished_at: cri_time(status.finished_at),
        },
        // CONTAINER_CREATED / CONTAINER_UNKNOWN
        _ => CState::waiting("ContainerCreating", None),
    })
}

/// `rpc error: code = X desc = Y`, the way Go's gRPC prints a status.
fn grpc_error(status: &tonic::Status) -> String {
    format!("rpc error: code = {:?} desc = {}", status.code(), status.message())
}

/// Which container of the pod a step is about.
#[derive(Debug, Clone, Copy)]
enum Which {
    Init(usize),
    Main(usize),
}

/// Per-container scheduling of (re)tries.
#[derive(Debug, Clone)]
struct Slot {
    next_attempt: Instant,
    backoff: Duration,
    pull_failed_at: Option<Instant>,
}

impl Slot {
    fn new() -> Self {
        Self { next_attempt: Instant::now(), backoff: BACKOFF_INITIAL, pull_failed_at: None }
    }

    fn fail(&mut self) {
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

/// What CRI says about an image.
#[derive(Debug)]
struct ImageInfo {
    id: String,
    uid: Option<i64>,
    username: String,
}

/// The pod worker.
struct Worker {
    inner: Arc<Inner>,
    entry: Arc<PodEntry>,
    pod: Pod,
    cluster: Arc<dyn ClusterView>,
    cri: CriClient,
    ns: String,
    name: String,
    model: PodModel,
    init_slots: Vec<Slot>,
    main_slots: Vec<Slot>,
    last_published: Option<serde_json::Value>,
    sandbox_id: String,
    sandbox_config: PodSandboxConfig,
    volumes: HashMap<String, PathBuf>,
    /// The pod's managed `/etc/hosts`.
    etc_hosts: Option<PathBuf>,
    log_dir: PathBuf,
}

fn model_of(c: &Container) -> CModel {
    CModel {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: String::new(),
        container_id: None,
        state: CState::waiting("", None),
    }
}

/// `Guaranteed`, `Burstable` or `BestEffort` from the containers' requests and limits.
fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all: Vec<&Container> =
        spec.init_containers.iter().flatten().chain(spec.containers.iter()).collect();
    let has_any = all.iter().any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            r.requests.as_ref().is_some_and(|m| !m.is_empty())
                || r.limits.as_ref().is_some_and(|m| !m.is_empty())
        })
    });
    if !has_any {
        return "BestEffort";
    }
    let guaranteed = all.iter().all(|c| {
        c.resources.as_ref().is_some_and(|r| {
            let limits = r.limits.clone().unwrap_or_default();
            let requests = r.requests.clone().unwrap_or_default();
            ["cpu", "memory"].iter().all(|k| {
                limits.contains_key(*k)
                    && requests.get(*k).is_none_or(|q| Some(q) == limits.get(*k))
            })
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

impl Worker {
    fn new(
        inner: Arc<Inner>,
        entry: Arc<PodEntry>,
        pod: Pod,
        cluster: Arc<dyn ClusterView>,
    ) -> Self {
        let (ns, name) = pod_key(&pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let init: Vec<CModel> = spec.init_containers.iter().flatten().map(model_of).collect();
        let main: Vec<CModel> = spec.containers.iter().map(model_of).collect();
        let model = PodModel::new(init, main, &inner.config.node_ip, qos_class(&pod));
        let log_dir = inner.config.logs_dir.join(format!("{ns}_{name}_{}", entry.uid));
        Self {
            cri: inner.cri.clone(),
            init_slots: vec![Slot::new(); model.init.len()],
            main_slots: vec![Slot::new(); model.main.len()],
            inner,
            entry,
            pod,
            cluster,
            ns,
            name,
            model,
            last_published: None,
            sandbox_id: String::new(),
            sandbox_config: PodSandboxConfig::default(),
            volumes: HashMap::new(),
            etc_hosts: None,
            log_dir,
        }
    }

    fn event(&self, type_: &str, reason: &str, message: &str) {
        self.cluster.record_pod_event(&self.ns, &self.name, type_, reason, message);
    }

    /// Publishes the status if it changed, and mirrors the model for deletion.
    fn publish(&mut self) {
        let status = self.model.status();
        let value = serde_json::to_value(&status).ok();
        lock(&self.entry.shared).model = Some(self.model.clone());
        if value.is_some() && value == self.last_published {
            return;
        }
        self.last_published = value;
        self.cluster.set_pod_status(&self.ns, &self.name, status);
    }

    /// Sleeps unless cancelled; `false` when cancelled.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.entry.cancel.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }

    async fn run(mut self) {
        let started = Instant::now();
        if let Some(message) = security::apparmor_admission(&self.pod, self.inner.apparmor_enabled)
        {
            self.event("Warning", "AppArmor", &message);
            self.model.rejected = Some(("AppArmor".to_owned(), message));
            self.publish();
            return;
        }
        let policy = self.pod.spec.as_ref().and_then(|s| s.restart_policy.clone());
        if policy.as_deref().is_some_and(|p| p != "Never") {
            tracing::warn!(k8s.pod.name = %self.name, restart_policy = ?policy, "only restartPolicy Never is implemented; containers are not restarted");
        }
        self.publish();

        let pod_dir = self.inner.config.pods_dir.join(&self.entry.uid);
        let mut backoff = Duration::from_millis(500);
        loop {
            match volumes::prepare(&self.pod, &pod_dir, self.cluster.as_ref()) {
                Ok(prepared) => {
                    for warning in &prepared.warnings {
                        self.event("Warning", "FailedMount", warning);
                    }
                    self.volumes = prepared.paths;
                    match volumes::write_etc_hosts(&self.pod, &pod_dir, &self.inner.config.node_ip)
                    {
                        Ok(path) => self.etc_hosts = Some(path),
                        Err(e) => self.event("Warning", "FailedMount", &e.message),
                    }
                    break;
                }
                Err(e) => {
                    self.event(
                        "Warning",
                        "FailedMount",
                        &format!(
                            "MountVolume.SetUp failed for volume {:?} : {}",
                            e.volume, e.message
                        ),
                    );
                    if !self.sleep(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }

        let mut backoff = Duration::from_secs(1);
        loop {
            match self.run_sandbox().await {
                Ok(()) => break,
                Err(message) => {
                    self.event(
                        "Warning",
                        "FailedCreatePodSandBox",
                        &format!("Failed to create pod sandbox: {message}"),
                    );
                    if !self.sleep(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.model.sandbox_ready = true;
        self.publish();
        tracing::debug!(k8s.pod.name = %self.name, elapsed_ms = started.elapsed().as_millis() as u64, "sandbox ready");

        loop {
            if self.entry.cancel.is_cancelled() {
                return;
            }
            let done = self.step().await;
            self.publish();
            if done {
                tracing::info!(k8s.pod.name = %self.name, phase = self.model.phase(), "pod finished");
                return;
            }
            if !self.sleep(self.inner.config.poll_interval).await {
                return;
            }
        }
    }

    async fn run_sandbox(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| format!("failed to create {}: {e}", self.log_dir.display()))?;
        let meta = &self.pod.metadata;
        let mut labels: HashMap<String, String> =
            meta.labels.clone().unwrap_or_default().into_iter().collect();
        labels.insert("io.kubernetes.pod.name".to_owned(), self.name.clone());
        labels.insert("io.kubernetes.pod.namespace".to_owned(), self.ns.clone());
        labels.insert("io.kubernetes.pod.uid".to_owned(), self.entry.uid.clone());
        let sysctls = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| sc.sysctls.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.name, s.value))
            .collect();
        self.sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.entry.uid.clone(),
                namespace: self.ns.clone(),
                attempt: 0,
            }),
            // A host-network sandbox must not set a hostname (no private UTS namespace).
            hostname: String::new(),
            log_directory: self.log_dir.to_string_lossy().into_owned(),
            labels,
            annotations: meta.annotations.clone().unwrap_or_default().into_iter().collect(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(security::sandbox_security_context(
                    &self.pod,
                    &self.inner.config.seccomp_root,
                )),
                sysctls,
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = self
            .cri
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(self.sandbox_config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|s| s.message().to_owned())?;
        self.sandbox_id = response.into_inner().pod_sandbox_id;
        lock(&self.entry.shared).sandbox_id = Some(self.sandbox_id.clone());
        Ok(())
    }

    fn cmodel(&mut self, which: Which) -> &mut CModel {
        match which {
            Which::Init(i) => &mut self.model.init[i],
            Which::Main(i) => &mut self.model.main[i],
        }
    }

    fn slot(&mut self, which: Which) -> &mut Slot {
        match which {
            Which::Init(i) => &mut self.init_slots[i],
            Which::Main(i) => &mut self.main_slots[i],
        }
    }

    fn spec_container(&self, which: Which) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        match which {
            Which::Init(i) => spec.init_containers.as_ref()?.get(i).cloned(),
            Which::Main(i) => spec.containers.get(i).cloned(),
        }
    }

    /// One round: start what is due, poll what runs. `true` when the pod is finished.
    async fn step(&mut self) -> bool {
        for i in 0..self.model.init.len() {
            let which = Which::Init(i);
            self.advance(which).await;
            let state = &self.model.init[i].state;
            if state.failed() {
                return true;
            }
            if !state.succeeded() {
                return false;
            }
        }
        for i in 0..self.model.main.len() {
            self.advance(Which::Main(i)).await;
        }
        self.model.main.iter().all(|c| c.state.is_terminated())
    }

    /// Starts the container if it is due, else polls it if it runs.
    async fn advance(&mut self, which: Which) {
        let c = self.cmodel(which).clone();
        match (&c.state, &c.container_id) {
            (CState::Terminated { .. }, _) => {}
            (_, Some(id)) => {
                let id = id.clone();
                let state =
                    poll_state(&mut self.cri, &id).await.unwrap_or_else(|| gone_state(&c.state));
                self.set_state(which, state);
            }
            (CState::Waiting { reason, .. }, None) => {
                let now = Instant::now();
                let slot = self.slot(which).clone();
                if now >= slot.next_attempt {
                    self.try_start(which).await;
                } else if reason == "ErrImagePull"
                    && slot.pull_failed_at.is_some_and(|t| now >= t + PULL_BACKOFF_SHOWN_AFTER)
                {
                    let message = format!("Back-off pulling image {:?}", c.image);
                    self.event("Normal", "BackOff", &message);
                    self.event("Warning", "Failed", "Error: ImagePullBackOff");
                    self.cmodel(which).state = CState::waiting("ImagePullBackOff", Some(message));
                }
            }
            (CState::Running { .. }, None) => {}
        }
    }

    fn set_state(&mut self, which: Which, state: CState) {
        let running = matches!(state, CState::Running { .. });
        let name = self.cmodel(which).name.clone();
        self.cmodel(which).state = state;
        if let Some(c) = lock(&self.entry.shared).containers.get_mut(&name) {
            c.running = running;
        }
    }

    fn wait_with(&mut self, which: Which, reason: &str, message: String) {
        self.event(
            "Warning",
            "Failed",
            &format!(
                "Error: {}",
                if reason == "CreateContainerError"
                    || reason == "CreateContainerConfigError"
                    || reason == "RunContainerError"
                {
                    message.as_str()
                } else {
                    reason
                }
            ),
        );
        self.cmodel(which).state = CState::waiting(reason, Some(message));
        self.slot(which).fail();
    }

    async fn try_start(&mut self, which: Which) {
        let Some(container) = self.spec_container(which) else {
            return;
        };
        let image = match self.ensure_image(which, &container).await {
            Ok(image) => image,
            Err((reason, message)) => {
                self.cmodel(which).state = CState::waiting(reason, Some(message));
                self.slot(which).fail();
                return;
            }
        };
        self.cmodel(which).image_id = image.id.clone();
        let config = match self.container_config(&container, &image) {
            Ok(config) => config,
            Err(message) => {
                self.wait_with(which, "CreateContainerConfigError", message);
                return;
            }
        };
        let log_path = self.log_dir.join(&container.name).join("0.log");
        if let Some(parent) = log_path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            self.wait_with(
                which,
                "CreateContainerError",
                format!("failed to create {}: {e}", parent.display()),
            );
            return;
        }
        let created = self
            .cri
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: self.sandbox_id.clone(),
                config: Some(config),
                sandbox_config: Some(self.sandbox_config.clone()),
            })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(status) => {
                self.wait_with(which, "CreateContainerError", status.message().to_owned());
                return;
            }
        };
        self.cmodel(which).container_id = Some(id.clone());
        lock(&self.entry.shared).containers.insert(
            container.name.clone(),
            ContainerRef { id: Some(id.clone()), log_path, running: false },
        );
        self.event("Normal", "Created", &format!("Created container: {}", container.name));
        if let Err(status) = self
            .cri
            .runtime
            .start_container(StartContainerRequest { container_id: id.clone() })
            .await
        {
            self.event("Warning", "Failed", &format!("Error: {}", status.message()));
        } else {
            self.event("Normal", "Started", &format!("Started container {}", container.name));
        }
        let previous = self.cmodel(which).state.clone();
        let state = poll_state(&mut self.cri, &id).await.unwrap_or_else(|| gone_state(&previous));
        self.set_state(which, state);
    }

    /// The kubelet's `EnsureImageExists`: `Err((reason, message))` leaves the container waiting.
    async fn ensure_image(
        &mut self,
        which: Which,
        container: &Container,
    ) -> Result<ImageInfo, (&'static str, String)> {
        let image = container.image.clone().unwrap_or_default();
        let policy = container.image_pull_policy.clone().unwrap_or_else(|| {
            let tagged = image.rsplit('/').next().is_some_and(|last| last.contains(':'));
            if image.contains('@') || (tagged && !image.ends_with(":latest")) {
                "IfNotPresent".to_owned()
            } else {
                "Always".to_owned()
            }
        });
        let mut found = self.image_status(&image).await;
        if found.is_none() && !*self.inner.imports.borrow() {
            // Images are still being imported in the background: decide once they are in.
            let mut imports = self.inner.imports.clone();
            // An error means the importer is gone, which also means it is done.
            let _ = imports.wait_for(|done| *done).await;
            found = self.image_status(&image).await;
        }
        if let Some(info) = found {
            self.event(
                "Normal",
                "Pulled",
                &format!("Container image {image:?} already present on machine"),
            );
            return Ok(info);
        }
        if policy == "Never" {
            let message =
                format!("Container image {image:?} is not present with pull policy of Never");
            self.event("Warning", "ErrImageNeverPull", &message);
            self.event("Warning", "Failed", "Error: ErrImageNeverPull");
            return Err(("ErrImageNeverPull", message));
        }
        self.event("Normal", "Pulling", &format!("Pulling image {image:?}"));
        let pull = tokio::time::timeout(
            PULL_TIMEOUT,
            self.cri.images.pull_image(PullImageRequest {
                image: Some(ImageSpec { image: image.clone(), ..Default::default() }),
                auth: None,
                sandbox_config: Some(self.sandbox_config.clone()),
            }),
        )
        .await;
        let failure = match pull {
            Ok(Ok(_)) => match self.image_status(&image).await {
                Some(info) => {
                    self.event("Normal", "Pulled", &format!("Successfully pulled image {image:?}"));
                    return Ok(info);
                }
                None => format!("image {image:?} is still missing after a successful pull"),
            },
            Ok(Err(status)) => grpc_error(&status),
            Err(_) => format!(
                "rpc error: code = DeadlineExceeded desc = pulling image {image:?} took longer than {PULL_TIMEOUT:?}"
            ),
        };
        self.event("Warning", "Failed", &format!("Failed to pull image {image:?}: {failure}"));
        self.event("Warning", "Failed", "Error: ErrImagePull");
        self.slot(which).pull_failed_at = Some(Instant::now());
        Err(("ErrImagePull", failure))
    }

    async fn image_status(&mut self, image: &str) -> Option<ImageInfo> {
        let response = self
            .cri
            .images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec { image: image.to_owned(), ..Default::default() }),
                verbose: false,
            })
            .await
            .ok()?;
        let img = response.into_inner().image?;
        Some(ImageInfo { id: img.id, uid: img.uid.map(|v| v.value), username: img.username })
    }

    /// The CRI container config, or a `CreateContainerConfigError` message.
    fn container_config(
        &self,
        container: &Container,
        image: &ImageInfo,
    ) -> Result<ContainerConfig, String> {
        let envs = env::container_env(
            &self.pod,
            container,
            self.cluster.as_ref(),
            &self.inner.config.node_ip,
        )?;
        let (command, args) = env::expand_command(container, &envs);
        security::verify_run_as_non_root(&self.pod, container, image.uid, &image.username)?;
        let mounts =
            volumes::container_mounts(container, &self.volumes, self.etc_hosts.as_deref())?;
        let mut labels = HashMap::new();
        labels.insert("io.kubernetes.container.name".to_owned(), container.name.clone());
        labels.insert("io.kubernetes.pod.name".to_owned(), self.name.clone());
        labels.insert("io.kubernetes.pod.namespace".to_owned(), self.ns.clone());
        labels.insert("io.kubernetes.pod.uid".to_owned(), self.entry.uid.clone());
        Ok(ContainerConfig {
            metadata: Some(ContainerMetadata { name: container.name.clone(), attempt: 0 }),
            image: Some(ImageSpec {
                image: image.id.clone(),
                user_specified_image: container.image.clone().unwrap_or_default(),
                ..Default::default()
            }),
            command,
            args,
            working_dir: container.working_dir.clone().unwrap_or_default(),
            envs: envs.into_iter().map(|(key, value)| KeyValue { key, value }).collect(),
            mounts,
            labels,
            log_path: Path::new(&container.name).join("0.log").to_string_lossy().into_owned(),
            stdin: container.stdin == Some(true),
            stdin_once: container.stdin_once == Some(true),
            tty: container.tty == Some(true),
            linux: Some(LinuxContainerConfig {
                resources: Some(linux_resources(container)),
                security_context: Some(security::container_security_context(
                    &self.pod,
                    container,
                    &self.inner.config.seccomp_root,
                )),
            }),
            ..Default::default()
        })
    }
}

/// The kubelet's cgroup settings for a container: the memory limit in bytes (the kernel OOM-kills
/// past it), CPU shares from the request (the limit when there is none), a CFS quota from the
/// limit over a 100 ms period, and on cgroup v2 whole-container OOM kills.
fn linux_resources(container: &Container) -> LinuxContainerResources {
    const PERIOD: i64 = 100_000;
    let resources = container.resources.as_ref();
    let get = |which: Option<&std::collections::BTreeMap<String, Quantity>>, name: &str| {
        which.and_then(|m| m.get(name)).and_then(|q| podrunner_config::quantity::value(&q.0))
    };
    let limits = resources.and_then(|r| r.limits.as_ref());
    let requests = resources.and_then(|r| r.requests.as_ref());
    let cpu_limit = get(limits, "cpu");
    let cpu_request = get(requests, "cpu").or(cpu_limit);
    #[allow(clippy::cast_possible_truncation)] // reason: quantities fit i64 bytes and millicores
    let to_i64 = |v: f64| v.ceil() as i64;
    LinuxContainerResources {
        cpu_period: if cpu_limit.is_some() { PERIOD } else { 0 },
        cpu_quota: cpu_limit.map_or(0, |c| to_i64(c * PERIOD as f64).max(1000)),
        cpu_shares: cpu_request.map_or(2, |c| to_i64(c * 1024.0).max(2)),
        memory_limit_in_bytes: get(limits, "memory").map_or(0, to_i64),
        // Kubernetes 1.28+ on cgroup v2: an OOM kill takes the whole container (the kubelet's
        // default, singleProcessOOMKill=false); cgroup v1 kills only the largest process.
        unified: if cgroup_v2() {
            [("memory.oom.group".to_owned(), "1".to_owned())].into()
        } else {
            std::collections::HashMap::new()
        },
        ..LinuxContainerResources::default()
    }
}

fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("namespace", &self.ns)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Lists the sandboxes the runtime knows (for tests and diagnostics).
pub async fn list_sandbox_ids(cri: &CriClient) -> Result<Vec<String>> {
    let mut cri = cri.clone();
    let list =
        cri.runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await.map_err(
            |s| Error::Cri { operation: "ListPodSandbox", message: s.message().to_owned() },
        )?;
    Ok(list.into_inner().items.into_iter().map(|s| s.id).collect())
}
