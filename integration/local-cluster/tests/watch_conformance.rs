//! The local API server's watches behave as kube-apiserver's where clients depend on it: a watch
//! from a resourceVersion older than the window gets `410 Gone` ("too old resource version") as an
//! `ERROR` event, `allowWatchBookmarks=true` brings `BOOKMARK` events that never run ahead of the
//! events sent, and `kube::runtime::watcher` relists after a 410 and goes on delivering events.
//! Driven with a plain client, with kube-runtime's watcher and, where installed, with kubectl.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api,
    api::{ListParams, PostParams, WatchEvent, WatchParams},
    runtime::watcher,
};
use serde_json::json;
use support::{ApiCluster, api_cluster_with};

const WINDOW: usize = 20;

async fn cluster(bookmark_interval: Duration) -> ApiCluster {
    api_cluster_with(33, |o| o.watch_window(WINDOW).bookmark_interval(bookmark_interval)).await
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"test": "watch"}}, "data": {"v": value}
    }))
    .expect("config map")
}

async fn namespace(client: &kube::Client, name: &str) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("ns");
}

/// `count` writes to one config map in `ns`: each one a change the server must remember.
async fn churn(client: &kube::Client, ns: &str, count: usize) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &config_map("churn", "0")).await.expect("create");
    for i in 1..count {
        api.replace("churn", &PostParams::default(), &{
            let mut cm = api.get("churn").await.expect("get");
            cm.data = Some([("v".to_owned(), i.to_string())].into());
            cm
        })
        .await
        .expect("replace");
    }
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_410_expired() {
    let c = cluster(Duration::from_secs(60)).await;
    namespace(&c.client, "a").await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), "a");
    let created = api.create(&PostParams::default(), &config_map("first", "x")).await.expect("cm");
    let old = created.metadata.resource_version.expect("rv");
    churn(&c.client, "a", WINDOW + 5).await;

    let mut stream = api.watch(&WatchParams::default(), &old).await.expect("watch").boxed();
    let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("in time")
        .expect("a watch event")
        .expect("one event");
    let WatchEvent::Error(status) = event else { panic!("expected an ERROR event, got {event:?}") };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"), "{status:?}");
    assert!(status.message.starts_with("too old resource version: "), "{}", status.message);

    // A resourceVersion inside the window still resumes: the changes after it, in order.
    let list = api.list(&ListParams::default()).await.expect("list");
    let recent = list.metadata.resource_version.expect("list rv");
    api.create(&PostParams::default(), &config_map("second", "y")).await.expect("cm");
    let mut stream = api.watch(&WatchParams::default(), &recent).await.expect("watch").boxed();
    let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("in time")
        .expect("event")
        .expect("one event");
    assert!(
        matches!(&event, WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("second")),
        "{event:?}"
    );
}

#[tokio::test]
async fn bookmarks_carry_the_progress_and_only_when_asked_for() {
    let c = cluster(Duration::from_millis(200)).await;
    namespace(&c.client, "a").await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), "a");
    let list = api.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    let params = WatchParams::default().timeout(2); // kube asks for bookmarks by default
    let mut stream = api.watch(&params, &rv).await.expect("watch").boxed();
    // A change elsewhere moves the bookmark on; a change here comes first as its own event.
    churn(&c.client, "default", 3).await;
    let created = api.create(&PostParams::default(), &config_map("here", "1")).await.expect("cm");
    let created_rv: u64 = created.metadata.resource_version.expect("rv").parse().expect("number");
    let mut seen_added = false;
    let mut bookmark_rv = None;
    while let Some(event) = stream.try_next().await.expect("event") {
        match event {
            WatchEvent::Added(cm) => {
                assert_eq!(cm.metadata.name.as_deref(), Some("here"));
                seen_added = true;
            }
            WatchEvent::Bookmark(b) => {
                assert!(seen_added, "a bookmark past the ADDED event came before it");
                bookmark_rv = Some(b.metadata.resource_version);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let bookmark_rv: u64 = bookmark_rv.expect("a bookmark within the watch").parse().expect("n");
    assert!(bookmark_rv >= created_rv, "bookmark {bookmark_rv} is behind the event {created_rv}");

    // Without allowWatchBookmarks the same watch has none.
    let quiet = WatchParams::default().timeout(1).disable_bookmarks();
    let events: Vec<_> = api
        .watch(&quiet, &created_rv.to_string())
        .await
        .expect("watch")
        .try_collect()
        .await
        .expect("events");
    assert!(events.is_empty(), "{events:?}");
}

/// What kube-runtime's watcher reports, as one word each.
fn describe(event: &watcher::Event<ConfigMap>) -> String {
    let name = |cm: &ConfigMap| cm.metadata.name.clone().unwrap_or_default();
    match event {
        watcher::Event::Init => "init".to_owned(),
        watcher::Event::InitApply(cm) => format!("init-apply {}", name(cm)),
        watcher::Event::InitDone => "init-done".to_owned(),
        watcher::Event::Apply(cm) => format!("apply {}", name(cm)),
        watcher::Event::Delete(cm) => format!("delete {}", name(cm)),
    }
}

/// Runs kube-runtime's watcher on namespace `a` (polled all along, as a controller does) while
/// more than `WINDOW` changes happen in namespace `b` during one short watch, then creates
/// `second` in `a`; returns what the watcher reported up to `second` (a watch error as
/// `error <code>`) and how many LISTs of `a` the server answered.
async fn watcher_across_churn(bookmark_interval: Duration) -> (Vec<String>, usize) {
    let c = cluster(bookmark_interval).await;
    namespace(&c.client, "a").await;
    namespace(&c.client, "b").await;
    let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), "a");
    api.create(&PostParams::default(), &config_map("first", "1")).await.expect("cm");
    // Short server-side watches, so the watcher reconnects from its last resourceVersion soon.
    // The test's own config maps (each namespace also has kube-root-ca.crt).
    let config = watcher::Config::default().timeout(1).labels("test=watch");
    let mut events = watcher(api.clone(), config).boxed();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let polling = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let seen = match &event {
                Ok(event) => describe(event),
                Err(watcher::Error::WatchError(status)) => format!("error {}", status.code),
                Err(other) => format!("error {other}"),
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut until = async |seen: &mut Vec<String>, last: &str| {
        while seen.last().map(String::as_str) != Some(last) {
            let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("the watcher reports {last:?} in time; saw {seen:?}"))
                .expect("the watcher goes on");
            seen.push(event);
        }
    };
    until(&mut seen, "init-done").await;
    // Let the watcher open its watch before the churn starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    churn(&c.client, "b", WINDOW + 10).await;
    // Past the watch's timeout: the watcher has reconnected (and relisted, where it had to).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.create(&PostParams::default(), &config_map("second", "2")).await.expect("cm");
    until(&mut seen, "apply second").await;
    polling.abort();
    let lists = c
        .cluster
        .requests()
        .iter()
        .filter(|r| {
            r.verb == "list" && r.resource == "configmaps" && r.namespace.as_deref() == Some("a")
        })
        .count();
    (seen, lists)
}

#[tokio::test]
async fn kube_runtime_watcher_relists_after_410_and_goes_on_delivering() {
    let (seen, lists) = watcher_across_churn(Duration::from_secs(60)).await;
    assert_eq!(
        seen,
        [
            "init",
            "init-apply first",
            "init-done",
            "error 410",
            "init",
            "init-apply first",
            "init-done",
            "apply second"
        ],
        "the watcher gets 410 Expired, relists once, then sees the new object"
    );
    assert_eq!(lists, 2, "one initial list and one relist after 410");
}

#[tokio::test]
async fn with_bookmarks_the_watcher_resumes_without_a_relist() {
    let (seen, lists) = watcher_across_churn(Duration::from_millis(100)).await;
    assert_eq!(seen, ["init", "init-apply first", "init-done", "apply second"]);
    assert_eq!(lists, 1, "bookmarks kept the watcher's resourceVersion inside the window");
}

#[tokio::test]
#[allow(clippy::print_stdout)] // reason: a skipped part must say so in the test output
async fn kubectl_sees_the_410_and_the_bookmarks_on_the_wire() {
    let c = cluster(Duration::from_millis(200)).await;
    let kubectl = |path: String| {
        let kubeconfig = c.cluster.kubeconfig_path().to_path_buf();
        async move {
            tokio::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["get", "--raw", &path])
                .output()
                .await
        }
    };
    let api: Api<ConfigMap> = Api::default_namespaced(c.client.clone());
    let first = api.create(&PostParams::default(), &config_map("first", "1")).await.expect("cm");
    let old = first.metadata.resource_version.expect("rv");
    churn(&c.client, "default", WINDOW + 5).await;
    let Ok(expired) =
        kubectl(format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={old}"))
            .await
    else {
        println!("SKIPPED: kubectl is not on PATH");
        return;
    };
    let text = String::from_utf8_lossy(&expired.stdout);
    let event: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON event");
    assert_eq!(event["type"], "ERROR", "{text}");
    assert_eq!(event["object"]["code"], 410, "{text}");
    assert_eq!(event["object"]["reason"], "Expired", "{text}");

    let rv = api.list(&ListParams::default()).await.expect("list").metadata.resource_version;
    let bookmarks = kubectl(format!(
        "/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion={}",
        rv.expect("rv")
    ))
    .await
    .expect("kubectl runs");
    assert!(bookmarks.status.success(), "{}", String::from_utf8_lossy(&bookmarks.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&bookmarks.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(!lines.is_empty(), "no bookmark within a 1 s watch at a 200 ms interval");
    for line in &lines {
        assert_eq!(line["type"], "BOOKMARK", "{line}");
        assert_eq!(line["object"]["kind"], "ConfigMap", "{line}");
    }
}
