//! What the end-to-end files share: the job builders, the trace helpers and the RBAC reader.

use std::time::{Duration, Instant};

use podrunner_coordinator_mock::{JobHandle, JobState, MockJob};

/// How long a job may take in an end-to-end test.
pub(crate) const JOB_WAIT: Duration = Duration::from_secs(90);

/// Keeps a job's trace under `$E2E_TRACE_DIR` (to read what a user would see), when set.
pub(crate) fn save_trace(handle: &JobHandle, trace: &str) {
    if let Ok(dir) = std::env::var("E2E_TRACE_DIR") {
        let _ = std::fs::write(format!("{dir}/{}-{}.log", std::process::id(), handle.id()), trace);
    }
}

/// A job without sources, on the busybox image.
pub(crate) fn no_git() -> MockJob {
    MockJob::new("e2e").image("localhost/busybox:latest").variable("GIT_STRATEGY", "none")
}

/// The effective-security row of `container` in the job log.
pub(crate) fn security_row<'a>(trace: &'a str, container: &str) -> &'a str {
    trace
        .lines()
        .find(|l| l.split_whitespace().next() == Some(container))
        .unwrap_or_else(|| panic!("no security row for {container} in:\n{trace}"))
}

/// Waits for the job's end and returns how long it took from `since`.
pub(crate) async fn finished_within(handle: &JobHandle, since: Instant) -> Duration {
    let state = handle.wait_finished(JOB_WAIT).await;
    assert!(matches!(state, JobState::Failed | JobState::Success), "{state:?}");
    since.elapsed()
}

/// The end of every pod-fault test: the job failed within 10 s of `since` as a system failure
/// whose log says `expected`; prints the delay (`event` names the fault) and returns the trace.
#[allow(clippy::print_stdout)] // reason: the measured delay belongs in the test output
pub(crate) async fn assert_system_failure_soon(
    handle: &JobHandle,
    since: Instant,
    event: &str,
    expected: &str,
) -> String {
    let took = finished_within(handle, since).await;
    let trace = String::from_utf8_lossy(&handle.trace()).into_owned();
    save_trace(handle, &trace);
    println!("{event}: the job failed {took:?} later");
    assert!(took < Duration::from_secs(10), "took {took:?} after {event}\n{trace}");
    assert_eq!(handle.state(), JobState::Failed, "{trace}");
    let update = handle.final_update().expect("final update");
    assert_eq!(update.failure_reason.as_deref(), Some("runner_system_failure"), "{trace}");
    assert!(trace.contains(expected), "{trace}");
    trace
}

/// The `(verb, resource[/subresource])` pairs the rules of `deploy/base/<file>` grant.
pub(crate) fn granted(file: &str) -> std::collections::BTreeSet<(String, String)> {
    granted_by(&format!("base/{file}"))
}

/// The `(verb, resource[/subresource])` pairs the rules of `deploy/<file>` grant.
pub(crate) fn granted_by(file: &str) -> std::collections::BTreeSet<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(file);
    let text = std::fs::read_to_string(&path).expect("read the RBAC manifest");
    let role: serde_json::Value = serde_norway::from_str(&text).expect("YAML");
    let mut pairs = std::collections::BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert_eq!(rule["apiGroups"], serde_json::json!([""]), "core resources only: {rule}");
        for resource in rule["resources"].as_array().expect("resources") {
            for verb in rule["verbs"].as_array().expect("verbs") {
                let (verb, resource) =
                    (verb.as_str().expect("verb"), resource.as_str().expect("resource"));
                pairs.insert((verb.to_owned(), resource.to_owned()));
            }
        }
    }
    pairs
}

/// The `(verb, resource[/subresource])` pairs of resource requests (non-resource URLs left out),
/// as RBAC rules name them.
pub(crate) fn verb_resource_pairs<'a>(
    records: impl IntoIterator<Item = &'a podrunner_local_cluster::kubernetes::shared::RequestRecord>,
) -> std::collections::BTreeSet<(String, String)> {
    records
        .into_iter()
        .filter(|r| !r.resource.starts_with('/'))
        .map(|r| {
            let resource = match &r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource.clone(),
            };
            (r.verb.clone(), resource)
        })
        .collect()
}
