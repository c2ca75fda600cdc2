//! The shared pod watch across an API server's watch faults: when its watches are dropped and
//! refused long enough for the server's watch window to move past it, kube-runtime's watcher
//! gets `410 Gone` and lists again; a pod deleted meanwhile is then reported gone to its
//! subscriber (a relist brings no Delete event), and pods still there are seen again.

use std::{path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use podrunner_config::{LoadOptions, load_str};
use podrunner_executor_k8s::cluster::RunnerCluster;
use podrunner_local_cluster::{
    cluster::{ClusterOptions, LocalCluster},
    contract::{BoxFuture, ClusterView, NodeError, NodeRuntime, StreamRequest},
};
use serde_json::json;

/// A node that never starts containers and finishes deletions at once.
struct IdleNode;

impl NodeRuntime for IdleNode {
    fn pod_created(&self, _pod: Pod, _cluster: Arc<dyn ClusterView>) {}

    fn pod_deleted(&self, namespace: &str, name: &str, _grace: i64, cluster: Arc<dyn ClusterView>) {
        cluster.pod_terminated(namespace, name);
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

    fn container_log_path(&self, _: &str, _: &str, _: &str) -> Option<PathBuf> {
        None
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"job": "watched"}},
        "spec": {"containers": [{"name": "build", "image": "localhost/busybox:latest"}]}
    }))
    .expect("pod")
}

async fn wait_until(receiver: &mut tokio::sync::watch::Receiver<Option<Pod>>, present: bool) {
    tokio::time::timeout(Duration::from_secs(15), receiver.wait_for(|p| p.is_some() == present))
        .await
        .unwrap_or_else(|_| {
            panic!("the subscription did not see the pod {}", if present { "appear" } else { "go" })
        })
        .expect("the watch goes on");
}

#[tokio::test]
async fn a_pod_deleted_while_the_watch_was_down_is_reported_gone_after_the_relist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = ClusterOptions::new(dir.path()).watch_window(10);
    let cluster =
        LocalCluster::start_with_runtime(options, Arc::new(IdleNode)).await.expect("cluster");
    let config = load_str(
        &format!(
            "[[runners]]\nname = \"w\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\nhost = \"{}\"\n",
            cluster.url()
        ),
        LoadOptions::default(),
    );
    let runner = config.config.expect("config").runners.remove(0);
    let runner_cluster = RunnerCluster::connect(
        runner.kubernetes.as_ref().expect("kubernetes"),
        std::sync::Arc::default(),
    )
    .await
    .expect("connect");
    let client = cluster.kube_client().await.expect("client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let watch = runner_cluster.pod_watch("default", "job=watched", true);
    let mut doomed = watch.subscribe("doomed");
    let mut kept = watch.subscribe("kept");
    pods.create(&PostParams::default(), &pod("doomed")).await.expect("create");
    pods.create(&PostParams::default(), &pod("kept")).await.expect("create");
    wait_until(&mut doomed.receiver, true).await;
    wait_until(&mut kept.receiver, true).await;

    // The API server drops its watches and refuses new ones; meanwhile the pod goes, and more
    // changes than the watch window happen elsewhere.
    cluster.end_watches(true);
    pods.delete("doomed", &DeleteParams::default()).await.expect("delete");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..15 {
        let map: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("churn-{i}")}}))
                .expect("config map");
        maps.create(&PostParams::default(), &map).await.expect("create");
    }
    cluster.accept_watches();

    wait_until(&mut doomed.receiver, false).await;
    assert!(kept.receiver.borrow().is_some(), "a pod that is still there stays seen");
    let lists =
        cluster.requests().iter().filter(|r| r.verb == "list" && r.resource == "pods").count();
    assert!(lists >= 2, "the watcher relisted after 410 ({lists} lists)");
    assert!(
        cluster
            .requests()
            .iter()
            .any(|r| r.verb == "watch" && r.resource == "pods" && r.code == 503),
        "the watch was refused while the server refused watches"
    );
}
