//! Pod volumes as host directories under the pod's directory, and the CRI mounts of a container.
//!
//! - `emptyDir`: an empty directory (mode 0777; `medium: Memory` is not a tmpfs here);
//! - `hostPath`: the host path itself, checked or created per `type`;
//! - `secret`, `configMap`: files written from the object (all keys, or `items`), `defaultMode`
//!   / item `mode` honoured, `optional` honoured;
//! - `projected`: `secret`, `configMap`, `downwardAPI` and `serviceAccountToken` sources (the
//!   token names the service account: there is no token issuer, and the API server does not
//!   authenticate);
//! - `downwardAPI`: `fieldRef` items for name, namespace, uid, labels and annotations.
//!
//! `fsGroup` makes volume directories and files group-owned by that gid (setgid on directories),
//! as the kubelet's ownership management does.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Component, Path, PathBuf},
};

use k8s_cri::v1::Mount;
use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};

use super::env::secret_entries;
use crate::contract::ClusterView;

/// A volume that could not be set up (the kubelet's `FailedMount`).
#[derive(Debug)]
pub(crate) struct VolumeError {
    pub(crate) volume: String,
    pub(crate) message: String,
}

/// Result of preparing a pod's volumes.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    /// Volume name to host path.
    pub(crate) paths: HashMap<String, PathBuf>,
    /// Warnings to surface as events.
    pub(crate) warnings: Vec<String>,
}

fn io_err(volume: &str, action: &str, path: &Path, e: &std::io::Error) -> VolumeError {
    VolumeError {
        volume: volume.to_owned(),
        message: format!("failed to {action} {}: {e}", path.display()),
    }
}

/// A relative path without `..` or absolute components.
fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Writes files (`key` → bytes) into `dir`, honouring `items` and modes.
fn write_files(
    volume: &str,
    dir: &Path,
    entries: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
    what: &str,
) -> Result<(), VolumeError> {
    let mut files: Vec<(String, Vec<u8>, i32)> = Vec::new();
    match items {
        Some(items) => {
            for item in items {
                match entries.get(&item.key) {
                    Some(data) => files.push((
                        item.path.clone(),
                        data.clone(),
                        item.mode.unwrap_or(default_mode),
                    )),
                    None if optional => {}
                    None => {
                        return Err(VolumeError {
                            volume: volume.to_owned(),
                            message: format!(
                                "configuration error: references non-existent {what} key: {}",
                                item.key
                            ),
                        });
                    }
                }
            }
        }
        None => {
            for (k, v) in entries {
                files.push((k.clone(), v.clone(), default_mode));
            }
        }
    }
    for (rel, data, mode) in files {
        if !safe_relative(&rel) {
            return Err(VolumeError {
                volume: volume.to_owned(),
                message: format!("invalid path {rel:?}"),
            });
        }
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io_err(volume, "create", parent, &e))?;
        }
        fs::write(&path, &data).map_err(|e| io_err(volume, "write", &path, &e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode as u32 & 0o7777))
            .map_err(|e| io_err(volume, "chmod", &path, &e))?;
    }
    Ok(())
}

fn secret_map(
    cluster: &dyn ClusterView,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, Vec<u8>>> {
    cluster.secret(ns, name).map(|s| secret_entries(&s).into_iter().collect())
}

/// The object a secret or configMap volume (or projection) reads its keys from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Secret,
    ConfigMap,
}

/// Which keys of the object are written, with what mode, and whether it may be missing.
#[derive(Debug, Clone, Copy)]
struct Keys<'a> {
    items: Option<&'a Vec<KeyToPath>>,
    mode: i32,
    optional: bool,
}

/// Writes the keys of a Secret or ConfigMap into `dir`; a missing object is an error unless
/// the volume marks it optional.
fn write_object(
    volume: &str,
    dir: &Path,
    cluster: &dyn ClusterView,
    ns: &str,
    source: Source,
    object: &str,
    keys: Keys<'_>,
) -> Result<(), VolumeError> {
    let (entries, what, lower) = match source {
        Source::Secret => (secret_map(cluster, ns, object), "Secret", "secret"),
        Source::ConfigMap => (config_map_map(cluster, ns, object), "ConfigMap", "configmap"),
    };
    match entries {
        Some(entries) => {
            write_files(volume, dir, &entries, keys.items, keys.mode, keys.optional, what)
        }
        None if keys.optional => Ok(()),
        None => Err(VolumeError {
            volume: volume.to_owned(),
            message: format!("{lower} {object:?} not found"),
        }),
    }
}

fn config_map_map(
    cluster: &dyn ClusterView,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, Vec<u8>>> {
    cluster.config_map(ns, name).map(|cm| {
        let mut out: BTreeMap<String, Vec<u8>> =
            cm.data.into_iter().flatten().map(|(k, v)| (k, v.into_bytes())).collect();
        out.extend(cm.binary_data.into_iter().flatten().map(|(k, v)| (k, v.0)));
        out
    })
}

fn downward_value(pod: &Pod, field_path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let render = |m: &Option<BTreeMap<String, String>>| {
        m.iter().flatten().map(|(k, v)| format!("{k}={v:?}\n")).collect::<String>()
    };
    let bracket = |prefix: &str, m: &Option<BTreeMap<String, String>>| {
        field_path
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(|k| m.as_ref().and_then(|m| m.get(k)).cloned().unwrap_or_default())
    };
    bracket("metadata.labels['", &meta.labels)
        .or_else(|| bracket("metadata.annotations['", &meta.annotations))
        .or_else(|| match field_path {
            "metadata.name" => meta.name.clone(),
            "metadata.namespace" => meta.namespace.clone(),
            "metadata.uid" => meta.uid.clone(),
            "metadata.labels" => Some(render(&meta.labels)),
            "metadata.annotations" => Some(render(&meta.annotations)),
            _ => None,
        })
}

/// Creates every volume of the pod under `pod_dir/volumes`.
pub(crate) fn prepare(
    pod: &Pod,
    pod_dir: &Path,
    cluster: &dyn ClusterView,
) -> Result<Prepared, VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let fs_group = spec.and_then(|s| s.security_context.as_ref()).and_then(|sc| sc.fs_group);
    let mut prepared = Prepared::default();
    for volume in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let path = prepare_one(volume, pod, ns, pod_dir, cluster, &mut prepared.warnings)?;
        if let Some(gid) = fs_group
            && path.starts_with(pod_dir)
        {
            apply_fs_group(&volume.name, &path, gid as u32)?;
        }
        prepared.paths.insert(volume.name.clone(), path);
    }
    Ok(prepared)
}

fn plugin_dir(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(format!("kubernetes.io~{plugin}")).join(name)
}

fn prepare_one(
    volume: &Volume,
    pod: &Pod,
    ns: &str,
    pod_dir: &Path,
    cluster: &dyn ClusterView,
    warnings: &mut Vec<String>,
) -> Result<PathBuf, VolumeError> {
    let name = volume.name.as_str();
    let make_dir = |plugin: &str, mode: u32| -> Result<PathBuf, VolumeError> {
        let dir = plugin_dir(pod_dir, plugin, name);
        fs::create_dir_all(&dir).map_err(|e| io_err(name, "create", &dir, &e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map_err(|e| io_err(name, "chmod", &dir, &e))?;
        Ok(dir)
    };
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => {
                fs::create_dir_all(&path).map_err(|e| io_err(name, "create", &path, &e))?;
            }
            "Directory" if !path.is_dir() => {
                return Err(VolumeError {
                    volume: name.to_owned(),
                    message: format!(
                        "hostPath type check failed: {} is not a directory",
                        host.path
                    ),
                });
            }
            "FileOrCreate" if !path.exists() => {
                fs::write(&path, b"").map_err(|e| io_err(name, "create", &path, &e))?;
            }
            "File" if !path.is_file() => {
                return Err(VolumeError {
                    volume: name.to_owned(),
                    message: format!("hostPath type check failed: {} is not a file", host.path),
                });
            }
            _ => {}
        }
        return Ok(path);
    }
    if volume.empty_dir.is_some() {
        return make_dir("empty-dir", 0o777);
    }
    if let Some(src) = &volume.secret {
        let dir = make_dir("secret", 0o755)?;
        let keys = Keys {
            items: src.items.as_ref(),
            mode: src.default_mode.unwrap_or(0o644),
            optional: src.optional == Some(true),
        };
        let secret_name = src.secret_name.as_deref().unwrap_or_default();
        write_object(name, &dir, cluster, ns, Source::Secret, secret_name, keys)?;
        return Ok(dir);
    }
    if let Some(src) = &volume.config_map {
        let dir = make_dir("configmap", 0o755)?;
        let keys = Keys {
            items: src.items.as_ref(),
            mode: src.default_mode.unwrap_or(0o644),
            optional: src.optional == Some(true),
        };
        write_object(name, &dir, cluster, ns, Source::ConfigMap, &src.name, keys)?;
        return Ok(dir);
    }
    if let Some(src) = &volume.projected {
        let dir = make_dir("projected", 0o755)?;
        let mode = src.default_mode.unwrap_or(0o644);
        for source in src.sources.iter().flatten() {
            if let Some(s) = &source.secret {
                let keys =
                    Keys { items: s.items.as_ref(), mode, optional: s.optional == Some(true) };
                write_object(name, &dir, cluster, ns, Source::Secret, &s.name, keys)?;
            }
            if let Some(c) = &source.config_map {
                let keys =
                    Keys { items: c.items.as_ref(), mode, optional: c.optional == Some(true) };
                write_object(name, &dir, cluster, ns, Source::ConfigMap, &c.name, keys)?;
            }
            if let Some(token) = &source.service_account_token {
                // No token issuer here (the API server does not authenticate): the token names
                // the service account, which is all a client sends it for.
                let account = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.as_deref())
                    .unwrap_or("default");
                let file = dir.join(&token.path);
                let text = format!("local-cluster:serviceaccount:{ns}:{account}");
                fs::write(&file, text).map_err(|e| io_err(name, "write", &file, &e))?;
                fs::set_permissions(
                    &file,
                    fs::Permissions::from_mode(u32::try_from(mode).unwrap_or(0o644)),
                )
                .map_err(|e| io_err(name, "chmod", &file, &e))?;
            }
            if let Some(d) = &source.downward_api {
                write_downward(name, pod, &dir, d.items.iter().flatten(), mode)?;
            }
        }
        return Ok(dir);
    }
    if let Some(src) = &volume.downward_api {
        let dir = make_dir("downward-api", 0o755)?;
        write_downward(
            name,
            pod,
            &dir,
            src.items.iter().flatten(),
            src.default_mode.unwrap_or(0o644),
        )?;
        return Ok(dir);
    }
    warnings.push(format!(
        "volume {name:?}: this volume type is not supported by this node; an empty directory is mounted"
    ));
    make_dir("unsupported", 0o777)
}

fn write_downward<'a>(
    name: &str,
    pod: &Pod,
    dir: &Path,
    items: impl Iterator<Item = &'a k8s_openapi::api::core::v1::DownwardAPIVolumeFile>,
    mode: i32,
) -> Result<(), VolumeError> {
    let mut entries = BTreeMap::new();
    let mut key_items = Vec::new();
    for item in items {
        let Some(field) = item.field_ref.as_ref() else {
            continue;
        };
        let value = downward_value(pod, &field.field_path).ok_or_else(|| VolumeError {
            volume: name.to_owned(),
            message: format!("unsupported downwardAPI fieldRef {:?}", field.field_path),
        })?;
        entries.insert(item.path.clone(), value.into_bytes());
        key_items.push(KeyToPath {
            key: item.path.clone(),
            path: item.path.clone(),
            mode: item.mode,
            ..Default::default()
        });
    }
    write_files(name, dir, &entries, Some(&key_items), mode, false, "downwardAPI")
}

/// Gives `gid` group ownership of a volume tree; directories get the setgid bit and group rwx.
fn apply_fs_group(volume: &str, root: &Path, gid: u32) -> Result<(), VolumeError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(|e| io_err(volume, "stat", &path, &e))?;
        std::os::unix::fs::lchown(&path, None, Some(gid))
            .map_err(|e| io_err(volume, "chown", &path, &e))?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o2070))
                .map_err(|e| io_err(volume, "chmod", &path, &e))?;
            for entry in fs::read_dir(&path).map_err(|e| io_err(volume, "list", &path, &e))? {
                let entry = entry.map_err(|e| io_err(volume, "list", &path, &e))?;
                stack.push(entry.path());
            }
        } else if meta.is_file() {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o040))
                .map_err(|e| io_err(volume, "chmod", &path, &e))?;
        }
    }
    Ok(())
}

/// The kubelet's managed hosts file of a pod (`kubelet_pods.go: managedHostsFileContent`):
/// localhost entries, the pod's IP and host name, then `spec.hostAliases`. Written to
/// `<pod_dir>/etc-hosts`; every container gets it at `/etc/hosts` unless it mounts that path.
pub(crate) fn write_etc_hosts(
    pod: &Pod,
    pod_dir: &Path,
    pod_ip: &str,
) -> Result<PathBuf, VolumeError> {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let hostname =
        spec.and_then(|s| s.hostname.as_deref()).filter(|h| !h.is_empty()).unwrap_or(name);
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    text.push_str(&format!("{pod_ip}\t{hostname}\n"));
    let aliases = spec.and_then(|s| s.host_aliases.as_ref()).filter(|a| !a.is_empty());
    if let Some(aliases) = aliases {
        text.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.iter().flatten().cloned().collect::<Vec<_>>().join("\t");
            text.push_str(&format!("{}\t{names}\n", alias.ip));
        }
    }
    fs::create_dir_all(pod_dir).map_err(|e| io_err("etc-hosts", "create", pod_dir, &e))?;
    let path = pod_dir.join("etc-hosts");
    fs::write(&path, text).map_err(|e| io_err("etc-hosts", "write", &path, &e))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
        .map_err(|e| io_err("etc-hosts", "chmod", &path, &e))?;
    Ok(path)
}

/// The CRI mounts of a container (`subPath` and `readOnly` honoured), and the pod's managed
/// `/etc/hosts` unless the container mounts something there itself.
pub(crate) fn container_mounts(
    container: &Container,
    volumes: &HashMap<String, PathBuf>,
    etc_hosts: Option<&Path>,
) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    let own_hosts = container.volume_mounts.iter().flatten().any(|m| m.mount_path == "/etc/hosts");
    if let (Some(hosts), false) = (etc_hosts, own_hosts) {
        mounts.push(Mount {
            container_path: "/etc/hosts".to_owned(),
            host_path: hosts.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    for vm in container.volume_mounts.iter().flatten() {
        let Some(base) = volumes.get(&vm.name) else {
            return Err(format!(
                "cannot find volume {:?} to mount into container {:?}",
                vm.name, container.name
            ));
        };
        let mut host = base.clone();
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if !safe_relative(sub) {
                return Err(format!("subPath {sub:?} must be a relative path without '..'"));
            }
            host = base.join(sub);
            if !host.exists() {
                fs::create_dir_all(&host).map_err(|e| {
                    format!("failed to create subPath directory {}: {e}", host.display())
                })?;
            }
        }
        mounts.push(Mount {
            container_path: vm.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: vm.read_only == Some(true),
            ..Default::default()
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_safe() {
        assert!(safe_relative("a/b"));
        assert!(safe_relative("./a"));
        assert!(!safe_relative("../a"));
        assert!(!safe_relative("a/../../b"));
        assert!(!safe_relative("/etc"));
        assert!(!safe_relative(""));
    }

    /// One ConfigMap `settings` with key `mode`, no secrets.
    struct OneConfigMap;

    impl ClusterView for OneConfigMap {
        fn secret(&self, _: &str, _: &str) -> Option<k8s_openapi::api::core::v1::Secret> {
            None
        }
        fn config_map(&self, _: &str, name: &str) -> Option<k8s_openapi::api::core::v1::ConfigMap> {
            (name == "settings").then(|| k8s_openapi::api::core::v1::ConfigMap {
                data: Some(BTreeMap::from([("mode".to_owned(), "fast".to_owned())])),
                ..Default::default()
            })
        }
        fn set_pod_status(&self, _: &str, _: &str, _: k8s_openapi::api::core::v1::PodStatus) {}
        fn record_pod_event(&self, _: &str, _: &str, _: &str, _: &str, _: &str) {}
        fn pod_terminated(&self, _: &str, _: &str) {}
    }

    #[test]
    fn objects_are_written_and_a_missing_one_fails_unless_optional() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = |optional| Keys { items: None, mode: 0o644, optional };
        let write = |source, object: &str, optional| {
            write_object("v", dir.path(), &OneConfigMap, "ns", source, object, keys(optional))
        };
        write(Source::ConfigMap, "settings", false).expect("present config map");
        assert_eq!(fs::read_to_string(dir.path().join("mode")).expect("key file"), "fast");
        let missing = write(Source::Secret, "creds", false).expect_err("missing secret");
        assert_eq!(
            (missing.volume.as_str(), missing.message.as_str()),
            ("v", "secret \"creds\" not found")
        );
        let missing = write(Source::ConfigMap, "other", false).expect_err("missing config map");
        assert_eq!(missing.message, "configmap \"other\" not found");
        write(Source::Secret, "creds", true).expect("an optional secret may be missing");
    }
}
