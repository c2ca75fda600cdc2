//! Starting each component with the flags `hack/local-up-cluster.sh` and kind give it, and the
//! checks that say it is ready.

use std::{
    ffi::OsString,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use k8s_openapi::api::{
    core::v1::{Node, ServiceAccount},
    rbac::v1::{ClusterRoleBinding, RoleRef, Subject},
};
use kube::{Api, api::PostParams};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Error, KubernetesCluster, Options, config, pki::Pki};

/// The Services' address range.
const SERVICE_CIDR: &str = config::SERVICE_CIDR;

impl KubernetesCluster {
    pub(super) async fn start_etcd(&mut self, logs: &Path) -> Result<(), Error> {
        let (client, peer) = (super::free_port()?, super::free_port()?);
        let data = self.info.dir.join("etcd");
        let client_url = format!("http://127.0.0.1:{client}");
        let args = args(&[
            "--name=local",
            &format!("--data-dir={}", data.display()),
            &format!("--listen-client-urls={client_url}"),
            &format!("--advertise-client-urls={client_url}"),
            &format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            &format!("--initial-cluster=local=http://127.0.0.1:{peer}"),
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]);
        let etcd = self.info.binaries.etcd.join("etcd");
        let index = self.spawn("etcd", &etcd, &args, logs, false)?;
        self.etcd_url = client_url;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, client));
        self.wait_for(index, Duration::from_secs(30), "GET /health", || etcd_healthy(addr)).await
    }

    pub(super) async fn start_api_server(
        &mut self,
        pki: &Pki,
        port: u16,
        logs: &Path,
    ) -> Result<(), Error> {
        let p = |path: &Path| path.display().to_string();
        let kubelet_client = pki.client("apiserver-kubelet-client");
        let policy = self.info.dir.join("audit-policy.yaml");
        std::fs::write(&policy, config::AUDIT_POLICY)
            .map_err(|source| Error::io("write", &policy, source))?;
        let args = args(&[
            &format!("--advertise-address={}", self.info.node_ip),
            "--bind-address=0.0.0.0",
            &format!("--secure-port={port}"),
            &format!("--etcd-servers={}", self.etcd_url),
            &format!("--client-ca-file={}", p(&pki.ca.cert)),
            &format!("--tls-cert-file={}", p(&pki.apiserver.cert)),
            &format!("--tls-private-key-file={}", p(&pki.apiserver.key)),
            &format!("--kubelet-client-certificate={}", p(&kubelet_client.cert)),
            &format!("--kubelet-client-key={}", p(&kubelet_client.key)),
            &format!("--kubelet-certificate-authority={}", p(&pki.ca.cert)),
            "--kubelet-preferred-address-types=InternalIP",
            &format!("--service-account-key-file={}", p(&pki.service_account_pub)),
            &format!("--service-account-signing-key-file={}", p(&pki.service_account_key)),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            &format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            &format!("--audit-policy-file={}", p(&policy)),
            &format!("--audit-log-path={}", p(&self.info.audit_log)),
            "--audit-log-maxsize=0",
            "--audit-log-mode=blocking",
            "--profiling=false",
            "--v=0",
        ]);
        let program = self.info.binaries.kubernetes.join("kube-apiserver");
        self.spawn("kube-apiserver", &program, &args, logs, false)?;
        Ok(())
    }

    /// Waits for `/readyz` (every post-start hook, the RBAC bootstrap roles included).
    pub(super) async fn wait_api_ready(&mut self, client: &kube::Client) -> Result<(), Error> {
        let index = self.index_of("kube-apiserver");
        self.wait_for(index, Duration::from_secs(90), "GET /readyz", || async {
            let request = http::Request::get("/readyz").body(Vec::new());
            match request {
                Ok(request) => client.request_text(request).await.is_ok_and(|t| t.trim() == "ok"),
                Err(_) => false,
            }
        })
        .await
    }

    pub(super) fn start_controller_manager(
        &mut self,
        pki: &Pki,
        kubeconfig: &Path,
        options: &Options,
        logs: &Path,
    ) -> Result<(), Error> {
        let p = |path: &Path| path.display().to_string();
        let args = args(&[
            &format!("--kubeconfig={}", p(kubeconfig)),
            "--leader-elect=false",
            "--secure-port=0",
            "--use-service-account-credentials=true",
            &format!("--service-account-private-key-file={}", p(&pki.service_account_key)),
            &format!("--root-ca-file={}", p(&pki.ca.cert)),
            &format!("--cluster-signing-cert-file={}", p(&pki.ca.cert)),
            &format!("--cluster-signing-key-file={}", p(&pki.ca.key)),
            &format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            &format!("--node-monitor-grace-period={}s", options.node_monitor_grace.as_secs()),
            "--node-monitor-period=1s",
            "--v=0",
        ]);
        let program = self.info.binaries.kubernetes.join("kube-controller-manager");
        self.spawn("kube-controller-manager", &program, &args, logs, false)?;
        Ok(())
    }

    pub(super) fn start_scheduler(&mut self, kubeconfig: &Path, logs: &Path) -> Result<(), Error> {
        let args = args(&[
            &format!("--kubeconfig={}", kubeconfig.display()),
            &format!("--authentication-kubeconfig={}", kubeconfig.display()),
            &format!("--authorization-kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", super::free_port()?),
            "--v=0",
        ]);
        let program = self.info.binaries.kubernetes.join("kube-scheduler");
        self.spawn("kube-scheduler", &program, &args, logs, false)?;
        Ok(())
    }

    /// containerd (in the cluster's mount namespace, created here), ready when its socket
    /// answers `ctr version`.
    pub(super) async fn start_containerd(&mut self, logs: &Path) -> Result<(), Error> {
        self.namespace = Some(super::process::MountNamespace::create()?);
        let dir = self.info.dir.join("containerd");
        std::fs::create_dir_all(&dir).map_err(|source| Error::io("create", &dir, source))?;
        let cni_conf = self.info.dir.join("cni/net.d");
        let network = cni_conf.join("10-podrunner.conflist");
        std::fs::write(&network, config::cni_network())
            .map_err(|source| Error::io("write", &network, source))?;
        let runtime = self.info.binaries.runtime.clone();
        let text = config::containerd(
            config::ContainerdPaths {
                dir: &dir,
                cni_bin: &runtime,
                cni_conf: &cni_conf,
                runc: &runtime.join("runc"),
            },
            crate::node::PAUSE_IMAGE,
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, text)
            .map_err(|source| Error::io("write", &config_path, source))?;
        let args = vec![OsString::from("--config"), config_path.into_os_string()];
        let index = self.spawn("containerd", &runtime.join("containerd"), &args, logs, true)?;
        let ctr = runtime.join("ctr");
        let socket = self.info.containerd_socket.clone();
        self.wait_for(index, Duration::from_secs(30), "ctr version", || {
            let (ctr, socket) = (ctr.clone(), socket.clone());
            async move {
                tokio::process::Command::new(ctr)
                    .arg("-a")
                    .arg(socket)
                    .arg("version")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .is_ok_and(|s| s.success())
            }
        })
        .await
    }

    pub(super) fn start_kubelet(
        &mut self,
        pki: &Pki,
        kubeconfig: &Path,
        logs: &Path,
    ) -> Result<(), Error> {
        self.create_cgroup_root()?;
        let root = self.info.dir.join("kubelet");
        let config_path = self.info.dir.join("kubelet-config.yaml");
        let text = config::kubelet(config::KubeletSettings {
            client_ca: &pki.ca.cert,
            serving: &pki.kubelet_serving,
            runtime_socket: &self.info.containerd_socket,
            port: super::free_port()?,
            address: self.info.node_ip,
            cgroup_root: &format!("/{}", self.cgroup_root),
        });
        std::fs::write(&config_path, text)
            .map_err(|source| Error::io("write", &config_path, source))?;
        let p = |path: &Path| path.display().to_string();
        let args = args(&[
            &format!("--config={}", p(&config_path)),
            &format!("--kubeconfig={}", p(kubeconfig)),
            &format!("--root-dir={}", p(&root)),
            &format!("--cert-dir={}", p(&root.join("pki"))),
            &format!("--hostname-override={}", self.info.node_name),
            &format!("--node-ip={}", self.info.node_ip),
            "--v=0",
        ]);
        let program = self.info.binaries.kubernetes.join("kubelet");
        self.spawn("kubelet", &program, &args, logs, true)?;
        Ok(())
    }

    /// kube-proxy in iptables mode, so pods reach Services (the `kubernetes` Service above all).
    pub(super) fn start_kube_proxy(&mut self, kubeconfig: &Path, logs: &Path) -> Result<(), Error> {
        let args = args(&[
            &format!("--kubeconfig={}", kubeconfig.display()),
            &format!("--hostname-override={}", self.info.node_name),
            "--proxy-mode=iptables",
            "--cluster-cidr=10.244.0.0/16",
            // Leave the machine's conntrack sysctls alone.
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            &format!("--healthz-bind-address=127.0.0.1:{}", super::free_port()?),
            &format!("--metrics-bind-address=127.0.0.1:{}", super::free_port()?),
            "--v=0",
        ]);
        let program = self.info.binaries.kubernetes.join("kube-proxy");
        self.spawn("kube-proxy", &program, &args, logs, false)?;
        Ok(())
    }

    /// Stops the kubelet (its containers keep running), as a node whose kubelet died.
    pub fn stop_kubelet(&mut self) {
        if let Some(kubelet) = self.components.iter_mut().find(|c| c.name == "kubelet") {
            kubelet.stop(Duration::from_secs(5));
        }
    }

    /// The kubelet's cgroup root in every controller (it refuses to start without it).
    fn create_cgroup_root(&self) -> Result<(), Error> {
        for controller in super::CGROUP_CONTROLLERS {
            let base = Path::new("/sys/fs/cgroup").join(controller);
            if base.is_dir() {
                let dir = base.join(&self.cgroup_root);
                std::fs::create_dir_all(&dir)
                    .map_err(|source| Error::io("create", &dir, source))?;
            }
        }
        Ok(())
    }

    /// Waits for the node to be `Ready` and the `default` ServiceAccount to exist (the
    /// ServiceAccount admission refuses pods until it does).
    pub(super) async fn wait_node_ready(&mut self, client: &kube::Client) -> Result<(), Error> {
        let index = self.index_of("kubelet");
        let nodes: Api<Node> = Api::all(client.clone());
        let name = self.info.node_name.clone();
        self.wait_for(index, Duration::from_secs(90), "the node Ready", || {
            let (nodes, name) = (nodes.clone(), name.clone());
            async move { nodes.get_opt(&name).await.ok().flatten().is_some_and(|n| is_ready(&n)) }
        })
        .await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let index = self.index_of("kube-controller-manager");
        self.wait_for(index, Duration::from_secs(60), "the default ServiceAccount", || {
            let accounts = accounts.clone();
            async move { accounts.get_opt("default").await.ok().flatten().is_some() }
        })
        .await
    }

    fn index_of(&self, name: &str) -> usize {
        self.components.iter().position(|c| c.name == name).unwrap_or(0)
    }
}

/// Whether a node's `Ready` condition is `True`.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Lets the API server's kubelet client use the kubelet's API (exec, logs), as kubeadm does.
pub(super) async fn grant_kubelet_api(client: &kube::Client) -> Result<(), Error> {
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding = ClusterRoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some("kube-apiserver-kubelet-api-admin".to_owned()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "ClusterRole".to_owned(),
            name: "system:kubelet-api-admin".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "User".to_owned(),
            name: "kube-apiserver-kubelet-client".to_owned(),
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            namespace: None,
        }]),
    };
    match bindings.create(&PostParams::default(), &binding).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => {
            Err(Error::Api { what: "the kubelet-api-admin ClusterRoleBinding".to_owned(), source })
        }
    }
}

/// Whether etcd at `addr` answers `GET /health` with `"health":"true"`.
async fn etcd_healthy(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n").await.ok()?;
        let mut answer = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).contains("\"health\":\"true\""))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange).await.ok().flatten().unwrap_or(false)
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

/// `POST <path>` with a JSON body to etcd's gRPC gateway; the answer's body.
async fn etcd_post(url: &str, path: &str, body: &str) -> Option<String> {
    let address = url.strip_prefix("http://")?.to_owned();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await.ok()?;
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.take(1024 * 1024).read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        text.split("\r\n\r\n").nth(1).map(str::to_owned)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.ok().flatten()
}

/// Compacts etcd at its current revision; returns the revision.
pub(super) async fn compact_etcd(url: &str) -> Result<i64, Error> {
    // A range read of any key answers with the store's current revision.
    let range = etcd_post(url, "/v3/kv/range", r#"{"key":"AA=="}"#).await.unwrap_or_default();
    let revision = serde_json::from_str::<serde_json::Value>(&range)
        .ok()
        .and_then(|v| v["header"]["revision"].as_str().and_then(|r| r.parse::<i64>().ok()))
        .ok_or(Error::Etcd { what: "a range read", answer: range.clone() })?;
    let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
    let answer = etcd_post(url, "/v3/kv/compaction", &body).await.unwrap_or_default();
    if !answer.contains("header") {
        return Err(Error::Etcd { what: "the compaction", answer });
    }
    Ok(revision)
}
