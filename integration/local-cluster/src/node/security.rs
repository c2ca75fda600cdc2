//! The kubelet's security-context translation, as pure functions: the effective container
//! settings (container value, else pod value), CRI `LinuxContainerSecurityContext` and
//! `LinuxSandboxSecurityContext`, the `runAsNonRoot` check and AppArmor admission.

use std::path::Path;

use k8s_cri::v1::{
    Capability, Int64Value, LinuxContainerSecurityContext, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, SeLinuxOption, SecurityProfile, security_profile::ProfileType,
};
use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, Pod, PodSecurityContext, SELinuxOptions, SeccompProfile,
};

/// Prefix of the deprecated per-container AppArmor annotation.
pub(crate) const APPARMOR_ANNOTATION_PREFIX: &str =
    "container.apparmor.security.beta.kubernetes.io/";

fn pod_sc(pod: &Pod) -> Option<&PodSecurityContext> {
    pod.spec.as_ref()?.security_context.as_ref()
}

/// `<seccomp root>/<localhostProfile>`, `RuntimeDefault` or `Unconfined`, as CRI wants it.
fn seccomp_to_cri(profile: &SeccompProfile, seccomp_root: &Path) -> SecurityProfile {
    match profile.type_.as_str() {
        "RuntimeDefault" => SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        },
        "Localhost" => SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: seccomp_root
                .join(profile.localhost_profile.as_deref().unwrap_or_default())
                .to_string_lossy()
                .into_owned(),
        },
        // `Unconfined` and anything the API server should have rejected.
        _ => unconfined(),
    }
}

fn unconfined() -> SecurityProfile {
    SecurityProfile { profile_type: ProfileType::Unconfined as i32, localhost_ref: String::new() }
}

/// The container's seccomp profile: container field, else pod field, else `Unconfined` (the
/// kubelet's default without `--seccomp-default`).
pub(crate) fn container_seccomp(
    pod: &Pod,
    container: &Container,
    seccomp_root: &Path,
) -> SecurityProfile {
    container
        .security_context
        .as_ref()
        .and_then(|sc| sc.seccomp_profile.as_ref())
        .or_else(|| pod_sc(pod).and_then(|sc| sc.seccomp_profile.as_ref()))
        .map_or_else(unconfined, |p| seccomp_to_cri(p, seccomp_root))
}

/// An AppArmor profile request, from the field or the deprecated annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AppArmor {
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

fn apparmor_from_field(p: &AppArmorProfile) -> AppArmor {
    match p.type_.as_str() {
        "RuntimeDefault" => AppArmor::RuntimeDefault,
        "Localhost" => AppArmor::Localhost(p.localhost_profile.clone().unwrap_or_default()),
        _ => AppArmor::Unconfined,
    }
}

fn apparmor_from_annotation(value: &str) -> AppArmor {
    match value {
        "runtime/default" => AppArmor::RuntimeDefault,
        "unconfined" => AppArmor::Unconfined,
        other => AppArmor::Localhost(other.strip_prefix("localhost/").unwrap_or(other).to_owned()),
    }
}

/// The container's AppArmor request: container field, else the container annotation, else the
/// pod field; `None` leaves the runtime's default.
pub(crate) fn container_apparmor(pod: &Pod, container: &Container) -> Option<AppArmor> {
    if let Some(p) =
        container.security_context.as_ref().and_then(|sc| sc.app_armor_profile.as_ref())
    {
        return Some(apparmor_from_field(p));
    }
    let key = format!("{APPARMOR_ANNOTATION_PREFIX}{}", container.name);
    if let Some(v) = pod.metadata.annotations.as_ref().and_then(|a| a.get(&key)) {
        return Some(apparmor_from_annotation(v));
    }
    pod_sc(pod).and_then(|sc| sc.app_armor_profile.as_ref()).map(apparmor_from_field)
}

/// Whether any container or the pod asks for AppArmor confinement (anything but `Unconfined`),
/// as the kubelet's AppArmor validator decides it.
fn apparmor_required(pod: &Pod) -> bool {
    let confining = |p: &AppArmorProfile| p.type_ != "Unconfined";
    if pod_sc(pod).and_then(|sc| sc.app_armor_profile.as_ref()).is_some_and(confining) {
        return true;
    }
    let spec = pod.spec.as_ref();
    let containers = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()));
    for c in containers {
        if c.security_context
            .as_ref()
            .and_then(|sc| sc.app_armor_profile.as_ref())
            .is_some_and(confining)
        {
            return true;
        }
    }
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .any(|(k, v)| k.starts_with(APPARMOR_ANNOTATION_PREFIX) && v != "unconfined")
}

/// Whether the kernel has AppArmor enabled.
pub(crate) fn host_apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim().starts_with('Y'))
}

/// The kubelet's AppArmor admission: on a host without AppArmor a pod that asks for confinement
/// is rejected with this message (the pod's `status.reason` is `AppArmor`).
pub(crate) fn apparmor_admission(pod: &Pod, host_enabled: bool) -> Option<String> {
    (!host_enabled && apparmor_required(pod))
        .then(|| "Cannot enforce AppArmor: AppArmor is not enabled on the host".to_owned())
}

fn selinux_to_cri(o: &SELinuxOptions) -> SeLinuxOption {
    SeLinuxOption {
        user: o.user.clone().unwrap_or_default(),
        role: o.role.clone().unwrap_or_default(),
        r#type: o.type_.clone().unwrap_or_default(),
        level: o.level.clone().unwrap_or_default(),
    }
}

/// Effective user, group and non-root requirement: container value, else pod value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) run_as_user: Option<i64>,
    pub(crate) run_as_group: Option<i64>,
    pub(crate) run_as_non_root: Option<bool>,
}

pub(crate) fn identity(pod: &Pod, container: &Container) -> Identity {
    let c = container.security_context.as_ref();
    let p = pod_sc(pod);
    Identity {
        run_as_user: c.and_then(|s| s.run_as_user).or_else(|| p.and_then(|s| s.run_as_user)),
        run_as_group: c.and_then(|s| s.run_as_group).or_else(|| p.and_then(|s| s.run_as_group)),
        run_as_non_root: c
            .and_then(|s| s.run_as_non_root)
            .or_else(|| p.and_then(|s| s.run_as_non_root)),
    }
}

/// `name_namespace(uid)`, the kubelet's `format.Pod`.
pub(crate) fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// The kubelet's `verifyRunAsNonRoot`. `image_uid`/`image_user` come from CRI `ImageStatus`;
/// an image that names neither runs as root.
pub(crate) fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_uid: Option<i64>,
    image_user: &str,
) -> Result<(), String> {
    let id = identity(pod, container);
    if id.run_as_non_root != Some(true) {
        return Ok(());
    }
    let who = format!("(pod: {:?}, container: {})", format_pod(pod), container.name);
    if let Some(uid) = id.run_as_user {
        return if uid == 0 {
            Err(format!("container's runAsUser breaks non-root policy {who}"))
        } else {
            Ok(())
        };
    }
    let (uid, user) = match (image_uid, image_user) {
        (Some(uid), _) => (Some(uid), ""),
        (None, "") => (Some(0), ""),
        (None, user) => (None, user),
    };
    match uid {
        Some(0) => Err(format!("container has runAsNonRoot and image will run as root {who}")),
        None => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root {who}"
        )),
        Some(_) => Ok(()),
    }
}

/// The CRI security context of a container, as the kubelet builds it.
pub(crate) fn container_security_context(
    pod: &Pod,
    container: &Container,
    seccomp_root: &Path,
) -> LinuxContainerSecurityContext {
    let sc = container.security_context.as_ref();
    let psc = pod_sc(pod);
    let id = identity(pod, container);
    let mut groups: Vec<i64> = Vec::new();
    if let Some(fs_group) = psc.and_then(|s| s.fs_group) {
        groups.push(fs_group);
    }
    groups.extend(psc.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default());
    let capabilities = sc.and_then(|s| s.capabilities.as_ref()).map(|caps| Capability {
        add_capabilities: caps.add.clone().unwrap_or_default(),
        drop_capabilities: caps.drop.clone().unwrap_or_default(),
        add_ambient_capabilities: Vec::new(),
    });
    let selinux = sc
        .and_then(|s| s.se_linux_options.as_ref())
        .or_else(|| psc.and_then(|s| s.se_linux_options.as_ref()))
        .map(selinux_to_cri);
    let apparmor = container_apparmor(pod, container).map(|a| match a {
        AppArmor::RuntimeDefault => SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        },
        AppArmor::Unconfined => unconfined(),
        AppArmor::Localhost(name) => {
            SecurityProfile { profile_type: ProfileType::Localhost as i32, localhost_ref: name }
        }
    });
    LinuxContainerSecurityContext {
        capabilities,
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        namespace_options: Some(namespace_options(pod)),
        selinux_options: selinux,
        run_as_user: id.run_as_user.map(|value| Int64Value { value }),
        run_as_group: id.run_as_group.map(|value| Int64Value { value }),
        readonly_rootfs: sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        supplemental_groups: groups,
        // allowPrivilegeEscalation unset means "allowed"; only an explicit false sets the flag.
        no_new_privs: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        seccomp: Some(container_seccomp(pod, container, seccomp_root)),
        apparmor,
        ..Default::default()
    }
}

/// Host network always (no CNI here); PID per container unless `shareProcessNamespace`; IPC per
/// pod unless `hostIPC`.
fn namespace_options(pod: &Pod) -> NamespaceOption {
    let spec = pod.spec.as_ref();
    let pid = if spec.and_then(|s| s.host_pid) == Some(true) {
        NamespaceMode::Node
    } else if spec.and_then(|s| s.share_process_namespace) == Some(true) {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    let ipc = if spec.and_then(|s| s.host_ipc) == Some(true) {
        NamespaceMode::Node
    } else {
        NamespaceMode::Pod
    };
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: pid as i32,
        ipc: ipc as i32,
        ..Default::default()
    }
}

/// The CRI security context of the sandbox: pod-level user, groups and seccomp profile.
pub(crate) fn sandbox_security_context(
    pod: &Pod,
    seccomp_root: &Path,
) -> LinuxSandboxSecurityContext {
    let psc = pod_sc(pod);
    let mut groups: Vec<i64> = Vec::new();
    if let Some(fs_group) = psc.and_then(|s| s.fs_group) {
        groups.push(fs_group);
    }
    groups.extend(psc.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default());
    LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        selinux_options: psc.and_then(|s| s.se_linux_options.as_ref()).map(selinux_to_cri),
        run_as_user: psc.and_then(|s| s.run_as_user).map(|value| Int64Value { value }),
        run_as_group: psc.and_then(|s| s.run_as_group).map(|value| Int64Value { value }),
        supplemental_groups: groups,
        seccomp: Some(
            psc.and_then(|s| s.seccomp_profile.as_ref())
                .map_or_else(unconfined, |p| seccomp_to_cri(p, seccomp_root)),
        ),
        // As the kubelet does: the runtime refuses a privileged container in a sandbox that
        // was not created privileged.
        privileged: has_privileged_container(pod),
        ..Default::default()
    }
}

/// Whether any init or regular container asks for `privileged`.
fn has_privileged_container(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|spec| {
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .any(|c| c.security_context.as_ref().and_then(|sc| sc.privileged) == Some(true))
    })
}

#[cfg(test)]
mod tests;
