//! What a pod's status means for its job: still starting, ready to run stages, or failed with a
//! reason GitLab understands and a message a user can act on. Pure: a function of the pod.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use podrunner_coordinator::FailureReason;

/// Where a job's pod stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodProgress {
    /// Not running yet; `note` is a one-line description of why (shown once per change).
    Starting {
        /// The phase and the first reason found (`Pending: ContainerCreating`).
        note: String,
    },
    /// Build, helper and every service container run: stages can start.
    Ready {
        /// The node the pod runs on.
        node: String,
    },
    /// The pod cannot run the job; nothing will change that.
    Failed(PodFailure),
}

/// Why a pod cannot run its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFailure {
    /// The reason reported to GitLab.
    pub reason: FailureReason,
    /// What happened, with the container, the runtime's words and what to do.
    pub message: String,
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "<unknown>".to_owned())
}

fn spec_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name)
}

/// The config key that sets a container's security context.
fn security_key(container: &str) -> &'static str {
    match container {
        "build" => "[runners.kubernetes.build_container_security_context]",
        "helper" => "[runners.kubernetes.helper_container_security_context]",
        "init-permissions" => "[runners.kubernetes.init_permissions_container_security_context]",
        _ => "[runners.kubernetes.service_container_security_context]",
    }
}

/// The failure a waiting container's reason means, if it is final.
fn waiting_failure(pod: &Pod, status: &ContainerStatus) -> Option<PodFailure> {
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref().unwrap_or_default();
    let said = waiting.message.as_deref().unwrap_or_default();
    let container = &status.name;
    let node = node_of(pod);
    let image = spec_container(pod, container).and_then(|c| c.image.clone()).unwrap_or_default();
    let failure = |reason, message: String| Some(PodFailure { reason, message });
    match reason {
        "CreateContainerError" if said.contains("seccomp") => {
            let profile = seccomp_profile_of(pod, container).unwrap_or_else(|| "?".to_owned());
            failure(
                FailureReason::RunnerConfigurationError,
                format!(
                    "container {container:?} cannot start on node {node}: the seccomp profile \
                     {profile:?} could not be loaded ({said}). Install the file as \
                     <kubelet root>/seccomp/{profile} (by default /var/lib/kubelet/seccomp/{profile}) \
                     on every node that runs jobs, or let the Security Profiles Operator install it, \
                     or change seccomp_profile_localhost_profile in {}",
                    security_key(container)
                ),
            )
        }
        "CreateContainerError" if said.contains("apparmor") => failure(
            FailureReason::RunnerConfigurationError,
            format!(
                "container {container:?} cannot start on node {node}: its AppArmor profile could \
                 not be applied ({said}). Load the profile on every node that runs jobs, or change \
                 app_armor_profile_type / app_armor_profile_localhost_profile in {}",
                security_key(container)
            ),
        ),
        "CreateContainerError" => failure(
            FailureReason::RunnerSystemFailure,
            format!("container {container:?} cannot be created on node {node}: {said}"),
        ),
        "CreateContainerConfigError" => {
            let hint = if said.contains("non-root") || said.contains("runAsNonRoot") {
                format!(
                    " The image {image:?} runs as root while the pod requires a non-root user: set \
                     run_as_user in {} (or in [runners.kubernetes.pod_security_context]) or use an \
                     image with a non-root USER",
                    security_key(container)
                )
            } else {
                String::new()
            };
            failure(
                FailureReason::RunnerConfigurationError,
                format!("container {container:?} is misconfigured on node {node}: {said}.{hint}"),
            )
        }
        "InvalidImageName" => failure(
            FailureReason::RunnerConfigurationError,
            format!("container {container:?}: the image name {image:?} is invalid: {said}"),
        ),
        "ErrImageNeverPull" => failure(
            FailureReason::ImagePullFailure,
            format!(
                "container {container:?}: the image {image:?} is not on node {node} and the pull \
                 policy is Never: {said}"
            ),
        ),
        "ImagePullBackOff" | "ErrImagePull" => failure(
            FailureReason::ImagePullFailure,
            format!(
                "container {container:?}: failed to pull image {image:?} on node {node}: {}",
                if said.is_empty() { reason } else { said }
            ),
        ),
        _ => None,
    }
}

fn seccomp_profile_of(pod: &Pod, container: &str) -> Option<String> {
    let from_container = spec_container(pod, container)
        .and_then(|c| c.security_context.as_ref())
        .and_then(|s| s.seccomp_profile.as_ref())
        .and_then(|p| p.localhost_profile.clone());
    from_container.or_else(|| {
        pod.spec
            .as_ref()?
            .security_context
            .as_ref()?
            .seccomp_profile
            .as_ref()?
            .localhost_profile
            .clone()
    })
}

fn terminated_failure(pod: &Pod, status: &ContainerStatus, init: bool) -> Option<PodFailure> {
    let terminated = status.state.as_ref()?.terminated.as_ref()?;
    if init && terminated.exit_code == 0 {
        return None;
    }
    let reason = terminated.reason.as_deref().unwrap_or("Error");
    let mut message = format!(
        "container {:?} ended before the job could run on node {}: exit code {}, reason {reason}",
        status.name,
        node_of(pod),
        terminated.exit_code
    );
    if let Some(said) = terminated.message.as_deref().filter(|m| !m.is_empty()) {
        message.push_str(": ");
        message.push_str(said);
    }
    Some(PodFailure { reason: FailureReason::RunnerSystemFailure, message })
}

/// Classifies a pod that is starting. `required` are the containers that must run (build,
/// helper and the services).
pub fn starting(pod: &Pod) -> PodProgress {
    let Some(status) = pod.status.as_ref() else {
        return PodProgress::Starting { note: "Pending".to_owned() };
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if pod.metadata.deletion_timestamp.is_some() {
        return PodProgress::Failed(PodFailure {
            reason: FailureReason::RunnerSystemFailure,
            message: format!("pod {} is being deleted before the job could run", name_of(pod)),
        });
    }
    let inits = status.init_container_statuses.iter().flatten();
    for s in inits {
        if let Some(f) = waiting_failure(pod, s).or_else(|| terminated_failure(pod, s, true)) {
            return PodProgress::Failed(f);
        }
    }
    let containers = status.container_statuses.iter().flatten();
    for s in containers.clone() {
        if let Some(f) = waiting_failure(pod, s).or_else(|| terminated_failure(pod, s, false)) {
            return PodProgress::Failed(f);
        }
    }
    if matches!(phase, "Failed" | "Succeeded") {
        let said = status.message.as_deref().or(status.reason.as_deref()).unwrap_or("no reason");
        return PodProgress::Failed(PodFailure {
            reason: FailureReason::RunnerSystemFailure,
            message: format!("pod {} is {phase} before the job could run: {said}", name_of(pod)),
        });
    }
    let expected = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let running = containers
        .clone()
        .filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
        .count();
    if phase == "Running" && expected > 0 && running == expected {
        return PodProgress::Ready { node: node_of(pod) };
    }
    let reason = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.status != "True")
        .find_map(|c| c.message.as_ref().or(c.reason.as_ref()).map(|m| format!("{}: {m}", c.type_)))
        .or_else(|| {
            containers.clone().find_map(|s| {
                s.state
                    .as_ref()?
                    .waiting
                    .as_ref()?
                    .reason
                    .clone()
                    .map(|r| format!("{}: {r}", s.name))
            })
        });
    let note = match reason {
        Some(r) => format!("{phase}: {r}"),
        None => phase.to_owned(),
    };
    PodProgress::Starting { note }
}

/// Why the job's pod can no longer run the job, seen through its watch: gone (`None`: deleted
/// and removed), or [`running_failure`].
pub fn stage_failure(pod: Option<&Pod>, namespace: &str, name: &str) -> Option<PodFailure> {
    match pod {
        None => Some(deleted(namespace, name)),
        Some(pod) => running_failure(pod),
    }
}

/// A node whose `Ready` condition is not `True` while the runner cannot reach the job's pod
/// through it (`unreachable`: the last exec error): the kubelet is gone (node-lifecycle
/// controller's `NodeStatusUnknown`) or the node is not ready.
pub fn node_lost(
    node: &k8s_openapi::api::core::v1::Node,
    pod: &str,
    unreachable: &str,
) -> Option<PodFailure> {
    let name = node.metadata.name.as_deref().unwrap_or("<unknown>");
    let ready = node
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "Ready")?;
    if ready.status == "True" {
        return None;
    }
    let since =
        ready.last_transition_time.as_ref().map(|t| format!(" since {}", t.0)).unwrap_or_default();
    let why = match (ready.reason.as_deref(), ready.message.as_deref()) {
        (Some(r), Some(m)) => format!(" ({r}: {m})"),
        (Some(r), None) => format!(" ({r})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    };
    Some(PodFailure {
        reason: FailureReason::RunnerSystemFailure,
        message: format!(
            "node {name} was lost while the job ran: its Ready condition is {}{since}{why} and the runner cannot reach pod {pod} there ({unreachable}); the pod is deleted, which completes once the node is back or removed",
            ready.status
        ),
    })
}

/// The pod is gone from the watch: deleted and removed.
pub fn deleted(namespace: &str, name: &str) -> PodFailure {
    PodFailure {
        reason: FailureReason::RunnerSystemFailure,
        message: format!("pod {namespace}/{name} was deleted while the job ran"),
    }
}

/// Why a running pod can no longer run the job (deleted, evicted, its build or helper container
/// gone), if so. A service container that ends does not end the job (its script may not need it
/// any more).
pub fn running_failure(pod: &Pod) -> Option<PodFailure> {
    if let Some(failure) = disruption(pod) {
        return Some(failure);
    }
    running_container_failure(pod)
}

/// Whether the pod was evicted, preempted or deleted: its job cannot run there, started or not.
pub fn disruption(pod: &Pod) -> Option<PodFailure> {
    // The more specific news first: an eviction or preemption marks the pod, then deletes it.
    if let Some(c) = pod
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    {
        return Some(PodFailure {
            reason: FailureReason::RunnerSystemFailure,
            message: format!(
                "pod {} was disrupted on node {} while the job ran ({}: {})",
                name_of(pod),
                node_of(pod),
                c.reason.as_deref().unwrap_or("no reason"),
                c.message.as_deref().unwrap_or("no message")
            ),
        });
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(PodFailure {
            reason: FailureReason::RunnerSystemFailure,
            message: format!("pod {} was deleted while the job ran", name_of(pod)),
        });
    }
    None
}

/// The build or helper container ended, or the pod reached a final phase.
fn running_container_failure(pod: &Pod) -> Option<PodFailure> {
    let status = pod.status.as_ref()?;
    for s in status
        .container_statuses
        .iter()
        .flatten()
        .filter(|s| s.name == "build" || s.name == "helper")
    {
        if let Some(t) = s.state.as_ref().and_then(|st| st.terminated.as_ref()) {
            let reason = t.reason.as_deref().unwrap_or("Error");
            return Some(PodFailure {
                reason: FailureReason::RunnerSystemFailure,
                message: format!(
                    "Error in container {}: exit code: {}, reason: '{reason}' (node {})",
                    s.name,
                    t.exit_code,
                    node_of(pod)
                ),
            });
        }
    }
    if matches!(status.phase.as_deref(), Some("Failed" | "Succeeded")) {
        return Some(PodFailure {
            reason: FailureReason::RunnerSystemFailure,
            message: format!(
                "pod {} ended while the job ran: {}",
                name_of(pod),
                status.message.as_deref().or(status.reason.as_deref()).unwrap_or("no reason")
            ),
        });
    }
    None
}

fn name_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        let mut pod = json!({
            "metadata": {"name": "p", "namespace": "ci"},
            "spec": {
                "nodeName": "node-1",
                "containers": [
                    {"name": "build", "image": "alpine", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/x.json"}}},
                    {"name": "helper", "image": "helper"}
                ]
            },
        });
        pod["status"] = status;
        serde_json::from_value(pod).expect("pod")
    }

    fn waiting(reason: &str, message: &str) -> serde_json::Value {
        json!({"waiting": {"reason": reason, "message": message}})
    }

    fn running() -> serde_json::Value {
        json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}})
    }

    fn statuses(build: serde_json::Value, helper: serde_json::Value) -> serde_json::Value {
        let mut list = json!([
            {"name": "build", "image": "alpine", "imageID": "", "ready": false, "restartCount": 0},
            {"name": "helper", "image": "helper", "imageID": "", "ready": false, "restartCount": 0}
        ]);
        list[0]["state"] = build;
        list[1]["state"] = helper;
        list
    }

    #[test]
    fn a_missing_seccomp_profile_fails_at_once_naming_container_profile_node_and_fix() {
        let p = pod(json!({"phase": "Pending", "containerStatuses": statuses(
            waiting("CreateContainerError", "failed to create containerd container: cannot load seccomp profile \"/var/lib/kubelet/seccomp/profiles/x.json\": open ...: no such file or directory"),
            running(),
        )}));
        let PodProgress::Failed(f) = starting(&p) else { panic!("not failed") };
        assert_eq!(f.reason, FailureReason::RunnerConfigurationError);
        for needle in [
            "\"build\"",
            "node-1",
            "profiles/x.json",
            "no such file or directory",
            "Security Profiles Operator",
            "build_container_security_context",
        ] {
            assert!(f.message.contains(needle), "{needle} missing from {}", f.message);
        }
    }

    #[test]
    fn running_containers_make_the_pod_ready_and_waiting_ones_a_note() {
        let p =
            pod(json!({"phase": "Running", "containerStatuses": statuses(running(), running())}));
        assert_eq!(starting(&p), PodProgress::Ready { node: "node-1".to_owned() });
        let p = pod(
            json!({"phase": "Pending", "containerStatuses": statuses(waiting("ContainerCreating", ""), running())}),
        );
        assert_eq!(
            starting(&p),
            PodProgress::Starting { note: "Pending: build: ContainerCreating".to_owned() }
        );
    }

    #[test]
    fn image_and_config_errors_are_classified_as_upstream_does() {
        let p = pod(
            json!({"phase": "Pending", "containerStatuses": statuses(waiting("ImagePullBackOff", "Back-off pulling image"), running())}),
        );
        let PodProgress::Failed(f) = starting(&p) else { panic!() };
        assert_eq!(f.reason, FailureReason::ImagePullFailure);
        let p = pod(
            json!({"phase": "Pending", "containerStatuses": statuses(waiting("CreateContainerConfigError", "container has runAsNonRoot and image will run as root"), running())}),
        );
        let PodProgress::Failed(f) = starting(&p) else { panic!() };
        assert_eq!(f.reason, FailureReason::RunnerConfigurationError);
        assert!(
            f.message.contains("\"alpine\"") && f.message.contains("run_as_user"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_deleted_or_evicted_pod_is_a_disruption_whether_it_runs_or_not() {
        let mut p = pod(json!({"phase": "Pending"}));
        assert_eq!(disruption(&p), None);
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let f = disruption(&p).expect("deleted");
        assert!(f.message.contains("was deleted while the job ran"), "{}", f.message);
        let p = pod(
            json!({"phase": "Pending", "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler", "message": "preempted"}]}),
        );
        let f = disruption(&p).expect("preempted");
        assert!(f.message.contains("(PreemptionByScheduler: preempted)"), "{}", f.message);
    }

    #[test]
    fn a_terminated_container_of_a_running_pod_is_a_system_failure() {
        let p = pod(json!({"phase": "Running", "containerStatuses": statuses(
            json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}), running())}));
        let f = running_failure(&p).expect("failure");
        assert_eq!(f.reason, FailureReason::RunnerSystemFailure);
        assert!(f.message.contains("OOMKilled") && f.message.contains("build"), "{}", f.message);
        let p =
            pod(json!({"phase": "Running", "containerStatuses": statuses(running(), running())}));
        assert_eq!(running_failure(&p), None);
    }
}
