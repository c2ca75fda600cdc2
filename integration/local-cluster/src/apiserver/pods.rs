//! Pod specifics: defaults on create, graceful deletion, events, `pods/status`, `pods/log` and
//! the `pods/exec` / `pods/attach` websocket proxy to the runtime's streaming server.

use std::{path::PathBuf, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{HeaderValue, StatusCode},
    response::Response,
};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, Pod, Toleration};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncSeekExt},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest, protocol::Role},
};

use super::{
    State,
    handlers::{ApiResult, Query, json_response, now_rfc3339, tell_node_deleted},
    status::{ApiError, FieldError},
    store::{Kind, StoreError},
};
use crate::contract::{NodeError, StreamRequest};

/// How often a followed log file is polled for new data.
const LOG_POLL: Duration = Duration::from_millis(25);

/// Defaults the API server (and its default admission plugins) add to a new pod.
/// Where service-account credentials are mounted in every container.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ServiceAccount admission plugin's token mount: unless the pod opts out
/// (`automountServiceAccountToken: false`), a projected volume `kube-api-access-<suffix>` with
/// the token, the cluster's CA (`kube-root-ca.crt`) and the namespace, mounted read-only at
/// [`SERVICE_ACCOUNT_DIR`] in every container and init container that does not mount that
/// path itself. (A ServiceAccount's own `automountServiceAccountToken` is not looked at.)
pub(crate) fn mount_service_account_token(pod: &mut Pod) {
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, DownwardAPIProjection, DownwardAPIVolumeFile, KeyToPath,
        ObjectFieldSelector, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume,
        VolumeMount, VolumeProjection,
    };
    let suffix: String = pod
        .metadata
        .uid
        .as_deref()
        .unwrap_or("00000")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    let Some(spec) = pod.spec.as_mut() else { return };
    if spec.automount_service_account_token == Some(false) {
        return;
    }
    let name = format!("kube-api-access-{suffix}");
    let volume = Volume {
        name: name.clone(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        expiration_seconds: Some(3607),
                        path: "token".to_owned(),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_owned(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".to_owned(),
                            path: "ca.crt".to_owned(),
                            ..KeyToPath::default()
                        }]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".to_owned(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: Some("v1".to_owned()),
                                field_path: "metadata.namespace".to_owned(),
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut used = false;
    let containers = spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut());
    for container in containers {
        let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
        if mounts.iter().any(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_DIR) {
            continue;
        }
        mounts.push(VolumeMount {
            name: name.clone(),
            mount_path: SERVICE_ACCOUNT_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        used = true;
    }
    if used {
        spec.volumes.get_or_insert_with(Vec::new).push(volume);
    }
}

pub(crate) fn apply_defaults(pod: &mut Pod, node_name: &str) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_owned());
    spec.restart_policy.get_or_insert_with(|| "Always".to_owned());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".to_owned());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name.get_or_insert_with(|| "default-scheduler".to_owned());
    spec.security_context.get_or_insert_with(Default::default);
    let account = spec.service_account_name.get_or_insert_with(|| "default".to_owned()).clone();
    spec.service_account.get_or_insert(account);
    spec.enable_service_links.get_or_insert(true);
    spec.priority.get_or_insert(0);
    spec.preemption_policy.get_or_insert_with(|| "PreemptLowerPriority".to_owned());
    // The DefaultTolerationSeconds admission plugin.
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        if !tolerations.iter().any(|t| t.key.as_deref() == Some(key)) {
            tolerations.push(Toleration {
                key: Some(key.to_owned()),
                operator: Some("Exists".to_owned()),
                effect: Some("NoExecute".to_owned()),
                toleration_seconds: Some(300),
                value: None,
            });
        }
    }
    let containers = spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut());
    for container in containers {
        default_container(container);
    }
    let qos = qos_class(pod);
    let status = pod.status.get_or_insert_with(Default::default);
    status.phase = Some("Pending".to_owned());
    status.qos_class = Some(qos.to_owned());
    status.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
        type_: "PodScheduled".to_owned(),
        status: "True".to_owned(),
        last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        )),
        ..Default::default()
    }]);
}

fn default_container(container: &mut Container) {
    container.termination_message_path.get_or_insert_with(|| "/dev/termination-log".to_owned());
    container.termination_message_policy.get_or_insert_with(|| "File".to_owned());
    container.resources.get_or_insert_with(Default::default);
    if container.image_pull_policy.is_none() {
        let image = container.image.as_deref().unwrap_or_default();
        container.image_pull_policy = Some(default_pull_policy(image).to_owned());
    }
}

/// `Always` for `:latest` or an untagged image, `IfNotPresent` otherwise.
pub(crate) fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else { return "BestEffort" };
    let containers: Vec<&Container> =
        spec.init_containers.iter().flatten().chain(spec.containers.iter()).collect();
    let has = |c: &&Container| {
        c.resources.as_ref().is_some_and(|r| {
            r.requests.as_ref().is_some_and(|m| !m.is_empty())
                || r.limits.as_ref().is_some_and(|m| !m.is_empty())
        })
    };
    if !containers.iter().any(has) {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        c.resources.as_ref().is_some_and(|r| {
            let limits = r.limits.clone().unwrap_or_default();
            ["cpu", "memory"].iter().all(|k| limits.contains_key(*k))
                && r.requests
                    .as_ref()
                    .is_none_or(|req| req.iter().all(|(k, v)| limits.get(k) == Some(v)))
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

/// Pod updates may only change container images (and a few fields this cluster does not use).
pub(crate) fn check_spec_update(name: &str, current: &Value, next: &Value) -> Result<(), ApiError> {
    let strip = |spec: &Value| {
        let mut spec = spec.clone();
        for list in ["containers", "initContainers"] {
            if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
                for item in items {
                    if let Some(item) = item.as_object_mut() {
                        item.remove("image");
                    }
                }
            }
        }
        if let Some(spec) = spec.as_object_mut() {
            spec.remove("activeDeadlineSeconds");
            spec.remove("tolerations");
            spec.remove("terminationGracePeriodSeconds");
        }
        spec
    };
    if strip(current) == strip(next) {
        return Ok(());
    }
    Err(ApiError::invalid(
        Kind::Pod,
        name,
        &[FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        )],
    ))
}

/// `PUT pods/{name}/status`.
pub(crate) fn update_status(state: &State, namespace: &str, name: &str, body: &[u8]) -> ApiResult {
    let next: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let _: Pod = serde_json::from_value(next.clone()).map_err(|e| {
        ApiError::bad_request(format!("Pod in version \"v1\" cannot be handled as a Pod: {e}"))
    })?;
    let expected =
        next.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned);
    let status = next.get("status").cloned().unwrap_or(Value::Null);
    let result = state.store.update(Kind::Pod, namespace, name, expected.as_deref(), |pod| {
        pod["status"] = status;
        Ok::<(), ()>(())
    });
    match result {
        Ok(Ok(stored)) => Ok(json_response(StatusCode::OK, &stored, &[])),
        Ok(Err(())) => Err(ApiError::internal("status update failed")),
        Err(StoreError::Conflict) => Err(ApiError::conflict(Kind::Pod, name)),
        Err(_) => Err(ApiError::not_found(Kind::Pod, name)),
    }
}

/// Graceful pod deletion: sets `deletionTimestamp` and asks the node to stop the pod; the pod
/// disappears when the node calls `pod_terminated`. A zero grace period, or a pod in a terminal
/// phase, is removed at once (the node still cleans up).
pub(crate) fn delete(
    state: &State,
    namespace: &str,
    name: &str,
    grace: Option<i64>,
) -> ApiResult<Value> {
    let current = state
        .store
        .get(Kind::Pod, namespace, name)
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    if let Some(since) = current.pointer("/metadata/deletionTimestamp").and_then(Value::as_str) {
        return shorten_deletion(state, namespace, name, &current, since, grace);
    }
    let spec_grace = current
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let grace = grace.unwrap_or(spec_grace).max(0);
    let phase = current.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    let immediate = grace == 0 || matches!(phase, "Succeeded" | "Failed");
    if immediate {
        return remove_now(state, namespace, name);
    }
    mark_deleted(
        state,
        namespace,
        name,
        chrono::Utc::now() + chrono::Duration::seconds(grace),
        grace,
    )
}

/// Removes the pod from the store at once (a grace period of 0) and tells the node.
fn remove_now(state: &State, namespace: &str, name: &str) -> ApiResult<Value> {
    let removed = state
        .store
        .delete(Kind::Pod, namespace, name)
        .map_err(|_| ApiError::not_found(Kind::Pod, name))?;
    tell_node_deleted(state, &Arc::clone(&state.node), namespace, name, 0);
    Ok((*removed).clone())
}

/// Sets the pod's deletion timestamp and grace period and tells the node to stop it within the
/// grace period.
fn mark_deleted(
    state: &State,
    namespace: &str,
    name: &str,
    deadline: chrono::DateTime<chrono::Utc>,
    grace: i64,
) -> ApiResult<Value> {
    let result = state.store.update(Kind::Pod, namespace, name, None, |pod| {
        pod["metadata"]["deletionTimestamp"] =
            json!(deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        Ok::<(), ()>(())
    });
    let Ok(Ok(stored)) = result else { return Err(ApiError::not_found(Kind::Pod, name)) };
    tell_node_deleted(state, &Arc::clone(&state.node), namespace, name, grace);
    Ok((*stored).clone())
}

/// `POST pods/{name}/eviction` (policy/v1 `Eviction`), as kube-apiserver answers it without a
/// PodDisruptionBudget in the way: the pod gets the `DisruptionTarget` condition (reason
/// `EvictionByEvictionAPI`), then is deleted with the eviction's grace period (else its own); the
/// answer is a `201` `Status` of `Success`.
pub(crate) fn evict(state: &State, namespace: &str, name: &str, body: &[u8]) -> ApiResult {
    let eviction: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    // Like the API server, a body without apiVersion/kind is taken as the endpoint's own type.
    if eviction.get("kind").and_then(Value::as_str).is_some_and(|k| k != "Eviction") {
        return Err(ApiError::bad_request("the request body is not an Eviction"));
    }
    if eviction.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object: {name}"
        )));
    }
    let grace = eviction.pointer("/deleteOptions/gracePeriodSeconds").and_then(Value::as_i64);
    let now = now_rfc3339();
    let updated = state.store.update(Kind::Pod, namespace, name, None, |pod| {
        let condition = json!({
            "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting", "lastTransitionTime": now,
        });
        let conditions = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c.get("type").and_then(Value::as_str) != Some("DisruptionTarget"))
            .collect();
        conditions.push(condition);
        pod["status"]["conditions"] = Value::Array(conditions);
        Ok::<(), ()>(())
    });
    if !matches!(updated, Ok(Ok(_))) {
        return Err(ApiError::not_found(Kind::Pod, name));
    }
    delete(state, namespace, name, grace)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        &[],
    ))
}

/// A delete of a pod that is already terminating: as kube-apiserver, only a shorter grace period
/// changes anything. The deletion timestamp moves to the first request's time plus the new grace
/// (a grace of 0 removes the pod at once) and the node is told again, so it stops the containers
/// sooner.
fn shorten_deletion(
    state: &State,
    namespace: &str,
    name: &str,
    current: &Value,
    since: &str,
    grace: Option<i64>,
) -> ApiResult<Value> {
    let old_grace = current
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let Some(grace) = grace.map(|g| g.max(0)).filter(|g| *g < old_grace) else {
        return Ok(current.clone());
    };
    if grace == 0 {
        return remove_now(state, namespace, name);
    }
    let deadline = chrono::DateTime::parse_from_rfc3339(since)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now())
        - chrono::Duration::seconds(old_grace)
        + chrono::Duration::seconds(grace);
    mark_deleted(state, namespace, name, deadline, grace)
}

/// Records (or counts again) a kubelet event about a pod.
pub(crate) fn record_event(
    state: &State,
    namespace: &str,
    pod: &str,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let now = now_rfc3339();
    let (events, _) = state.store.list(Kind::Event, Some(namespace));
    let same = events.iter().find(|e| {
        e.pointer("/involvedObject/name").and_then(Value::as_str) == Some(pod)
            && e.get("reason").and_then(Value::as_str) == Some(reason)
            && e.get("message").and_then(Value::as_str) == Some(message)
    });
    if let Some(same) = same {
        let name =
            same.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let _ = state.store.update(Kind::Event, namespace, &name, None, |event| {
            let count = event.get("count").and_then(Value::as_i64).unwrap_or(1);
            event["count"] = json!(count + 1);
            event["lastTimestamp"] = json!(now);
            Ok::<(), ()>(())
        });
        return;
    }
    let uid = state
        .store
        .get(Kind::Pod, namespace, pod)
        .and_then(|p| p.pointer("/metadata/uid").cloned());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let node = &state.settings.node_name;
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{pod}.{suffix}"),
            "namespace": namespace,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": now,
        },
        "involvedObject": {"kind": "Pod", "namespace": namespace, "name": pod, "uid": uid, "apiVersion": "v1"},
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": "kubelet", "host": node},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": "kubelet",
        "reportingInstance": node,
    });
    let _ = state.store.create(Kind::Event, namespace, event);
}

/// Picks the container a log/exec/attach request means, as the API server does.
fn resolve_container(pod: &Value, name: &str, requested: Option<&str>) -> Result<String, ApiError> {
    let names = |list: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    let containers = names("containers");
    let init = names("initContainers");
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().chain(&init).any(|n| n == c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// The container's state in the pod status: (`waiting reason`, `terminated`).
fn container_state(pod: &Value, container: &str) -> (Option<String>, bool) {
    for list in ["containerStatuses", "initContainerStatuses"] {
        let statuses = pod.pointer(&format!("/status/{list}")).and_then(Value::as_array);
        for status in statuses.into_iter().flatten() {
            if status.get("name").and_then(Value::as_str) == Some(container) {
                let state = status.get("state");
                let waiting = state
                    .and_then(|s| s.pointer("/waiting/reason"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let terminated =
                    state.and_then(|s| s.get("terminated")).is_some_and(|t| !t.is_null());
                return (waiting, terminated);
            }
        }
    }
    (None, false)
}

/// Turns CRI log lines (`<time> <stream> <P|F> <text>`) into plain log output.
#[derive(Debug, Default)]
struct CriLogDecoder {
    timestamps: bool,
    pending: Vec<u8>,
}

impl CriLogDecoder {
    /// Feeds raw file bytes; returns the output of every complete line.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.decode_line(&line[..line.len() - 1], &mut out);
        }
        out
    }

    fn decode_line(&self, line: &[u8], out: &mut Vec<u8>) {
        let mut parts = line.splitn(4, |b| *b == b' ');
        let (Some(time), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            out.extend_from_slice(line);
            out.push(b'\n');
            return;
        };
        let text = parts.next().unwrap_or_default();
        if self.timestamps {
            out.extend_from_slice(time);
            out.push(b' ');
        }
        out.extend_from_slice(text);
        if tag != b"P" {
            out.push(b'\n');
        }
    }
}

/// Keeps the last `n` lines of decoded output.
fn tail_lines(output: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = output.strip_suffix(b"\n").unwrap_or(output);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &output[i + 1..];
            }
        }
    }
    output
}

/// `GET pods/{name}/log`.
pub(crate) async fn log(
    state: &Arc<State>,
    namespace: &str,
    name: &str,
    query: &Query,
) -> ApiResult {
    let pod = state
        .store
        .get(Kind::Pod, namespace, name)
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    let container = resolve_container(&pod, name, query.get("container"))?;
    let waiting = || {
        let (reason, _) = container_state(&pod, &container);
        ApiError::bad_request(format!(
            "container {container:?} in pod {name:?} is waiting to start: {}",
            reason.unwrap_or_else(|| "ContainerCreating".to_owned())
        ))
    };
    let path = state.node.container_log_path(namespace, name, &container).ok_or_else(waiting)?;
    let mut file = tokio::fs::File::open(&path).await.map_err(|_| waiting())?;
    let mut decoder =
        CriLogDecoder { timestamps: query.flag("timestamps"), ..CriLogDecoder::default() };
    let tail = query.get("tailLines").and_then(|t| t.parse::<usize>().ok());
    let limit = query.get("limitBytes").and_then(|t| t.parse::<usize>().ok());
    let mut existing = Vec::new();
    file.read_to_end(&mut existing).await.map_err(|e| {
        ApiError::internal(format!("failed to read log file {}: {e}", path.display()))
    })?;
    let mut first = decoder.feed(&existing);
    if let Some(n) = tail {
        first = tail_lines(&first, n).to_vec();
    }
    if !query.flag("follow") {
        if let Some(limit) = limit {
            first.truncate(limit);
        }
        let mut response = Response::new(Body::from(first));
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(response);
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let state = Arc::clone(state);
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    tokio::spawn(follow_log(state, namespace, name, container, path, file, decoder, first, tx));
    let mut response = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

#[allow(clippy::too_many_arguments)] // reason: the state of one follow loop, handed over once
async fn follow_log(
    state: Arc<State>,
    namespace: String,
    name: String,
    container: String,
    path: PathBuf,
    mut file: tokio::fs::File,
    mut decoder: CriLogDecoder,
    first: Vec<u8>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    if !first.is_empty() && tx.send(Ok(Bytes::from(first))).await.is_err() {
        return;
    }
    let mut buffer = vec![0u8; 64 * 1024];
    let mut finishing = false;
    loop {
        let read = match file.read(&mut buffer).await {
            Ok(n) => n,
            Err(error) => {
                tracing::debug!(%error, path = %path.display(), "log read failed");
                return;
            }
        };
        if read > 0 {
            let out = decoder.feed(&buffer[..read]);
            if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
            continue;
        }
        if finishing {
            return;
        }
        // The runtime may rotate or recreate the file (a restarted container): follow the path.
        if let Ok(meta) = tokio::fs::metadata(&path).await
            && let Ok(pos) = file.stream_position().await
            && meta.len() < pos
            && let Ok(reopened) = tokio::fs::File::open(&path).await
        {
            file = reopened;
            continue;
        }
        let terminated = match state.store.get(Kind::Pod, &namespace, &name) {
            None => true,
            Some(pod) => container_state(&pod, &container).1,
        };
        if terminated {
            // One more read after a short pause: the runtime's log writer may lag the exit.
            finishing = true;
            tokio::time::sleep(LOG_POLL).await;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(LOG_POLL) => {}
            () = tx.closed() => return,
        }
    }
}

fn is_websocket_upgrade(request: &Request) -> bool {
    let header = |name: http::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    header(http::header::UPGRADE).contains("websocket")
        && header(http::header::CONNECTION).contains("upgrade")
}

/// `pods/exec` and `pods/attach`: asks the node for a streaming URL and proxies the websocket
/// (channel protocols `v5.channel.k8s.io` and older) between the client and that URL, as the
/// kubelet proxies to the CRI streaming server.
pub(crate) async fn stream(
    state: &Arc<State>,
    namespace: &str,
    name: &str,
    attach: bool,
    query: &Query,
    mut request: Request,
) -> ApiResult {
    let pod = state
        .store
        .get(Kind::Pod, namespace, name)
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    let container = resolve_container(&pod, name, query.get("container"))?;
    let command = query.all("command");
    if !attach && command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let stream_request = StreamRequest {
        namespace: namespace.to_owned(),
        pod: name.to_owned(),
        container,
        command,
        stdin: query.flag("stdin"),
        stdout: query.flag("stdout"),
        stderr: query.flag("stderr"),
        tty: query.flag("tty"),
    };
    if !stream_request.stdin && !stream_request.stdout && !stream_request.stderr {
        return Err(ApiError::bad_request(
            "you must specify at least one of stdin, stdout, stderr",
        ));
    }
    if !is_websocket_upgrade(&request) {
        return Err(ApiError::bad_request(
            "Upgrade request required: this server speaks the websocket channel protocols (v5.channel.k8s.io and older), not SPDY",
        ));
    }
    let key = request
        .headers()
        .get(http::header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    let offered = request
        .headers()
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let url = state.node.stream_url(stream_request, attach).await.map_err(|e| match e {
        NodeError::NotRunning { .. } => ApiError::bad_request(e.to_string()),
        NodeError::Runtime { .. } | NodeError::Unreachable { .. } => {
            ApiError::internal(e.to_string())
        }
    })?;
    let mut link = state.node.link();
    let upstream_url = url.replacen("http://", "ws://", 1).replacen("https://", "wss://", 1);
    let mut upstream_request = upstream_url
        .as_str()
        .into_client_request()
        .map_err(|e| ApiError::internal(format!("invalid streaming url {url}: {e}")))?;
    // containerd's streaming server speaks up to v4. A client that offers v4 too gets v4 (it then
    // knows that stdin cannot be half-closed). A client that offers only v5 (kubectl 1.30+ over
    // websockets) gets v5 from this server, translated to v4 as the real API server translates
    // for kubelets; v5 only adds the CLOSE signal (channel 255), which v4 cannot carry.
    let offered: Vec<&str> = offered.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    let mut upstream_offer: Vec<&str> =
        offered.iter().copied().filter(|p| *p != V5_PROTOCOL).collect();
    let translate_v5 = upstream_offer.is_empty() && offered.contains(&V5_PROTOCOL);
    if translate_v5 {
        upstream_offer.push("v4.channel.k8s.io");
    }
    if !upstream_offer.is_empty()
        && let Ok(value) = HeaderValue::from_str(&upstream_offer.join(", "))
    {
        upstream_request.headers_mut().insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    let (upstream, upstream_response) = tokio_tungstenite::connect_async(upstream_request)
        .await
        .map_err(|e| ApiError::internal(format!("error dialing the streaming server: {e}")))?;
    let protocol = if translate_v5 {
        Some(HeaderValue::from_static(V5_PROTOCOL))
    } else {
        upstream_response.headers().get(http::header::SEC_WEBSOCKET_PROTOCOL).cloned()
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let client =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                // The stream runs through the kubelet: it ends when the node agent goes down.
                let node_down = async {
                    if link.wait_for(|up| !*up).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    () = proxy(client, upstream, translate_v5) => {}
                    () = node_down => tracing::debug!("the node went down: stream cut"),
                }
            }
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = tungstenite::handshake::derive_accept_key(&key);
    headers.insert(
        http::header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    if let Some(protocol) = protocol {
        headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    Ok(response)
}

/// The websocket channel protocol with the CLOSE signal (Kubernetes 1.29+).
const V5_PROTOCOL: &str = "v5.channel.k8s.io";

/// The v5 CLOSE signal: a binary message on channel 255 whose payload names the stream.
const V5_CLOSE_CHANNEL: u8 = 255;

/// Copies websocket messages both ways until either side closes. With `translate_v5` the client
/// speaks v5 and the upstream v4: the client's CLOSE signals are dropped (v4 cannot half-close
/// stdin, so a process waiting for the end of its stdin keeps waiting).
async fn proxy<A, B>(client: WebSocketStream<A>, upstream: WebSocketStream<B>, translate_v5: bool)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    let to_upstream = async {
        while let Some(Ok(message)) = client_rx.next().await {
            match message {
                Message::Close(frame) => {
                    let _ = upstream_tx.send(Message::Close(frame)).await;
                    break;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Binary(data)
                    if translate_v5 && data.first() == Some(&V5_CLOSE_CHANNEL) =>
                {
                    tracing::debug!(stream = ?data.get(1), "dropping a v5 close signal (upstream speaks v4)");
                }
                other => {
                    if upstream_tx.send(other).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let to_client = async {
        while let Some(Ok(message)) = upstream_rx.next().await {
            match message {
                Message::Close(frame) => {
                    let _ = client_tx.send(Message::Close(frame)).await;
                    break;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                other => {
                    if client_tx.send(other).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = client_tx.close().await;
    };
    // The stream ends when the process side (upstream) is done; client input alone does not end it.
    tokio::select! {
        () = to_client => {}
        () = async { to_upstream.await; std::future::pending::<()>().await } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines_become_plain_output_with_optional_timestamps() {
        let mut plain = CriLogDecoder::default();
        let input = b"2026-01-01T00:00:00.1Z stdout F hello\n2026-01-01T00:00:00.2Z stderr P par\n2026-01-01T00:00:00.3Z stderr F tial\n2026-01-01T00:00:00.4Z stdout F";
        assert_eq!(plain.feed(input), b"hello\npartial\n");
        assert_eq!(plain.feed(b" end\n"), b"end\n");
        let mut stamped = CriLogDecoder { timestamps: true, ..CriLogDecoder::default() };
        assert_eq!(
            stamped.feed(b"2026-01-01T00:00:00.1Z stdout F hi\n"),
            b"2026-01-01T00:00:00.1Z hi\n"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(tail_lines(b"a\n", 0), b"");
    }

    #[test]
    fn pull_policy_defaults_follow_the_tag() {
        assert_eq!(default_pull_policy("localhost/busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(default_pull_policy("localhost/busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }
}
