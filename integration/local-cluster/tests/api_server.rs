//! API-level tests of the local API server through a plain `kube::Client`, with a fake node
//! (no containers run; see `support::FakeNode`). They need neither root nor containerd.

mod support;

use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret, ServiceAccount};
use kube::{
    Api,
    api::{DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams},
};
use serde_json::json;
use support::{FAKE_INTERVAL_ANNOTATION, FAKE_TERMINATION_ANNOTATION, api_cluster};

fn pod_json(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "test"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "localhost/busybox:latest", "args": ["one", "two"]}]}
    })
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(pod_json(name)).expect("pod json")
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn raw(
    client: &kube::Client,
    method: &str,
    uri: &str,
    body: serde_json::Value,
) -> (u16, Vec<String>, serde_json::Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("request");
    let response = client.send(request).await.expect("send");
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, warnings, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

async fn wait_for_phase(pods: &Api<Pod>, name: &str, phase: &str) -> Pod {
    for _ in 0..200 {
        let pod = pods.get(name).await.expect("get pod");
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return pod;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pod {name} never reached {phase}");
}

#[tokio::test]
async fn openapi_v3_tells_clients_that_the_server_validates_fields() {
    let c = api_cluster(33).await;
    let (code, _, root) = raw(&c.client, "GET", "/openapi/v3", json!(null)).await;
    assert_eq!(code, 200);
    let url = root["paths"]["api/v1"]["serverRelativeURL"].as_str().expect("api/v1 url");
    let (code, _, doc) = raw(&c.client, "GET", url, json!(null)).await;
    assert_eq!(code, 200);
    let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert_eq!(patch["parameters"][0]["name"], "fieldValidation");
    assert_eq!(patch["parameters"][0]["in"], "query");
}

#[tokio::test]
async fn version_reports_the_configured_kubernetes_release() {
    let c = api_cluster(29).await;
    let info = c.client.apiserver_version().await.expect("version");
    assert_eq!(
        (info.major.as_str(), info.minor.as_str(), info.git_version.as_str()),
        ("1", "29", "v1.29.0")
    );
    let resources = c.client.list_core_api_resources("v1").await.expect("discovery");
    let names: Vec<&str> = resources.resources.iter().map(|r| r.name.as_str()).collect();
    for expected in [
        "pods",
        "pods/log",
        "pods/exec",
        "pods/attach",
        "secrets",
        "configmaps",
        "namespaces",
        "events",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
}

#[tokio::test]
async fn default_namespace_and_service_accounts_exist_and_new_namespaces_get_one() {
    let c = api_cluster(33).await;
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    assert!(namespaces.get("default").await.is_ok());
    let created = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "team-a", "labels": {"team": "a"}}}),
            )
            .expect("ns"),
        )
        .await
        .expect("create namespace");
    assert_eq!(created.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    let labelled = namespaces.list(&ListParams::default().labels("team=a")).await.expect("list");
    assert_eq!(labelled.items.len(), 1);
    let accounts: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "team-a");
    assert!(accounts.get("default").await.is_ok());
    // And the cluster's CA, as kube-controller-manager publishes it for in-cluster clients.
    let maps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "team-a");
    let ca = maps.get("kube-root-ca.crt").await.expect("kube-root-ca.crt");
    let pem = ca.data.expect("data")["ca.crt"].clone();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
}

#[tokio::test]
async fn pods_get_the_service_account_token_mount_unless_they_opt_out() {
    let c = api_cluster(33).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let created = pods.create(&PostParams::default(), &pod("with-token")).await.expect("create");
    let spec = created.spec.expect("spec");
    let volume = spec.volumes.iter().flatten().find(|v| v.name.starts_with("kube-api-access-"));
    let sources =
        volume.and_then(|v| v.projected.clone()).and_then(|p| p.sources).expect("projected");
    assert!(
        sources.iter().any(|s| s.service_account_token.as_ref().is_some_and(|t| t.path == "token"))
    );
    assert!(
        sources.iter().any(|s| s.config_map.as_ref().is_some_and(|m| m.name == "kube-root-ca.crt"))
    );
    let mount = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name.starts_with("kube-api-access-"));
    let mount = mount.expect("the container mounts it");
    assert_eq!(mount.mount_path, "/var/run/secrets/kubernetes.io/serviceaccount");
    assert_eq!(mount.read_only, Some(true));
    let mut opted_out = pod_json("without-token");
    opted_out["spec"]["automountServiceAccountToken"] = json!(false);
    let created = pods
        .create(&PostParams::default(), &serde_json::from_value(opted_out).expect("pod"))
        .await
        .expect("create");
    let spec = created.spec.expect("spec");
    assert!(spec.volumes.iter().flatten().all(|v| !v.name.starts_with("kube-api-access-")));
}

#[tokio::test]
async fn pod_create_applies_server_defaults_and_binds_to_the_node() {
    let c = api_cluster(33).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let created = pods.create(&PostParams::default(), &pod("defaults")).await.expect("create");
    let meta = &created.metadata;
    assert!(
        meta.uid.is_some() && meta.resource_version.is_some() && meta.creation_timestamp.is_some()
    );
    let spec = created.spec.expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some("local-node"));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    let container = &spec.containers[0];
    assert_eq!(container.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(container.termination_message_path.as_deref(), Some("/dev/termination-log"));
    let status = created.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.conditions.expect("conditions")[0].type_, "PodScheduled");
}

#[tokio::test]
async fn generate_name_creates_distinct_names() {
    let c = api_cluster(33).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let mut template = pod("");
    template.metadata.name = None;
    template.metadata.generate_name = Some("job-".to_owned());
    let a = pods.create(&PostParams::default(), &template).await.expect("a");
    let b = pods.create(&PostParams::default(), &template).await.expect("b");
    let (a, b) = (a.metadata.name.expect("name"), b.metadata.name.expect("name"));
    assert!(a.starts_with("job-") && a.len() == 9, "{a}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn errors_are_kubernetes_status_objects() {
    let c = api_cluster(33).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let missing = api_error(pods.get("nope").await);
    assert_eq!(
        (missing.code, missing.reason.as_str(), missing.message.as_str()),
        (404, "NotFound", "pods \"nope\" not found")
    );
    pods.create(&PostParams::default(), &pod("twice")).await.expect("create");
    let twice = api_error(pods.create(&PostParams::default(), &pod("twice")).await);
    assert_eq!(
        (twice.code, twice.reason.as_str(), twice.message.as_str()),
        (409, "AlreadyExists", "pods \"twice\" already exists")
    );
    let other_ns: Api<Pod> = Api::namespaced(c.client.clone(), "absent");
    let no_ns = api_error(other_ns.create(&PostParams::default(), &pod("x")).await);
    assert_eq!((no_ns.code, no_ns.message.as_str()), (404, "namespaces \"absent\" not found"));
}

#[tokio::test]
async fn invalid_pods_get_422_with_causes() {
    let c = api_cluster(33).await;
    let mut body = pod_json("bad");
    body["spec"]["containers"][0]["securityContext"] =
        json!({"seccompProfile": {"type": "Localhost"}});
    body["spec"]["containers"][0]["image"] = json!("");
    let (code, _, status) = raw(&c.client, "POST", "/api/v1/namespaces/default/pods", body).await;
    assert_eq!(code, 422);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["message"],
        "Pod \"bad\" is invalid: [spec.containers[0].image: Required value, spec.containers[0].securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost]"
    );
    let causes = status["details"]["causes"].as_array().expect("causes");
    assert_eq!(
        causes[1]["field"],
        "spec.containers[0].securityContext.seccompProfile.localhostProfile"
    );
    assert_eq!(causes[1]["reason"], "FieldValueRequired");
}

#[tokio::test]
async fn a_1_29_cluster_drops_app_armor_profile_with_a_warning() {
    let c = api_cluster(29).await;
    let mut body = pod_json("apparmor");
    body["spec"]["containers"][0]["securityContext"] = json!({"appArmorProfile": {"type": "RuntimeDefault"}, "seccompProfile": {"type": "RuntimeDefault"}});
    let (code, warnings, stored) =
        raw(&c.client, "POST", "/api/v1/namespaces/default/pods", body.clone()).await;
    assert_eq!(code, 201);
    assert_eq!(
        warnings,
        vec![r#"299 - "unknown field \"spec.containers[0].securityContext.appArmorProfile\"""#]
    );
    let ctx = &stored["spec"]["containers"][0]["securityContext"];
    assert!(ctx.get("appArmorProfile").is_none(), "{ctx}");
    assert_eq!(ctx["seccompProfile"]["type"], "RuntimeDefault");

    // The same pod on a 1.33 cluster keeps the field and gets no warning.
    let newer = api_cluster(33).await;
    let (code, warnings, stored) =
        raw(&newer.client, "POST", "/api/v1/namespaces/default/pods", body).await;
    assert_eq!((code, warnings.len()), (201, 0));
    assert_eq!(
        stored["spec"]["containers"][0]["securityContext"]["appArmorProfile"]["type"],
        "RuntimeDefault"
    );
}

#[tokio::test]
async fn strict_field_validation_rejects_unknown_fields() {
    let c = api_cluster(29).await;
    let mut body = pod_json("strict");
    body["spec"]["containers"][0]["securityContext"] =
        json!({"appArmorProfile": {"type": "RuntimeDefault"}});
    let (code, _, status) = raw(
        &c.client,
        "POST",
        "/api/v1/namespaces/default/pods?fieldValidation=Strict",
        body.clone(),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        status["message"],
        r#"Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field "spec.containers[0].securityContext.appArmorProfile""#
    );
    let (code, warnings, _) =
        raw(&c.client, "POST", "/api/v1/namespaces/default/pods?fieldValidation=Ignore", body)
            .await;
    assert_eq!((code, warnings.len()), (201, 0));
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let c = api_cluster(33).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    pods.create(&PostParams::default(), &pod("a")).await.expect("a");
    let mut other = pod("b");
    other.metadata.labels = Some([("app".to_owned(), "other".to_owned())].into());
    pods.create(&PostParams::default(), &other).await.expect("b");
    let by_label = pods.list(&ListParams::default().labels("app=test")).await.expect("list");
    assert_eq!(
        by_label
            .items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["a"]
    );
    let by_field = pods.list(&ListParams::default().fields("metadata.name=b")).await.expect("list");
    assert_eq!(by_field.items.len(), 1);
    assert!(by_field.metadata.resource_version.is_some());
}

#[tokio::test]
async fn watch_from_a_resource_version_sees_later_changes_in_order() {
    let c = api_cluster(33).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let list = pods.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    pods.create(&PostParams::default(), &pod("watched")).await.expect("create");
    let stream = pods
        .watch(&WatchParams::default().fields("metadata.name=watched"), &rv)
        .await
        .expect("watch");
    let mut stream = stream.boxed();
    let mut phases = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("in time")
        .expect("event")
    {
        let phase = |p: Pod| p.status.and_then(|s| s.phase).unwrap_or_default();
        let seen = match event {
            WatchEvent::Added(p) => format!("ADDED {}", phase(p)),
            WatchEvent::Modified(p) => format!("MODIFIED {}", phase(p)),
            other => format!("{other:?}"),
        };
        phases.push(seen);
        if phases.last().is_some_and(|p| p.ends_with("Succeeded")) {
            break;
        }
    }
    assert_eq!(phases, ["ADDED Pending", "MODIFIED Running", "MODIFIED Succeeded"]);
}

#[tokio::test]
async fn graceful_delete_sets_deletion_timestamp_until_the_node_confirms() {
    let c = api_cluster(33).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    // Slow log lines keep the fake container running while it is deleted.
    let mut doomed = pod("doomed");
    doomed.metadata.annotations =
        Some([(FAKE_INTERVAL_ANNOTATION.to_owned(), "2000".to_owned())].into());
    pods.create(&PostParams::default(), &doomed).await.expect("create");
    wait_for_phase(&pods, "doomed", "Running").await;
    let rv = pods
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut stream = pods
        .watch(&WatchParams::default().fields("metadata.name=doomed"), &rv)
        .await
        .expect("watch")
        .boxed();
    let deleted = pods
        .delete(
            "doomed",
            &DeleteParams { grace_period_seconds: Some(7), ..DeleteParams::default() },
        )
        .await
        .expect("delete");
    let pod = deleted.left().expect("pods are returned, not a Status");
    assert!(pod.metadata.deletion_timestamp.is_some());
    assert_eq!(pod.metadata.deletion_grace_period_seconds, Some(7));
    let mut saw_deleted = false;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("in time")
        .expect("event")
    {
        if let WatchEvent::Deleted(_) = event {
            saw_deleted = true;
            break;
        }
    }
    assert!(saw_deleted);
    assert_eq!(api_error(pods.get("doomed").await).code, 404);
    assert_eq!(c.node.deletions(), [("default".to_owned(), "doomed".to_owned(), 7)]);
}

/// The Eviction API as `kubectl drain` uses it: a `DisruptionTarget` condition that survives the
/// node's status updates, then a graceful deletion; a body naming another pod is refused.
#[tokio::test]
async fn eviction_marks_the_pod_as_a_disruption_target_then_deletes_it() {
    let c = api_cluster(33).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let mut slow = pod("evicted");
    slow.metadata.annotations = Some(
        [
            (FAKE_INTERVAL_ANNOTATION.to_owned(), "2000".to_owned()),
            (FAKE_TERMINATION_ANNOTATION.to_owned(), "3000".to_owned()),
        ]
        .into(),
    );
    pods.create(&PostParams::default(), &slow).await.expect("create");
    wait_for_phase(&pods, "evicted", "Running").await;
    let (code, _, body) = raw(
        &c.client,
        "POST",
        "/api/v1/namespaces/default/pods/evicted/eviction",
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "other"}}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    pods.evict("evicted", &kube::api::EvictParams::default()).await.expect("evict");
    let pod = pods.get("evicted").await.expect("still terminating");
    assert!(pod.metadata.deletion_timestamp.is_some());
    let conditions = pod.status.and_then(|s| s.conditions).unwrap_or_default();
    let target = conditions.iter().find(|c| c.type_ == "DisruptionTarget").expect("condition");
    assert_eq!(
        (target.status.as_str(), target.reason.as_deref()),
        ("True", Some("EvictionByEvictionAPI"))
    );
    // The node reports a new status of its own: the eviction's condition stays.
    let mut status = pod_status_of(&pods, "evicted").await;
    status.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
        type_: "Ready".to_owned(),
        status: "False".to_owned(),
        ..Default::default()
    }]);
    c.cluster.cluster_view().set_pod_status("default", "evicted", status);
    let conditions = pod_status_of(&pods, "evicted").await.conditions.unwrap_or_default();
    let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        ["Ready", "PodScheduled", "DisruptionTarget"],
        "only the kubelet's own are replaced"
    );
}

async fn pod_status_of(pods: &Api<Pod>, name: &str) -> k8s_openapi::api::core::v1::PodStatus {
    pods.get(name).await.expect("pod").status.expect("status")
}

/// As kube-apiserver: deleting a terminating pod again only shortens its grace period (the
/// deletion timestamp moves back accordingly and the node is told), and a grace of 0 removes it.
#[tokio::test]
async fn deleting_a_terminating_pod_again_can_only_shorten_its_grace_period() {
    let c = api_cluster(33).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let mut slow = pod("slow");
    slow.metadata.annotations = Some(
        [
            (FAKE_INTERVAL_ANNOTATION.to_owned(), "2000".to_owned()),
            (FAKE_TERMINATION_ANNOTATION.to_owned(), "60000".to_owned()),
        ]
        .into(),
    );
    pods.create(&PostParams::default(), &slow).await.expect("create");
    wait_for_phase(&pods, "slow", "Running").await;
    let grace = |g| DeleteParams { grace_period_seconds: Some(g), ..DeleteParams::default() };
    let first = pods.delete("slow", &grace(30)).await.expect("delete").left().expect("pod");
    let at = first.metadata.deletion_timestamp.clone().expect("timestamp").0;
    let longer = pods.delete("slow", &grace(60)).await.expect("delete").left().expect("pod");
    assert_eq!(
        longer.metadata.deletion_grace_period_seconds,
        Some(30),
        "a longer grace is ignored"
    );
    assert_eq!(longer.metadata.deletion_timestamp.expect("timestamp").0, at);
    let shorter = pods.delete("slow", &grace(5)).await.expect("delete").left().expect("pod");
    assert_eq!(shorter.metadata.deletion_grace_period_seconds, Some(5));
    let moved = shorter.metadata.deletion_timestamp.expect("timestamp").0;
    assert_eq!(at.as_second() - moved.as_second(), 25, "{at} -> {moved}");
    pods.delete("slow", &grace(0)).await.expect("delete");
    assert_eq!(api_error(pods.get("slow").await).code, 404, "grace 0 removes the pod at once");
    let told: Vec<i64> = c.node.deletions().iter().map(|d| d.2).collect();
    assert_eq!(told, [30, 5, 0], "the node hears of every shortening");
}

#[tokio::test]
async fn logs_strip_the_cri_prefix_and_follow_sees_lines_as_they_are_written() {
    let c = api_cluster(33).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let mut slow = pod("slow");
    slow.metadata.annotations =
        Some([(FAKE_INTERVAL_ANNOTATION.to_owned(), "300".to_owned())].into());
    slow.spec.as_mut().expect("spec").containers[0].args =
        Some(vec!["first".into(), "second".into(), "third".into()]);
    pods.create(&PostParams::default(), &slow).await.expect("create");
    wait_for_phase(&pods, "slow", "Running").await;
    let started = std::time::Instant::now();
    let mut lines = pods
        .log_stream("slow", &LogParams { follow: true, ..LogParams::default() })
        .await
        .expect("follow")
        .lines();
    let mut seen = Vec::new();
    while let Some(line) = lines.try_next().await.expect("line") {
        seen.push((line, started.elapsed()));
    }
    let texts: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(texts, ["first", "second", "third"]);
    // The first line arrived well before the container finished writing.
    assert!(seen[2].1 - seen[0].1 >= Duration::from_millis(400), "{seen:?}");
    let all = pods
        .logs("slow", &LogParams { timestamps: true, ..LogParams::default() })
        .await
        .expect("logs");
    let stamped: Vec<(&str, &str)> = all.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(
        stamped.iter().map(|(_, text)| *text).collect::<Vec<_>>(),
        ["first", "second", "third"]
    );
    for (time, _) in stamped {
        assert!(time.parse::<k8s_openapi::jiff::Timestamp>().is_ok(), "{time}");
    }
    let tail = pods
        .logs("slow", &LogParams { tail_lines: Some(1), ..LogParams::default() })
        .await
        .expect("tail");
    assert_eq!(tail, "third\n");
}

#[tokio::test]
async fn secrets_and_config_maps_round_trip_with_updates() {
    let c = api_cluster(33).await;
    let secrets: Api<Secret> = Api::default_namespaced(c.client.clone());
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}}),
    )
    .expect("secret");
    let created = secrets.create(&PostParams::default(), &secret).await.expect("create");
    assert_eq!(created.data.expect("data")["token"].0, b"s3cr3t");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let maps: Api<ConfigMap> = Api::default_namespaced(c.client.clone());
    let map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "1"}}))
            .expect("cm");
    let mut stored = maps.create(&PostParams::default(), &map).await.expect("create");
    stored.data = Some([("a".to_owned(), "2".to_owned())].into());
    let updated = maps.replace("cfg", &PostParams::default(), &stored).await.expect("replace");
    assert_eq!(updated.data.expect("data")["a"], "2");
    // The old resourceVersion is now stale.
    let stale = api_error(maps.replace("cfg", &PostParams::default(), &stored).await);
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    let deleted = maps.delete("cfg", &DeleteParams::default()).await.expect("delete");
    assert!(deleted.is_right(), "config maps are deleted at once with a Status");
    assert_eq!(api_error(maps.get("cfg").await).code, 404);
}

#[tokio::test]
async fn node_events_are_listed_and_watched() {
    let c = api_cluster(33).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    pods.create(&PostParams::default(), &pod("eventful")).await.expect("create");
    let view = c.cluster.cluster_view();
    view.record_pod_event("default", "eventful", "Warning", "Failed", "Error: ErrImageNeverPull");
    view.record_pod_event("default", "eventful", "Warning", "Failed", "Error: ErrImageNeverPull");
    let events: Api<Event> = Api::default_namespaced(c.client.clone());
    let list = events
        .list(&ListParams::default().fields("involvedObject.name=eventful"))
        .await
        .expect("events");
    assert_eq!(list.items.len(), 1);
    let event = &list.items[0];
    assert_eq!(
        (event.reason.as_deref(), event.count, event.type_.as_deref()),
        (Some("Failed"), Some(2), Some("Warning"))
    );
    assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
}

/// `local-cluster` keeps its state under the cargo target directory, wherever that is.
#[test]
fn the_cli_keeps_its_state_in_cargo_target_dir() {
    let target = tempfile::tempdir().expect("temp dir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_local-cluster"))
        .arg("status")
        .env("CARGO_TARGET_DIR", target.path())
        .env_remove("LOCAL_CLUSTER_DIR")
        .output()
        .expect("local-cluster runs");
    assert_eq!(output.status.code(), Some(3), "status of a cluster that is not running");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected = target.path().join("local-cluster");
    assert!(stdout.contains(&expected.display().to_string()), "{stdout}");
}
