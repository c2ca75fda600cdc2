//! End to end on the project's own API server and node agent (`podrunner-local-cluster`'s
//! `apiserver` and `node`): the tests that still need what that double can do and the real
//! local cluster does not yet (a 1.29 API server, an API server answering 429, a node agent
//! stopped and started while other tests run on the shared cluster, the runner image imported
//! into a private node). Every other end-to-end test runs on real Kubernetes
//! (`kubernetes_e2e.rs`). Needs root and containerd; elsewhere each test says SKIPPED, and
//! under `CI=true` a missing prerequisite fails it.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use podrunner_coordinator_mock::{JobHandle, JobState, MockCoordinator, MockJob};
use podrunner_local_cluster::apiserver::KubeVersion;
use podrunner_local_cluster::cluster::{self, ClusterOptions, LocalCluster};
use podrunner_local_cluster::runner_process::RunnerProcess;

mod support {
    #[allow(dead_code, reason = "shared with kubernetes_e2e.rs, which uses all of it")]
    pub(crate) mod cut_proxy;
    #[allow(dead_code, reason = "shared with kubernetes_e2e.rs, which uses all of it")]
    pub(crate) mod e2e_common;
}
use support::cut_proxy::CutProxy;
use support::e2e_common::{
    JOB_WAIT, assert_system_failure_soon, granted, no_git, save_trace, security_row,
};

/// A cluster, the GitLab double and a running `runner run` configured for both.
struct E2e {
    cluster: LocalCluster,
    client: kube::Client,
    mock: MockCoordinator,
    runner: RunnerProcess,
    /// Between the runner and the API server, when the test cuts connections.
    proxy: Option<CutProxy>,
    _dir: tempfile::TempDir,
}

fn start_runner(config: &std::path::Path, kubeconfig: &std::path::Path) -> RunnerProcess {
    RunnerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_runner")),
        config,
        kubeconfig,
        &["--log-level", "debug"],
        &[],
    )
    .expect("start runner run")
}

#[allow(clippy::print_stdout)] // reason: a skipped test must say so in the test output
fn available() -> bool {
    if let Some(reason) = cluster::missing_prerequisites() {
        assert!(!cluster::prerequisites_required(), "CI=true and the runtime tier {reason}");
        println!("SKIPPED: {reason}");
        return false;
    }
    true
}

impl E2e {
    /// Starts everything; `kubernetes` is appended to the `[runners.kubernetes]` table (and
    /// may open sub-tables after it).
    async fn start(minor: u32, kubernetes: &str) -> Option<Self> {
        Self::start_with(minor, kubernetes, false).await
    }

    /// As [`E2e::start`]; with `behind_proxy`, the runner reaches the API server through a
    /// [`CutProxy`] the test controls.
    async fn start_with(minor: u32, kubernetes: &str, behind_proxy: bool) -> Option<Self> {
        Self::start_with_cluster(minor, kubernetes, behind_proxy, |o| o).await
    }

    /// As [`E2e::start_with`], with the cluster's options changed by `configure`.
    async fn start_with_cluster(
        minor: u32,
        kubernetes: &str,
        behind_proxy: bool,
        configure: impl FnOnce(ClusterOptions) -> ClusterOptions,
    ) -> Option<Self> {
        if !available() {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("e2e").tempdir_in("/tmp").expect("temp dir");
        let options = configure(
            ClusterOptions::new(dir.path()).kubernetes_version(KubeVersion { minor, patch: 0 }),
        );
        let cluster = LocalCluster::start(options).await.expect("local cluster starts");
        let client = cluster.kube_client().await.expect("client");
        let mock = MockCoordinator::start().await;
        mock.set_update_interval_header(Some(1));
        let config = format!(
            "concurrent = 4\ncheck_interval = 1\n\
             [[runners]]\nname = \"e2e\"\nurl = \"{url}\"\ntoken = \"{token}\"\nexecutor = \"kubernetes\"\n\
             [runners.kubernetes]\nnamespace = \"default\"\nimage = \"localhost/busybox:latest\"\n\
             helper_image = \"localhost/helper:latest\"\npull_policy = \"if-not-present\"\npoll_timeout = 60\n\
             cleanup_grace_period_seconds = 1\n\
             {kubernetes}\n",
            url = mock.url(),
            token = mock.runner_token(),
        );
        let (proxy, kubeconfig) = if behind_proxy {
            let upstream = cluster.url().trim_start_matches("http://").parse().expect("address");
            let proxy = CutProxy::start(upstream).await;
            let path = dir.path().join("kubeconfig-via-proxy");
            cluster::write_kubeconfig(&path, &format!("http://{}", proxy.addr))
                .expect("kubeconfig");
            (Some(proxy), path)
        } else {
            (None, cluster.kubeconfig_path().to_path_buf())
        };
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let runner = start_runner(&config_path, &kubeconfig);
        Some(Self { cluster, client, mock, runner, proxy, _dir: dir })
    }

    fn runner_log(&self) -> String {
        self.runner.log()
    }

    /// Runs `job` to its end and returns its handle and the trace as text.
    async fn run(&self, job: MockJob) -> (JobHandle, String) {
        let handle = self.mock.enqueue(&job);
        let state = handle.wait_finished(JOB_WAIT).await;
        let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
        save_trace(&handle, &trace);
        assert!(
            matches!(state, JobState::Success | JobState::Failed | JobState::Canceled),
            "job did not finish ({state:?})\ntrace:\n{trace}\nrunner log:\n{}",
            self.runner_log()
        );
        (handle, trace)
    }

    /// When the first pod appears in the cluster (seen through a watch started now), and the pod
    /// as the API server stored it.
    fn first_pod_seen(&self) -> tokio::task::JoinHandle<(Instant, Pod)> {
        use futures::StreamExt as _;
        let pods: Api<Pod> = Api::all(self.client.clone());
        tokio::spawn(async move {
            let mut events =
                kube::runtime::watcher(pods, kube::runtime::watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                if let Ok(
                    kube::runtime::watcher::Event::Apply(pod)
                    | kube::runtime::watcher::Event::InitApply(pod),
                ) = event
                {
                    return (Instant::now(), pod);
                }
            }
            panic!("the pod watch ended");
        })
    }

    /// The job's pod (the only one in `default`) and its name.
    async fn the_pod(&self) -> (Api<Pod>, String) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let listed = pods.list(&ListParams::default()).await.expect("list pods").items;
        let name = listed.first().and_then(|p| p.metadata.name.clone()).expect("a job pod");
        (pods, name)
    }

    /// Waits until no pod is left in the cluster.
    async fn assert_no_pod_left(&self) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = pods.list(&ListParams::default()).await.expect("list pods").items;
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pods left: {:?}",
                left.iter().map(|p| p.metadata.name.clone()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(mut self) {
        self.runner.terminate();
        let status =
            self.runner.wait(Duration::from_secs(30)).await.expect("the runner stops on SIGTERM");
        assert_eq!(status.code(), Some(0), "runner log:\n{}", self.runner_log());
        self.cluster.shutdown().await;
    }
}

/// Every `(verb, resource[/subresource])` the runner sent to the API server.
fn sent_by_the_runner(e2e: &E2e) -> std::collections::BTreeSet<(String, String)> {
    e2e.cluster
        .requests()
        .into_iter()
        .filter(|r| r.user_agent.as_deref().is_some_and(|a| a.starts_with("podrunner/")))
        .filter(|r| !r.resource.starts_with('/'))
        .map(|r| {
            let resource = match &r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource.clone(),
            };
            (r.verb, resource)
        })
        .collect()
}

/// How many pod creates the API server answered with `code`.
fn pod_creates(e2e: &E2e, code: u16) -> usize {
    let requests = e2e.cluster.requests();
    requests
        .iter()
        .filter(|r| {
            r.verb == "create" && r.resource == "pods" && r.subresource.is_none() && r.code == code
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_1_29_cluster_app_armor_travels_as_the_annotation_and_nothing_is_dropped() {
    let Some(e2e) = E2e::start(
        29,
        "[runners.kubernetes.build_container_security_context]\napp_armor_profile_type = \"Unconfined\"\n",
    )
    .await
    else {
        return;
    };
    let seen = e2e.first_pod_seen();
    let (job, trace) = e2e.run(no_git().script(&["echo ran"])).await;
    assert_eq!(job.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    let (_, pod) = seen.await.expect("the pod was seen");
    let annotations = pod.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("container.apparmor.security.beta.kubernetes.io/build").map(String::as_str),
        Some("unconfined"),
        "{annotations:?}"
    );
    let build =
        pod.spec.expect("spec").containers.into_iter().find(|c| c.name == "build").expect("build");
    assert!(
        build.security_context.and_then(|s| s.app_armor_profile).is_none(),
        "no field below 1.30"
    );
    assert!(trace.contains("Kubernetes 1.29"), "{trace}");
    assert!(security_row(&trace, "build").contains("Unconfined"), "{trace}");
    assert!(!e2e.runner_log().contains("unknown field"), "{}", e2e.runner_log());
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_node_fails_the_job_within_10_seconds_naming_it_and_nothing_is_left_once_it_returns()
{
    // The node monitor grace period is 40-50 s in real clusters; 3 s here.
    let Some(e2e) =
        E2e::start_with_cluster(33, "", false, |o| o.node_monitor_grace(Duration::from_secs(3)))
            .await
    else {
        return;
    };
    let handle = e2e.mock.enqueue(&no_git().script(&["echo started", "sleep 300"]));
    assert!(handle.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    let (pods, name) = e2e.the_pod().await;
    let stopped = Instant::now();
    e2e.cluster.stop_node_agent();
    let expected =
        "node local-node was lost while the job ran: its Ready condition is Unknown since ";
    let trace = assert_system_failure_soon(&handle, stopped, "node agent stopped", expected).await;
    assert!(trace.contains("(NodeStatusUnknown: Kubelet stopped posting node status.)"), "{trace}");
    assert!(trace.contains(&format!("cannot reach pod default/{name} there")), "{trace}");
    // The deletion waits for the node, as a real pod on a lost node stays Terminating.
    let pod = pods.get(&name).await.expect("the pod is still there");
    assert!(pod.metadata.deletion_timestamp.is_some(), "deleted, waiting for its node");
    e2e.cluster.start_node_agent();
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stdout)] // reason: the measured delay belongs in the test output
async fn an_overloaded_api_server_is_waited_out_with_retry_after_and_one_pod_is_created() {
    use podrunner_local_cluster::apiserver::Overload;
    let Some(e2e) = E2e::start(33, "").await else { return };
    let refused = |code: u16| e2e.cluster.requests().iter().filter(|r| r.code == code).count();
    for (code, retry_after) in [(429, Some(1)), (500, None), (503, Some(1))] {
        // Every second request is refused for 6 s: the pod's create, the watch, the execs.
        e2e.cluster.overload(Overload {
            code,
            every: 2,
            retry_after,
            duration: Duration::from_secs(6),
        });
        let before = refused(code);
        let started = Instant::now();
        let (handle, trace) = e2e.run(no_git().script(&["echo through"])).await;
        println!("with every second request answered {code}, the job took {:?}", started.elapsed());
        assert_eq!(handle.state(), JobState::Success, "{code}: {trace}\n{}", e2e.runner_log());
        assert!(trace.contains("\nthrough\n"), "{trace}");
        assert!(refused(code) > before, "the server refused requests with {code}");
        // The test's own client is not the runner: it waits the overload out.
        tokio::time::sleep_until((started + Duration::from_secs(6)).into()).await;
        e2e.assert_no_pod_left().await;
    }
    assert_eq!(pod_creates(&e2e, 201), 3, "one pod per job");
    assert_eq!(pod_creates(&e2e, 409), 0, "no create was executed twice");
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runner_sends_exactly_the_requests_the_deploy_rbac_grants() {
    let Some(e2e) =
        E2e::start_with_cluster(33, "", true, |o| o.node_monitor_grace(Duration::from_secs(3)))
            .await
    else {
        return;
    };
    // A job with registry credentials whose pod create answer is lost (the replay finds the
    // pod: a GET), then a job whose node is lost (the runner reads the node).
    let proxy = e2e.proxy.as_ref().expect("behind the proxy");
    proxy.lose_response(&["POST /api/v1/namespaces/default/pods"], 1);
    let job = no_git()
        .registry_credential("registry.example.com", "deployer", "p4ssw0rd")
        .script(&["echo ran"]);
    let (handle, trace) = e2e.run(job).await;
    assert_eq!(handle.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    e2e.assert_no_pod_left().await;
    let lost = e2e.mock.enqueue(&no_git().script(&["echo started", "sleep 300"]));
    assert!(lost.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    e2e.cluster.stop_node_agent();
    assert_eq!(lost.wait_finished(JOB_WAIT).await, JobState::Failed);
    e2e.cluster.start_node_agent();
    e2e.assert_no_pod_left().await;
    let sent = sent_by_the_runner(&e2e);
    let mut grants = granted("role.yaml");
    grants.extend(granted("clusterrole.yaml"));
    let missing: Vec<_> = sent.difference(&grants).collect();
    let unused: Vec<_> = grants.difference(&sent).collect();
    assert!(missing.is_empty(), "the runner sent requests the RBAC does not grant: {missing:?}");
    assert!(unused.is_empty(), "the RBAC grants what the runner never sent: {unused:?}");
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runner_image_runs_on_the_node_under_the_deployments_pod_security() {
    use kube::api::{LogParams, PostParams};
    if !available() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("e2e").tempdir_in("/tmp").expect("temp dir");
    let cluster = LocalCluster::start(ClusterOptions::new(dir.path())).await.expect("cluster");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_runner"));
    let image = podrunner_local_cluster::node::build_runner_image(
        &dir.path().join("runner-image"),
        binary,
        "localhost/podrunner:test",
    )
    .expect("the runner image builds");
    cluster.import_images(std::slice::from_ref(&image)).await.expect("import");
    let client = cluster.kube_client().await.expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    // The Deployment's pod security, with the image's own user.
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "runner-image"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "runner",
                "image": "localhost/podrunner:test",
                "imagePullPolicy": "Never",
                "args": ["--version"],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create");
    let deadline = Instant::now() + Duration::from_secs(60);
    let phase = loop {
        let phase = pods.get("runner-image").await.expect("get").status.and_then(|s| s.phase);
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
            break phase;
        }
        assert!(Instant::now() < deadline, "the pod did not finish: {phase:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logs = pods.logs("runner-image", &LogParams::default()).await.expect("logs");
    assert_eq!(phase.as_deref(), Some("Succeeded"), "{logs}");
    assert!(logs.starts_with("runner 0.1.0 ("), "{logs}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runner_runs_in_the_cluster_as_the_deployments_pod_and_runs_a_job_there() {
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use kube::api::{DeleteParams, LogParams, PostParams};
    if !available() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("e2e").tempdir_in("/tmp").expect("temp dir");
    let cluster = LocalCluster::start(ClusterOptions::new(dir.path())).await.expect("cluster");
    let image = podrunner_local_cluster::node::build_runner_image(
        &dir.path().join("runner-image"),
        std::path::Path::new(env!("CARGO_BIN_EXE_runner")),
        "localhost/podrunner:test",
    )
    .expect("the runner image builds");
    cluster.import_images(std::slice::from_ref(&image)).await.expect("import");
    let client = cluster.kube_client().await.expect("client");
    let mock = MockCoordinator::start().await;
    mock.set_update_interval_header(Some(1));
    // What deploy/base gives the runner: its ServiceAccount, its config as a Secret, and the
    // Deployment's pod (here in `default`, the image imported, never pulled).
    let params = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let account = serde_json::from_value(serde_json::json!({"metadata": {"name": "podrunner"}}));
    accounts.create(&params, &account.expect("account")).await.expect("service account");
    let config = format!(
        "concurrent = 2\ncheck_interval = 1\n\
         [[runners]]\nname = \"in-cluster\"\nurl = \"{url}\"\ntoken = \"{token}\"\nexecutor = \"kubernetes\"\n\
         [runners.kubernetes]\nnamespace = \"default\"\nimage = \"localhost/busybox:latest\"\n\
         helper_image = \"localhost/helper:latest\"\npull_policy = \"if-not-present\"\n\
         cleanup_grace_period_seconds = 1\n",
        url = mock.url(),
        token = mock.runner_token(),
    );
    let secret = serde_json::json!({
        "metadata": {"name": "podrunner-config"},
        "stringData": {"config.toml": config},
    });
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(&params, &serde_json::from_value(secret).expect("secret"))
        .await
        .expect("config secret");
    let deployment: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/base/deployment.yaml"),
        )
        .expect("deployment.yaml"),
    )
    .expect("YAML");
    let mut pod = deployment["spec"]["template"].clone();
    // `defaultMode: 0400` is octal to Kubernetes' YAML 1.1 reader, a string to serde_norway's.
    for volume in pod["spec"]["volumes"].as_array_mut().expect("volumes") {
        if let Some(mode) = volume["secret"]["defaultMode"].as_str() {
            volume["secret"]["defaultMode"] = i64::from_str_radix(mode, 8).expect("octal").into();
        }
    }
    pod["metadata"]["name"] = "podrunner".into();
    pod["spec"]["restartPolicy"] = "Never".into();
    pod["spec"]["containers"][0]["image"] = "localhost/podrunner:test".into();
    pod["spec"]["containers"][0]["imagePullPolicy"] = "Never".into();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&params, &serde_json::from_value(pod).expect("pod")).await.expect("runner pod");
    let handle = mock.enqueue(&no_git().script(&["echo hello from the runner in the cluster"]));
    let state = handle.wait_finished(JOB_WAIT).await;
    let logs = pods.logs("podrunner", &LogParams::default()).await.unwrap_or_default();
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(&handle, &trace);
    assert_eq!(state, JobState::Success, "{trace}\nthe runner pod's log:\n{logs}");
    assert!(trace.contains("\nhello from the runner in the cluster\n"), "{trace}");
    // In-cluster config: the service account's token and CA, the API server over TLS.
    let https = format!("cluster.url=\"https://{}/\"", cluster.https_address());
    assert!(logs.contains("connected to the cluster") && logs.contains(&https), "{https}\n{logs}");
    let runner_requests = cluster
        .requests()
        .into_iter()
        .filter(|r| r.user_agent.as_deref().is_some_and(|a| a.starts_with("podrunner/")))
        .count();
    assert!(runner_requests > 0, "the runner pod talked to the API server");
    pods.delete("podrunner", &DeleteParams::default().grace_period(0)).await.expect("delete");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pods.list(&ListParams::default()).await.expect("list").items.is_empty() {
        assert!(Instant::now() < deadline, "the job's pod and the runner's are gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_runs_the_feature_requests_cases_and_prints_their_summary() {
    if !available() {
        return;
    }
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo.toml");
    let mut out = Vec::new();
    let results = podrunner_local_cluster::demo::run(
        std::path::Path::new(env!("CARGO_BIN_EXE_runner")),
        &config,
        &mut out,
    )
    .await
    .expect("the demo runs");
    let text = String::from_utf8_lossy(&out);
    assert!(podrunner_local_cluster::demo::problems(&results).is_empty(), "{text}");
    for line in [
        "buildkit-unconfined    success, Seccomp: 0,",
        "aks-runtime-default    success, Seccomp: 2,",
        "localhost-deny-mkdir   failed (script_failure, exit code 1), Seccomp: 2, mkdir denied,",
        "localhost-missing      failed (runner_configuration_error),",
        "exit-3-after-script    failed (script_failure, exit code 3),",
        "job-timeout            failed (job_execution_timeout),",
        "apparmor-runtime-default SKIPPED: AppArmor is not enabled in this kernel",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "{line:?} missing from:\n{text}");
    }
    assert_eq!(text.matches("Effective security of every container").count(), 6, "{text}");
    assert!(text.contains("everything it started is stopped"), "{text}");
}
