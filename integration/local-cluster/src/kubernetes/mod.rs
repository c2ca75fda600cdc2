//! A real single-node Kubernetes from the upstream binaries (built by
//! `scripts/build-kubernetes.sh`), run as plain processes: etcd, kube-apiserver (default
//! admission plugins, `Node,RBAC`, an audit log), kube-controller-manager, kube-scheduler,
//! containerd 2.x with runc and the CNI bridge, and the kubelet.
//!
//! ```text
//! <dir>/cluster.json    what tests need to find it (ClusterInfo)
//! <dir>/kubeconfig      the admin kubeconfig (system:masters)
//! <dir>/pki/            CA, serving and client certificates, service-account keys
//! <dir>/logs/           one log per component, and the audit log
//! <dir>/kubelet/        the kubelet's root; seccomp/ holds the Localhost profiles
//! <dir>/containerd/     containerd's root, state and socket
//! ```
//!
//! Nothing falls back silently: a component that exits or is not ready in time stops the start
//! with an error that names it, its command line and the end of its log.

mod components;
mod config;
mod pki;
mod process;
pub mod shared;
mod stop;

use std::{
    ffi::OsString,
    net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

pub use self::{
    components::is_ready,
    config::{BRIDGE, POD_SUBNET},
    stop::{Leftovers, clean_machine},
};
use self::{
    pki::Pki,
    process::{Component, MountNamespace},
};
use crate::node;

/// The Kubernetes release used unless `LOCAL_CLUSTER_KUBERNETES_VERSION` names another.
pub const DEFAULT_VERSION: &str = "1.37.2";
/// The older release the suite also passes on.
pub const OLDER_VERSION: &str = "1.34.4";
/// etcd, containerd, runc and the CNI plugins, as `scripts/build-kubernetes.sh` pins them.
const ETCD_VERSION: &str = "3.6.16";
const RUNTIME_DIR: &str = "containerd-2.2.9-runc-1.4.4-cni-1.9.0";

/// Errors of the real cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("failed to {action} {path}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A binary has not been built.
    #[error(
        "{component} is not built: {path} is missing; run `scripts/build-kubernetes.sh {version}` (or scripts/install-prereqs.sh)"
    )]
    MissingBinary {
        /// The component.
        component: String,
        /// Where it should be.
        path: PathBuf,
        /// The Kubernetes version asked for.
        version: String,
    },
    /// A component could not be started.
    #[error("failed to start {component} ({command})")]
    Spawn {
        /// The component.
        component: &'static str,
        /// Its command line.
        command: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A component exited while the cluster started.
    #[error("{component} {how} ({command}); the end of its log:\n{log}")]
    Exited {
        /// The component.
        component: &'static str,
        /// How it ended.
        how: String,
        /// Its command line.
        command: String,
        /// The end of its log.
        log: String,
    },
    /// A component did not become ready in time.
    #[error(
        "{component} was not ready after {seconds} s: {what} ({command}); the end of its log:\n{log}"
    )]
    NotReady {
        /// The component.
        component: &'static str,
        /// How long it was given.
        seconds: u64,
        /// What was awaited.
        what: String,
        /// Its command line.
        command: String,
        /// The end of its log.
        log: String,
    },
    /// The certificates could not be made.
    #[error("failed to generate the cluster's certificates")]
    Pki(#[from] rcgen::Error),
    /// The node has no address other than loopback.
    #[error("no non-loopback IPv4 address to give the node (the machine needs a default route)")]
    NoNodeAddress,
    /// An image step failed.
    #[error("failed to prepare the node's images")]
    Images(#[source] node::Error),
    /// A request to the API server failed.
    #[error("the api server refused {what}")]
    Api {
        /// What was asked.
        what: String,
        /// The cause.
        source: kube::Error,
    },
    /// A kube client could not be built.
    #[error("failed to build a kube client from {path}")]
    Client {
        /// The kubeconfig.
        path: PathBuf,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No component of that name.
    #[error("the cluster has no component {name:?}")]
    NoComponent {
        /// The name asked for.
        name: String,
    },
    /// etcd's HTTP gateway did not answer as expected.
    #[error("etcd's gateway refused {what}: {answer}")]
    Etcd {
        /// What was asked.
        what: &'static str,
        /// Its answer.
        answer: String,
    },
    /// `cluster.json` could not be read or written.
    #[error("failed to read or write {path}")]
    Info {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

impl Error {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io { action, path: path.to_path_buf(), source }
    }
}

/// Where the built binaries are.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Binaries {
    /// kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl.
    pub kubernetes: PathBuf,
    /// etcd.
    pub etcd: PathBuf,
    /// containerd, its shim, ctr, runc and the CNI plugins.
    pub runtime: PathBuf,
}

impl Binaries {
    /// The cache `scripts/build-kubernetes.sh` fills: `$PODRUNNER_CACHE`, else
    /// `/var/cache/podrunner`.
    pub fn cache() -> PathBuf {
        std::env::var_os("PODRUNNER_CACHE")
            .filter(|c| !c.is_empty())
            .map_or_else(|| PathBuf::from("/var/cache/podrunner"), PathBuf::from)
    }

    /// The binaries of Kubernetes `version` (e.g. `1.37.2`), each checked to exist.
    pub fn locate(version: &str) -> Result<Self, Error> {
        let cache = Self::cache();
        let version = version.trim_start_matches('v');
        let found = Self {
            kubernetes: cache.join("kubernetes").join(format!("v{version}")),
            etcd: cache.join("etcd").join(format!("v{ETCD_VERSION}")),
            runtime: cache.join("runtime").join(RUNTIME_DIR),
        };
        let needed = [
            (&found.etcd, "etcd"),
            (&found.kubernetes, "kube-apiserver"),
            (&found.kubernetes, "kube-controller-manager"),
            (&found.kubernetes, "kube-scheduler"),
            (&found.kubernetes, "kubelet"),
            (&found.kubernetes, "kubectl"),
            (&found.kubernetes, "kube-proxy"),
            (&found.runtime, "containerd"),
            (&found.runtime, "containerd-shim-runc-v2"),
            (&found.runtime, "ctr"),
            (&found.runtime, "runc"),
            (&found.runtime, "bridge"),
            (&found.runtime, "host-local"),
        ];
        for (dir, name) in needed {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(Error::MissingBinary {
                    component: name.to_owned(),
                    path,
                    version: version.to_owned(),
                });
            }
        }
        Ok(found)
    }
}

/// The Kubernetes version a cluster should run: `$LOCAL_CLUSTER_KUBERNETES_VERSION`, else
/// [`DEFAULT_VERSION`].
pub fn requested_version() -> String {
    std::env::var("LOCAL_CLUSTER_KUBERNETES_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .map_or_else(|| DEFAULT_VERSION.to_owned(), |v| v.trim_start_matches('v').to_owned())
}

/// Options of a real cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Everything of the cluster lives here (see the module doc). Keep it short: containerd's
    /// socket path must fit in 107 bytes.
    pub dir: PathBuf,
    /// The Kubernetes release (`1.37.2`).
    pub version: String,
    /// The node's name.
    pub node_name: String,
    /// Where image archives are cached across clusters.
    pub image_cache: PathBuf,
    /// How long a silent kubelet keeps its node Ready (the controller-manager's
    /// `--node-monitor-grace-period`, 50 s by default; 5 s here, so a lost-node test sees it, with
    /// the kubelet renewing its lease every 1.25 s).
    pub node_monitor_grace: Duration,
}

impl Options {
    /// A cluster in `dir` running [`requested_version`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            version: requested_version(),
            node_name: "local-node".to_owned(),
            image_cache: crate::cluster::default_image_cache(),
            node_monitor_grace: Duration::from_secs(5),
        }
    }
}

/// What a test needs to use a running cluster, saved as `<dir>/cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The Kubernetes release.
    pub version: String,
    /// The cluster directory.
    pub dir: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API server's URL (`https://<node ip>:<port>`).
    pub server: String,
    /// The CA that signed the API server's certificate.
    pub ca: PathBuf,
    /// The seccomp root: `Localhost` profiles are relative to it.
    pub seccomp_root: PathBuf,
    /// The node's name.
    pub node_name: String,
    /// The node's address (pods reach the machine's servers there).
    pub node_ip: IpAddr,
    /// The API server's audit log (JSON lines).
    pub audit_log: PathBuf,
    /// containerd's socket.
    pub containerd_socket: PathBuf,
    /// The binaries.
    pub binaries: Binaries,
}

impl ClusterInfo {
    /// The file under a cluster directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    /// Reads `<dir>/cluster.json`.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let path = Self::path(dir);
        let text = std::fs::read(&path).map_err(|source| Error::io("read", &path, source))?;
        serde_json::from_slice(&text).map_err(|source| Error::Info { path, source })
    }

    fn save(&self) -> Result<(), Error> {
        let path = Self::path(&self.dir);
        let text = serde_json::to_vec_pretty(self)
            .map_err(|source| Error::Info { path: path.clone(), source })?;
        std::fs::write(&path, text).map_err(|source| Error::io("write", &path, source))
    }

    /// A `kube::Client` from the admin kubeconfig.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        client_from(&self.kubeconfig).await
    }
}

/// A `kube::Client` from the kubeconfig at `path`.
pub async fn client_from(path: &Path) -> Result<kube::Client, Error> {
    let error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Client {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| error(Box::new(e)))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| error(Box::new(e)))?;
    kube::Client::try_from(config).map_err(|e| error(Box::new(e)))
}

/// How long each phase of a start took.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StartupTimings {
    /// Certificates and configuration files.
    pub files: Duration,
    /// etcd answering `/health`.
    pub etcd: Duration,
    /// The API server answering `/readyz`.
    pub api_server: Duration,
    /// containerd answering, with the images imported.
    pub runtime: Duration,
    /// The node `Ready` and the `default` ServiceAccount created.
    pub node_ready: Duration,
    /// Everything.
    pub total: Duration,
}

/// A running cluster. Dropping it stops everything (see [`KubernetesCluster::stop`]).
#[derive(Debug)]
pub struct KubernetesCluster {
    info: ClusterInfo,
    /// In start order; stopped in reverse.
    components: Vec<Component>,
    namespace: Option<MountNamespace>,
    cgroup_root: String,
    etcd_url: String,
    timings: StartupTimings,
}

/// Every cgroup v1 controller the kubelet uses (its `cgroupRoot` must exist in each).
const CGROUP_CONTROLLERS: &[&str] =
    &["cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "systemd"];

impl KubernetesCluster {
    /// Starts every component and waits until the node is Ready and pods can be created.
    pub async fn start(options: Options) -> Result<Self, Error> {
        let started = Instant::now();
        let binaries = Binaries::locate(&options.version)?;
        let dir = absolute(&options.dir)?;
        let node_ip = node_address()?;
        let logs = dir.join("logs");
        // A new cluster every time: nothing of a previous one (its etcd, certificates, pods).
        for old in ["etcd", "pki", "logs", "kubelet", "containerd", "cni", "cluster.json"] {
            let path = dir.join(old);
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(
                        "remove what a previous cluster left (is it still running? `cargo xtask local-cluster down`)",
                        &path,
                        e,
                    ));
                }
                _ => {}
            }
        }
        for d in [&logs, &dir.join("etcd"), &dir.join("kubelet"), &dir.join("cni/net.d")] {
            std::fs::create_dir_all(d).map_err(|source| Error::io("create", d, source))?;
        }
        let pki = Pki::generate(
            &dir.join("pki"),
            &options.node_name,
            node_ip,
            IpAddr::from(config::KUBERNETES_SERVICE_IP),
        )?;
        let api_port = free_port()?;
        let server = format!("https://{node_ip}:{api_port}");
        let kubeconfig = |name: &str, user: &str| -> Result<PathBuf, Error> {
            let path = dir.join(format!("{name}.kubeconfig"));
            let text = config::kubeconfig(&server, &pki.ca.cert, &pki.client(name), user);
            std::fs::write(&path, text).map_err(|source| Error::io("write", &path, source))?;
            Ok(path)
        };
        let admin = kubeconfig("admin", "kubernetes-admin")?;
        let admin_default = dir.join("kubeconfig");
        std::fs::copy(&admin, &admin_default)
            .map_err(|source| Error::io("write", &admin_default, source))?;
        let seccomp_root = dir.join("kubelet/seccomp");
        node::install_example_profiles(&seccomp_root).map_err(Error::Images)?;
        let cgroup_root = format!("podrunner-{}", options.node_name);
        let info = ClusterInfo {
            version: options.version.clone(),
            dir: dir.clone(),
            kubeconfig: admin_default,
            server: server.clone(),
            ca: pki.ca.cert.clone(),
            seccomp_root,
            node_name: options.node_name.clone(),
            node_ip,
            audit_log: logs.join("audit.log"),
            containerd_socket: dir.join("containerd/containerd.sock"),
            binaries: binaries.clone(),
        };
        let mut cluster = Self {
            info,
            components: Vec::new(),
            namespace: None,
            cgroup_root,
            etcd_url: String::new(),
            timings: StartupTimings::default(),
        };
        cluster.timings.files = started.elapsed();

        cluster.start_etcd(&logs).await?;
        cluster.timings.etcd = started.elapsed();
        cluster.start_api_server(&pki, api_port, &logs).await?;
        let client = client_from(&admin).await?;
        cluster.wait_api_ready(&client).await?;
        components::grant_kubelet_api(&client).await?;
        cluster.timings.api_server = started.elapsed();

        let controller_manager = kubeconfig("controller-manager", "kube-controller-manager")?;
        cluster.start_controller_manager(&pki, &controller_manager, &options, &logs)?;
        let scheduler = kubeconfig("scheduler", "kube-scheduler")?;
        cluster.start_scheduler(&scheduler, &logs)?;

        let images = {
            let cache = options.image_cache.clone();
            tokio::task::spawn_blocking(move || node::build_images(&cache))
        };
        cluster.start_containerd(&logs).await?;
        let images = images
            .await
            .map_err(|_| Error::Images(node::Error::ImportPanicked))?
            .map_err(Error::Images)?;
        node::import_images_with(
            &binaries.runtime.join("ctr"),
            &cluster.info.containerd_socket,
            &images,
        )
        .await
        .map_err(Error::Images)?;
        cluster.timings.runtime = started.elapsed();

        let kubelet = kubeconfig("kubelet", &format!("system:node:{}", options.node_name))?;
        cluster.start_kubelet(&pki, &kubelet, &logs)?;
        let proxy = kubeconfig("kube-proxy", "kube-proxy")?;
        cluster.start_kube_proxy(&proxy, &logs)?;
        cluster.wait_node_ready(&client).await?;
        cluster.timings.node_ready = started.elapsed();
        cluster.timings.total = started.elapsed();
        cluster.info.save()?;
        tracing::info!(
            server = %cluster.info.server,
            version = %cluster.info.version,
            startup_ms = u64::try_from(cluster.timings.total.as_millis()).unwrap_or(u64::MAX),
            "kubernetes ready"
        );
        Ok(cluster)
    }

    /// What tests need to use it.
    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    /// How long the start took, by phase.
    pub fn timings(&self) -> &StartupTimings {
        &self.timings
    }

    /// The PID of a component (`kubelet`, `kube-apiserver`, …) while it runs.
    pub fn pid_of(&self, component: &str) -> Option<u32> {
        self.components.iter().find(|c| c.name == component).and_then(Component::pid)
    }

    /// The first component that is no longer running (and was not stopped on purpose with
    /// [`KubernetesCluster::stop_component`]), as an error.
    pub fn check_running(&mut self) -> Result<(), Error> {
        self.components
            .iter_mut()
            .filter(|c| !c.is_stopped())
            .try_for_each(Component::check_running)
    }

    /// Stops one component (SIGTERM, SIGKILL after 5 s): a kubelet that dies, an API server that
    /// goes away. Its containers, for the kubelet, keep running.
    pub fn stop_component(&mut self, name: &str) -> Result<(), Error> {
        let component = self.component_mut(name)?;
        component.stop(Duration::from_secs(5));
        Ok(())
    }

    /// Starts a stopped component again with its command line.
    pub fn start_component(&mut self, name: &str) -> Result<(), Error> {
        self.component_mut(name)?.start_again()
    }

    fn component_mut(&mut self, name: &str) -> Result<&mut Component, Error> {
        self.components
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::NoComponent { name: name.to_owned() })
    }

    /// Compacts etcd's history up to its current revision (physically), as its periodic
    /// compaction does; watches from an older resourceVersion then get `410 Gone`.
    pub async fn compact_etcd(&self) -> Result<i64, Error> {
        components::compact_etcd(&self.etcd_url).await
    }

    fn spawn(
        &mut self,
        name: &'static str,
        program: &Path,
        args: &[OsString],
        logs: &Path,
        in_namespace: bool,
    ) -> Result<usize, Error> {
        let ns = in_namespace.then(|| self.namespace.as_ref().map(MountNamespace::pid)).flatten();
        self.components.push(Component::spawn(name, program, args, logs, ns)?);
        Ok(self.components.len() - 1)
    }

    /// Polls `ready` until it is true, failing as soon as any component exits.
    async fn wait_for<F, Fut>(
        &mut self,
        index: usize,
        limit: Duration,
        what: &str,
        mut ready: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            self.check_running()?;
            if ready().await {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(self.components[index].not_ready(limit, what.to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The machine's address on its default route (the node's `InternalIP`): the source address
/// the kernel picks for a packet to an outside address (a UDP connect sends nothing).
fn node_address() -> Result<IpAddr, Error> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|_| Error::NoNodeAddress)?;
    socket.connect((Ipv4Addr::new(198, 51, 100, 1), 9)).map_err(|_| Error::NoNodeAddress)?;
    let address = socket.local_addr().map_err(|_| Error::NoNodeAddress)?.ip();
    if address.is_loopback() || address.is_unspecified() {
        return Err(Error::NoNodeAddress);
    }
    Ok(address)
}

/// A TCP port that was free a moment ago.
fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|source| Error::io("bind", Path::new("0.0.0.0:0"), source))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| Error::io("bind", Path::new("0.0.0.0:0"), source))
}

fn absolute(dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::io("create", dir, source))?;
    std::fs::canonicalize(dir).map_err(|source| Error::io("resolve", dir, source))
}
