//! The files the real components read: kubeconfigs, containerd's config (version 3, containerd
//! 2.x), the CNI network, the kubelet's `KubeletConfiguration` and the API server's audit policy.
//! Pure functions of their inputs, so they are unit-tested without starting anything.

use std::{net::IpAddr, path::Path};

use super::pki::CertFiles;

/// The CNI bridge the pods hang off. Interface names are at most 15 bytes.
pub const BRIDGE: &str = "podrunner0";
/// The pods' addresses (one node: one /24).
pub const POD_SUBNET: &str = "10.244.0.0/24";
/// The Services' addresses; the first is the `kubernetes` Service.
pub(crate) const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's address.
pub(crate) const KUBERNETES_SERVICE_IP: [u8; 4] = [10, 96, 0, 1];

/// A kubeconfig for `server` authenticating with a client certificate.
pub(crate) fn kubeconfig(server: &str, ca: &Path, client: &CertFiles, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local-cluster\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\ncontexts:\n- name: local-cluster\n  context:\n    cluster: local-cluster\n    user: {user}\n    namespace: default\ncurrent-context: local-cluster\nusers:\n- name: {user}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\npreferences: {{}}\n",
        ca = ca.display(),
        cert = client.cert.display(),
        key = client.key.display(),
    )
}

/// Paths containerd's config names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContainerdPaths<'a> {
    /// Its directory (root, state, socket).
    pub(crate) dir: &'a Path,
    /// Where the CNI plugins are.
    pub(crate) cni_bin: &'a Path,
    /// Where the CNI network config is.
    pub(crate) cni_conf: &'a Path,
    /// The runc binary.
    pub(crate) runc: &'a Path,
}

/// containerd 2.x's config (version 3). Only what differs from its defaults is set: private
/// paths, the sandbox image imported under this exact name (never pulled), the CNI directories,
/// and `restrict_oom_score_adj` (root here lacks `CAP_SYS_RESOURCE`, as rootless kind nodes do).
pub(crate) fn containerd(paths: ContainerdPaths<'_>, sandbox_image: &str) -> String {
    let d = paths.dir.display();
    format!(
        r#"version = 3
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{sandbox_image}"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  Root = "{d}/runc"

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["{cni_bin}"]
  conf_dir = "{cni_conf}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
        runc = paths.runc.display(),
        cni_bin = paths.cni_bin.display(),
        cni_conf = paths.cni_conf.display(),
    )
}

/// The pod network: a bridge with the node as gateway, host-local addresses, loopback and
/// port mappings. No masquerading: pods reach the node (the API server, the GitLab double), not
/// the outside.
pub(crate) fn cni_network() -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "podrunner",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{ "subnet": "{POD_SUBNET}" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}]
      }}
    }},
    {{ "type": "portmap", "capabilities": {{ "portMappings": true }} }}
  ]
}}
"#
    )
}

/// What the kubelet's configuration names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KubeletSettings<'a> {
    /// The CA that signs API server clients (webhook authentication).
    pub(crate) client_ca: &'a Path,
    /// Its serving certificate.
    pub(crate) serving: &'a CertFiles,
    /// containerd's socket.
    pub(crate) runtime_socket: &'a Path,
    /// The port it serves on (exec, logs).
    pub(crate) port: u16,
    /// The node's address.
    pub(crate) address: IpAddr,
    /// The cgroup under which it puts `kubepods`.
    pub(crate) cgroup_root: &'a str,
}

/// The `KubeletConfiguration`: kind's settings for a test node (webhook authentication and
/// authorization, `cgroupfs` on the hybrid cgroup v1 hierarchy, images never collected and no
/// disk-pressure eviction, so imported images stay), no read-only port, no static pods.
pub(crate) fn kubelet(settings: KubeletSettings<'_>) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "{address}"
port: {port}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: "{ca}"
authorization:
  mode: Webhook
tlsCertFile: "{cert}"
tlsPrivateKeyFile: "{key}"
containerRuntimeEndpoint: "unix://{socket}"
cgroupDriver: cgroupfs
cgroupRoot: "{cgroup_root}"
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
resolvConf: ""
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 1s
nodeLeaseDurationSeconds: 5
syncFrequency: 5s
fileCheckFrequency: 5s
shutdownGracePeriod: 0s
"#,
        address = settings.address,
        port = settings.port,
        ca = settings.client_ca.display(),
        cert = settings.serving.cert.display(),
        key = settings.serving.key.display(),
        socket = settings.runtime_socket.display(),
        cgroup_root = settings.cgroup_root,
    )
}

/// The audit policy: every request at `Metadata` level (verb, resource, namespace, name, user,
/// user agent, response code), logged once it is answered. Tests count a job's requests in it.
pub(crate) const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  resources:
  - group: coordination.k8s.io
    resources: [leases]
- level: None
  users: [\"system:kube-scheduler\", \"system:kube-controller-manager\", \"system:apiserver\"]
  verbs: [get, list, watch]
- level: Metadata
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_config_is_version_3_with_private_paths_and_the_pinned_sandbox() {
        let text = containerd(
            ContainerdPaths {
                dir: Path::new("/c"),
                cni_bin: Path::new("/cni/bin"),
                cni_conf: Path::new("/cni/net.d"),
                runc: Path::new("/rt/runc"),
            },
            "localhost/pause:latest",
        );
        let value: toml::Value = toml::from_str(&text).expect("valid toml");
        assert_eq!(value["version"].as_integer(), Some(3));
        let plugins = &value["plugins"];
        assert_eq!(
            plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].as_str(),
            Some("localhost/pause:latest")
        );
        let runtime = &plugins["io.containerd.cri.v1.runtime"];
        assert_eq!(runtime["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(runtime["cni"]["conf_dir"].as_str(), Some("/cni/net.d"));
        assert_eq!(
            runtime["containerd"]["runtimes"]["runc"]["options"]["BinaryName"].as_str(),
            Some("/rt/runc")
        );
        assert_eq!(value["grpc"]["address"].as_str(), Some("/c/containerd.sock"));
    }

    #[test]
    fn the_cni_network_is_json_naming_the_bridge_and_subnet() {
        let value: serde_json::Value = serde_json::from_str(&cni_network()).expect("json");
        assert_eq!(value["plugins"][0]["bridge"], BRIDGE);
        assert_eq!(value["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], POD_SUBNET);
        assert!(BRIDGE.len() <= 15);
    }
}
