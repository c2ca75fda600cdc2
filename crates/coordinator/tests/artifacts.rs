//! The artifacts API against `podrunner-coordinator-mock`: multipart upload with GitLab's query,
//! upstream's retries and final answers, and downloads through a redirect to object storage
//! that never carries the job token.

use std::time::Duration;

use podrunner_coordinator::{
    ArtifactError, ArtifactUpload, Attempt, Client, ClientConfig, JobCredentials, VersionInfo,
    generate_system_id,
};
use podrunner_coordinator_mock::{MockCoordinator, MockJob};
use secrecy::SecretString;

fn client(mock: &MockCoordinator) -> Client {
    let mut config = ClientConfig::new(
        mock.url(),
        SecretString::from(mock.runner_token()),
        generate_system_id(),
        VersionInfo::podrunner("test-runner", "kubernetes"),
    );
    config.request_timeout = Duration::from_secs(5);
    Client::new(config).expect("client builds")
}

/// A running job (taken by a job request) and its credentials.
async fn running_job(mock: &MockCoordinator, client: &Client, job: &MockJob) -> JobCredentials {
    let handle = mock.enqueue(job);
    let taken = client.request_job(None).await.expect("request").job.expect("a job");
    assert_eq!(taken.id, handle.id());
    JobCredentials::from(&*taken)
}

fn archive_upload() -> ArtifactUpload {
    ArtifactUpload {
        file_name: "artifacts.zip".to_owned(),
        artifact_type: Some("archive".to_owned()),
        artifact_format: Some("zip".to_owned()),
        expire_in: Some("1 week".to_owned()),
    }
}

fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), bytes).expect("write");
    file
}

#[tokio::test]
async fn an_upload_arrives_as_gitlabs_multipart_with_type_format_and_expiry() {
    let mock = MockCoordinator::start().await;
    let client = client(&mock);
    let job = running_job(&mock, &client, &MockJob::new("a")).await;
    let file = file_with(b"PK fake zip bytes");
    let mut attempts = Vec::new();
    let answer = client
        .upload_artifact(&job, file.path(), &archive_upload(), Duration::from_secs(5), &mut |a| {
            attempts.push(a);
        })
        .await
        .expect("uploaded");
    assert_eq!(answer, "201 Created");
    assert_eq!(attempts.len(), 1);
    let stored = mock.artifacts();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].job_id, job.id);
    assert_eq!(stored[0].file_name, "artifacts.zip");
    assert_eq!(stored[0].artifact_type, "archive");
    assert_eq!(stored[0].artifact_format, "zip");
    assert_eq!(stored[0].expire_in.as_deref(), Some("1 week"));
    assert_eq!(&stored[0].body[..], b"PK fake zip bytes");
    let post =
        mock.requests().into_iter().find(|r| r.method == "POST" && r.path.ends_with("/artifacts"));
    assert!(post.is_some_and(|r| r.job_token_header.is_some()));
}

#[tokio::test]
async fn a_500_is_retried_and_a_413_ends_at_once_with_gitlabs_message() {
    let mock = MockCoordinator::start().await;
    let client = client(&mock);
    let job = running_job(&mock, &client, &MockJob::new("a")).await;
    let file = file_with(&[7u8; 4096]);
    mock.fail_next_artifact_uploads(&[500]);
    let mut attempts: Vec<Attempt> = Vec::new();
    client
        .upload_artifact(&job, file.path(), &archive_upload(), Duration::from_secs(5), &mut |a| {
            attempts.push(a);
        })
        .await
        .expect("the second attempt succeeds");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].status, Some(500));
    assert_eq!(attempts[0].message, "500 Internal Server Error");
    assert_eq!(attempts[0].retry_in, Some(Duration::from_secs(1)));
    assert_eq!((attempts[0].number, attempts[0].of), (1, 3));
    assert_eq!(attempts[1].status, Some(201));
    assert_eq!(mock.artifacts().len(), 1);

    mock.set_max_artifact_size(Some(1024));
    let mut attempts: Vec<Attempt> = Vec::new();
    let error = client
        .upload_artifact(&job, file.path(), &archive_upload(), Duration::from_secs(5), &mut |a| {
            attempts.push(a);
        })
        .await
        .expect_err("too large");
    assert!(
        matches!(&error, ArtifactError::TooLarge { message } if message == "413 Request Entity Too Large"),
        "{error}"
    );
    assert_eq!(attempts.len(), 1, "a 413 is not retried");
    assert_eq!(mock.artifact_upload_attempts(), 3);
}

#[tokio::test]
async fn a_download_follows_the_redirect_to_object_storage_without_the_job_token() {
    let mock = MockCoordinator::start().await;
    let client = client(&mock);
    let a = running_job(&mock, &client, &MockJob::new("a")).await;
    let file = file_with(b"the archive of a");
    client
        .upload_artifact(&a, file.path(), &archive_upload(), Duration::from_secs(5), &mut |_| {})
        .await
        .expect("uploaded");
    let b = running_job(&mock, &client, &MockJob::new("b").depends_on(a.id, "a")).await;
    let dependency = JobCredentials { id: a.id, token: b.token.clone() };
    mock.redirect_artifact_downloads(true);
    let dest = tempfile::NamedTempFile::new().expect("temp");
    let done = client
        .download_artifact(&dependency, dest.path(), Duration::from_secs(5), &mut |_| {})
        .await
        .expect("downloaded");
    assert_eq!(done.bytes, 16);
    assert_eq!(done.redirected_to.as_deref(), Some("127.0.0.1"));
    assert_eq!(std::fs::read(dest.path()).expect("read"), b"the archive of a");
    let storage = mock
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/object-storage/"))
        .expect("object storage was asked");
    assert_eq!(storage.status, 200);
    assert_eq!(storage.job_token_header, None, "the job token stays with GitLab");

    mock.expire_artifacts(a.id);
    let mut attempts = Vec::new();
    let error = client
        .download_artifact(&dependency, dest.path(), Duration::from_secs(5), &mut |x| {
            attempts.push(x);
        })
        .await
        .expect_err("expired");
    assert!(matches!(error, ArtifactError::NotFound { .. }), "{error}");
    assert_eq!(attempts.len(), 1, "a 404 is not retried");
}
