//! Shared helpers of the API-server and cluster tests: a fake node for API-level tests, and the
//! start-or-skip logic of the runtime-tier tests.

#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a different part of this module

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, Pod,
        PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use podrunner_local_cluster::{
    apiserver::KubeVersion,
    cluster::{self, ClusterOptions, LocalCluster},
    contract::{BoxFuture, ClusterView, NodeError, NodeRuntime, StreamRequest},
};

/// Annotation of a fake-node pod: milliseconds between two log lines (default 0).
pub const FAKE_INTERVAL_ANNOTATION: &str = "fake-node.local/interval-ms";

/// Annotation of a fake-node pod: milliseconds its deletion takes on the node (default 50).
pub const FAKE_TERMINATION_ANNOTATION: &str = "fake-node.local/termination-ms";

/// A fake node for API-level tests: no containers run. Each container of a created pod is
/// reported Running at once, its `args` are written one per line to a CRI-format log file
/// (one line every `fake-node.local/interval-ms`), then it is reported terminated with exit
/// code 0. Deleting a pod finishes after 50 ms. Exec and attach are not available.
#[derive(Debug, Default)]
pub struct FakeNode {
    dir: PathBuf,
    logs: Mutex<BTreeMap<(String, String, String), PathBuf>>,
    deleted: Mutex<Vec<(String, String, i64)>>,
    termination: Mutex<BTreeMap<(String, String), u64>>,
}

impl FakeNode {
    pub fn new(dir: PathBuf) -> Arc<Self> {
        Arc::new(Self { dir, ..Self::default() })
    }

    /// Every `(namespace, pod, grace)` the server asked to delete.
    pub fn deletions(&self) -> Vec<(String, String, i64)> {
        self.deleted.lock().expect("lock").clone()
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn cri_line(text: &str) -> String {
    format!("{} stdout F {text}\n", Timestamp::now())
}

impl NodeRuntime for FakeNode {
    fn pod_created(&self, pod: Pod, cluster: Arc<dyn ClusterView>) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let interval = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FAKE_INTERVAL_ANNOTATION))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if let Some(ms) = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FAKE_TERMINATION_ANNOTATION))
            .and_then(|v| v.parse::<u64>().ok())
        {
            self.termination.lock().expect("lock").insert((namespace.clone(), name.clone()), ms);
        }
        let mut files = Vec::new();
        for container in &spec.containers {
            let path = self.dir.join(format!("{namespace}_{name}_{}.log", container.name));
            std::fs::File::create(&path).expect("create fake log file");
            self.logs
                .lock()
                .expect("lock")
                .insert((namespace.clone(), name.clone(), container.name.clone()), path.clone());
            files.push((
                container.name.clone(),
                container.image.clone().unwrap_or_default(),
                container.args.clone().unwrap_or_default(),
                path,
            ));
        }
        tokio::spawn(async move {
            let status = |terminated: bool| PodStatus {
                phase: Some(if terminated { "Succeeded" } else { "Running" }.to_owned()),
                host_ip: Some("127.0.0.1".to_owned()),
                pod_ip: Some("127.0.0.1".to_owned()),
                start_time: Some(now()),
                container_statuses: Some(
                    files
                        .iter()
                        .map(|(container, image, _, _)| ContainerStatus {
                            name: container.clone(),
                            image: image.clone(),
                            image_id: String::new(),
                            ready: !terminated,
                            restart_count: 0,
                            started: Some(!terminated),
                            state: Some(if terminated {
                                ContainerState {
                                    terminated: Some(ContainerStateTerminated {
                                        exit_code: 0,
                                        reason: Some("Completed".to_owned()),
                                        finished_at: Some(now()),
                                        ..ContainerStateTerminated::default()
                                    }),
                                    ..ContainerState::default()
                                }
                            } else {
                                ContainerState {
                                    running: Some(ContainerStateRunning {
                                        started_at: Some(now()),
                                    }),
                                    ..ContainerState::default()
                                }
                            }),
                            ..ContainerStatus::default()
                        })
                        .collect(),
                ),
                ..PodStatus::default()
            };
            cluster.set_pod_status(&namespace, &name, status(false));
            for (_, _, args, path) in &files {
                let mut file =
                    std::fs::OpenOptions::new().append(true).open(path).expect("open fake log");
                for arg in args {
                    tokio::time::sleep(Duration::from_millis(interval)).await;
                    file.write_all(cri_line(arg).as_bytes()).expect("write fake log");
                }
            }
            cluster.set_pod_status(&namespace, &name, status(true));
        });
    }

    fn pod_deleted(
        &self,
        namespace: &str,
        name: &str,
        grace_period_seconds: i64,
        cluster: Arc<dyn ClusterView>,
    ) {
        self.deleted.lock().expect("lock").push((
            namespace.to_owned(),
            name.to_owned(),
            grace_period_seconds,
        ));
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        let ms = self
            .termination
            .lock()
            .expect("lock")
            .get(&(namespace.clone(), name.clone()))
            .copied()
            .unwrap_or(50);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            cluster.pod_terminated(&namespace, &name);
        });
    }

    fn stream_url(
        &self,
        request: StreamRequest,
        _attach: bool,
    ) -> BoxFuture<'_, Result<String, NodeError>> {
        Box::pin(async move {
            Err(NodeError::NotRunning {
                namespace: request.namespace,
                pod: request.pod,
                container: request.container,
            })
        })
    }

    fn container_log_path(&self, namespace: &str, pod: &str, container: &str) -> Option<PathBuf> {
        self.logs
            .lock()
            .expect("lock")
            .get(&(namespace.to_owned(), pod.to_owned(), container.to_owned()))
            .cloned()
    }
}

/// An API-level cluster: the real API server with a [`FakeNode`].
pub struct ApiCluster {
    pub cluster: LocalCluster,
    pub node: Arc<FakeNode>,
    pub client: kube::Client,
    _dir: tempfile::TempDir,
}

pub async fn api_cluster(minor: u32) -> ApiCluster {
    api_cluster_with(minor, |options| options).await
}

/// [`api_cluster`] with changed options (a small watch window, a short bookmark interval).
pub async fn api_cluster_with(
    minor: u32,
    configure: impl FnOnce(ClusterOptions) -> ClusterOptions,
) -> ApiCluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = FakeNode::new(dir.path().to_path_buf());
    let options = configure(
        ClusterOptions::new(dir.path()).kubernetes_version(KubeVersion { minor, patch: 0 }),
    );
    let cluster =
        LocalCluster::start_with_runtime(options, node.clone()).await.expect("api server starts");
    let client = cluster.kube_client().await.expect("client");
    ApiCluster { cluster, node, client, _dir: dir }
}

/// A real cluster (containerd + node agent), or `None` after printing `SKIPPED: <reason>` when
/// this machine cannot run one. Under `CI=true` a missing prerequisite fails the test instead.
pub struct RealCluster {
    pub cluster: LocalCluster,
    pub client: kube::Client,
    _dir: tempfile::TempDir,
}

/// Whether the runtime tier can run here; prints `SKIPPED: <reason>` when it cannot, and fails
/// under `CI=true`.
#[allow(clippy::print_stdout)] // reason: a skipped test must say so in the test output
pub fn runtime_tier_available() -> bool {
    if let Some(reason) = cluster::missing_prerequisites() {
        assert!(!cluster::prerequisites_required(), "CI=true and the runtime tier {reason}");
        println!("SKIPPED: {reason}");
        return false;
    }
    true
}

/// A short private directory for a real cluster: containerd's socket must fit in 107 bytes.
pub fn short_temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("lc").tempdir_in("/tmp").expect("temp dir")
}

/// PIDs of live processes whose command line mentions `needle` (e.g. a cluster directory: its
/// containerd, and the shims started with its socket). Zombies do not count.
pub fn pids_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != me && is_alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).replace('\0', " ").contains(needle))
        })
        .collect()
}

/// Whether a process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

pub async fn real_cluster(minor: u32) -> Option<RealCluster> {
    real_cluster_with(minor, |options| options).await
}

/// As [`real_cluster`], with the cluster's options changed by `configure`.
#[allow(clippy::print_stdout)] // reason: the measured start-up time belongs in the test output
pub async fn real_cluster_with(
    minor: u32,
    configure: impl FnOnce(ClusterOptions) -> ClusterOptions,
) -> Option<RealCluster> {
    if !runtime_tier_available() {
        return None;
    }
    let dir = short_temp_dir();
    let options = configure(
        ClusterOptions::new(dir.path()).kubernetes_version(KubeVersion { minor, patch: 0 }),
    );
    let cluster = LocalCluster::start(options).await.expect("local cluster starts");
    println!(
        "cluster started in {:?} (node phases: {:?})",
        cluster.startup_time(),
        cluster.node_timings()
    );
    let client = cluster.kube_client().await.expect("client");
    Some(RealCluster { cluster, client, _dir: dir })
}
