//! The one cluster a test run shares: `cargo xtask local-cluster up` (or `cargo xtask test`, which
//! starts it) runs it in `$LOCAL_CLUSTER_DIR`, else `<workspace>/target/local-cluster`; each test
//! works in a namespace of its own, and reads what the API server did from its audit log.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, api::PostParams};
use serde::Deserialize;

use super::ClusterInfo;

/// Where the shared cluster runs.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("LOCAL_CLUSTER_DIR").filter(|d| !d.is_empty()).map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/local-cluster")),
        PathBuf::from,
    )
}

/// The shared cluster, if it runs: its `cluster.json` exists and its API server's PID file
/// names a live process. `Err` says why not (for a SKIPPED line, or a failure under `CI=true`).
pub fn shared_cluster() -> Result<ClusterInfo, String> {
    let dir = shared_dir();
    if !crate::cluster::is_root() {
        return Err("the local cluster's tests need root".to_owned());
    }
    let ready = dir.join("local-cluster.url");
    if !ready.exists() {
        return Err(format!(
            "no local cluster runs in {} (start it with `cargo xtask local-cluster up`)",
            dir.display()
        ));
    }
    ClusterInfo::load(&dir).map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    })
}

/// Creates a namespace named `<prefix>-<random>` for one test and returns its name.
pub async fn test_namespace(client: &kube::Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("podrunner.test/e2e".to_owned(), "true".to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces.create(&PostParams::default(), &namespace).await.expect("create a test namespace");
    name
}

/// Deletes a test's namespace (its pods go with it).
pub async fn delete_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &kube::api::DeleteParams::background()).await;
}

/// One request as the API server's audit log tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, … (an exec's
    /// websocket `GET` is `get`); for a non-resource URL, the lowercase HTTP method.
    pub verb: String,
    /// The resource (`pods`), or the request URI of a non-resource URL (`/version`).
    pub resource: String,
    /// The subresource (`exec`, `status`, `eviction`), if any.
    pub subresource: Option<String>,
    /// The namespace, if any.
    pub namespace: Option<String>,
    /// The object's name, if any.
    pub name: Option<String>,
    /// The response's status code.
    pub code: u16,
    /// The client's `User-Agent` (the runner's says `podrunner/<version>`).
    pub user_agent: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    #[serde(rename = "auditID")]
    audit_id: String,
    verb: String,
    request_u_r_i: String,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    user: Option<AuditUser>,
}

#[derive(Debug, Deserialize)]
struct AuditUser {
    #[serde(default)]
    username: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    subresource: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: Option<u16>,
}

/// Every request the API server's audit log holds, once each, in the order they started, as
/// [`RequestRecord`]s (resource requests with their verb and object; non-resource URLs with
/// their path). A long-running request (exec, watch) is logged when its response starts and
/// again when it completes: one record, with the latest status.
pub fn audit_records(info: &ClusterInfo) -> Vec<RequestRecord> {
    audit_records_where(info, |_| true)
}

/// As [`audit_records`], the requests `user` sent only.
pub fn audit_records_of_user(info: &ClusterInfo, user: &str) -> Vec<RequestRecord> {
    audit_records_where(info, |e| e.user.as_ref().and_then(|u| u.username.as_deref()) == Some(user))
}

fn audit_records_where(
    info: &ClusterInfo,
    keep: impl Fn(&AuditEvent) -> bool,
) -> Vec<RequestRecord> {
    let Ok(file) = std::fs::File::open(&info.audit_log) else { return Vec::new() };
    let mut order: Vec<String> = Vec::new();
    let mut latest: std::collections::HashMap<String, AuditEvent> =
        std::collections::HashMap::new();
    for event in BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<AuditEvent>(&line).ok())
    {
        if !latest.contains_key(&event.audit_id) {
            order.push(event.audit_id.clone());
        }
        latest.insert(event.audit_id.clone(), event);
    }
    order
        .into_iter()
        .filter_map(|id| latest.remove(&id))
        .filter(|event| keep(event))
        .map(|event| {
            let object = event.object_ref.unwrap_or(ObjectRef {
                resource: None,
                namespace: None,
                name: None,
                subresource: None,
            });
            RequestRecord {
                verb: event.verb,
                resource: object.resource.unwrap_or(event.request_u_r_i),
                subresource: object.subresource,
                namespace: object.namespace,
                name: object.name,
                code: event.response_status.and_then(|s| s.code).unwrap_or(0),
                user_agent: event.user_agent,
            }
        })
        .collect()
}

/// The requests of the runner (its `User-Agent` says `podrunner/…`) in `namespace`.
pub fn runner_requests_in(info: &ClusterInfo, namespace: &str) -> Vec<RequestRecord> {
    audit_records(info)
        .into_iter()
        .filter(|r| r.namespace.as_deref() == Some(namespace))
        .filter(|r| r.user_agent.as_deref().is_some_and(|a| a.starts_with("podrunner")))
        .collect()
}

/// `kubectl proxy` in front of the API server: plain HTTP on a loopback port, authenticated to
/// the API server as the cluster's admin, exec and attach included. Tests put a proxy they can
/// cut (or that loses a response) between the runner and it, seeing each request line.
#[derive(Debug)]
pub struct ApiProxy {
    /// The address it serves on.
    pub addr: std::net::SocketAddr,
    child: tokio::process::Child,
}

impl ApiProxy {
    /// Starts `kubectl proxy` for `info`'s cluster, authenticated with `kubeconfig` (the
    /// admin's when `None`), and waits until it serves.
    pub async fn start(
        info: &ClusterInfo,
        kubeconfig: Option<&std::path::Path>,
    ) -> std::io::Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        let kubeconfig = kubeconfig.unwrap_or(&info.kubeconfig);
        let mut child = tokio::process::Command::new(info.binaries.kubernetes.join("kubectl"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["proxy", "--port=0", "--disable-filter=true", "--keepalive=30s"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| std::io::Error::other("kubectl proxy did not start within 20 s"))??
            .unwrap_or_default();
        // "Starting to serve on 127.0.0.1:43567"
        let addr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("kubectl proxy said {line:?}")))?;
        Ok(Self { addr, child })
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A kubeconfig for the cluster as `user` in `groups` (a client certificate signed by the
/// cluster's CA), for tests that run the runner as a user whose rights they grant.
pub fn user_kubeconfig(
    info: &ClusterInfo,
    user: &str,
    groups: &[&str],
) -> Result<PathBuf, super::Error> {
    let pki = info.dir.join("pki");
    let file = format!("user-{}", user.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
    let cert = super::pki::issue_client(&pki, &file, user, groups)?;
    let path = info.dir.join(format!("{file}.kubeconfig"));
    let text = super::config::kubeconfig(&info.server, &info.ca, &cert, user);
    std::fs::write(&path, text).map_err(|source| super::Error::io("write", &path, source))?;
    Ok(path)
}

/// The control socket of the cluster `serve` runs in `dir`.
pub fn control_socket(dir: &std::path::Path) -> PathBuf {
    dir.join("control.sock")
}

/// Sends one command to the running cluster's `serve` process (`stop kubelet`, `start kubelet`,
/// `stop kube-apiserver`, `start kube-apiserver`, `compact-etcd`) and returns its answer, which
/// starts with `ok` when it was done. Faults from real components, for the serial fault tests.
pub async fn control(info: &ClusterInfo, command: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(control_socket(&info.dir)).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        let mut answer = String::new();
        stream.take(64 * 1024).read_to_string(&mut answer).await?;
        Ok(answer.trim().to_owned())
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), exchange)
        .await
        .map_err(|_| std::io::Error::other(format!("no answer to {command:?} within 60 s")))?
}
