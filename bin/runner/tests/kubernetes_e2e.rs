//! End to end on real Kubernetes: the real `runner run` takes jobs from the GitLab double and runs
//! them as pods on the local cluster (kube-apiserver, scheduler, controller-manager and kubelet on
//! containerd, built from upstream's sources; seccomp enforced by the kernel). Each test works in
//! a namespace of its own on the one cluster the test command starts (`cargo xtask test`, or
//! `cargo xtask local-cluster up` before `cargo nextest run`), and asserts what a user sees: the
//! job log GitLab received, the final state, exit code and failure reason, that no pod is left,
//! and from the API server's audit log, the requests the runner sent.
//!
//! Without a running cluster each test says SKIPPED; under `CI=true` that fails it. The tests
//! that stop or restart the cluster's components are in `cluster_faults_e2e.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use podrunner_coordinator_mock::{JobState, MockJob};
use podrunner_local_cluster::cluster;
use podrunner_local_cluster::kubernetes::shared;

mod support {
    pub(crate) mod cut_proxy;
    pub(crate) mod e2e;
    pub(crate) mod e2e_common;
    pub(crate) mod git_http;
}
use support::e2e::{E2e, shared_cluster};
use support::e2e_common::{
    JOB_WAIT, assert_system_failure_soon, granted, granted_by, no_git, save_trace, security_row,
    verb_resource_pairs,
};
use support::git_http::GitServer;

#[tokio::test(flavor = "multi_thread")]
async fn build_unconfined_runs_without_seccomp_and_the_job_succeeds() {
    let Some(e2e) = E2e::start(
        "[runners.kubernetes.build_container_security_context]\n\
         seccomp_profile_type = \"Unconfined\"\napp_armor_profile_type = \"Unconfined\"\n",
    )
    .await
    else {
        return;
    };
    let (job, trace) = e2e.run(no_git().script(&["grep Seccomp: /proc/self/status"])).await;
    assert_eq!(job.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert!(trace.contains("\x1b[32;1m$ grep Seccomp: /proc/self/status\x1b[0;m\n"), "{trace}");
    assert!(trace.contains("Seccomp:\t0\n"), "{trace}");
    let build = security_row(&trace, "build");
    assert!(build.contains("Unconfined"), "{build}");
    for section in
        ["prepare_executor", "security_context", "prepare_script", "get_sources", "step_script"]
    {
        assert!(trace.contains(&format!(":{section}\r\x1b[0K")), "section {section} in {trace}");
    }
    assert!(trace.contains("Job succeeded"), "{trace}");
    let update = job.final_update().expect("final update");
    assert_eq!(update.state, "success");
    e2e.assert_no_pod_left().await;
    // Requests of this job (its pod's create, execs and delete) against the budget of
    // 4 + 2 x stages (get_sources, step_script, cleanup_file_variables); the watch is shared.
    let requests = e2e.requests();
    let of_job: Vec<_> = requests
        .iter()
        .filter(|r| r.resource == "pods" && (r.name.is_some() || r.verb == "create"))
        .collect();
    assert!(
        of_job.len() <= 4 + 2 * 3,
        "{} requests: {of_job:#?}\nrunner log:\n{}",
        of_job.len(),
        e2e.runner_log()
    );
    let watches = requests.iter().filter(|r| r.verb == "watch").count();
    assert_eq!(watches, 1, "one shared watch: {requests:#?}");
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_runtime_default_filters_the_build_and_the_log_shows_the_helper_inherits_it() {
    let Some(e2e) = E2e::start(
        "[runners.kubernetes.pod_security_context]\nseccomp_profile_type = \"RuntimeDefault\"\n",
    )
    .await
    else {
        return;
    };
    let (job, trace) = e2e.run(no_git().script(&["grep Seccomp: /proc/self/status"])).await;
    assert_eq!(job.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert!(trace.contains("Seccomp:\t2\n"), "{trace}");
    let helper = security_row(&trace, "helper");
    assert!(helper.contains("RuntimeDefault (pod)"), "{helper}");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_localhost_profile_denying_mkdir_fails_the_script_with_exit_code_1_and_after_script_runs()
{
    let Some(e2e) = E2e::start("[runners.kubernetes.build_container_security_context]\n\
         seccomp_profile_type = \"Localhost\"\nseccomp_profile_localhost_profile = \"profiles/deny-mkdir.json\"\n",
    )
    .await
    else {
        return;
    };
    let (job, trace) = e2e
        .run(
            no_git()
                .script(&["echo before", "mkdir /tmp/x", "echo never"])
                .after_script(&["echo status=$CI_JOB_STATUS"]),
        )
        .await;
    assert_eq!(job.state(), JobState::Failed, "{trace}\n{}", e2e.runner_log());
    assert!(trace.contains("before\n"), "{trace}");
    assert!(trace.contains("Operation not permitted"), "{trace}");
    assert!(!trace.contains("\nnever\n"), "the script stops at the first failure: {trace}");
    assert!(trace.contains("status=failed\n"), "after_script ran: {trace}");
    let update = job.final_update().expect("final update");
    assert_eq!(update.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(update.exit_code, Some(1));
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stdout)] // reason: the measured delay belongs in the test output
async fn a_missing_localhost_profile_fails_within_5_seconds_naming_container_profile_and_node() {
    let Some(e2e) = E2e::start("[runners.kubernetes.build_container_security_context]\n\
         seccomp_profile_type = \"Localhost\"\nseccomp_profile_localhost_profile = \"profiles/absent.json\"\n",
    )
    .await
    else {
        return;
    };
    let job = no_git().script(&["echo the-script-ran"]).failure_reasons(&[
        "script_failure",
        "runner_system_failure",
        "runner_configuration_error",
    ]);
    let created = e2e.first_pod_seen();
    let (job, trace) = e2e.run(job).await;
    let failed = Instant::now();
    let (created, _) = created.await.expect("the pod was created");
    let delay = failed.duration_since(created);
    println!("missing profile: job failed {delay:?} after the pod was created");
    assert!(delay < Duration::from_secs(5), "failed {delay:?} after the pod's creation");
    assert_eq!(job.state(), JobState::Failed, "{trace}");
    assert!(!trace.contains("the-script-ran"), "{trace}");
    for needle in [
        "\"build\"",
        "profiles/absent.json",
        "local-node",
        "no such file or directory",
        "Security Profiles Operator",
    ] {
        assert!(trace.contains(needle), "{needle:?} missing from the log:\n{trace}");
    }
    let update = job.final_update().expect("final update");
    assert_eq!(update.failure_reason.as_deref(), Some("runner_configuration_error"));
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_3_is_reported_with_after_script_and_masked_values_never_reach_the_trace() {
    let Some(e2e) = E2e::start("").await else { return };
    let job = no_git()
        .masked_variable("SECRET_VALUE", "s3cr3t-v4lu3-abc")
        .file_variable("MY_FILE", "file content\n")
        .script(&[
            "echo \"secret is $SECRET_VALUE\"",
            "cat \"$MY_FILE\"",
            "echo '{\"command_exit_code\": 0}'",
            "exit 3",
        ])
        .after_script(&["echo after $CI_JOB_STATUS"])
        .extra(
            "artifacts",
            serde_json::json!([{"name": "out", "paths": ["out/"], "when": "always"}]),
        );
    let (job, trace) = e2e.run(job).await;
    assert_eq!(job.state(), JobState::Failed, "{trace}");
    // `when: always` uploads from a failed job; a path that matched nothing is a warning.
    assert!(trace.contains("upload_artifacts_on_failure"), "{trace}");
    assert!(
        trace.contains("WARNING: out/: no matching files. Ensure that the artifact path is relative to the working directory (/builds/group/demo)"),
        "{trace}"
    );
    assert!(trace.contains("ERROR: No files to upload"), "{trace}");
    assert!(e2e.mock.artifacts().is_empty());
    assert!(!trace.contains("s3cr3t-v4lu3-abc"), "{trace}");
    assert!(trace.contains("secret is [MASKED]\n"), "{trace}");
    assert!(trace.contains("file content\n"), "{trace}");
    assert!(
        trace.contains("{\"command_exit_code\": 0}\n"),
        "an in-band marker is plain output: {trace}"
    );
    assert!(trace.contains("after failed\n"), "{trace}");
    assert!(trace.contains("ERROR: Job failed: command terminated with exit code 3"), "{trace}");
    let update = job.final_update().expect("final update");
    assert_eq!(update.exit_code, Some(3));
    assert_eq!(update.failure_reason.as_deref(), Some("script_failure"));
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn container_settings_win_over_the_pod_and_ignored_settings_are_warned_about_in_the_job_log()
{
    let Some(e2e) = E2e::start("[runners.kubernetes.pod_security_context]\nseccomp_profile_type = \"RuntimeDefault\"\n\
         [runners.kubernetes.build_container_security_context]\nseccomp_profile_type = \"Unconfined\"\n\
         [runners.kubernetes.helper_container_security_context]\nseccomp_profile_type = \"Bogus\"\n\
         [runners.kubernetes.init_permissions_container_security_context]\nseccomp_profile_type = \"Localhost\"\n",
    )
    .await
    else {
        return;
    };
    let (job, trace) = e2e.run(no_git().script(&["grep Seccomp: /proc/self/status"])).await;
    assert_eq!(job.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert!(trace.contains("Seccomp:\t0\n"), "the build's Unconfined wins over the pod: {trace}");
    assert!(security_row(&trace, "build").contains("Unconfined"), "{trace}");
    assert!(security_row(&trace, "helper").contains("RuntimeDefault (pod)"), "{trace}");
    let warnings: Vec<&str> =
        trace.lines().filter(|l| l.contains("WARNING: ") && l.contains("config.toml:")).collect();
    assert!(warnings.iter().any(|w| w.contains("Bogus")), "{warnings:?}\n{trace}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("seccomp_profile_localhost_profile") || w.contains("Localhost")),
        "{warnings:?}"
    );
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stdout)] // reason: the measured delay belongs in the test output
async fn canceling_stops_the_script_runs_after_script_and_reports_canceled_within_10_seconds() {
    let Some(e2e) = E2e::start("").await else { return };
    let job = no_git()
        .script(&["echo started", "sleep 120", "echo never"])
        .after_script(&["echo after $CI_JOB_STATUS"]);
    let handle = e2e.mock.enqueue(&job);
    assert!(handle.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    let asked = Instant::now();
    handle.cancel_gracefully();
    let state = handle.wait_finished(Duration::from_secs(30)).await;
    let took = asked.elapsed();
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    println!("canceling: the job ended {took:?} after GitLab asked");
    assert_eq!(state, JobState::Canceled, "{trace}\n{}", e2e.runner_log());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(trace.contains("script canceled externally (UI, API)"), "{trace}");
    assert!(trace.contains("after canceled\n"), "after_script ran with the status: {trace}");
    assert!(!trace.contains("\nnever\n"), "{trace}");
    assert!(trace.contains("ERROR: Job failed: canceled"), "{trace}");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stdout)] // reason: the measured delay belongs in the test output
async fn canceled_stops_at_once_without_after_script_and_deletes_the_pod() {
    let Some(e2e) = E2e::start("").await else { return };
    let job = no_git().script(&["echo started", "sleep 120"]).after_script(&["echo after-ran"]);
    let handle = e2e.mock.enqueue(&job);
    assert!(handle.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    let asked = Instant::now();
    handle.cancel();
    e2e.assert_no_pod_left().await;
    let took = asked.elapsed();
    println!("canceled: the pod was gone {took:?} after GitLab asked");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(handle.state(), JobState::Canceled);
    assert!(!String::from_utf8_lossy(&handle.trace()).contains("after-ran"));
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_timeout_fails_the_job_as_job_execution_timeout_and_deletes_the_pod() {
    let Some(e2e) = E2e::start("").await else { return };
    let job = no_git().timeout(8).script(&["echo started", "sleep 120"]);
    let started = Instant::now();
    let (handle, trace) = e2e.run(job).await;
    let took = started.elapsed();
    assert_eq!(handle.state(), JobState::Failed, "{trace}");
    let update = handle.final_update().expect("final update");
    assert_eq!(update.failure_reason.as_deref(), Some("job_execution_timeout"), "{trace}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(trace.contains("started\n"), "{trace}");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_30000_line_log_arrives_byte_for_byte_and_a_masked_value_split_across_writes_is_masked() {
    let Some(e2e) = E2e::start("").await else { return };
    let job = no_git()
        .masked_variable("SPLIT_SECRET", "first-half-second-half")
        .variable("PART_ONE", "first-half")
        .variable("PART_TWO", "-second-half")
        .script(&[
            "i=0; while [ $i -lt 30000 ]; do echo \"line $i of the long log\"; i=$((i+1)); done",
            "printf '%s' \"$PART_ONE\"; sleep 1; printf '%s\\n' \"$PART_TWO\"",
        ]);
    let (handle, trace) = e2e.run(job).await;
    assert_eq!(handle.state(), JobState::Success, "{}", e2e.runner_log());
    let expected: String = (0..30000).map(|i| format!("line {i} of the long log\n")).collect();
    assert!(trace.contains(&expected), "the 30 000 lines are in the log, in order, each once");
    assert_eq!(trace.matches("of the long log\n").count(), 30000);
    assert!(!trace.contains("first-half-second-half"), "masked across writes");
    assert!(trace.contains("[MASKED]\n"), "{}", &trace[trace.len().saturating_sub(2000)..]);
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn get_sources_fetches_over_smart_http_at_the_job_sha_and_never_prints_the_token() {
    let Some(e2e) = E2e::start("").await else { return };
    let token: Arc<Mutex<Option<String>>> = Arc::default();
    let server_token = Arc::clone(&token);
    let server = GitServer::start(e2e.info.node_ip, "hello from the repository\n", move || {
        server_token.lock().expect("lock").clone()
    })
    .await;
    let url = format!(
        "{}/group/demo.git",
        server.base.replace("http://", "http://gitlab-ci-token:{token}@")
    );
    let job = MockJob::new("git")
        .image("localhost/busybox:latest")
        .git(&url, &server.sha, "main")
        .script(&["cat README", "ls -a"]);
    let handle = e2e.mock.enqueue(&job);
    *token.lock().expect("lock") = Some(handle.token());
    let state = handle.wait_finished(JOB_WAIT).await;
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(&handle, &trace);
    assert_eq!(
        state,
        JobState::Success,
        "{trace}\nrequests: {:?}",
        server.requests.lock().expect("lock")
    );
    assert!(trace.contains("Fetching changes with git depth set to 20..."), "{trace}");
    assert!(trace.contains("Created fresh repository."), "{trace}");
    assert!(
        trace.contains(&format!(
            "Checking out {} as detached HEAD (ref is main)...",
            &server.sha[..8]
        )),
        "{trace}"
    );
    assert!(trace.contains("hello from the repository\n"), "{trace}");
    assert!(!trace.contains(&handle.token()), "the job token never reaches the log");
    let requests = server.requests.lock().expect("lock").clone();
    assert!(
        requests.iter().any(|r| r.ends_with(" 401")),
        "the server asked for credentials: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.starts_with("POST /group/demo.git/git-upload-pack") && r.ends_with("200 OK")),
        "a smart-HTTP fetch: {requests:?}"
    );
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_script_reaches_a_service_container_by_its_alias() {
    let Some(e2e) = E2e::start("").await else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let serve = format!(
        "mkdir -p /tmp/www && echo hello-from-the-service > /tmp/www/index.html && exec httpd -f -p {port} -h /tmp/www"
    );
    let job = no_git()
        .service_json(serde_json::json!({
            "name": "localhost/busybox:latest", "alias": "web", "entrypoint": ["sh", "-c"],
            "command": [serve], "ports": [], "variables": []
        }))
        .script(&[&format!(
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://web:{port}/ && break; sleep 0.5; done"
        )]);
    let (handle, trace) = e2e.run(job).await;
    assert_eq!(handle.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert!(trace.contains("\nhello-from-the-service\n"), "{trace}");
    assert!(
        security_row(&trace, "web").contains("NET_RAW"),
        "the service is in the security table: {trace}"
    );
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_running_job_finish_then_the_runner_exits_0() {
    let Some(e2e) = E2e::start("").await else { return };
    let handle = e2e.mock.enqueue(&no_git().script(&["echo started", "sleep 3", "echo finished"]));
    assert!(handle.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    let mut e2e = e2e;
    e2e.runner.terminate();
    let requests_at_sigterm = e2e.mock.job_request_calls();
    let status = e2e.runner.wait(JOB_WAIT).await.expect("the runner exits once its job is done");
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    assert_eq!(handle.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert!(trace.contains("finished\n"), "{trace}");
    assert_eq!(status.code(), Some(0), "{}", e2e.runner_log());
    assert!(
        e2e.mock.job_request_calls() <= requests_at_sigterm + 1,
        "no new job is requested after SIGTERM"
    );
    e2e.assert_no_pod_left().await;
    shared::delete_namespace(&e2e.client, &e2e.namespace).await;
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stdout)] // reason: the measured exit belongs in the test output
async fn a_second_sigterm_aborts_the_job_deletes_its_pod_and_exits_1() {
    let Some(mut e2e) = E2e::start("").await else { return };
    let job = no_git()
        .script(&["echo started", "sleep 300"])
        .after_script(&["echo after-never"])
        .failure_reasons(&["script_failure", "runner_system_failure", "runner_interrupted"]);
    let handle = e2e.mock.enqueue(&job);
    assert!(handle.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    e2e.runner.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = Instant::now();
    e2e.runner.terminate();
    let status = e2e.runner.wait(Duration::from_secs(40)).await.expect("the runner exits");
    println!("the runner exited {:?} after the second SIGTERM", second.elapsed());
    assert_eq!(status.code(), Some(1), "{}", e2e.runner_log());
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(&handle, &trace);
    assert_eq!(handle.state(), JobState::Failed, "{trace}\n{}", e2e.runner_log());
    let update = handle.final_update().expect("final update");
    assert_eq!(update.failure_reason.as_deref(), Some("runner_interrupted"));
    assert!(trace.contains("the runner is stopping at once, aborting the job"), "{trace}");
    assert!(!trace.contains("after-never"), "{trace}");
    assert!(
        e2e.runner_log().contains("second signal received: aborting running jobs"),
        "{}",
        e2e.runner_log()
    );
    assert!(
        !e2e.config_path.with_file_name(".runner_jobs").join("job-1001.json").exists(),
        "reported, so not left for the next start"
    );
    e2e.assert_no_pod_left().await;
    shared::delete_namespace(&e2e.client, &e2e.namespace).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_servers_warnings_about_the_pod_are_in_the_job_log() {
    // The real API server warns about a deprecated node label in a selector (the kubelet still
    // sets it, so the pod runs).
    let Some(e2e) =
        E2e::start("[runners.kubernetes.node_selector]\n\"beta.kubernetes.io/arch\" = \"amd64\"\n")
            .await
    else {
        return;
    };
    let (job, trace) = e2e.run(no_git().script(&["echo ran"])).await;
    assert_eq!(job.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert!(
        trace.contains(":api_warnings\r\x1b[0K\x1b[36;1mWarnings from the Kubernetes API server"),
        "{trace}"
    );
    assert!(
        trace.contains(
            r#"WARNING: spec.nodeSelector[beta.kubernetes.io/arch]: deprecated since v1.14; use "kubernetes.io/arch" instead"#
        ),
        "{trace}"
    );
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_credentials_become_an_image_pull_secret_that_is_deleted_with_the_pod() {
    let Some(e2e) = E2e::start("").await else { return };
    let seen = e2e.first_pod_seen();
    let job = no_git()
        .registry_credential("registry.example.com", "deployer", "p4ssw0rd-never-printed")
        .script(&["echo ran"]);
    let (handle, trace) = e2e.run(job).await;
    assert_eq!(handle.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    let (_, pod) = seen.await.expect("the pod was seen");
    let pull_secrets: Vec<String> = pod
        .spec
        .and_then(|s| s.image_pull_secrets)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(pull_secrets, ["runner-mock-runn-job-1001-registry"], "{pull_secrets:?}");
    let requests = e2e.requests();
    let on_secrets: Vec<(String, u16)> = requests
        .iter()
        // The job's own requests; the runner's sweep lists secrets at start and every minute.
        .filter(|r| r.resource == "secrets" && r.verb != "list")
        .map(|r| (r.verb.clone(), r.code))
        .collect();
    assert_eq!(
        on_secrets,
        [("create".to_owned(), 201), ("delete".to_owned(), 200)],
        "{requests:#?}"
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(e2e.client.clone(), &e2e.namespace);
    assert!(
        secrets.list(&ListParams::default()).await.expect("list").items.is_empty(),
        "no secret left"
    );
    assert!(!trace.contains("p4ssw0rd-never-printed"));
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_script_is_stopped_at_its_own_timeout_and_the_job_still_succeeds() {
    let Some(e2e) = E2e::start("").await else { return };
    let job = no_git()
        .variable("RUNNER_AFTER_SCRIPT_TIMEOUT", "2s")
        .script(&["echo main"])
        .after_script(&["echo after-started", "sleep 60", "echo after-never"]);
    let started = Instant::now();
    let (handle, trace) = e2e.run(job).await;
    let took = started.elapsed();
    assert_eq!(handle.state(), JobState::Success, "{trace}");
    assert!(trace.contains("after-started\n"), "{trace}");
    assert!(!trace.contains("after-never"), "{trace}");
    assert!(
        trace.contains(
            "WARNING: after_script could not run to completion because the timeout was exceeded"
        ),
        "{trace}"
    );
    assert!(
        trace.contains("WARNING: after_script failed, but job will continue unaffected"),
        "{trace}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stdout)] // reason: the measured recovery belongs in the test output
async fn a_cut_api_connection_mid_stage_loses_no_byte_and_runs_the_stage_once() {
    let Some(e2e) = E2e::start_with("", true).await else { return };
    let job = no_git().script(&[
        "echo start >> \"$CI_BUILDS_DIR/starts\"; echo \"starts: $(wc -l < \"$CI_BUILDS_DIR/starts\")\"",
        "i=0; while [ $i -lt 80 ]; do echo \"numbered line $i\"; i=$((i+1)); sleep 0.1; done",
    ]);
    let handle = e2e.mock.enqueue(&job);
    assert!(
        handle.wait_trace_contains(b"numbered line 5\n", JOB_WAIT).await,
        "{}",
        e2e.runner_log()
    );
    let proxy = e2e.cut_proxy();
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore().await;
    let restored = Instant::now();
    let state = handle.wait_finished(JOB_WAIT).await;
    println!("the job finished {:?} after the API server came back", restored.elapsed());
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(&handle, &trace);
    assert_eq!(state, JobState::Success, "{trace}\n{}", e2e.runner_log());
    let expected: String = (0..80).map(|i| format!("numbered line {i}\n")).collect();
    assert!(trace.contains(&expected), "every line once, in order, nothing lost:\n{trace}");
    assert_eq!(trace.matches("numbered line").count(), 80 + 1, "+1 for the echoed command");
    assert!(trace.contains("starts: 1\n"), "{trace}");
    assert!(!trace.contains("starts: 2"), "the stage ran once: {trace}");
    assert!(
        e2e.runner_log().contains("stage stream interrupted, resuming"),
        "{}",
        e2e.runner_log()
    );
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_launch_response_is_retried_without_running_the_stage_twice() {
    let Some(e2e) = E2e::start_with("", true).await else { return };
    let proxy = e2e.cut_proxy();
    // The step_script launch reaches the API server and runs; its answer never arrives.
    proxy.lose_response(&["command=launch&", "command=step_script"], 1);
    // Counted after a pause, so that a second run started by the retry would be counted.
    let job = no_git().script(&[
        "echo start >> \"$CI_BUILDS_DIR/starts\"; sleep 2; echo \"starts: $(wc -l < \"$CI_BUILDS_DIR/starts\")\"",
        "echo done",
    ]);
    let (handle, trace) = e2e.run(job).await;
    assert_eq!(handle.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert_eq!(proxy.lost_responses(), 1, "the fault happened: {}", e2e.runner_log());
    assert!(trace.contains("\nstarts: 1\n"), "{trace}");
    assert!(!trace.contains("starts: 2"), "the stage ran once: {trace}");
    assert_eq!(trace.matches("\ndone\n").count(), 1, "{trace}");
    assert!(
        e2e.runner_log().contains("launching the stage again"),
        "the launch was retried: {}",
        e2e.runner_log()
    );
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_quota_is_waited_out_and_said_once() {
    use kube::api::{DeleteParams, PostParams};
    let Some(e2e) = E2e::start("").await else { return };
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(e2e.client.clone(), &e2e.namespace);
    let quota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ci-pods"}, "spec": {"hard": {"pods": "1"}}
    }))
    .expect("quota");
    quotas.create(&PostParams::default(), &quota).await.expect("create the quota");
    // A quota is enforced once the controller-manager has computed its status.
    let deadline = Instant::now() + Duration::from_secs(30);
    while quotas
        .get("ci-pods")
        .await
        .expect("get the quota")
        .status
        .and_then(|s| s.hard)
        .is_none_or(|h| h.is_empty())
    {
        assert!(Instant::now() < deadline, "the quota controller never computed the quota");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods: Api<Pod> = Api::namespaced(e2e.client.clone(), &e2e.namespace);
    let blocker = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "blocker"},
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": "localhost/busybox:latest", "imagePullPolicy": "IfNotPresent",
             "command": ["sleep", "8"]}
        ]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &blocker).await.expect("create the blocker");
    let (handle, trace) = e2e.run(no_git().script(&["echo ran"])).await;
    assert_eq!(handle.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert_eq!(
        trace
            .matches("exceeded quota: ci-pods, requested: pods=1, used: pods=1, limited: pods=1")
            .count(),
        1,
        "said once: {trace}"
    );
    assert!(trace.contains("waiting for the quota to free up"), "{trace}");
    assert!(trace.contains("\nran\n"), "{trace}");
    pods.delete("blocker", &DeleteParams::default()).await.expect("delete the blocker");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_deleted_mid_stage_fails_the_job_within_10_seconds_saying_so() {
    let Some(e2e) = E2e::start("").await else { return };
    let job = no_git().script(&["echo started", "sleep 120"]).after_script(&["echo after-ran"]);
    let handle = e2e.mock.enqueue(&job);
    assert!(handle.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    let (pods, name) = e2e.the_pod().await;
    let deleted = Instant::now();
    // As an operator or a controller would: the pod's own grace period (30 s) applies.
    pods.delete(&name, &kube::api::DeleteParams::default()).await.expect("delete");
    let expected = format!("pod {}/{name} was deleted while the job ran", e2e.namespace);
    let trace = assert_system_failure_soon(&handle, deleted, "pod deleted", &expected).await;
    assert!(!trace.contains("after-ran"), "after_script cannot run in a deleted pod: {trace}");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_past_the_memory_limit_is_oom_killed_and_the_log_says_so() {
    let Some(e2e) = E2e::start("memory_limit = \"32Mi\"").await else { return };
    let job = no_git().script(&[
        "echo before",
        "dd if=/dev/zero of=/dev/null bs=96M count=1",
        "echo not-reached",
    ]);
    let (handle, trace) = e2e.run(job).await;
    assert_eq!(handle.state(), JobState::Failed, "{trace}");
    let update = handle.final_update().expect("final update");
    assert_eq!(update.failure_reason.as_deref(), Some("script_failure"), "{trace}");
    assert_eq!(update.exit_code, Some(137), "{trace}");
    assert!(trace.contains("before\n") && !trace.contains("not-reached"), "{trace}");
    assert!(
        trace.contains(
            "the kernel's OOM killer killed a process of the step_script stage: the build container reached its memory limit of 32Mi on node local-node"
        ),
        "{trace}"
    );
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_evicted_pod_fails_the_job_within_10_seconds_naming_the_eviction_and_the_node() {
    let Some(e2e) = E2e::start("").await else { return };
    let job = no_git().script(&["echo started", "sleep 120"]);
    let handle = e2e.mock.enqueue(&job);
    assert!(handle.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    let (pods, name) = e2e.the_pod().await;
    let evicted = Instant::now();
    // As `kubectl drain` does: the Eviction API, the pod's own grace period.
    pods.evict(&name, &kube::api::EvictParams::default()).await.expect("evict");
    let expected = format!(
        "pod {}/{name} was disrupted on node local-node while the job ran (EvictionByEvictionAPI: Eviction API: evicting)",
        e2e.namespace
    );
    assert_system_failure_soon(&handle, evicted, "pod evicted", &expected).await;
    e2e.assert_no_pod_left().await;
    let evictions = shared::audit_records(&e2e.info)
        .iter()
        .filter(|r| r.namespace.as_deref() == Some(e2e.namespace.as_str()))
        .filter(|r| r.subresource.as_deref() == Some("eviction") && r.code == 201)
        .count();
    assert_eq!(evictions, 1);
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_deleted_before_it_runs_fails_the_job_at_once_not_at_poll_timeout() {
    // A Secret volume whose Secret does not exist keeps the pod in ContainerCreating.
    let Some(e2e) = E2e::start(
        "[[runners.kubernetes.volumes.secret]]\nname = \"absent\"\nmount_path = \"/absent\"",
    )
    .await
    else {
        return;
    };
    let handle = e2e.mock.enqueue(&no_git().script(&["echo never"]));
    assert!(handle.wait_trace_contains(b"Waiting for pod", JOB_WAIT).await, "{}", e2e.runner_log());
    let (pods, name) = e2e.the_pod().await;
    let deleted = Instant::now();
    pods.delete(&name, &kube::api::DeleteParams::default()).await.expect("delete");
    let expected = format!("pod {}/{name} was deleted while the job ran", e2e.namespace);
    let event = "pod deleted before it ran (poll_timeout is 60 s)";
    assert_system_failure_soon(&handle, deleted, event, &expected).await;
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_create_whose_answer_is_lost_is_sent_again_and_the_pod_adopted() {
    let Some(e2e) = E2e::start_with("", true).await else { return };
    let proxy = e2e.cut_proxy();
    // The API server creates the pod; the runner never hears it did.
    let create = format!("POST /api/v1/namespaces/{}/pods", e2e.namespace);
    proxy.lose_response(&[create.as_str()], 1);
    let (handle, trace) = e2e.run(no_git().script(&["echo adopted"])).await;
    assert_eq!(handle.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert_eq!(proxy.lost_responses(), 1);
    assert!(trace.contains("\nadopted\n"), "{trace}");
    let log = e2e.runner_log();
    assert!(log.contains("a create got no answer, sending it again"), "{log}");
    assert!(log.contains("adopting the pod this job already created"), "{log}");
    assert_eq!(pod_creates(&e2e, 201), 1, "one pod");
    assert_eq!(pod_creates(&e2e, 409), 1, "the replay found it");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

/// A pod as if a job of this runner had created it: the runner's labels, `system_id`, job `id`.
fn pod_of(namespace: &str, name: &str, short_token: &str, system_id: &str, job_id: u64) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "manager.runner.gitlab.com/id-short": short_token,
                "manager.runner.gitlab.com/system-id": system_id,
            },
            "annotations": {"job.runner.gitlab.com/id": job_id.to_string()},
        },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "build",
                "image": "localhost/busybox:latest",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "300"],
            }],
        },
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stdout)] // reason: the measured recovery belongs in the test output
async fn a_runner_killed_mid_job_resumes_it_at_its_next_start_with_every_line_once() {
    use kube::api::PostParams;
    let Some(mut e2e) = E2e::start("").await else { return };
    let handle = e2e.mock.enqueue(&no_git().masked_variable("SECRET", "s3cr3tvalue").script(&[
        "echo run >> /tmp/starts",
        "for i in $(seq 1 40); do echo \"line $i s3cr3tvalue\"; sleep 0.1; done",
        "echo \"starts: $(wc -l < /tmp/starts)\"",
    ]));
    assert!(
        handle.wait_trace_contains(b"line 5 [MASKED]\n", JOB_WAIT).await,
        "{}",
        e2e.runner_log()
    );
    let (pods, job_pod) = e2e.the_pod().await;
    let state_dir = e2e.config_path.with_file_name(".runner_jobs");
    let saved = state_dir.join(format!("job-{}.json", handle.id()));
    let checkpoint = state_dir.join(format!("job-{}.checkpoint", handle.id()));
    for file in [&saved, &checkpoint] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(file).expect("the running job is in the journal").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "the journal holds the job token: private");
    }
    let old_pid = e2e.runner.pid().expect("the runner's pid");
    e2e.runner.kill();
    e2e.runner.wait(Duration::from_secs(10)).await.expect("killed");
    let killed = Instant::now();
    let old_log = e2e.runner_log();
    let gitlab_had = handle.trace().len();
    // An object of this runner process whose job is not running, and one of another process
    // sharing the token (a second replica): only the first is swept; the resumed job's pod
    // stays.
    let system_id = std::fs::read_to_string(e2e.config_path.with_file_name(".runner_system_id"))
        .expect("system id file");
    let short = podrunner_executor_k8s::names::short_token(e2e.mock.runner_token());
    let short = podrunner_executor_k8s::names::sanitize_label(&short);
    pods.create(
        &PostParams::default(),
        &pod_of(&e2e.namespace, "orphan", &short, system_id.trim(), 999),
    )
    .await
    .expect("orphan pod");
    pods.create(
        &PostParams::default(),
        &pod_of(&e2e.namespace, "other-replica", &short, "s_000000000000", 998),
    )
    .await
    .expect("other replica's pod");
    let restarted = Instant::now();
    e2e.restart_runner();
    let new_pid = e2e.runner.pid().expect("the runner's pid");
    let state = handle.wait_finished(Duration::from_secs(60)).await;
    println!(
        "the resumed job finished {:?} after the runner started again ({:?} after the kill)",
        restarted.elapsed(),
        killed.elapsed()
    );
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(&handle, &trace);
    assert_eq!(state, JobState::Success, "{trace}\n{}", e2e.runner_log());
    // Every line of the stage once and in order: what the killed process had sent, then the
    // rest from the stage log's marked offset.
    let lines: Vec<&str> = trace.lines().filter(|l| l.starts_with("line ")).collect();
    let expected: Vec<String> = (1..=40).map(|i| format!("line {i} [MASKED]")).collect();
    assert_eq!(lines, expected, "{trace}");
    assert!(trace.contains("\nstarts: 1\n"), "the stage ran once: {trace}");
    assert!(!trace.contains("s3cr3tvalue"), "masked across the restart: {trace}");
    let note = format!(
        "WARNING: the runner process that ran this job (pid {}) ended before the job did; runner process {} resumes it where GitLab's log of it ends (byte {gitlab_had})",
        old_pid, new_pid
    );
    assert_eq!(trace.matches(&note).count(), 1, "{trace}");
    assert_eq!(trace.matches("Running with podrunner").count(), 1, "{trace}");
    assert_eq!(trace.matches("section_start:").count(), trace.matches("section_end:").count());
    let update = handle.final_update().expect("a final update");
    assert_eq!(
        update.checksum.as_deref(),
        Some(format!("crc32:{:08x}", crc32fast::hash(&handle.trace())).as_str()),
        "the checksum covers the whole log"
    );
    // The orphan goes, the other replica's pod stays, the job's pod went with the job.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name)
            .collect();
        if names == ["other-replica"] {
            break;
        }
        assert!(Instant::now() < deadline, "left: {names:?}\n{}", e2e.runner_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = e2e.runner_log();
    assert!(log.contains("resuming a job an earlier runner process left running"), "{log}");
    assert!(log.contains("found the pod of the resumed job"), "{log}");
    assert!(log.contains(&job_pod), "{log}");
    assert!(log.contains("swept objects of jobs that are not running"), "{log}");
    assert!(!saved.exists() && !checkpoint.exists(), "the job left the journal");
    let token = handle.token();
    assert!(!old_log.contains(&token) && !log.contains(&token), "no job token in the daemon log");
    assert!(!log.contains("s3cr3tvalue"), "no variable in the daemon log");
    pods.delete("other-replica", &kube::api::DeleteParams::default()).await.expect("delete");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stdout)] // reason: the measured hand-over belongs in the test output
async fn sigusr2_hands_the_running_job_over_to_the_next_runner_process() {
    let Some(mut e2e) = E2e::start("").await else { return };
    let handle = e2e.mock.enqueue(&no_git().script(&[
        "echo run >> /tmp/starts",
        "for i in $(seq 1 30); do echo \"line $i\"; sleep 0.1; done",
        "echo \"starts: $(wc -l < /tmp/starts)\"",
    ]));
    assert!(handle.wait_trace_contains(b"line 3\n", JOB_WAIT).await, "{}", e2e.runner_log());
    let (pods, job_pod) = e2e.the_pod().await;
    let signaled = Instant::now();
    e2e.runner.signal("USR2");
    let status = e2e.runner.wait(Duration::from_secs(20)).await.expect("the runner exits");
    let exited = signaled.elapsed();
    let log = e2e.runner_log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("job handed over to the next runner process"), "{log}");
    assert_eq!(handle.state(), JobState::Running, "nothing was reported");
    let pod = pods.get(&job_pod).await.expect("the job's pod is still there");
    assert!(pod.metadata.deletion_timestamp.is_none(), "and not being deleted");
    let restarted = Instant::now();
    e2e.restart_runner();
    let state = handle.wait_finished(Duration::from_secs(60)).await;
    println!(
        "the runner exited {exited:?} after SIGUSR2; the job, resumed by the next process, finished {:?} after its start",
        restarted.elapsed()
    );
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(&handle, &trace);
    assert_eq!(state, JobState::Success, "{trace}\n{}", e2e.runner_log());
    let lines: Vec<&str> = trace.lines().filter(|l| l.starts_with("line ")).collect();
    let expected: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "{trace}");
    assert!(trace.contains("\nstarts: 1\n"), "the stage ran once: {trace}");
    assert_eq!(trace.matches("resumes it where GitLab's log of it ends").count(), 1, "{trace}");
    assert!(exited < Duration::from_secs(10), "at once, not after the job");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stdout)] // reason: the measured delay belongs in the test output
async fn a_job_whose_pod_was_deleted_while_its_runner_was_down_fails_at_once_saying_so() {
    let Some(mut e2e) = E2e::start("").await else { return };
    let handle = e2e.mock.enqueue(&no_git().script(&["echo started; sleep 300"]));
    assert!(handle.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    let (pods, job_pod) = e2e.the_pod().await;
    e2e.runner.kill();
    e2e.runner.wait(Duration::from_secs(10)).await.expect("killed");
    pods.delete(&job_pod, &kube::api::DeleteParams::default().grace_period(0))
        .await
        .expect("delete the job's pod");
    let deadline = Instant::now() + Duration::from_secs(20);
    while pods.get_opt(&job_pod).await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "the pod is deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restarted = Instant::now();
    e2e.restart_runner();
    let state = handle.wait_finished(Duration::from_secs(60)).await;
    println!(
        "the job was reported failed {:?} after the runner started again",
        restarted.elapsed()
    );
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(&handle, &trace);
    assert_eq!(state, JobState::Failed, "{trace}\n{}", e2e.runner_log());
    assert!(restarted.elapsed() < Duration::from_secs(30), "at once, not at GitLab's timeout");
    let update = handle.final_update().expect("a final update");
    assert_eq!(update.failure_reason.as_deref(), Some("runner_system_failure"));
    let gone = format!(
        "ERROR: Job failed (system failure): the job's pod {}/{job_pod} is gone: it was deleted while no runner process watched it (the process that ran the job ended), so the job cannot go on",
        e2e.namespace
    );
    assert!(trace.contains(&gone), "{trace}");
    assert!(trace.contains("\nstarted\n"), "the earlier log is kept: {trace}");
    assert_eq!(trace.matches("section_start:").count(), trace.matches("section_end:").count());
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

/// A namespace as `namespace_per_job` makes it: the runner label and the job-id annotation,
/// with a system id.
fn job_namespace(
    name: &str,
    short_token: &str,
    system_id: &str,
    job_id: u64,
) -> k8s_openapi::api::core::v1::Namespace {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                podrunner_executor_k8s::names::RUNNER_LABEL: short_token,
                podrunner_executor_k8s::names::SYSTEM_ID_LABEL: system_id,
            },
            "annotations": {podrunner_executor_k8s::names::JOB_ID_ANNOTATION: job_id.to_string()},
        },
    }))
    .expect("namespace")
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_per_job_runs_each_job_in_its_own_namespace_with_exactly_the_overlays_rbac() {
    use kube::api::PostParams;
    let Some(mut e2e) = E2e::start("namespace_per_job = true").await else { return };
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(e2e.client.clone());
    let short = podrunner_executor_k8s::names::short_token(e2e.mock.runner_token());
    let short = podrunner_executor_k8s::names::sanitize_label(&short);
    // The first job's namespace, as a create whose answer was lost left it: adopted. (Of
    // another system id, or the sweep at start would take it for a left one.)
    let id_file = e2e.config_path.with_file_name(".runner_system_id");
    let deadline = Instant::now() + Duration::from_secs(10);
    let system_id = loop {
        match std::fs::read_to_string(&id_file) {
            Ok(id) if !id.trim().is_empty() => break id,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("no system id file: {other:?}"),
        }
    };
    namespaces
        .create(
            &PostParams::default(),
            &job_namespace("ci-job-1001", &short, "s_000000000000", 1001),
        )
        .await
        .expect("the namespace of job 1001");
    let (first, trace) = e2e.run(no_git().script(&["echo first"])).await;
    assert_eq!(first.id(), 1001);
    assert_eq!(first.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert!(trace.contains("Using Kubernetes namespace: ci-job-1001\n"), "{trace}");
    let (second, trace) = e2e.run(no_git().script(&["echo second"])).await;
    assert_eq!(second.state(), JobState::Success, "{trace}\n{}", e2e.runner_log());
    assert!(trace.contains("Using Kubernetes namespace: ci-job-1002\n"), "{trace}");
    let log = e2e.runner_log();
    assert!(log.contains("adopting the namespace this job already created"), "{log}");
    assert!(log.contains("job namespace created"), "{log}");
    // A namespace this process left (its job is not running) goes at the next start.
    namespaces
        .create(&PostParams::default(), &job_namespace("ci-job-999", &short, system_id.trim(), 999))
        .await
        .expect("a left namespace");
    e2e.runner.terminate();
    e2e.runner.wait(Duration::from_secs(30)).await.expect("stops");
    e2e.restart_runner();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> = namespaces
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .filter_map(|n| n.metadata.name)
            .filter(|n| n.starts_with("ci-job-"))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left: {left:?}\n{}", e2e.runner_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    e2e.assert_no_pod_left().await;
    // What the overlay grants: the job rules everywhere and the namespaces'.
    let sent = sent_by_the_runner(&e2e);
    let mut grants = granted("role.yaml");
    grants.extend(granted("clusterrole.yaml"));
    grants.extend(granted_by("overlays/namespace-per-job/clusterrole-namespaces.yaml"));
    let missing: Vec<_> = sent.difference(&grants).collect();
    assert!(missing.is_empty(), "the runner sent requests the overlay does not grant: {missing:?}");
    let namespace_grants = granted_by("overlays/namespace-per-job/clusterrole-namespaces.yaml");
    let unused: Vec<_> = namespace_grants.difference(&sent).collect();
    assert!(unused.is_empty(), "the overlay grants namespace verbs never sent: {unused:?}");
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_left_job_that_cannot_be_resumed_is_cleaned_up_in_the_namespace_its_variables_chose() {
    use kube::api::PostParams;
    let Some(mut e2e) = E2e::start("namespace_overwrite_allowed = \"ci-.*\"").await else {
        return;
    };
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(e2e.client.clone());
    // A name of this test's own: the cluster is shared.
    let other_name = format!("ci-{}", e2e.namespace);
    let other = serde_json::from_value(serde_json::json!({"metadata": {"name": other_name}}));
    namespaces.create(&PostParams::default(), &other.expect("ns")).await.expect("namespace");
    let handle = e2e.mock.enqueue(
        &no_git()
            .variable("KUBERNETES_NAMESPACE_OVERWRITE", &other_name)
            .script(&["echo started; sleep 300"]),
    );
    assert!(handle.wait_trace_contains(b"started\n", JOB_WAIT).await, "{}", e2e.runner_log());
    let pods: Api<Pod> = Api::namespaced(e2e.client.clone(), &other_name);
    let job_pod = pods.list(&ListParams::default()).await.expect("list").items[0]
        .metadata
        .name
        .clone()
        .expect("name");
    e2e.runner.kill();
    e2e.runner.wait(Duration::from_secs(10)).await.expect("killed");
    // A checkpoint that cannot be read: the job cannot be resumed.
    let state_dir = e2e.config_path.with_file_name(".runner_jobs");
    let checkpoint = state_dir.join(format!("job-{}.checkpoint", handle.id()));
    std::fs::write(&checkpoint, "garbage").expect("spoil the checkpoint");
    e2e.restart_runner();
    assert_eq!(handle.wait_finished(Duration::from_secs(60)).await, JobState::Failed);
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(&handle, &trace);
    let said = format!(
        "could not resume the job ({}: no header line) and deleted pod {other_name}/{job_pod} of job {}",
        checkpoint.display(),
        handle.id()
    );
    assert!(trace.contains(&said), "{said}\n{trace}");
    let update = handle.final_update().expect("final update");
    assert_eq!(update.failure_reason.as_deref(), Some("runner_system_failure"));
    e2e.assert_no_pod_left().await;
    shared::delete_namespace(&e2e.client, &other_name).await;
    e2e.stop().await;
}

/// The entries of a zip the GitLab double received: name, unix mode, content (a symlink's
/// target).
fn zip_entries(bytes: &[u8]) -> Vec<(String, u32, String)> {
    use std::io::Read as _;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).expect("a zip");
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).expect("entry");
            let name = file.name().expect("name").into_owned();
            let mode = file.unix_mode().unwrap_or(0);
            let mut content = String::new();
            file.read_to_string(&mut content).expect("content");
            (name, mode, content)
        })
        .collect()
}

/// A job that makes the feature request's tree: a nested directory, a file with spaces in its
/// name, a file its artifacts exclude, a symlink, and a junit report.
fn job_with_artifacts(name: &str) -> MockJob {
    MockJob::new(name)
        .image("localhost/busybox:latest")
        .variable("GIT_STRATEGY", "none")
        .script(&[
            "mkdir -p out/nested/deep",
            "echo top > 'out/with space.txt'",
            "echo deep > out/nested/deep/file.txt",
            "echo skip > out/skip.log",
            "ln -s 'with space.txt' out/link",
            "echo '<testsuites><testsuite name=\"t\" tests=\"1\"/></testsuites>' > report.xml",
        ])
        .extra(
            "artifacts",
            serde_json::json!([
                {"name": "build-out", "paths": ["out/"], "exclude": ["out/*.log"], "when": "on_success",
                 "artifact_type": "archive", "artifact_format": "zip", "expire_in": "1 week"},
                {"name": "junit", "paths": ["report.xml"], "when": "always",
                 "artifact_type": "junit", "artifact_format": "gzip", "expire_in": "1 week"},
            ]),
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_of_one_job_reach_gitlab_and_the_next_job_reads_them_through_object_storage() {
    let Some(e2e) = E2e::start("").await else { return };
    let (a, trace) = e2e.run(job_with_artifacts("a")).await;
    assert_eq!(a.state(), JobState::Success, "{trace}");
    for needle in [
        "section_start:",
        "upload_artifacts_on_success",
        "Uploading artifacts for successful job",
        "Uploading artifacts...",
        "out/: found 6 matching artifact files and directories",
        "out/*.log: excluded 1 files",
        "report.xml: found 1 matching artifact files and directories",
        "Collected 2 files, 3 directories, 1 symbolic links",
        "Uploading artifacts as \"archive\" to coordinator... 201 Created",
        "Uploading artifacts as \"junit\" to coordinator... 201 Created",
        "Uploaded build-out.zip",
    ] {
        assert!(trace.contains(needle), "{needle:?} missing from the log:\n{trace}");
    }
    let stored = e2e.mock.artifacts();
    assert_eq!(stored.len(), 2, "{stored:?}");
    let archive = &stored[0];
    assert_eq!(
        (
            archive.file_name.as_str(),
            archive.artifact_type.as_str(),
            archive.artifact_format.as_str()
        ),
        ("build-out.zip", "archive", "zip")
    );
    assert_eq!(archive.expire_in.as_deref(), Some("1 week"));
    let entries = zip_entries(&archive.body);
    let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "out/",
            "out/link",
            "out/nested/",
            "out/nested/deep/",
            "out/nested/deep/file.txt",
            "out/with space.txt"
        ],
        "the excluded file is not in the archive"
    );
    let link = entries.iter().find(|(n, _, _)| n == "out/link").expect("link");
    assert_eq!(link.1 & 0o170_000, 0o120_000, "a symlink stays a symlink");
    assert_eq!(link.2, "with space.txt");
    let spaced = entries.iter().find(|(n, _, _)| n == "out/with space.txt").expect("file");
    assert_eq!(spaced.2, "top\n");
    let junit = &stored[1];
    assert_eq!(
        (junit.file_name.as_str(), junit.artifact_type.as_str(), junit.artifact_format.as_str()),
        ("junit.gz", "junit", "gzip")
    );
    let mut report = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&junit.body[..]), &mut report)
        .expect("gzip");
    assert!(report.contains("<testsuite name=\"t\""), "{report}");

    e2e.mock.redirect_artifact_downloads(true);
    let b = no_git().depends_on(a.id(), "a").script(&[
        "cat 'out/with space.txt'",
        "cat out/nested/deep/file.txt",
        "echo \"link -> $(readlink out/link)\"",
        "test ! -e out/skip.log && echo no-excluded-file",
    ]);
    let (b, trace) = e2e.run(b).await;
    assert_eq!(b.state(), JobState::Success, "{trace}");
    let host = format!("host={}", e2e.info.node_ip);
    for needle in [
        "Downloading artifacts",
        &format!("Downloading artifacts for a ({})...", a.id()),
        "Downloading artifacts from coordinator... ok",
        &host,
        "Extracted 2 files, 3 directories, 1 symbolic links",
        "top\n",
        "deep\n",
        "link -> with space.txt\n",
        "no-excluded-file\n",
    ] {
        assert!(trace.contains(needle), "{needle:?} missing from the log:\n{trace}");
    }
    let storage =
        e2e.mock.requests().into_iter().filter(|r| r.path.starts_with("/object-storage/"));
    assert!(storage.clone().count() >= 1);
    assert!(
        storage.into_iter().all(|r| r.job_token_header.is_none()),
        "no job token to object storage"
    );
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_413_fails_the_job_a_500_is_retried_and_an_expired_dependency_fails_before_the_script() {
    let Some(e2e) = E2e::start("").await else { return };
    e2e.mock.fail_next_artifact_uploads(&[500]);
    let (retried, trace) = e2e.run(job_with_artifacts("retried")).await;
    assert_eq!(retried.state(), JobState::Success, "{trace}");
    assert!(
        trace.contains("WARNING: Uploading artifacts as \"archive\" to coordinator... 500 Internal Server Error"),
        "{trace}"
    );
    assert!(trace.contains("(attempt 1 of 3; retrying in 1s)"), "{trace}");
    assert_eq!(e2e.mock.artifacts().len(), 2);

    e2e.mock.set_max_artifact_size(Some(100));
    let (large, trace) = e2e.run(job_with_artifacts("large")).await;
    assert_eq!(large.state(), JobState::Failed, "{trace}");
    assert!(
        trace.contains("ERROR: Uploading artifacts as \"archive\" to coordinator... 413 Request Entity Too Large"),
        "{trace}"
    );
    assert!(trace.contains("FATAL: too large archive"), "{trace}");
    assert!(trace.contains("maximum artifacts size"), "{trace}");
    let update = large.final_update().expect("final update");
    assert_eq!(update.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(update.exit_code, Some(1));
    e2e.mock.set_max_artifact_size(None);

    e2e.mock.expire_artifacts(retried.id());
    let dependent = no_git().depends_on(retried.id(), "retried").script(&["echo the-script-ran"]);
    let (dependent, trace) = e2e.run(dependent).await;
    assert_eq!(dependent.state(), JobState::Failed, "{trace}");
    assert!(
        trace.contains("ERROR: Downloading artifacts from coordinator... not found"),
        "{trace}"
    );
    assert!(trace.contains("FATAL: file does not exist"), "{trace}");
    assert!(!trace.contains("the-script-ran"), "the script does not run: {trace}");
    let update = dependent.final_update().expect("final update");
    assert_eq!(update.failure_reason.as_deref(), Some("script_failure"));
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_failure_artifacts_are_uploaded_only_from_a_failing_job() {
    let Some(e2e) = E2e::start("").await else { return };
    let artifacts = serde_json::json!([
        {"name": "failure-logs", "paths": ["logs/"], "when": "on_failure"},
        {"name": "success-out", "paths": ["logs/"], "when": "on_success"},
    ]);
    let passing = no_git()
        .script(&["mkdir logs", "echo fine > logs/run.log"])
        .extra("artifacts", artifacts.clone())
        .extra("cache", serde_json::json!([{"key": "logs", "paths": ["logs/"]}]));
    let (passing, trace) = e2e.run(passing).await;
    assert_eq!(passing.state(), JobState::Success, "{trace}");
    // Without [runners.cache] the cache would die with the pod: said once, nothing pretended.
    assert_eq!(trace.matches("no [runners.cache] is configured").count(), 1, "{trace}");
    assert!(!trace.contains("Created cache"), "{trace}");
    assert!(!trace.contains("upload_artifacts_on_failure"), "{trace}");
    let failing = no_git()
        .script(&["mkdir logs", "echo broken > logs/run.log", "exit 1"])
        .extra("artifacts", artifacts);
    let (failing, trace) = e2e.run(failing).await;
    assert_eq!(failing.state(), JobState::Failed, "{trace}");
    assert!(trace.contains("Uploading artifacts for failed job"), "{trace}");
    let stored = e2e.mock.artifacts();
    let names: Vec<(u64, &str)> = stored.iter().map(|a| (a.job_id, a.file_name.as_str())).collect();
    assert_eq!(names, [(passing.id(), "success-out.zip"), (failing.id(), "failure-logs.zip")]);
    let entries = zip_entries(&stored[1].body);
    assert!(entries.iter().any(|(n, _, c)| n == "logs/run.log" && c == "broken\n"), "{entries:?}");
    let update = failing.final_update().expect("final update");
    assert_eq!(update.exit_code, Some(1), "the script's failure, not the upload's");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::print_stdout)] // reason: a skipped test must say so in the test output
async fn a_cache_pushed_by_one_pod_is_pulled_by_key_in_the_next_and_by_a_fallback_key() {
    if let Some(reason) = podrunner_local_cluster::s3::missing() {
        assert!(!cluster::prerequisites_required(), "CI=true and the cache test {reason}");
        println!("SKIPPED: {reason}");
        return;
    }
    let s3 =
        podrunner_local_cluster::s3::S3Server::start("podrunner-cache").await.expect("moto starts");
    let Some(e2e) = E2e::start(&s3.cache_config("ci")).await else { return };
    let push = no_git()
        .script(&[
            "mkdir -p vendor/lib",
            "echo dependency-v1 > vendor/lib/dep.txt",
            "echo 'spaced out' > 'vendor/with space.txt'",
        ])
        .extra(
            "cache",
            serde_json::json!([{"key": "deps-1", "paths": ["vendor/"], "policy": "pull-push"}]),
        );
    let (push, trace) = e2e.run(push).await;
    assert_eq!(push.state(), JobState::Success, "{trace}");
    for needle in [
        "Restoring cache",
        "Checking cache for deps-1...",
        "deps-1: no cache archive in the s3 bucket \"podrunner-cache\"",
        "Saving cache for successful job",
        "Creating cache deps-1...",
        "vendor/: found 4 matching artifact files and directories",
        "Created cache",
    ] {
        assert!(trace.contains(needle), "{needle:?} missing from the log:\n{trace}");
    }
    let keys = s3.keys().expect("list the bucket");
    assert_eq!(keys, ["ci/runner/mock-runn/project/42/deps-1"], "named as upstream names it");

    let pull = no_git().script(&["cat vendor/lib/dep.txt", "cat 'vendor/with space.txt'"]).extra(
        "cache",
        serde_json::json!([{"key": "deps-1", "paths": ["vendor/"], "policy": "pull"}]),
    );
    let (pull, trace) = e2e.run(pull).await;
    assert_eq!(pull.state(), JobState::Success, "{trace}");
    for needle in ["Successfully extracted cache", "dependency-v1\n", "spaced out\n"] {
        assert!(trace.contains(needle), "{needle:?} missing from the log:\n{trace}");
    }
    assert!(!trace.contains("Creating cache"), "policy pull saves nothing: {trace}");

    let fallback = no_git().script(&["cat vendor/lib/dep.txt"]).extra(
        "cache",
        serde_json::json!([{"key": "deps-2", "paths": ["vendor/"], "policy": "pull", "fallback_keys": ["deps-1"]}]),
    );
    let (fallback, trace) = e2e.run(fallback).await;
    assert_eq!(fallback.state(), JobState::Success, "{trace}");
    for needle in [
        "Checking cache for deps-2...",
        "deps-2: no cache archive",
        "Checking cache for deps-1...",
        "Successfully extracted cache",
        "dependency-v1\n",
    ] {
        assert!(trace.contains(needle), "{needle:?} missing from the log:\n{trace}");
    }
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

/// Every `(verb, resource[/subresource])` the runner sent to the API server in the test's
/// namespaces (the audit log records an exec's websocket `GET` as `get`; the authorizer also
/// asks for `create`, which the RBAC rules grant).
fn pod_creates(e2e: &E2e, code: u16) -> usize {
    e2e.requests()
        .iter()
        .filter(|r| {
            r.verb == "create" && r.resource == "pods" && r.subresource.is_none() && r.code == code
        })
        .count()
}

fn sent_by_the_runner(e2e: &E2e) -> std::collections::BTreeSet<(String, String)> {
    let records = shared::audit_records(&e2e.info);
    verb_resource_pairs(
        records
            .iter()
            .filter(|r| r.user_agent.as_deref().is_some_and(|a| a.starts_with("podrunner/"))),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_runs_the_feature_requests_cases_and_prints_their_summary() {
    if shared_cluster().is_none() {
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

/// Creates `object` (JSON) through a dynamic API; a `409` (it exists, the same for every
/// test) is fine.
async fn apply(client: &kube::Client, namespace: Option<&str>, object: serde_json::Value) {
    use kube::api::{DynamicObject, PostParams};
    let object: DynamicObject = serde_json::from_value(object).expect("object");
    let types = object.types.clone().expect("apiVersion and kind");
    let (group, version) = match types.api_version.split_once('/') {
        Some((group, version)) => (group.to_owned(), version.to_owned()),
        None => (String::new(), types.api_version.clone()),
    };
    let resource = kube::api::ApiResource {
        group,
        version,
        api_version: types.api_version.clone(),
        plural: format!("{}s", types.kind.to_lowercase()),
        kind: types.kind.clone(),
    };
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("create {} {:?}: {e}", types.kind, object.metadata.name),
    }
}

/// A manifest of `deploy/base` as JSON.
fn deploy_manifest(file: &str) -> serde_json::Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base").join(file);
    serde_norway::from_str(&std::fs::read_to_string(&path).expect("read the manifest"))
        .expect("YAML")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runner_runs_in_the_cluster_as_the_deployments_pod_under_restricted_with_deploys_rbac()
{
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{DeleteParams, LogParams, Patch, PatchParams, PostParams};
    let Some(info) = shared_cluster() else { return };
    let client = info.client().await.expect("client");
    // The runner in a namespace that enforces `restricted`, its jobs in another one.
    let home = shared::test_namespace(&client, "runner").await;
    let jobs = shared::test_namespace(&client, "jobs").await;
    let enforce = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(client.clone())
        .patch(&home, &PatchParams::default(), &Patch::Merge(&enforce))
        .await
        .expect("label the runner's namespace");
    let dir = tempfile::Builder::new().prefix("e2e").tempdir_in("/tmp").expect("temp dir");
    let image = podrunner_local_cluster::node::build_runner_image(
        &dir.path().join("runner-image"),
        std::path::Path::new(env!("CARGO_BIN_EXE_runner")),
        "localhost/podrunner:test",
    )
    .expect("the runner image builds");
    podrunner_local_cluster::node::import_images_with(
        &info.binaries.runtime.join("ctr"),
        &info.containerd_socket,
        std::slice::from_ref(&image),
    )
    .await
    .expect("import the runner image");
    // deploy/base's RBAC, bound to the runner's ServiceAccount: the job rules in the jobs'
    // namespace, the node rules cluster-wide. The real authorizer enforces them.
    apply(
        &client,
        Some(&home),
        serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "podrunner"}}),
    )
    .await;
    apply(&client, None, deploy_manifest("role.yaml")).await;
    apply(&client, None, deploy_manifest("clusterrole.yaml")).await;
    let subject =
        serde_json::json!([{"kind": "ServiceAccount", "name": "podrunner", "namespace": home}]);
    let mut jobs_binding = deploy_manifest("rolebinding.yaml");
    jobs_binding["subjects"] = subject.clone();
    apply(&client, Some(&jobs), jobs_binding).await;
    let mut nodes_binding = deploy_manifest("clusterrolebinding.yaml");
    nodes_binding["metadata"]["name"] = format!("podrunner-nodes-{home}").into();
    nodes_binding["subjects"] = subject;
    apply(&client, None, nodes_binding).await;
    let mock = podrunner_coordinator_mock::MockCoordinator::start_on(info.node_ip).await;
    mock.set_update_interval_header(Some(1));
    let config = format!(
        "concurrent = 2\ncheck_interval = 1\n\
         [[runners]]\nname = \"in-cluster\"\nurl = \"{url}\"\ntoken = \"{token}\"\nexecutor = \"kubernetes\"\n\
         [runners.kubernetes]\nnamespace = \"{jobs}\"\nimage = \"localhost/busybox:latest\"\n\
         helper_image = \"localhost/helper:latest\"\npull_policy = \"if-not-present\"\n\
         cleanup_grace_period_seconds = 1\n",
        url = mock.url(),
        token = mock.runner_token(),
    );
    apply(
        &client,
        Some(&home),
        serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "podrunner-config"},
        "stringData": {"config.toml": config}}),
    )
    .await;
    // The Deployment's pod as deploy/base has it (the image imported, never pulled).
    let deployment = deploy_manifest("deployment.yaml");
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
    let pods: Api<Pod> = Api::namespaced(client.clone(), &home);
    let created =
        pods.create(&PostParams::default(), &serde_json::from_value(pod).expect("pod")).await;
    assert!(created.is_ok(), "restricted admits the Deployment's pod: {created:?}");
    let handle = mock.enqueue(&no_git().script(&["echo hello from the runner in the cluster"]));
    let state = handle.wait_finished(JOB_WAIT).await;
    let logs = pods.logs("podrunner", &LogParams::default()).await.unwrap_or_default();
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(&handle, &trace);
    assert_eq!(state, JobState::Success, "{trace}\nthe runner pod's log:\n{logs}");
    assert!(trace.contains("\nhello from the runner in the cluster\n"), "{trace}");
    // In-cluster config: the ServiceAccount's token and CA, the `kubernetes` Service (kube-proxy).
    assert!(
        logs.contains("connected to the cluster")
            && logs.contains("cluster.url=\"https://10.96.0.1"),
        "{logs}"
    );
    let sent = shared::runner_requests_in(&info, &jobs);
    assert!(!sent.is_empty(), "the runner pod talked to the API server");
    let refused: Vec<_> = sent.iter().filter(|r| r.code == 403).collect();
    assert!(refused.is_empty(), "deploy's RBAC refused the runner: {refused:#?}");
    pods.delete("podrunner", &DeleteParams::default().grace_period(0)).await.expect("delete");
    shared::delete_namespace(&client, &home).await;
    shared::delete_namespace(&client, &jobs).await;
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone())
        .delete(&format!("podrunner-nodes-{home}"), &DeleteParams::default())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_security_restricted_refuses_a_default_job_pod_and_the_job_fails_at_once_saying_why() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Patch, PatchParams};
    let Some(e2e) = E2e::start("poll_timeout = 60").await else { return };
    let enforce = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
    }}});
    Api::<Namespace>::all(e2e.client.clone())
        .patch(&e2e.namespace, &PatchParams::default(), &Patch::Merge(&enforce))
        .await
        .expect("label the namespace");
    let started = Instant::now();
    let (handle, trace) = e2e.run(no_git().script(&["echo never"])).await;
    assert_eq!(handle.state(), JobState::Failed, "{trace}");
    assert!(started.elapsed() < Duration::from_secs(20), "at once, not at poll_timeout: {trace}");
    // The real PodSecurity admission's answer, with the rules the pod breaks.
    for needle in [
        "violates PodSecurity \"restricted:latest\"",
        "allowPrivilegeEscalation != false",
        "runAsNonRoot != true",
        "seccompProfile",
    ] {
        assert!(trace.contains(needle), "{needle:?} missing from the log:\n{trace}");
    }
    assert!(!trace.contains("\nnever\n"), "{trace}");
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_no_node_can_take_fails_at_poll_timeout_with_the_schedulers_reason() {
    let Some(e2e) = E2e::start(
        "poll_timeout = 6\n[runners.kubernetes.node_selector]\n\"podrunner.test/pool\" = \"absent\"\n",
    )
    .await
    else {
        return;
    };
    let (handle, trace) = e2e.run(no_git().script(&["echo never"])).await;
    assert_eq!(handle.state(), JobState::Failed, "{trace}");
    assert!(trace.contains("timed out waiting for pod to start after 6s"), "{trace}");
    // The scheduler's own words, from the pod's PodScheduled condition.
    assert!(
        trace.contains(
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector"
        ),
        "{trace}"
    );
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_that_is_not_on_the_node_fails_as_image_pull_failure() {
    let Some(e2e) = E2e::start("").await else { return };
    let job = no_git()
        .image("localhost/not-imported:1.0")
        .script(&["echo never"])
        .failure_reasons(&["script_failure", "runner_system_failure", "image_pull_failure"]);
    let (handle, trace) = e2e.run(job).await;
    assert_eq!(handle.state(), JobState::Failed, "{trace}");
    let update = handle.final_update().expect("final update");
    assert_eq!(update.failure_reason.as_deref(), Some("image_pull_failure"), "{trace}");
    assert!(
        trace.contains("container \"build\": failed to pull image \"localhost/not-imported:1.0\" on node local-node"),
        "{trace}"
    );
    e2e.assert_no_pod_left().await;
    e2e.stop().await;
}
