//! Shared harness of the `node_*` tests: prerequisite checks (SKIPPED outside CI, failure under
//! `CI=true`), a private node per test and an in-memory [`ClusterView`].

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus, Secret};
use podrunner_local_cluster::{
    cluster,
    contract::{ClusterView, NodeRuntime},
    node::{LocalNode, NodeOptions},
};
use serde_json::json;

/// A recorded event.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) pod: String,
    pub(crate) type_: String,
    pub(crate) reason: String,
    pub(crate) message: String,
}

/// The API server's side, in memory.
#[derive(Debug, Default)]
pub(crate) struct FakeCluster {
    pub(crate) statuses: Mutex<HashMap<String, PodStatus>>,
    pub(crate) history: Mutex<Vec<(String, PodStatus)>>,
    pub(crate) events: Mutex<Vec<Event>>,
    pub(crate) terminated: Mutex<Vec<String>>,
    pub(crate) secrets: Mutex<HashMap<String, Secret>>,
    pub(crate) config_maps: Mutex<HashMap<String, ConfigMap>>,
}

impl ClusterView for FakeCluster {
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.secrets.lock().unwrap().get(&format!("{namespace}/{name}")).cloned()
    }
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        self.config_maps.lock().unwrap().get(&format!("{namespace}/{name}")).cloned()
    }
    fn set_pod_status(&self, _namespace: &str, name: &str, status: PodStatus) {
        self.history.lock().unwrap().push((name.to_owned(), status.clone()));
        self.statuses.lock().unwrap().insert(name.to_owned(), status);
    }
    fn record_pod_event(
        &self,
        _namespace: &str,
        pod: &str,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        self.events.lock().unwrap().push(Event {
            pod: pod.to_owned(),
            type_: type_.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
        });
    }
    fn pod_terminated(&self, _namespace: &str, name: &str) {
        self.terminated.lock().unwrap().push(name.to_owned());
    }
}

impl FakeCluster {
    pub(crate) fn status(&self, pod: &str) -> Option<PodStatus> {
        self.statuses.lock().unwrap().get(pod).cloned()
    }

    pub(crate) fn events_of(&self, pod: &str) -> Vec<Event> {
        self.events.lock().unwrap().iter().filter(|e| e.pod == pod).cloned().collect()
    }

    /// Waits until `pred` holds for the pod's status; panics with the last status on timeout.
    pub(crate) async fn wait_for(
        &self,
        pod: &str,
        what: &str,
        pred: impl Fn(&PodStatus) -> bool,
    ) -> PodStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.status(pod)
                && pred(&status)
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for pod {pod} to be {what}; last status: {:#?}; events: {:#?}",
                self.status(pod),
                self.events_of(pod)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn wait_phase(&self, pod: &str, phase: &str) -> PodStatus {
        self.wait_for(pod, phase, |s| s.phase.as_deref() == Some(phase)).await
    }

    /// Waits until the named container shows the waiting reason.
    pub(crate) async fn wait_waiting(
        &self,
        pod: &str,
        container: &str,
        reason: &str,
    ) -> (Option<String>, PodStatus) {
        let status = self
            .wait_for(pod, reason, |s| waiting_reason(s, container).as_deref() == Some(reason))
            .await;
        let message =
            container_state(&status, container).and_then(|st| st.waiting).and_then(|w| w.message);
        (message, status)
    }
}

pub(crate) fn container_state(
    status: &PodStatus,
    container: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerState> {
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|c| c.name == container)
        .and_then(|c| c.state.clone())
}

pub(crate) fn waiting_reason(status: &PodStatus, container: &str) -> Option<String> {
    container_state(status, container)?.waiting?.reason
}

pub(crate) fn exit_code(status: &PodStatus, container: &str) -> Option<i32> {
    Some(container_state(status, container)?.terminated?.exit_code)
}

/// Why the runtime-tier tests cannot run here, if they cannot.
/// A started node with its own containerd, or `None` (after printing SKIPPED) when the machine
/// cannot run it. Under `CI=true` a missing prerequisite fails the test instead.
pub(crate) async fn start_node(test: &str) -> Option<TestNode> {
    if let Some(reason) = cluster::missing_prerequisites() {
        assert!(
            !cluster::prerequisites_required(),
            "CI=true but a prerequisite is missing: {reason}"
        );
        eprintln!("SKIPPED: {test}: {reason}");
        return None;
    }
    // The node lives under the target directory unless containerd's socket paths
    // (`<dir>/containerd/containerd.sock.ttrpc`) would exceed the kernel's 107-byte limit.
    let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let parent = if target_tmp.as_os_str().len()
        + "/nodes/lcnXXXXXX/containerd/containerd.sock.ttrpc".len()
        <= 107
    {
        target_tmp.join("nodes")
    } else {
        std::env::temp_dir()
    };
    std::fs::create_dir_all(&parent).expect("node parent directory");
    let dir = tempfile::Builder::new().prefix("lcn").tempdir_in(&parent).expect("node directory");
    let cache = target_tmp.join("local-cluster-images");
    let watchdog = Watchdog::spawn(dir.path());
    let node = LocalNode::start(NodeOptions {
        dir: dir.path().to_path_buf(),
        image_cache: cache,
        node_name: "local-node".to_owned(),
    })
    .await
    .expect("node starts");
    let t = node.timings();
    eprintln!(
        "TIMING {test}: images built/reused {:?}, containerd ready {:?}, images imported {:?}, total {:?}",
        t.images_built, t.containerd_ready, t.images_imported, t.total
    );
    Some(TestNode { node: Some(node), cluster: Arc::new(FakeCluster::default()), dir, watchdog })
}

/// Runs in its own process group until this test process is gone, then kills every process
/// whose command line names the node directory (containerd, its shims) with all their
/// descendants (the containers), and unmounts what is left under the directory.
const WATCHDOG_SCRIPT: &str = r#"
while kill -0 "$TEST_PID" 2>/dev/null; do sleep 1; done
found=""
for cmdline in /proc/[0-9]*/cmdline; do
  if tr '\0' ' ' < "$cmdline" 2>/dev/null | grep -qF -- "$NODE_DIR"; then
    pid=${cmdline#/proc/}; found="$found ${pid%/cmdline}"
  fi
done
all="$found"
while [ -n "$(echo $found)" ]; do
  children=""
  for parent in $found; do
    children="$children $(awk -v p="$parent" '$4 == p {print $1}' /proc/[0-9]*/stat 2>/dev/null)"
  done
  found=$(echo $children)
  all="$all $found"
done
[ -n "$(echo $all)" ] && kill -KILL $all 2>/dev/null
sleep 0.5
awk -v d="$NODE_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
  while read -r mount; do umount -l "$mount" 2>/dev/null; done
rm -rf "$NODE_DIR"
"#;

/// The node's watchdog process, for a test process that is killed without unwinding (a test
/// runner's timeout): dropping it (the test ended normally) stops it.
#[derive(Debug)]
pub(crate) struct Watchdog(Option<std::process::Child>);

impl Watchdog {
    fn spawn(dir: &std::path::Path) -> Self {
        use std::os::unix::process::CommandExt as _;
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .env("TEST_PID", std::process::id().to_string())
            .env("NODE_DIR", dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        if let Err(error) = &child {
            eprintln!("warning: no node watchdog ({error}); a killed test may leave containerd");
        }
        Self(child.ok())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A node plus the fake cluster it reports to; shuts the node down on drop.
#[derive(Debug)]
pub(crate) struct TestNode {
    pub(crate) node: Option<LocalNode>,
    pub(crate) cluster: Arc<FakeCluster>,
    pub(crate) dir: tempfile::TempDir,
    /// Dropped after the node (fields drop in order).
    pub(crate) watchdog: Watchdog,
}

impl TestNode {
    pub(crate) fn node(&self) -> &LocalNode {
        self.node.as_ref().expect("node is running")
    }

    pub(crate) fn create(&self, pod: Pod) {
        self.node().agent().pod_created(pod, Arc::clone(&self.cluster) as Arc<dyn ClusterView>);
    }

    pub(crate) fn delete(&self, name: &str, grace: i64) {
        self.node().agent().pod_deleted(
            "default",
            name,
            grace,
            Arc::clone(&self.cluster) as Arc<dyn ClusterView>,
        );
    }

    /// The full CRI log of a container.
    pub(crate) fn log(&self, pod: &str, container: &str) -> String {
        let path = self
            .node()
            .agent()
            .container_log_path("default", pod, container)
            .expect("container has a log path");
        std::fs::read_to_string(&path).unwrap_or_default()
    }

    pub(crate) async fn shutdown(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }
}

/// A pod in `default` with a fresh uid; `spec` is merged into a spec with `restartPolicy: Never`.
pub(crate) fn pod(name: &str, spec: serde_json::Value) -> Pod {
    let mut full = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uuid::Uuid::new_v4().to_string()},
        "spec": {"restartPolicy": "Never", "nodeName": "local-node"},
    });
    if let (Some(target), serde_json::Value::Object(extra)) = (full["spec"].as_object_mut(), spec) {
        target.extend(extra);
    }
    serde_json::from_value(full).expect("valid pod")
}

/// A busybox container running `sh -c script`.
pub(crate) fn sh(name: &str, script: &str) -> serde_json::Value {
    json!({
        "name": name,
        "image": "localhost/busybox:latest",
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
    })
}
