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
    pub(crate) mod e2e_common;
}
use support::e2e_common::{JOB_WAIT, no_git, save_trace, security_row};

/// A cluster, the GitLab double and a running `runner run` configured for both.
struct E2e {
    cluster: LocalCluster,
    client: kube::Client,
    mock: MockCoordinator,
    runner: RunnerProcess,
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
    /// Starts everything on a private cluster of the project's own API server reporting
    /// Kubernetes 1.`minor`; `kubernetes` is appended to the `[runners.kubernetes]` table.
    async fn start(minor: u32, kubernetes: &str) -> Option<Self> {
        if !available() {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("e2e").tempdir_in("/tmp").expect("temp dir");
        let options =
            ClusterOptions::new(dir.path()).kubernetes_version(KubeVersion { minor, patch: 0 });
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
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let runner = start_runner(&config_path, cluster.kubeconfig_path());
        Some(Self { cluster, client, mock, runner, _dir: dir })
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
