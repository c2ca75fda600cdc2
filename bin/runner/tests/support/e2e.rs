//! The end-to-end harness on the shared real cluster: the GitLab double, a running `runner run`
//! configured for it, and the test's own namespace.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use podrunner_coordinator_mock::{JobHandle, JobState, MockCoordinator, MockJob};
use podrunner_local_cluster::cluster;
use podrunner_local_cluster::kubernetes::shared::RequestRecord;
use podrunner_local_cluster::kubernetes::{ClusterInfo, shared};
use podrunner_local_cluster::runner_process::RunnerProcess;

use super::cut_proxy::CutProxy;
use super::e2e_common::{JOB_WAIT, save_trace};

/// The GitLab double, a running `runner run` configured for it, and the test's namespace on
/// the shared cluster.
pub(crate) struct E2e {
    pub(crate) info: ClusterInfo,
    pub(crate) client: kube::Client,
    pub(crate) namespace: String,
    pub(crate) mock: MockCoordinator,
    pub(crate) runner: RunnerProcess,
    /// Between the runner and the API server, when the test cuts connections (with the
    /// `kubectl proxy` it forwards to).
    pub(crate) proxy: Option<(CutProxy, shared::ApiProxy)>,
    /// The runner's config file and kubeconfig, to start it again.
    pub(crate) config_path: std::path::PathBuf,
    pub(crate) kubeconfig: std::path::PathBuf,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) fn start_runner(
    config: &std::path::Path,
    kubeconfig: &std::path::Path,
) -> RunnerProcess {
    RunnerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_runner")),
        config,
        kubeconfig,
        &["--log-level", "debug"],
        &[],
    )
    .expect("start runner run")
}

/// The shared cluster, or `None` after saying SKIPPED (a failure under `CI=true`).
#[allow(clippy::print_stdout)] // reason: a skipped test must say so in the test output
pub(crate) fn shared_cluster() -> Option<ClusterInfo> {
    match shared::shared_cluster() {
        Ok(info) => Some(info),
        Err(reason) => {
            assert!(!cluster::prerequisites_required(), "CI=true and {reason}");
            println!("SKIPPED: {reason}");
            None
        }
    }
}

impl E2e {
    /// A namespace, the GitLab double (on the node's address, where pods reach it) and the
    /// runner; `kubernetes` is appended to the `[runners.kubernetes]` table (and may open
    /// sub-tables after it).
    pub(crate) async fn start(kubernetes: &str) -> Option<Self> {
        Self::start_with(kubernetes, false).await
    }

    /// As [`E2e::start`]; with `behind_proxy`, the runner reaches the API server through a
    /// [`CutProxy`] the test controls (in front of `kubectl proxy`, so it sees plain HTTP).
    pub(crate) async fn start_with(kubernetes: &str, behind_proxy: bool) -> Option<Self> {
        Self::start_full(kubernetes, behind_proxy, None).await
    }

    pub(crate) async fn start_full(
        kubernetes: &str,
        behind_proxy: bool,
        kubeconfig: Option<std::path::PathBuf>,
    ) -> Option<Self> {
        let info = shared_cluster()?;
        let client = info.client().await.expect("a client of the shared cluster");
        let namespace = shared::test_namespace(&client, "e2e").await;
        let dir = tempfile::Builder::new().prefix("e2e").tempdir_in("/tmp").expect("temp dir");
        let mock = MockCoordinator::start_on(info.node_ip).await;
        mock.set_update_interval_header(Some(1));
        let config = format!(
            "concurrent = 4\ncheck_interval = 1\n\
             [[runners]]\nname = \"e2e\"\nurl = \"{url}\"\ntoken = \"{token}\"\nexecutor = \"kubernetes\"\n\
             [runners.kubernetes]\nnamespace = \"{namespace}\"\nimage = \"localhost/busybox:latest\"\n\
             helper_image = \"localhost/helper:latest\"\npull_policy = \"if-not-present\"\n{poll}\
             cleanup_grace_period_seconds = 1\npod_termination_grace_period_seconds = 1\n\
             {kubernetes}\n",
            url = mock.url(),
            token = mock.runner_token(),
            // 60 s unless the test sets its own.
            poll = if kubernetes.contains("poll_timeout") { "" } else { "poll_timeout = 60\n" },
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let (proxy, kubeconfig) = if behind_proxy {
            let api = shared::ApiProxy::start(&info, kubeconfig.as_deref())
                .await
                .expect("kubectl proxy starts");
            let proxy = CutProxy::start(api.addr).await;
            let path = dir.path().join("kubeconfig-via-proxy");
            cluster::write_kubeconfig(&path, &format!("http://{}", proxy.addr))
                .expect("kubeconfig");
            (Some((proxy, api)), path)
        } else {
            (None, kubeconfig.unwrap_or_else(|| info.kubeconfig.clone()))
        };
        let runner = start_runner(&config_path, &kubeconfig);
        Some(Self {
            info,
            client,
            namespace,
            mock,
            runner,
            proxy,
            config_path,
            kubeconfig,
            _dir: dir,
        })
    }

    /// Starts the runner again with the same config (after it was killed).
    pub(crate) fn restart_runner(&mut self) {
        self.runner = start_runner(&self.config_path, &self.kubeconfig);
    }

    /// The cut proxy (for tests started with `behind_proxy`).
    pub(crate) fn cut_proxy(&self) -> &CutProxy {
        &self.proxy.as_ref().expect("started behind the proxy").0
    }

    /// The job's pod (the only one in the namespace) and its name.
    pub(crate) async fn the_pod(&self) -> (Api<Pod>, String) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let listed = pods.list(&ListParams::default()).await.expect("list pods").items;
        let name = listed.first().and_then(|p| p.metadata.name.clone()).expect("a job pod");
        (pods, name)
    }

    pub(crate) fn runner_log(&self) -> String {
        self.runner.log()
    }

    /// The runner's requests in this test's namespace, from the API server's audit log.
    pub(crate) fn requests(&self) -> Vec<RequestRecord> {
        shared::runner_requests_in(&self.info, &self.namespace)
    }

    /// Runs `job` to its end and returns its handle and the trace as text.
    pub(crate) async fn run(&self, job: MockJob) -> (JobHandle, String) {
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

    /// When the first pod appears in the namespace (seen through a watch started now), and the
    /// pod as the API server stored it.
    pub(crate) fn first_pod_seen(&self) -> tokio::task::JoinHandle<(Instant, Pod)> {
        use futures::StreamExt as _;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
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

    /// Waits until no pod is left in the namespace.
    pub(crate) async fn assert_no_pod_left(&self) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
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

    pub(crate) async fn stop(mut self) {
        self.runner.terminate();
        let status =
            self.runner.wait(Duration::from_secs(30)).await.expect("the runner stops on SIGTERM");
        assert_eq!(status.code(), Some(0), "runner log:\n{}", self.runner_log());
        shared::delete_namespace(&self.client, &self.namespace).await;
    }
}
