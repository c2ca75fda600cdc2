//! Server-side printing: the `meta.k8s.io/v1` `Table` a client gets when it asks for
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (what `kubectl get` does). Pods get
//! kubectl's usual columns (name, ready, status, restarts, age), other kinds name and age.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Whether an `Accept` header asks for a `Table`.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    })
}

/// The `Table` for a list or a single object (`body` as the plain JSON response has it).
pub(crate) fn to_table(body: &Value, now: DateTime<Utc>) -> Value {
    let is_list = body["kind"].as_str().is_some_and(|k| k.ends_with("List"));
    let items: Vec<&Value> = if is_list {
        body["items"].as_array().map(|items| items.iter().collect()).unwrap_or_default()
    } else {
        vec![body]
    };
    let kind = if is_list {
        body["kind"].as_str().unwrap_or_default().trim_end_matches("List").to_owned()
    } else {
        body["kind"].as_str().unwrap_or_default().to_owned()
    };
    let pods = kind == "Pod";
    let events = kind == "Event";
    let column = |name: &str, type_: &str, description: &str| json!({"name": name, "type": type_, "format": if name == "Name" { "name" } else { "" }, "description": description, "priority": 0});
    let columns = if pods {
        vec![
            column("Name", "string", "Name of the object."),
            column("Ready", "string", "Ready containers of all containers."),
            column("Status", "string", "The pod's phase or the reason it is not running."),
            column("Restarts", "integer", "Container restarts."),
            column("Age", "string", "Time since creation."),
        ]
    } else if events {
        vec![
            column("Last Seen", "string", "Time since the event was last seen."),
            column("Type", "string", "Normal or Warning."),
            column("Reason", "string", "Why the event happened."),
            column("Object", "string", "The object the event is about."),
            column("Message", "string", "What happened."),
        ]
    } else {
        vec![
            column("Name", "string", "Name of the object."),
            column("Age", "string", "Time since creation."),
        ]
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let name = item["metadata"]["name"].clone();
            let created = age(&item["metadata"]["creationTimestamp"], now);
            let cells = if pods {
                let (ready, total, restarts) = readiness(item);
                json!([name, format!("{ready}/{total}"), pod_status(item), restarts, created])
            } else if events {
                let seen = ["lastTimestamp", "eventTime", "firstTimestamp"]
                    .iter()
                    .map(|field| &item[*field])
                    .find(|t| t.is_string())
                    .unwrap_or(&item["metadata"]["creationTimestamp"]);
                let involved = &item["involvedObject"];
                let object = format!(
                    "{}/{}",
                    involved["kind"].as_str().unwrap_or_default().to_ascii_lowercase(),
                    involved["name"].as_str().unwrap_or_default()
                );
                json!([age(seen, now), item["type"], item["reason"], object, item["message"]])
            } else {
                json!([name, created])
            };
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            })
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// Ready containers, all containers, restarts.
fn readiness(pod: &Value) -> (usize, usize, i64) {
    let total = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let ready = statuses.iter().filter(|s| s["ready"].as_bool() == Some(true)).count();
    let restarts = statuses.iter().filter_map(|s| s["restartCount"].as_i64()).sum();
    (ready, total, restarts)
}

/// The STATUS column as kubectl computes it: the phase, overridden by a container's waiting or
/// terminated reason, and `Terminating` once deletion started.
fn pod_status(pod: &Value) -> String {
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating".to_owned();
    }
    let mut reason = pod["status"]["reason"]
        .as_str()
        .or_else(|| pod["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .to_owned();
    for status in pod["status"]["containerStatuses"].as_array().into_iter().flatten() {
        let state = &status["state"];
        if let Some(waiting) = state["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
            reason = waiting.to_owned();
        } else if state["terminated"].is_object() {
            let terminated = &state["terminated"];
            reason = match (terminated["reason"].as_str(), terminated["signal"].as_i64()) {
                (Some(r), _) if !r.is_empty() => r.to_owned(),
                (_, Some(signal)) if signal != 0 => format!("Signal:{signal}"),
                _ => format!("ExitCode:{}", terminated["exitCode"].as_i64().unwrap_or_default()),
            };
        }
    }
    reason
}

/// A short age like kubectl prints it (`42s`, `3m12s`, `25m`, `7h`, `3d`).
fn age(created: &Value, now: DateTime<Utc>) -> String {
    let Some(created) = created.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return "<unknown>".to_owned();
    };
    let seconds = (now - created.with_timezone(&Utc)).num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z").expect("time").with_timezone(&Utc)
    }

    #[test]
    fn kubectl_accept_headers_ask_for_a_table() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json, */*"));
    }

    #[test]
    fn pod_rows_show_readiness_the_waiting_reason_and_age() {
        let list = json!({
            "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "12"},
            "items": [{
                "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:07:30Z"},
                "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                "status": {"phase": "Pending", "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                    {"name": "b", "ready": false, "restartCount": 0,
                     "state": {"waiting": {"reason": "CreateContainerError"}}},
                ]},
            }],
        });
        let table = to_table(&list, now());
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["metadata"]["resourceVersion"], "12");
        assert_eq!(
            table["rows"][0]["cells"],
            json!(["p", "1/2", "CreateContainerError", 0, "2m30s"])
        );
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "p");
    }

    #[test]
    fn terminated_and_deleted_pods_show_kubectl_reasons() {
        let pod = |state: Value, deleting: bool| {
            let mut pod = json!({
                "kind": "Pod", "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:09:58Z"},
                "spec": {"containers": [{"name": "a"}]},
                "status": {"phase": "Failed", "containerStatuses": [{"name": "a", "ready": false, "state": state}]},
            });
            if deleting {
                pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:10:00Z");
            }
            to_table(&pod, now())["rows"][0]["cells"].clone()
        };
        assert_eq!(
            pod(json!({"terminated": {"exitCode": 1, "reason": "Error"}}), false)[2],
            "Error"
        );
        assert_eq!(pod(json!({"terminated": {"exitCode": 2}}), false)[2], "ExitCode:2");
        assert_eq!(pod(json!({"running": {}}), true)[2], "Terminating");
        assert_eq!(pod(json!({"running": {}}), true)[4], "2s");
    }

    #[test]
    fn events_show_type_reason_object_and_message() {
        let event = json!({
            "kind": "Event", "metadata": {"name": "p.1", "creationTimestamp": "2026-01-01T00:09:00Z"},
            "lastTimestamp": "2026-01-01T00:09:50Z", "type": "Warning", "reason": "Failed",
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "Error: boom",
        });
        assert_eq!(
            to_table(&event, now())["rows"][0]["cells"],
            json!(["10s", "Warning", "Failed", "pod/p", "Error: boom"])
        );
    }

    #[test]
    fn other_kinds_get_name_and_age() {
        let ns = json!({"kind": "Namespace", "metadata": {"name": "default", "creationTimestamp": "2025-12-29T00:00:00Z"}});
        assert_eq!(to_table(&ns, now())["rows"][0]["cells"], json!(["default", "3d"]));
    }
}
