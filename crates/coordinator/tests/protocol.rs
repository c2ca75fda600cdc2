//! Protocol tests of the client and the job log against `podrunner-coordinator-mock`.

use std::time::{Duration, Instant};

use podrunner_coordinator::wire::StepName;
use podrunner_coordinator::{
    Checkpoint, Client, ClientConfig, Error, FailureReason, Job, JobLog, JobLogConfig, JobOutcome,
    LogOptions, Verification, VersionInfo, generate_system_id, trace_end,
};
use podrunner_coordinator_mock::{JobHandle, JobState, MockCoordinator, MockJob};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn client_with_token(mock: &MockCoordinator, token: &str) -> Client {
    let mut config = ClientConfig::new(
        mock.url(),
        SecretString::from(token),
        generate_system_id(),
        VersionInfo::podrunner("test-runner", "kubernetes"),
    );
    config.request_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(1);
    Client::new(config).expect("client builds")
}

fn client(mock: &MockCoordinator) -> Client {
    client_with_token(mock, mock.runner_token())
}

/// Small intervals so the suite stays fast.
fn fast_log() -> JobLogConfig {
    JobLogConfig {
        update_interval: Duration::from_millis(20),
        force_send_interval: Duration::from_secs(30),
        retry_min_delay: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(200),
        final_update_retry_limit: 20,
        ..JobLogConfig::default()
    }
}

async fn take_job(client: &Client) -> Box<Job> {
    let deadline = Instant::now() + WAIT;
    loop {
        let result = client.request_job(None).await.expect("job request succeeds");
        if let Some(job) = result.job {
            return job;
        }
        assert!(Instant::now() < deadline, "no job handed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn crc(data: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(data))
}

fn assert_contiguous(job: &JobHandle) {
    // Accepted patches, replayed in order, give exactly the stored trace.
    let mut replay: Vec<u8> = Vec::new();
    for p in job.patches().iter().filter(|p| p.status == 202) {
        if p.start == 0 {
            replay.clear();
        }
        assert_eq!(p.start, replay.len() as u64, "patch starts where the last one ended");
        replay.extend_from_slice(&p.body);
    }
    assert_eq!(replay, job.trace());
}

#[tokio::test]
async fn verify_reports_valid_and_invalid_tokens() {
    let mock = MockCoordinator::start().await;
    let valid = client(&mock).verify().await.expect("verify answers");
    assert!(matches!(valid, Verification::Valid { id: Some(7), .. }), "{valid:?}");
    let invalid = client_with_token(&mock, "glrt-wrong").verify().await.expect("verify answers");
    assert_eq!(invalid, Verification::Invalid);
    let req = &mock.requests()[0];
    assert_eq!(req.path, "/api/v4/runners/verify");
    assert_eq!(req.runner_token_header.as_deref(), Some(mock.runner_token()));
}

#[tokio::test]
async fn job_request_sends_info_headers_and_token_in_body() {
    let mock = MockCoordinator::start().await;
    let c = client(&mock);
    let none = c.request_job(None).await.expect("204 is not an error");
    assert!(none.job.is_none());
    let rec = &mock.job_requests()[0];
    assert_eq!(rec.token.as_deref(), Some(mock.runner_token()));
    assert!(rec.system_id.as_deref().is_some_and(|s| s.starts_with("s_") && s.len() == 14));
    assert_eq!(rec.info["executor"], "kubernetes");
    assert_eq!(rec.info["shell"], "bash");
    assert_eq!(rec.info["name"], "test-runner");
    assert_eq!(rec.info["features"]["cancel_gracefully"], true);
    assert_eq!(rec.info["features"]["image"], true);
    let http = &mock.requests()[0];
    assert!(http.user_agent.as_deref().is_some_and(|ua| ua.starts_with("gitlab-runner ")));
    let id = http.request_id.clone().unwrap_or_default();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "request id {id:?}");
    assert_eq!(http.runner_token_header.as_deref(), Some(mock.runner_token()));
}

#[tokio::test]
async fn invalid_runner_token_is_a_forbidden_error() {
    let mock = MockCoordinator::start().await;
    let err = client_with_token(&mock, "glrt-nope").request_job(None).await.expect_err("403");
    assert_eq!(err.kind(), "forbidden");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn long_polling_echoes_last_update_and_holds_until_a_job_arrives() {
    let mock = MockCoordinator::start().await;
    mock.set_long_poll(Duration::from_millis(400));
    let c = client(&mock);
    // First request carries no last_update: answered at once.
    let started = Instant::now();
    let first = c.request_job(None).await.expect("204");
    assert!(started.elapsed() < Duration::from_millis(300));
    let last_update = first.last_update.expect("X-GitLab-Last-Update is returned");
    // Echoing it makes the server hold the 204.
    let started = Instant::now();
    let second = c.request_job(Some(&last_update)).await.expect("204");
    assert!(second.job.is_none());
    assert!(started.elapsed() >= Duration::from_millis(350), "held {:?}", started.elapsed());
    assert_eq!(mock.job_requests()[1].last_update.as_deref(), Some(last_update.as_str()));
    // A job enqueued during the hold is returned before the hold ends.
    let c2 = c.clone();
    let lu = second.last_update.clone();
    let pending = tokio::spawn(async move { c2.request_job(lu.as_deref()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    mock.enqueue(&MockJob::new("held"));
    let got = pending.await.expect("task joins").expect("201");
    assert!(got.job.is_some());
    assert!(started.elapsed() < Duration::from_millis(350));
    assert_ne!(got.last_update.as_deref(), Some(last_update.as_str()));
}

#[tokio::test]
async fn job_payload_with_image_services_and_variables_is_decoded() {
    let mock = MockCoordinator::start().await;
    mock.enqueue(
        &MockJob::new("img")
            .image_json(serde_json::json!({"name": "alpine:3.20", "entrypoint": ["/bin/sh"],
                "pull_policy": ["if-not-present"], "executor_opts": {"kubernetes": {"user": "1000:1000"}}}))
            .service("postgres:16", "db")
            .masked_variable("SECRET", "s3cr3t-value")
            .file_variable("CONF", "a=b")
            .after_script(&["echo done"])
            .registry_credential("registry.example.com", "u", "p4ss"),
    );
    let job = take_job(&client(&mock)).await;
    let image = job.image.as_ref().expect("image");
    assert_eq!(image.name, "alpine:3.20");
    assert_eq!(image.entrypoint, ["/bin/sh"]);
    let user = image.executor_opts.kubernetes.as_ref().and_then(|k| k.user.as_deref());
    assert_eq!(user, Some("1000:1000"));
    assert_eq!(job.services[0].name, "postgres:16");
    assert_eq!(job.services[0].alias, "db");
    assert!(job.variable("SECRET").is_some_and(|v| v.masked));
    assert!(job.variable("CONF").is_some_and(|v| v.file));
    assert!(job.step(&StepName::AfterScript).is_some());
    assert_eq!(job.credentials[0].password.expose_secret(), "p4ss");
    assert_eq!(job.runner_info.timeout, Some(3600));
}

#[tokio::test]
async fn successful_job_trace_equals_printed_bytes_and_reports_checksum() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(&MockJob::new("ok"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    let w = log.writer();
    let mut printed = Vec::new();
    for i in 0..20 {
        let line = format!("line {i}\n");
        w.write(line.as_bytes());
        printed.extend_from_slice(line.as_bytes());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = log.finish(&JobOutcome::Success).await.expect("finish");
    assert_eq!(handle.state(), JobState::Success);
    assert_eq!(handle.trace(), printed);
    assert!(handle.patches().len() > 1, "sent incrementally");
    assert_contiguous(&handle);
    let fin = handle.final_update().expect("final update");
    assert_eq!(fin.state, "success");
    assert_eq!((fin.exit_code, fin.failure_reason.as_deref()), (None, None));
    assert_eq!(fin.checksum.as_deref(), Some(crc(&printed).as_str()));
    assert_eq!(fin.bytesize, Some(printed.len() as u64));
    assert_eq!(report.checksum, crc(&printed));
    assert_eq!(report.update_attempts, 1);
    let job_token = handle.token();
    assert!(
        mock.requests()
            .iter()
            .filter(|r| r.path.ends_with("/trace"))
            .all(|r| r.job_token_header.as_deref() == Some(job_token.as_str()))
    );
}

#[tokio::test]
async fn script_failure_reports_exit_code_and_failure_reason() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(&MockJob::new("fail"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    log.writer().writeln("exit 42");
    log.finish(&JobOutcome::ScriptFailure { exit_code: 42 }).await.expect("finish");
    assert_eq!(handle.state(), JobState::Failed);
    let fin = handle.final_update().expect("final update");
    assert_eq!(fin.state, "failed");
    assert_eq!(fin.exit_code, Some(42));
    assert_eq!(fin.failure_reason.as_deref(), Some("script_failure"));
}

#[tokio::test]
async fn system_failure_reason_is_mapped_against_gitlab_failure_reasons() {
    let mock = MockCoordinator::start().await;
    // The mock's default list lacks image_pull_failure: it maps to runner_system_failure.
    let handle = mock.enqueue(&MockJob::new("pull"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    log.finish(&JobOutcome::system(FailureReason::ImagePullFailure, "pull failed"))
        .await
        .expect("finish");
    let fin = handle.final_update().expect("final update");
    assert_eq!(fin.failure_reason.as_deref(), Some("runner_system_failure"));
    assert_eq!(fin.exit_code, None);
    // With the reason listed, it is sent as is.
    let handle = mock.enqueue(&MockJob::new("pull2").failure_reasons(&["image_pull_failure"]));
    let c = client(&mock);
    let job = take_job(&c).await;
    JobLog::start(c, &job, fast_log())
        .finish(&JobOutcome::system(FailureReason::ImagePullFailure, "pull failed"))
        .await
        .expect("finish");
    assert_eq!(
        handle.final_update().and_then(|u| u.failure_reason).as_deref(),
        Some("image_pull_failure")
    );
}

#[tokio::test]
async fn graceful_cancel_fires_requested_and_after_script_output_still_arrives() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(&MockJob::new("cancel-me").after_script(&["echo cleanup"]));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    let w = log.writer();
    let cancel = log.cancel();
    w.writeln("script running");
    assert!(handle.wait_trace_contains(b"script running", WAIT).await);
    handle.cancel_gracefully();
    // The executor watches the token; the next patch response carries `canceling`.
    let fired = tokio::time::timeout(WAIT, async {
        loop {
            w.write(b".");
            if cancel.is_requested() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(fired.is_ok(), "canceling was noticed");
    assert!(!cancel.is_aborted(), "canceling is not an abort");
    w.writeln("after_script output");
    log.finish(&JobOutcome::Canceled).await.expect("final update accepted while canceling");
    assert!(handle.trace().ends_with(b"after_script output\n"));
    assert_eq!(handle.state(), JobState::Canceled);
}

#[tokio::test]
async fn hard_cancel_aborts_the_job() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(&MockJob::new("abort-me"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    let cancel = log.cancel();
    log.writer().writeln("first");
    assert!(handle.wait_trace_contains(b"first", WAIT).await);
    handle.cancel();
    log.writer().writeln("second");
    let aborted = tokio::time::timeout(WAIT, cancel.aborted().cancelled()).await;
    assert!(aborted.is_ok(), "403 + canceled aborts");
    let err = log.finish(&JobOutcome::Canceled).await.expect_err("job is gone");
    assert!(matches!(err, Error::JobAborted { .. }), "{err:?}");
}

#[tokio::test]
async fn coordinator_down_and_back_loses_and_duplicates_no_log_bytes() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(&MockJob::new("flaky"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    let w = log.writer();
    let mut printed = Vec::new();
    for i in 0..60 {
        if i == 10 {
            mock.set_down(true);
        }
        if i == 30 {
            mock.set_down(false);
            mock.fail_next_requests(4, 502);
        }
        let line = format!("output {i} {}\n", "x".repeat(i));
        w.write(line.as_bytes());
        printed.extend_from_slice(line.as_bytes());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Down again while finishing: the drain and final update retry with backoff.
    mock.set_down(true);
    let finishing = tokio::spawn(log.finish(&JobOutcome::Success));
    tokio::time::sleep(Duration::from_millis(150)).await;
    mock.set_down(false);
    finishing.await.expect("task joins").expect("final update after the outage");
    assert_eq!(handle.trace(), printed, "final trace equals what the job printed");
    assert_contiguous(&handle);
    assert_eq!(handle.state(), JobState::Success);
    assert!(mock.requests().iter().any(|r| r.status == 502), "the 502s were served");
}

#[tokio::test]
async fn masked_values_split_across_writes_never_reach_the_coordinator() {
    let mock = MockCoordinator::start().await;
    let secret = "Sup3r-S3cret-Value";
    let handle = mock.enqueue(
        &MockJob::new("mask").masked_variable("PASSWORD", secret).token_mask_prefixes(&["glpat-"]),
    );
    let c = client(&mock);
    let job = take_job(&c).await;
    let job_token = job.token.expose_secret().to_owned();
    let log = JobLog::start(c, &job, fast_log());
    let w = log.writer();
    let mut expected = Vec::new();
    // The secret and the job token, split at every position, each half in its own write with a
    // pause so the halves go out in different patches when unmasked.
    for value in [secret, job_token.as_str()] {
        for split in 0..=value.len() {
            let (a, b) = value.split_at(split);
            w.write(format!("<{a}").as_bytes());
            tokio::time::sleep(Duration::from_millis(1)).await;
            w.write(format!("{b}>\n").as_bytes());
            expected.extend_from_slice(b"<[MASKED]>\n");
        }
    }
    w.write(b"token glpat-abcdef123 end\n");
    expected.extend_from_slice(b"token glpat-[MASKED] end\n");
    log.finish(&JobOutcome::Success).await.expect("finish");
    let trace = handle.trace();
    assert_eq!(String::from_utf8_lossy(&trace), String::from_utf8_lossy(&expected));
    for p in handle.patches() {
        for s in [secret, job_token.as_str(), "glpat-abcdef123"] {
            assert!(!p.body.windows(s.len()).any(|win| win == s.as_bytes()), "secret in a patch");
        }
    }
}

#[tokio::test]
async fn range_mismatch_resends_from_the_servers_offset() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(&MockJob::new("416"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    let w = log.writer();
    w.writeln("first chunk");
    assert!(handle.wait_trace_contains(b"first chunk", WAIT).await);
    handle.inject_patch_416(2);
    w.writeln("second chunk");
    w.writeln("third chunk");
    log.finish(&JobOutcome::Success).await.expect("finish");
    assert_eq!(handle.trace(), b"first chunk\nsecond chunk\nthird chunk\n");
    assert!(handle.patches().iter().filter(|p| p.status == 416).count() >= 2);
    assert_contiguous(&handle);
}

#[tokio::test]
async fn precondition_failed_on_final_update_resends_the_whole_trace() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(&MockJob::new("412"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    log.writer().writeln("all of it");
    handle.inject_update_412(1);
    let report = log.finish(&JobOutcome::Success).await.expect("finish");
    assert_eq!(report.trace_resets, 1);
    assert_eq!(report.update_attempts, 2);
    let patches: Vec<_> = handle.patches().into_iter().filter(|p| p.status == 202).collect();
    let last = patches.last().expect("patches");
    assert_eq!(
        (last.start, last.body.as_slice()),
        (0, b"all of it\n".as_slice()),
        "whole trace resent from 0"
    );
    assert_eq!(handle.trace(), b"all of it\n");
    assert_eq!(handle.state(), JobState::Success);
}

#[tokio::test]
async fn accepted_final_update_is_resent_until_done() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(&MockJob::new("202"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    handle.inject_update_202(2);
    let report = log.finish(&JobOutcome::Success).await.expect("finish");
    assert_eq!(report.update_attempts, 3);
    let statuses: Vec<u16> = handle.updates().iter().map(|u| u.status).collect();
    assert_eq!(statuses, [202, 202, 200]);
    assert_eq!(handle.state(), JobState::Success);
}

#[tokio::test]
async fn output_beyond_the_limit_is_cut_with_a_notice() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(&MockJob::new("big"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(
        c,
        &job,
        JobLogConfig { output_limit: 100, max_patch_size: 32, ..fast_log() },
    );
    for _ in 0..10 {
        log.writer().write(&[b'a'; 50]);
    }
    let report = log.finish(&JobOutcome::Success).await.expect("finish");
    assert!(report.truncated);
    let trace = handle.trace();
    assert_eq!(&trace[..100], [b'a'; 100].as_slice());
    assert!(String::from_utf8_lossy(&trace[100..]).contains("exceeded limit of 100 bytes"));
    assert!(handle.patches().iter().all(|p| p.body.len() <= 32), "patch size respected");
}

#[tokio::test]
async fn idle_job_is_touched_with_running_state() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(&MockJob::new("idle"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(
        c,
        &job,
        JobLogConfig { force_send_interval: Duration::from_millis(100), ..fast_log() },
    );
    log.writer().writeln("hello");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let touches: Vec<_> = handle.updates().into_iter().filter(|u| u.state == "running").collect();
    assert!(!touches.is_empty(), "touched while idle");
    assert_eq!(touches[0].checksum.as_deref(), Some(crc(b"hello\n").as_str()));
    log.finish(&JobOutcome::Success).await.expect("finish");
}

#[tokio::test]
async fn server_update_interval_header_slows_the_patch_loop() {
    let mock = MockCoordinator::start().await;
    mock.set_update_interval_header(Some(1));
    let handle = mock.enqueue(&MockJob::new("interval"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let log = JobLog::start(c, &job, fast_log());
    let w = log.writer();
    w.writeln("a");
    assert!(handle.wait_trace_contains(b"a\n", WAIT).await);
    // From now on the loop waits 1 s between patches instead of 20 ms.
    for _ in 0..10 {
        w.writeln("b");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(handle.patches().len() <= 2, "patches: {}", handle.patches().len());
    log.finish(&JobOutcome::Success).await.expect("finish");
}

/// Every checkpoint saved, with the length of GitLab's trace at the time.
type SavedCheckpoints = std::sync::Arc<std::sync::Mutex<Vec<(Checkpoint, usize)>>>;

/// A sink that keeps every checkpoint, with the trace GitLab had when it was saved.
fn collecting_sink(
    handle: &JobHandle,
) -> (podrunner_coordinator::CheckpointSink, SavedCheckpoints) {
    let saved = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (keep, handle) = (std::sync::Arc::clone(&saved), handle.clone());
    let sink: podrunner_coordinator::CheckpointSink = std::sync::Arc::new(move |c: &Checkpoint| {
        keep.lock().expect("lock").push((c.clone(), handle.trace().len()));
        Ok(())
    });
    (sink, saved)
}

async fn wait_for_trace(handle: &JobHandle, want: &[u8]) {
    let deadline = Instant::now() + WAIT;
    while handle.trace() != want {
        assert!(
            Instant::now() < deadline,
            "trace {:?}, want {:?}",
            String::from_utf8_lossy(&handle.trace()),
            String::from_utf8_lossy(want)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_checkpointed_log_sends_nothing_past_its_newest_saved_mark() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(&MockJob::new("marks").masked_variable("SECRET", "s3cr3tvalue"));
    let c = client(&mock);
    let job = take_job(&c).await;
    let (sink, saved) = collecting_sink(&handle);
    let options = LogOptions { checkpoints: Some(sink), resume: None };
    let log = JobLog::start_journaled(c, &job, fast_log(), options);
    let w = log.writer();
    w.writeln("unmarked");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(handle.trace().is_empty(), "bytes after the newest mark are held back");
    w.mark(json!({"step": "one"}));
    wait_for_trace(&handle, b"unmarked\n").await;
    // Output ending in a possible start of the secret: the mark says how much is held back.
    w.write_marked(b"out s3cr", |held| json!({"offset": 8 - held}));
    wait_for_trace(&handle, b"unmarked\nout ").await;
    w.write_marked(b"3tvalue!\n", |held| json!({"offset": 17 - held}));
    wait_for_trace(&handle, b"unmarked\nout [MASKED]!\n").await;
    let saved = saved.lock().expect("lock").clone();
    let positions: Vec<_> = saved.iter().map(|(c, _)| c.position.clone()).collect();
    assert_eq!(positions, [json!({"step": "one"}), json!({"offset": 4}), json!({"offset": 17})]);
    for (checkpoint, gitlab_had) in &saved {
        // Each was saved before its bytes went out, and covers what GitLab had.
        assert_eq!(checkpoint.offset, *gitlab_had as u64, "{checkpoint:?}");
        assert_eq!(checkpoint.crc, crc32fast::hash(&handle.trace()[..*gitlab_had]));
        assert!(!String::from_utf8_lossy(&checkpoint.pending).contains("s3cr3t"));
    }
    assert_eq!(saved[1].0.pending, b"out ");
    log.finish(&JobOutcome::Success).await.expect("finish");
    let fin = handle.final_update().expect("final update");
    assert_eq!(fin.checksum.as_deref(), Some(crc(b"unmarked\nout [MASKED]!\n").as_str()));
}

#[tokio::test]
async fn a_log_resumed_from_a_checkpoint_continues_gitlabs_trace_and_its_checksum() {
    let mock = MockCoordinator::start().await;
    let handle = mock.enqueue(
        &MockJob::new("resume").token_mask_prefixes(&["glpat-"]).masked_variable("K", "kkkkkkkk"),
    );
    let c = client(&mock);
    let job = take_job(&c).await;
    let (sink, saved) = collecting_sink(&handle);
    let log = JobLog::start_journaled(
        c.clone(),
        &job,
        fast_log(),
        LogOptions { checkpoints: Some(sink), resume: None },
    );
    // Stopped inside a prefixed token: a resumed masker must keep dropping its bytes.
    log.writer().write_marked(b"one\ntoken glpat-abc", |held| json!({"offset": 19 - held}));
    wait_for_trace(&handle, b"one\ntoken glpat-[MASKED]").await;
    drop(log); // the process is killed: no final update
    let (checkpoint, _) = saved.lock().expect("lock").last().cloned().expect("a checkpoint");
    assert_eq!(checkpoint.position, json!({"offset": 19}));
    assert!(checkpoint.in_token);
    // The mark's bytes and one more that GitLab never got (an unsent tail of the checkpoint).
    let mut with_tail = checkpoint.clone();
    with_tail.pending.extend_from_slice(b" tail\n");
    let credentials = podrunner_coordinator::JobCredentials::from(&*job);
    let end = trace_end(&c, &credentials).await.expect("trace end");
    assert_eq!(end, 24);
    let stale = with_tail.resume_at(end + 100).expect_err("past the checkpoint");
    assert_eq!((stale.gitlab, stale.from, stale.to), (124, 0, 30));
    let resume = with_tail.resume_at(end).expect("resume");
    assert_eq!(resume.pending, b" tail\n");
    assert_eq!(resume.position, json!({"offset": 19}));
    let options = LogOptions { checkpoints: None, resume: Some(resume) };
    let log = JobLog::start_journaled(c, &job, fast_log(), options);
    log.writer().write(b"def more kkkkkkkk\n");
    log.finish(&JobOutcome::Success).await.expect("finish");
    let whole = b"one\ntoken glpat-[MASKED] tail\n more [MASKED]\n";
    assert_eq!(handle.trace(), whole, "{:?}", String::from_utf8_lossy(&handle.trace()));
    assert_contiguous(&handle);
    let fin = handle.final_update().expect("final update");
    assert_eq!(fin.checksum.as_deref(), Some(crc(whole).as_str()));
    assert_eq!(fin.bytesize, Some(whole.len() as u64));
}
