//! The node object and the part of kube-controller-manager's node lifecycle controller that
//! clients notice when a kubelet dies: a node whose heartbeat stops for longer than the node
//! monitor grace period (40 s by default, [`super::ApiServerSettings::node_monitor_grace`]) gets
//! every condition `Unknown` (`NodeStatusUnknown`, "Kubelet stopped posting node status."), the
//! `node.kubernetes.io/unreachable` taints, and each of its pods `Ready=False`. A heartbeat after
//! that makes it `Ready` again and removes the taints. A node that never sent a heartbeat (a
//! fake node in API tests) is never marked. Pods are not evicted (the taint manager's 300 s
//! toleration is not modelled).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::State;
use super::handlers::now_rfc3339;
use super::store::Kind;

/// The taint key of an unreachable node.
const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// How often the controller looks at the heartbeat.
const MONITOR_PERIOD: Duration = Duration::from_millis(250);

/// The node object of a fresh cluster: `Ready`, schedulable, with the kubelet's conditions.
pub(crate) fn bootstrap(state: &State) {
    let name = &state.settings.node_name;
    let now = now_rfc3339();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
        "status": {
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": format!("v{}", state.settings.version),
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "containerd://local",
            },
        },
    });
    let _ = state.store.create(Kind::Node, "", node);
}

fn ready_status(node: &Value) -> Option<&str> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
}

/// A heartbeat of `node`: remembered, and a node marked unknown is `Ready` again.
pub(crate) fn heartbeat(state: &State, node: &str) {
    *state.heartbeat.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some(Instant::now());
    let Some(current) = state.store.get(Kind::Node, "", node) else { return };
    if ready_status(&current) == Some("True") {
        return;
    }
    let now = now_rfc3339();
    let _ = state.store.update(Kind::Node, "", node, None, |object| {
        if let Some(conditions) = object["status"]["conditions"].as_array_mut() {
            for c in conditions {
                let ready = c["type"] == "Ready";
                c["status"] = json!(if ready { "True" } else { "False" });
                c["reason"] = json!(if ready { "KubeletReady" } else { "KubeletIsHealthy" });
                c["message"] = json!(if ready {
                    "kubelet is posting ready status"
                } else {
                    "kubelet is healthy"
                });
                c["lastHeartbeatTime"] = json!(now);
                c["lastTransitionTime"] = json!(now);
            }
        }
        if let Some(taints) = object["spec"]["taints"].as_array_mut() {
            taints.retain(|t| t["key"] != UNREACHABLE_TAINT);
        }
        Ok::<(), ()>(())
    });
    tracing::info!(k8s.node.name = node, "node ready again");
}

/// Runs the controller until the state is dropped.
pub(crate) async fn monitor(state: std::sync::Weak<State>) {
    let mut tick = tokio::time::interval(MONITOR_PERIOD);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let last = *state.heartbeat.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() > state.settings.node_monitor_grace) {
            mark_unknown(&state, &state.settings.node_name);
        }
    }
}

/// What the controller does to a node whose kubelet went silent (once).
fn mark_unknown(state: &State, node: &str) {
    let Some(current) = state.store.get(Kind::Node, "", node) else { return };
    if ready_status(&current) != Some("True") {
        return;
    }
    let now = now_rfc3339();
    let _ = state.store.update(Kind::Node, "", node, None, |object| {
        if let Some(conditions) = object["status"]["conditions"].as_array_mut() {
            for c in conditions {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(now);
            }
        }
        let taints = object["spec"]
            .as_object_mut()
            .map(|spec| spec.entry("taints").or_insert_with(|| json!([])));
        if let Some(Value::Array(taints)) = taints {
            for effect in ["NoSchedule", "NoExecute"] {
                taints.push(json!({"key": UNREACHABLE_TAINT, "effect": effect, "timeAdded": now}));
            }
        }
        Ok::<(), ()>(())
    });
    tracing::info!(k8s.node.name = node, "node stopped posting status: marked unknown");
    // MarkPodsNotReady: the Ready condition of each pod on the node becomes False.
    let (pods, _) = state.store.list(Kind::Pod, None);
    for pod in pods {
        if pod["spec"]["nodeName"] != node {
            continue;
        }
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let _ = state.store.update(Kind::Pod, &namespace, &name, None, |object| {
            if let Some(conditions) = object["status"]["conditions"].as_array_mut() {
                for c in conditions.iter_mut().filter(|c| c["type"] == "Ready") {
                    if c["status"] != "False" {
                        c["status"] = json!("False");
                        c["lastTransitionTime"] = json!(now);
                    }
                }
            }
            Ok::<(), ()>(())
        });
    }
}
