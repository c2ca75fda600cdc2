//! End to end on the real local cluster, with faults of its real components: a kubelet that
//! dies, an API server restarted after etcd compacted its history (and the runner's shared pod
//! watch across it). These change the one cluster
//! every test shares, so `cargo xtask test` runs this file alone, after the others, one test at
//! a time (`-j 1`); run by hand, do the same:
//! `cargo nextest run -p podrunner --test cluster_faults_e2e -j 1`.

use std::time::{Duration, Instant};

use podrunner_coordinator_mock::JobState;
use podrunner_local_cluster::kubernetes::shared;

mod support {
    #[allow(dead_code, reason = "shared with kubernetes_e2e.rs, which uses all of it")]
    pub(crate) mod cut_proxy;
    #[allow(dead_code, reason = "shared with kubernetes_e2e.rs, which uses all of it")]
    pub(crate) mod e2e;
    #[allow(dead_code, reason = "shared with kubernetes_e2e.rs, which uses all of it")]
    pub(crate) mod e2e_common;
}
use support::cut_proxy::CutProxy;
use support::e2e::{E2e, shared_cluster};
use support::e2e_common::{
    JOB_WAIT, assert_system_failure_soon, granted, no_git, save_trace, verb_resource_pairs,
};

/// Sends `command` to the cluster's control socket and checks it was done.
async fn control(e2e: &E2e, command: &str) {
    let answer = shared::control(&e2e.info, command).await.expect("the control socket answers");
    assert!(answer.starts_with("ok"), "{command}: {answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_node_fails_the_job_within_10_seconds_naming_it_and_nothing_is_left_once_it_returns()
{
    // The controller-manager's node monitor grace period is 5 s here (50 s by default).
    let Some(e2e) = E2e::start("").await else { return };
    let handle = e2e.mock.enqueue(&no_git().script(&["echo started", "sleep 300"]));
    assert!(handle.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    let (pods, name) = e2e.the_pod().await;
    let stopped = Instant::now();
    control(&e2e, "stop kubelet").await;
    let expected =
        "node local-node was lost while the job ran: its Ready condition is Unknown since ";
    let outcome =
        tokio::spawn({
            let handle = handle.clone();
            async move {
                assert_system_failure_soon(&handle, stopped, "kubelet stopped", expected).await
            }
        })
        .await;
    // The kubelet comes back whatever the outcome, for the tests after this one.
    control(&e2e, "start kubelet").await;
    let trace = outcome.expect("the job failed as expected");
    assert!(trace.contains("(NodeStatusUnknown: Kubelet stopped posting node status.)"), "{trace}");
    assert!(trace.contains(&format!("cannot reach pod {}/{name} there", e2e.namespace)), "{trace}");
    // The pod was deleted; its kubelet, back, finishes the deletion.
    let pod = pods.get_opt(&name).await.expect("get the pod");
    assert!(pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "deleted");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_server_restarted_after_an_etcd_compaction_loses_no_line_and_the_job_succeeds() {
    let Some(e2e) = E2e::start("").await else { return };
    let job = no_git()
        .script(&["i=0; while [ $i -lt 40 ]; do echo \"tick $i\"; i=$((i+1)); sleep 0.25; done"]);
    let handle = e2e.mock.enqueue(&job);
    assert!(handle.wait_trace_contains(b"tick 3\n", JOB_WAIT).await, "{}", e2e.runner_log());
    // Other objects change, so the runner's watch position falls behind the compaction.
    let revision = shared::control(&e2e.info, "compact-etcd").await.expect("compact");
    assert!(revision.starts_with("ok "), "{revision}");
    control(&e2e, "stop kube-apiserver").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    control(&e2e, "start kube-apiserver").await;
    let state = handle.wait_finished(JOB_WAIT).await;
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(&handle, &trace);
    assert_eq!(state, JobState::Success, "{trace}\n{}", e2e.runner_log());
    for i in 0..40 {
        assert_eq!(trace.matches(&format!("tick {i}\n")).count(), 1, "tick {i} once: {trace}");
    }
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

/// Binds ClusterRole `role` (created from `deploy/base/<file>`) to `user` cluster-wide; returns
/// the binding's name.
async fn bind_deploy_role(client: &kube::Client, user: &str, file: &str) -> String {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{Api, PostParams};
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base").join(file);
    let role: ClusterRole =
        serde_norway::from_str(&std::fs::read_to_string(&path).expect("read")).expect("YAML");
    let name = role.metadata.name.clone().expect("a name");
    match Api::<ClusterRole>::all(client.clone()).create(&PostParams::default(), &role).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("create {name}: {e}"),
    }
    let binding_name = format!("{name}-{user}");
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": binding_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the binding");
    binding_name
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runner_sends_exactly_the_requests_the_deploy_rbac_grants() {
    use kube::api::{Api, DeleteParams};
    let Some(info) = shared_cluster() else { return };
    let admin = info.client().await.expect("client");
    // The runner as a user with exactly deploy/base's rules; the real authorizer enforces them.
    let user = format!("podrunner-rbac-{}", std::process::id());
    let kubeconfig = shared::user_kubeconfig(&info, &user, &[]).expect("a user kubeconfig");
    let bindings = [
        bind_deploy_role(&admin, &user, "role.yaml").await,
        bind_deploy_role(&admin, &user, "clusterrole.yaml").await,
    ];
    let Some(e2e) = E2e::start_full("", true, Some(kubeconfig)).await else { return };
    // A job with registry credentials whose pod create answer is lost (the replay finds the
    // pod: a GET), then a job whose node is lost (the runner reads the node).
    let create = format!("POST /api/v1/namespaces/{}/pods", e2e.namespace);
    e2e.cut_proxy().lose_response(&[create.as_str()], 1);
    let job = no_git()
        .registry_credential("registry.example.com", "deployer", "p4ssw0rd")
        .script(&["echo ran"]);
    let (handle, trace) = e2e.run(job).await;
    assert_eq!(handle.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    e2e.assert_no_pod_left().await;
    let lost = e2e.mock.enqueue(&no_git().script(&["echo started", "sleep 300"]));
    assert!(lost.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    control(&e2e, "stop kubelet").await;
    let state = lost.wait_finished(JOB_WAIT).await;
    control(&e2e, "start kubelet").await;
    assert_eq!(state, JobState::Failed);
    e2e.assert_no_pod_left().await;
    let records = shared::audit_records_of_user(&info, &user);
    let refused: Vec<_> = records.iter().filter(|r| r.code == 403).collect();
    assert!(refused.is_empty(), "the authorizer refused the runner: {refused:#?}");
    let mut sent = verb_resource_pairs(&records);
    // The audit log names an exec's websocket GET `get`; the authorizer also checks `create`
    // for it (AuthorizePodWebsocketUpgradeCreatePermission), which the log does not show.
    if sent.contains(&("get".to_owned(), "pods/exec".to_owned())) {
        sent.insert(("create".to_owned(), "pods/exec".to_owned()));
    }
    let mut grants = granted("role.yaml");
    grants.extend(granted("clusterrole.yaml"));
    let missing: Vec<_> = sent.difference(&grants).collect();
    let unused: Vec<_> = grants.difference(&sent).collect();
    assert!(missing.is_empty(), "the runner sent requests the RBAC does not grant: {missing:?}");
    assert!(unused.is_empty(), "the RBAC grants what the runner never sent: {unused:?}");
    e2e.stop().await;
    for binding in bindings {
        Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin.clone())
            .delete(&binding, &DeleteParams::default())
            .await
            .expect("delete the binding");
    }
}

async fn wait_until(
    receiver: &mut tokio::sync::watch::Receiver<Option<k8s_openapi::api::core::v1::Pod>>,
    present: bool,
) {
    tokio::time::timeout(Duration::from_secs(30), receiver.wait_for(|p| p.is_some() == present))
        .await
        .unwrap_or_else(|_| {
            panic!("the subscription did not see the pod {}", if present { "appear" } else { "go" })
        })
        .expect("the watch goes on");
}

/// The runner's shared pod watch when its connection is cut while a pod is deleted, etcd
/// compacts and the API server restarts: the watch's position is gone (`410 Gone`), kube-runtime's
/// watcher lists again, and the deleted pod (a relist brings no Delete event) is reported gone
/// to its subscriber, while a pod still there stays seen.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_deleted_while_the_watch_was_cut_is_reported_gone_after_the_relist() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, PostParams};
    let Some(info) = shared_cluster() else { return };
    let admin = info.client().await.expect("client");
    let namespace = shared::test_namespace(&admin, "watch").await;
    let api = shared::ApiProxy::start(&info, None).await.expect("kubectl proxy");
    let proxy = CutProxy::start(api.addr).await;
    let config = podrunner_config::load_str(
        &format!(
            "[[runners]]\nname = \"w\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\nhost = \"http://{}\"\n",
            proxy.addr
        ),
        podrunner_config::LoadOptions::default(),
    );
    let runner = config.config.expect("config").runners.remove(0);
    let cluster = podrunner_executor_k8s::cluster::RunnerCluster::connect(
        runner.kubernetes.as_ref().expect("kubernetes"),
        std::sync::Arc::default(),
    )
    .await
    .expect("connect");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
    let pod = |name: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"job": "watched"}},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "build",
                "image": "localhost/busybox:latest", "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"]}]}
        }))
        .expect("pod")
    };
    let watch = cluster.pod_watch(&namespace, "job=watched", true);
    let mut doomed = watch.subscribe("doomed");
    let mut kept = watch.subscribe("kept");
    pods.create(&PostParams::default(), &pod("doomed")).await.expect("create");
    pods.create(&PostParams::default(), &pod("kept")).await.expect("create");
    wait_until(&mut doomed.receiver, true).await;
    wait_until(&mut kept.receiver, true).await;
    let lists_before = lists_of_pods(&info, &namespace);

    // The runner's connection is cut; meanwhile the pod goes, etcd compacts its history and the
    // API server restarts (its watch cache starts from the compacted revision).
    proxy.cut();
    pods.delete("doomed", &DeleteParams::default().grace_period(0)).await.expect("delete");
    let answer = shared::control(&info, "compact-etcd").await.expect("compact");
    assert!(answer.starts_with("ok"), "{answer}");
    for command in ["stop kube-apiserver", "start kube-apiserver"] {
        let answer = shared::control(&info, command).await.expect("control");
        assert!(answer.starts_with("ok"), "{command}: {answer}");
    }
    proxy.restore().await;

    wait_until(&mut doomed.receiver, false).await;
    assert!(kept.receiver.borrow().is_some(), "a pod that is still there stays seen");
    let lists = lists_of_pods(&info, &namespace);
    assert!(lists > lists_before, "the watcher listed again ({lists_before} lists, then {lists})");
    shared::delete_namespace(&admin, &namespace).await;
}

/// How many times pods were listed in `namespace` (the watcher's lists), from the audit log.
fn lists_of_pods(
    info: &podrunner_local_cluster::kubernetes::ClusterInfo,
    namespace: &str,
) -> usize {
    shared::audit_records(info)
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "pods")
        .filter(|r| r.namespace.as_deref() == Some(namespace))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stdout)] // reason: the measured figures belong in the test output
async fn an_api_server_without_etcd_for_6_seconds_is_waited_out_and_one_pod_is_created() {
    let Some(e2e) = E2e::start("").await else { return };
    control(&e2e, "stop etcd").await;
    let started = Instant::now();
    let handle = e2e.mock.enqueue(&no_git().script(&["echo through"]));
    tokio::time::sleep(Duration::from_secs(6)).await;
    control(&e2e, "start etcd").await;
    let state = handle.wait_finished(JOB_WAIT).await;
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(&handle, &trace);
    let records = e2e.requests();
    let failed = records.iter().filter(|r| r.code >= 500).count();
    println!(
        "etcd down for 6 s: the job ended {:?} after it was queued; {failed} of the runner's requests answered 5xx",
        started.elapsed()
    );
    assert_eq!(state, JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert!(trace.contains("\nthrough\n"), "{trace}");
    let creates = |code: u16| {
        records
            .iter()
            .filter(|r| r.verb == "create" && r.resource == "pods" && r.subresource.is_none())
            .filter(|r| r.code == code)
            .count()
    };
    assert_eq!(creates(201), 1, "one pod: {records:#?}");
    assert_eq!(creates(409), 0, "no create was executed twice");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}
