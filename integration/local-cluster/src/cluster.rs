//! Assembly of the local cluster and the test-support API.
//!
//! [`LocalCluster::start`] starts the node half (private containerd, images, agent), then the
//! API server bound to it, and writes under the cluster directory:
//!
//! ```text
//! <dir>/kubeconfig    a normal kubeconfig for http://127.0.0.1:<port>
//! <dir>/seccomp/      the seccomp root (example profiles under profiles/)
//! <dir>/containerd/   the node's containerd (see crate::node)
//! ```
//!
//! Everything stops when the [`LocalCluster`] is dropped, also while a test panics;
//! [`LocalCluster::shutdown`] stops it more gracefully (removes pod sandboxes first). A process
//! killed outright (a test runner's timeout) runs no destructor: for that case a small watchdog
//! process (`Reaper`) waits for this process to die, then kills what is left of the node
//! (containerd, its shims and their containers) and unmounts its file systems.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    apiserver::{ApiServer, ApiServerError, ApiServerSettings, KubeVersion},
    contract::{ClusterView, NodeRuntime},
    node::{self, LocalNode, NodeOptions},
};

/// Errors of the cluster assembly.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node half failed to start.
    #[error("failed to start the node")]
    Node(#[source] node::Error),
    /// The API server failed to start.
    #[error("failed to start the api server")]
    ApiServer(#[source] ApiServerError),
    /// Writing a file of the cluster failed.
    #[error("failed to write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Building a client from the kubeconfig failed.
    #[error("failed to build a kube client from {path}")]
    Client {
        /// The kubeconfig.
        path: PathBuf,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ClusterError {
    /// A stable label for test output.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Node(_) => "node",
            Self::ApiServer(_) => "api_server",
            Self::Write { .. } => "write",
            Self::Client { .. } => "client",
        }
    }
}

/// Options of a local cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Everything of the cluster lives here. Keep it short: containerd's socket must fit in
    /// 107 bytes.
    pub dir: PathBuf,
    /// The Kubernetes version the API server reports (and gates fields by).
    pub kubernetes_version: KubeVersion,
    /// Where image archives are cached across clusters.
    pub image_cache: PathBuf,
    /// The API server port (0 picks a free one).
    pub port: u16,
    /// The node's name.
    pub node_name: String,
    /// How many changes a watch can resume from before it gets `410 Gone`.
    pub watch_window: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// How long the node may miss heartbeats before it is marked `Ready=Unknown`.
    pub node_monitor_grace: Duration,
}

impl ClusterOptions {
    /// A cluster in `dir` reporting Kubernetes 1.33, images cached in the system temp directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            kubernetes_version: KubeVersion { minor: 33, patch: 0 },
            image_cache: default_image_cache(),
            port: 0,
            node_name: "local-node".to_owned(),
            watch_window: crate::apiserver::DEFAULT_WATCH_WINDOW,
            bookmark_interval: Duration::from_secs(60),
            node_monitor_grace: Duration::from_secs(40),
        }
    }

    /// Sets the node monitor grace period (tests shorten it to see a lost node marked).
    #[must_use]
    pub fn node_monitor_grace(mut self, grace: Duration) -> Self {
        self.node_monitor_grace = grace;
        self
    }

    /// Sets the watch window (tests use a small one to force a `410 Gone` and a relist).
    #[must_use]
    pub fn watch_window(mut self, changes: usize) -> Self {
        self.watch_window = changes;
        self
    }

    /// Sets the bookmark interval (tests shorten it to see bookmarks).
    #[must_use]
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Sets the reported Kubernetes version.
    #[must_use]
    pub fn kubernetes_version(mut self, version: KubeVersion) -> Self {
        self.kubernetes_version = version;
        self
    }
}

/// The shared image archive cache: `$LOCAL_CLUSTER_IMAGE_CACHE` or `<tmp>/podrunner-local-cluster-images`.
pub fn default_image_cache() -> PathBuf {
    std::env::var_os("LOCAL_CLUSTER_IMAGE_CACHE")
        .map_or_else(|| std::env::temp_dir().join("podrunner-local-cluster-images"), PathBuf::from)
}

/// A running local cluster: API server plus node. Dropping it stops everything.
#[derive(Debug)]
pub struct LocalCluster {
    // Field order is drop order: stop serving first, then the node and its containerd, then the
    // watchdog (no longer needed).
    apiserver: ApiServer,
    node: Option<LocalNode>,
    reaper: Option<Reaper>,
    dir: PathBuf,
    kubeconfig: PathBuf,
    seccomp_root: PathBuf,
    startup: Duration,
}

impl LocalCluster {
    /// Starts the real node (containerd + images + agent) and the API server.
    pub async fn start(options: ClusterOptions) -> Result<Self, ClusterError> {
        let started = Instant::now();
        let node = LocalNode::start(NodeOptions {
            dir: options.dir.clone(),
            image_cache: options.image_cache.clone(),
            node_name: options.node_name.clone(),
        })
        .await
        .map_err(ClusterError::Node)?;
        let seccomp_root = node.seccomp_root().to_path_buf();
        let runtime: Arc<dyn NodeRuntime> = node.agent();
        let reaper = Reaper::spawn(node.containerd().dir());
        let mut cluster =
            Self::assemble(options, runtime, Some(node), seccomp_root, started).await?;
        cluster.reaper = reaper;
        Ok(cluster)
    }

    /// Starts the API server with any [`NodeRuntime`] (for API-level tests with a fake node).
    /// The seccomp root still receives the example profiles.
    pub async fn start_with_runtime(
        options: ClusterOptions,
        runtime: Arc<dyn NodeRuntime>,
    ) -> Result<Self, ClusterError> {
        let started = Instant::now();
        let seccomp_root = options.dir.join("seccomp");
        node::install_example_profiles(&seccomp_root).map_err(ClusterError::Node)?;
        Self::assemble(options, runtime, None, seccomp_root, started).await
    }

    async fn assemble(
        options: ClusterOptions,
        runtime: Arc<dyn NodeRuntime>,
        node: Option<LocalNode>,
        seccomp_root: PathBuf,
        started: Instant,
    ) -> Result<Self, ClusterError> {
        let mut settings = ApiServerSettings::new(options.kubernetes_version);
        settings.node_name = options.node_name.clone();
        settings.address.set_port(options.port);
        settings.watch_window = options.watch_window;
        settings.bookmark_interval = options.bookmark_interval;
        settings.node_monitor_grace = options.node_monitor_grace;
        let apiserver =
            ApiServer::start(settings, runtime).await.map_err(ClusterError::ApiServer)?;
        let kubeconfig = options.dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &apiserver.url())?;
        if let Some(node) = &node {
            spawn_heartbeat(node.agent(), &apiserver.cluster_view(), options.node_name.clone());
        }
        let startup = started.elapsed();
        tracing::info!(
            url = %apiserver.url(),
            startup_ms = u64::try_from(startup.as_millis()).unwrap_or(u64::MAX),
            "local cluster ready"
        );
        Ok(Self {
            apiserver,
            node,
            reaper: None,
            dir: options.dir,
            kubeconfig,
            seccomp_root,
            startup,
        })
    }

    /// A `kube::Client` built from the written kubeconfig, like any other client would build it.
    pub async fn kube_client(&self) -> Result<kube::Client, ClusterError> {
        let client_error = |source: Box<dyn std::error::Error + Send + Sync>| {
            ClusterError::Client { path: self.kubeconfig.clone(), source }
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| client_error(Box::new(e)))?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| client_error(Box::new(e)))?;
        kube::Client::try_from(config).map_err(|e| client_error(Box::new(e)))
    }

    /// The kubeconfig path (`<dir>/kubeconfig`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The seccomp root: `Localhost` profiles are relative to it.
    pub fn seccomp_root(&self) -> &Path {
        &self.seccomp_root
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API server URL.
    pub fn url(&self) -> String {
        self.apiserver.url()
    }

    /// Where pods reach the API server (TLS, the `kubernetes` Service of their environment).
    pub fn https_address(&self) -> std::net::SocketAddr {
        self.apiserver.https_address()
    }

    /// Ends every open watch (and refuses new ones while `refuse`): see [`ApiServer::end_watches`].
    pub fn end_watches(&self, refuse: bool) {
        self.apiserver.end_watches(refuse);
    }

    /// Accepts watches again.
    pub fn accept_watches(&self) {
        self.apiserver.accept_watches();
    }

    /// Imports image archives into the node's containerd (as `ctr images import` does).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Node`] when the import fails or the cluster has no real node.
    pub async fn import_images(&self, images: &[node::BuiltImage]) -> Result<(), ClusterError> {
        let Some(node) = &self.node else {
            return Err(ClusterError::Node(node::Error::Prerequisite {
                what: "this cluster has no real node to import images into".to_owned(),
            }));
        };
        node::import_images(node.containerd().socket(), images).await.map_err(ClusterError::Node)
    }

    /// Stops the node agent as if the kubelet died (containers keep running): see
    /// [`crate::node::agent::NodeAgent::stop`]. After the node monitor grace period the node is
    /// marked `Ready=Unknown` and its pods not ready.
    pub fn stop_node_agent(&self) {
        if let Some(node) = &self.node {
            node.agent().stop();
        }
    }

    /// Starts the node agent again: it posts its pods' status and carries out what it missed.
    pub fn start_node_agent(&self) {
        if let Some(node) = &self.node {
            node.agent().start_again();
        }
    }

    /// Overloads the API server for a while: see [`ApiServer::overload`].
    pub fn overload(&self, overload: crate::apiserver::Overload) {
        self.apiserver.overload(overload);
    }

    /// Every request the API server answered so far (see [`crate::apiserver::RequestRecord`]).
    pub fn requests(&self) -> Vec<crate::apiserver::RequestRecord> {
        self.apiserver.requests()
    }

    /// The API server's side of the contract, as the node sees it.
    pub fn cluster_view(&self) -> Arc<dyn ClusterView> {
        self.apiserver.cluster_view()
    }

    /// How long [`LocalCluster::start`] took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The node's startup phases, when a real node runs.
    pub fn node_timings(&self) -> Option<node::StartupTimings> {
        self.node.as_ref().map(LocalNode::timings)
    }

    /// The tail of containerd's log (for failure output), when a real node runs.
    pub fn containerd_log_tail(&self) -> Option<String> {
        self.node.as_ref().map(|n| n.containerd().log_tail())
    }

    /// Stops serving, removes every pod sandbox, then stops containerd.
    pub async fn shutdown(mut self) {
        self.apiserver.stop();
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        self.reaper.take();
    }
}

/// What the watchdog runs (`sh -c`). `$LC_PARENT` is the process to outlive, `$LC_DIR` the node's
/// containerd directory: once the parent is gone, every process whose command line mentions the
/// directory (containerd, its shims) and all their descendants (the containers) are killed, then
/// the mounts under the directory are lazily unmounted. The directory travels in the
/// environment, so the watchdog's own command line does not mention it.
const REAPER_SCRIPT: &str = r#"
while kill -0 "$LC_PARENT" 2>/dev/null; do sleep 1; done
victims=" "
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" = "$$" ] && continue
  case "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" in
    *"$LC_DIR/"*) victims="$victims$pid " ;;
  esac
done
[ "$victims" = " " ] && exit 0
changed=1
while [ "$changed" = 1 ]; do
  changed=0
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    case "$victims" in *" $pid "*) continue ;; esac
    ppid=$(sed -n 's/^.*) [A-Za-z] \([0-9]*\) .*$/\1/p' "$p/stat" 2>/dev/null)
    case "$victims" in *" $ppid "*) victims="$victims$pid "; changed=1 ;; esac
  done
done
kill -KILL $victims 2>/dev/null
sleep 0.5
awk -v d="$LC_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
  while read -r m; do umount -l "$m" 2>/dev/null; done
"#;

/// The watchdog of a running node, for the case this process is killed without unwinding. It
/// runs in its own process group, so a signal to the test's process group does not reach it.
/// Dropping it (the cluster stopped normally) kills it.
#[derive(Debug)]
struct Reaper(Child);

impl Reaper {
    fn spawn(containerd_dir: &Path) -> Option<Self> {
        use std::os::unix::process::CommandExt as _;
        let child = Command::new("sh")
            .arg("-c")
            .arg(REAPER_SCRIPT)
            .env("LC_PARENT", std::process::id().to_string())
            .env("LC_DIR", containerd_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        match child {
            Ok(child) => Some(Self(child)),
            Err(error) => {
                tracing::warn!(%error, "failed to start the cluster watchdog; a killed test may leave containerd running");
                None
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How often the node agent sends its heartbeat (the kubelet renews its Lease every 10 s; more
/// often here, so that a shortened grace period in tests still holds).
const HEARTBEAT_PERIOD: Duration = Duration::from_millis(500);

/// Sends the agent's heartbeat while it is up, for as long as the API server lives.
fn spawn_heartbeat(
    agent: std::sync::Arc<crate::node::agent::NodeAgent>,
    view: &std::sync::Arc<dyn ClusterView>,
    node: String,
) {
    let view = std::sync::Arc::downgrade(view);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_PERIOD);
        loop {
            tick.tick().await;
            let Some(view) = view.upgrade() else { return };
            if agent.is_up() {
                view.node_heartbeat(&node);
            }
        }
    });
}

/// Writes a kubeconfig with one cluster, user and context named `local-cluster`.
pub fn write_kubeconfig(path: &Path, server: &str) -> Result<(), ClusterError> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local-cluster\n  cluster:\n    server: {server}\ncontexts:\n- name: local-cluster\n  context:\n    cluster: local-cluster\n    user: local-cluster\n    namespace: default\ncurrent-context: local-cluster\nusers:\n- name: local-cluster\n  user: {{}}\npreferences: {{}}\n"
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|source| ClusterError::Write { path: parent.to_path_buf(), source })?;
    }
    std::fs::write(path, text)
        .map_err(|source| ClusterError::Write { path: path.to_path_buf(), source })
}

/// What a runtime-tier test (a node or a whole cluster) needs and is missing on this machine, if
/// anything: root, the `containerd`, `containerd-shim-runc-v2`, `runc`, `ctr`, `busybox` and
/// `ldd` programs, and `/usr/bin/git` for the helper image. Every missing one is named.
pub fn missing_prerequisites() -> Option<String> {
    let mut missing = Vec::new();
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !is_root {
        missing.push("root".to_owned());
    }
    for tool in ["containerd", "containerd-shim-runc-v2", "runc", "ctr", "busybox", "ldd"] {
        if !on_path(tool) {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    if !std::path::Path::new("/usr/bin/git").is_file() {
        missing.push("/usr/bin/git".to_owned());
    }
    (!missing.is_empty()).then(|| format!("needs {}", missing.join(", ")))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Whether a missing prerequisite must fail instead of skip (`CI=true`).
pub fn prerequisites_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
