//! The basic request / trace / update / cancel loop against crate `gitlab-runner-mock`, a
//! GitLab runner-API double written by others (it has no verify endpoint, image or services).

use std::time::{Duration, Instant};

use gitlab_runner_mock::{GitlabRunnerMock, MockJobState, MockJobStepName, MockJobStepWhen};
use podrunner_coordinator::{
    Client, ClientConfig, Job, JobLog, JobLogConfig, JobOutcome, VersionInfo, generate_system_id,
};
use secrecy::SecretString;

fn client(mock: &GitlabRunnerMock) -> Client {
    let mut config = ClientConfig::new(
        mock.uri().to_string(),
        SecretString::from(mock.runner_token()),
        generate_system_id(),
        VersionInfo::podrunner("glr-mock", "kubernetes"),
    );
    config.request_timeout = Duration::from_secs(5);
    Client::new(config).expect("client builds")
}

fn fast_log() -> JobLogConfig {
    JobLogConfig {
        update_interval: Duration::from_millis(20),
        retry_min_delay: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(100),
        ..JobLogConfig::default()
    }
}

async fn take_job(client: &Client) -> Box<Job> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(job) = client.request_job(None).await.expect("job request succeeds").job {
            return job;
        }
        assert!(Instant::now() < deadline, "no job handed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn start_mock() -> GitlabRunnerMock {
    let mock = GitlabRunnerMock::start().await;
    // 0 means "no server hint": the log keeps its own 20 ms interval.
    mock.set_update_interval(0);
    mock
}

#[tokio::test]
async fn successful_job_runs_through_the_gitlab_runner_mock() {
    let mock = start_mock().await;
    let mut builder = mock.job_builder("build".to_owned());
    builder.add_variable("MY_VAR".to_owned(), "value".to_owned(), true, false);
    builder.add_step(
        MockJobStepName::Script,
        vec!["make".to_owned()],
        3600,
        MockJobStepWhen::OnSuccess,
        false,
    );
    let mock_job = builder.build();
    mock.enqueue_job(mock_job.clone());

    let c = client(&mock);
    let job = take_job(&c).await;
    assert_eq!(job.id, mock_job.id());
    assert_eq!(job.variable("MY_VAR").map(|v| v.public), Some(true));
    let log = JobLog::start(c, &job, fast_log());
    let mut printed = Vec::new();
    for i in 0..10 {
        let line = format!("step {i}\n");
        log.writer().write(line.as_bytes());
        printed.extend_from_slice(line.as_bytes());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log.finish(&JobOutcome::Success).await.expect("finish");
    assert_eq!(mock_job.state(), MockJobState::Success);
    assert_eq!(mock_job.log(), printed);
    assert!(mock_job.log_patches() >= 2, "trace was sent incrementally");
}

#[tokio::test]
async fn failed_job_is_reported_failed_to_the_gitlab_runner_mock() {
    let mock = start_mock().await;
    let mock_job = mock.add_dummy_job("fails".to_owned());
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    log.writer().writeln("boom");
    log.finish(&JobOutcome::ScriptFailure { exit_code: 1 }).await.expect("finish");
    assert_eq!(mock_job.state(), MockJobState::Failed);
    assert_eq!(mock_job.log(), b"boom\n");
}

#[tokio::test]
async fn cancel_in_the_gitlab_runner_mock_aborts_the_job() {
    let mock = start_mock().await;
    let mock_job = mock.add_dummy_job("canceled".to_owned());
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    let cancel = log.cancel();
    log.writer().writeln("running");
    mock_job.cancel();
    log.writer().writeln("more");
    let aborted = tokio::time::timeout(Duration::from_secs(10), cancel.aborted().cancelled()).await;
    assert!(aborted.is_ok(), "403 with Job-Status canceled aborts the job");
    assert!(log.finish(&JobOutcome::Canceled).await.is_err(), "final update is refused");
    assert_eq!(mock_job.state(), MockJobState::Cancelled);
}

#[tokio::test]
async fn no_pending_job_gives_no_job() {
    let mock = start_mock().await;
    let result = client(&mock).request_job(None).await.expect("204");
    assert!(result.job.is_none());
    assert_eq!(mock.n_requests().await, 1);
}
