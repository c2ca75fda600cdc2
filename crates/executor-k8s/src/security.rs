//! Security contexts: one conversion of the shared settings (used for the pod and every container
//! kind), gitlab-runner's capability, privilege and UID/GID rules, and a check pass over the
//! finished pod (`pod_spec` patches may have added profiles).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, PodSecurityContext as K8sPodSecurityContext, PodSpec,
    SELinuxOptions, SeccompProfile, SecurityContext,
};
use podrunner_config::{
    ContainerSecurityContext, KubernetesConfig, PodSecurityContext, SecurityProfile,
    model::{ProcMount, SeLinuxOptions, SharedSecurity},
};

use crate::{Error, Result};

/// The four kinds of container the builder makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    /// `build`.
    Build,
    /// `helper`.
    Helper,
    /// A service container.
    Service,
    /// `init-permissions`.
    InitPermissions,
}

/// The Kubernetes fields of [`SharedSecurity`], ready for either context type.
#[derive(Debug, Default)]
pub(crate) struct SharedFields {
    pub(crate) run_as_user: Option<i64>,
    pub(crate) run_as_group: Option<i64>,
    pub(crate) run_as_non_root: Option<bool>,
    pub(crate) se_linux_options: Option<SELinuxOptions>,
    pub(crate) seccomp_profile: Option<SeccompProfile>,
    pub(crate) app_armor_profile: Option<AppArmorProfile>,
}

impl SharedFields {
    fn is_empty(&self) -> bool {
        self.run_as_user.is_none()
            && self.run_as_group.is_none()
            && self.run_as_non_root.is_none()
            && self.se_linux_options.is_none()
            && self.seccomp_profile.is_none()
            && self.app_armor_profile.is_none()
    }
}

/// THE conversion of the settings a pod and a container share. Serves the pod context and all
/// four container kinds.
pub(crate) fn convert_shared(s: &SharedSecurity) -> SharedFields {
    SharedFields {
        run_as_user: s.run_as_user,
        run_as_group: s.run_as_group,
        run_as_non_root: s.run_as_non_root,
        se_linux_options: s.se_linux.as_ref().filter(|o| !o.is_empty()).map(se_linux),
        seccomp_profile: s.seccomp.as_ref().map(|p| SeccompProfile {
            type_: p.type_name().to_owned(),
            localhost_profile: p.localhost_profile().map(str::to_owned),
        }),
        app_armor_profile: s.app_armor.as_ref().map(|p| AppArmorProfile {
            type_: p.type_name().to_owned(),
            localhost_profile: p.localhost_profile().map(str::to_owned),
        }),
    }
}

fn se_linux(o: &SeLinuxOptions) -> SELinuxOptions {
    SELinuxOptions {
        user: o.user.clone(),
        role: o.role.clone(),
        type_: o.type_.clone(),
        level: o.level.clone(),
    }
}

/// `spec.securityContext`, or `None` when nothing is configured (upstream returns nil then).
pub(crate) fn pod_context(p: &PodSecurityContext) -> Option<K8sPodSecurityContext> {
    let shared = convert_shared(&p.shared);
    if shared.is_empty() && p.fs_group.is_none() && p.supplemental_groups.is_empty() {
        return None;
    }
    Some(K8sPodSecurityContext {
        fs_group: p.fs_group,
        supplemental_groups: (!p.supplemental_groups.is_empty())
            .then(|| p.supplemental_groups.clone()),
        run_as_user: shared.run_as_user,
        run_as_group: shared.run_as_group,
        run_as_non_root: shared.run_as_non_root,
        se_linux_options: shared.se_linux_options,
        seccomp_profile: shared.seccomp_profile,
        app_armor_profile: shared.app_armor_profile,
        ..K8sPodSecurityContext::default()
    })
}

/// The global capability lists: `default_drop` disabled, then `cap_add` enabled, then `cap_drop`
/// disabled (drop beats add). Both lists are sorted (upstream's order is random).
pub fn global_capabilities(
    default_drop: &[&str],
    cap_add: &[String],
    cap_drop: &[String],
) -> (Vec<String>, Vec<String>) {
    let mut state: BTreeMap<&str, bool> = BTreeMap::new();
    for c in default_drop {
        state.insert(c, false);
    }
    for c in cap_add {
        state.insert(c, true);
    }
    for c in cap_drop {
        state.insert(c, false);
    }
    let add = state.iter().filter(|(_, on)| **on).map(|(c, _)| (*c).to_owned()).collect();
    let drop = state.iter().filter(|(_, on)| !**on).map(|(c, _)| (*c).to_owned()).collect();
    (add, drop)
}

/// `GetContainerSecurityContext`: capabilities, privilege fallbacks and the container's own
/// settings. Never `None`.
pub fn container_context(
    sc: &ContainerSecurityContext,
    k: &KubernetesConfig,
    default_drop: &[&str],
) -> SecurityContext {
    let (mut add, mut drop) = global_capabilities(default_drop, &k.raw.cap_add, &k.raw.cap_drop);
    if let Some(caps) = &sc.capabilities {
        if let Some(a) = &caps.add {
            add.clone_from(a);
        }
        if let Some(d) = &caps.drop {
            drop.clone_from(d);
        }
    }
    // The runtime's spelling (`NET_ADMIN` for `CAP_NET_ADMIN` or `net_admin`), as the loader
    // says; a name no kernel has stays as written (the loader refused it already).
    let canonical = |list: &mut Vec<String>| {
        for c in list.iter_mut() {
            if let Some(name) = podrunner_config::api_rules::canonical_capability(c) {
                *c = name;
            }
        }
        list.sort();
        list.dedup();
    };
    canonical(&mut add);
    canonical(&mut drop);
    let capabilities = (!add.is_empty() || !drop.is_empty()).then(|| Capabilities {
        add: (!add.is_empty()).then_some(add),
        drop: (!drop.is_empty()).then_some(drop),
    });
    let shared = convert_shared(&sc.shared);
    SecurityContext {
        capabilities,
        privileged: sc.privileged.or(k.raw.privileged),
        allow_privilege_escalation: sc
            .allow_privilege_escalation
            .or(k.raw.allow_privilege_escalation),
        read_only_root_filesystem: sc.read_only_root_filesystem,
        proc_mount: sc.proc_mount.map(|p| {
            match p {
                ProcMount::Default => "Default",
                ProcMount::Unmasked => "Unmasked",
            }
            .to_owned()
        }),
        run_as_user: shared.run_as_user,
        run_as_group: shared.run_as_group,
        run_as_non_root: shared.run_as_non_root,
        se_linux_options: shared.se_linux_options,
        seccomp_profile: shared.seccomp_profile,
        app_armor_profile: shared.app_armor_profile,
        ..SecurityContext::default()
    }
}

/// Where an ID came from, for the override message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// The container's security context.
    Container,
    /// The pod's security context.
    Pod,
    /// The job's `image:kubernetes:user`.
    Job,
}

impl IdSource {
    /// The label used in job-log messages.
    pub fn label(self) -> &'static str {
        match self {
            IdSource::Container => "container security context",
            IdSource::Pod => "pod security context",
            IdSource::Job => "job configuration",
        }
    }
}

/// Which ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdKind {
    User,
    Group,
}

impl IdKind {
    fn word(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Group => "group",
        }
    }
    fn upper(self) -> &'static str {
        match self {
            IdKind::User => "UID",
            IdKind::Group => "GID",
        }
    }
}

/// Splits a job user `uid[:gid]` on the first `:`; empty parts are unset.
pub fn split_job_user(user: &str) -> (Option<&str>, Option<&str>) {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    ((!u.is_empty()).then_some(u), g.filter(|g| !g.is_empty()))
}

/// Parses one part of the job user and checks it against the allowlist; every failure is a
/// job-log warning and leaves the ID unset.
fn job_id(kind: IdKind, value: &str, allowed: &[String], log: &mut Vec<String>) -> Option<i64> {
    let id = match value.parse::<i64>() {
        Ok(id) if id < 0 => {
            log.push(format!(
                "failed to parse {} {value:?}: negative values not allowed",
                kind.upper()
            ));
            return None;
        }
        Ok(id) => id,
        Err(e) => {
            log.push(format!("failed to parse {} {value:?}: {e}", kind.upper()));
            return None;
        }
    };
    if id_allowed(id, allowed) {
        Some(id)
    } else {
        log.push(format!(
            "{} {value:?} is not in the allowed list: [{}]",
            kind.word(),
            allowed.join(" ")
        ));
        None
    }
}

/// The allowlist rule: root only when a numeric 0 is listed; an empty list allows any non-root
/// ID; non-numeric entries are ignored.
pub fn id_allowed(id: i64, allowed: &[String]) -> bool {
    let listed = allowed.iter().filter_map(|a| a.trim().parse::<i64>().ok());
    if id == 0 {
        return listed.clone().any(|a| a == 0);
    }
    allowed.is_empty() || listed.clone().any(|a| a == id)
}

/// Container > pod > job, logging when a security context overrides a job value.
#[allow(clippy::too_many_arguments, reason = "one call site per ID, all inputs are needed")]
fn pick_id(
    kind: IdKind,
    container: &str,
    from_container: Option<i64>,
    from_pod: Option<i64>,
    job: Option<&str>,
    allowed: &[String],
    log: &mut Vec<String>,
) -> Option<(i64, IdSource)> {
    let chosen = from_container
        .map(|v| (v, IdSource::Container))
        .or_else(|| from_pod.map(|v| (v, IdSource::Pod)));
    match (chosen, job) {
        (Some((v, source)), Some(job)) => {
            log.push(format!(
                "Overriding {w} for container {container:?} to {job:?} is not allowed: {w} is set to {v} in {}",
                source.label(),
                w = kind.word()
            ));
            Some((v, source))
        }
        (Some(c), None) => Some(c),
        (None, Some(job)) => job_id(kind, job, allowed, log).map(|v| (v, IdSource::Job)),
        (None, None) => None,
    }
}

/// The security context of one container, with the UID/GID rules of its kind:
/// build and services use container > pod > job user; the helper container > pod; init-permissions
/// only its own table.
pub(crate) fn for_container(
    kind: ContainerKind,
    name: &str,
    k: &KubernetesConfig,
    default_drop: &[&str],
    job_user: Option<&str>,
    log: &mut Vec<String>,
) -> SecurityContext {
    let sc = match kind {
        ContainerKind::Build => &k.build_container_security_context,
        ContainerKind::Helper => &k.helper_container_security_context,
        ContainerKind::Service => &k.service_container_security_context,
        ContainerKind::InitPermissions => &k.init_permissions_container_security_context,
    };
    let mut out = container_context(sc, k, default_drop);
    if kind == ContainerKind::InitPermissions {
        return out;
    }
    let job_user = if kind == ContainerKind::Helper { None } else { job_user };
    let (job_uid, job_gid) = job_user.map(split_job_user).unwrap_or_default();
    let pod = &k.pod_security_context.shared;
    out.run_as_user = pick_id(
        IdKind::User,
        name,
        sc.shared.run_as_user,
        pod.run_as_user,
        job_uid,
        &k.raw.allowed_users,
        log,
    )
    .map(|(v, _)| v);
    out.run_as_group = pick_id(
        IdKind::Group,
        name,
        sc.shared.run_as_group,
        pod.run_as_group,
        job_gid,
        &k.raw.allowed_groups,
        log,
    )
    .map(|(v, _)| v);
    out
}

/// The profile check over the finished pod: every type is one of the three, `localhostProfile`
/// if and only if `Localhost`. Config values always pass; this catches `pod_spec` patches.
pub(crate) fn check_profiles(spec: &PodSpec) -> Result<()> {
    let check = |what: &'static str, container: &str, type_: &str, local: Option<&String>| {
        let reason = match (type_, local.map(String::as_str)) {
            ("Localhost", Some(p)) if !p.is_empty() => return Ok(()),
            ("Localhost", _) => "type Localhost needs localhostProfile".to_owned(),
            ("RuntimeDefault" | "Unconfined", None) => return Ok(()),
            ("RuntimeDefault" | "Unconfined", Some(_)) => {
                format!("localhostProfile is only allowed with type Localhost, not {type_}")
            }
            (other, _) => {
                format!("unknown type {other:?}: expected RuntimeDefault, Localhost or Unconfined")
            }
        };
        Err(Error::InvalidProfile { what, container: container.to_owned(), reason })
    };
    if let Some(sc) = &spec.security_context {
        if let Some(p) = &sc.seccomp_profile {
            check("seccomp", "pod", &p.type_, p.localhost_profile.as_ref())?;
        }
        if let Some(p) = &sc.app_armor_profile {
            check("AppArmor", "pod", &p.type_, p.localhost_profile.as_ref())?;
        }
    }
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        if let Some(sc) = &c.security_context {
            if let Some(p) = &sc.seccomp_profile {
                check("seccomp", &c.name, &p.type_, p.localhost_profile.as_ref())?;
            }
            if let Some(p) = &sc.app_armor_profile {
                check("AppArmor", &c.name, &p.type_, p.localhost_profile.as_ref())?;
            }
        }
    }
    Ok(())
}

/// A profile as it appears in the pod (after patches, so kept as strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSetting {
    /// `RuntimeDefault`, `Localhost` or `Unconfined`.
    pub type_: String,
    /// The `localhostProfile`.
    pub localhost_profile: Option<String>,
}

impl ProfileSetting {
    /// The same profile as the config's closed enum, when the type is a known one.
    pub fn as_profile(&self) -> Option<SecurityProfile> {
        match (self.type_.as_str(), &self.localhost_profile) {
            ("RuntimeDefault", _) => Some(SecurityProfile::RuntimeDefault),
            ("Unconfined", _) => Some(SecurityProfile::Unconfined),
            ("Localhost", Some(p)) => Some(SecurityProfile::Localhost(p.clone())),
            _ => None,
        }
    }
}

impl std::fmt::Display for ProfileSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.localhost_profile {
            Some(p) => write!(f, "{} ({p})", self.type_),
            None => f.write_str(&self.type_),
        }
    }
}

/// Where an effective value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The container's own security context.
    Container,
    /// Inherited from the pod's security context.
    Pod,
}

/// A value with the level it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Container or pod.
    pub level: Level,
}

impl<T: std::fmt::Display> std::fmt::Display for Sourced<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.level {
            Level::Container => write!(f, "{}", self.value),
            Level::Pod => write!(f, "{} (pod)", self.value),
        }
    }
}

/// The security a container actually runs with: its own value, else the pod's, for the fields
/// Kubernetes lets a container inherit; the container-only fields as set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveSecurity {
    /// Container name.
    pub container: String,
    /// Whether it is an init container.
    pub init: bool,
    /// seccomp profile.
    pub seccomp: Option<Sourced<ProfileSetting>>,
    /// AppArmor profile.
    pub app_armor: Option<Sourced<ProfileSetting>>,
    /// SELinux options as `user:role:type:level` (empty parts for unset ones).
    pub se_linux: Option<Sourced<String>>,
    /// `runAsUser`.
    pub run_as_user: Option<Sourced<i64>>,
    /// `runAsGroup`.
    pub run_as_group: Option<Sourced<i64>>,
    /// `runAsNonRoot`.
    pub run_as_non_root: Option<Sourced<bool>>,
    /// Added capabilities.
    pub capabilities_add: Vec<String>,
    /// Dropped capabilities.
    pub capabilities_drop: Vec<String>,
    /// `privileged`.
    pub privileged: Option<bool>,
    /// `allowPrivilegeEscalation`.
    pub allow_privilege_escalation: Option<bool>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: Option<bool>,
    /// `procMount`.
    pub proc_mount: Option<String>,
}

fn sourced<T>(container: Option<T>, pod: Option<T>) -> Option<Sourced<T>> {
    container
        .map(|value| Sourced { value, level: Level::Container })
        .or_else(|| pod.map(|value| Sourced { value, level: Level::Pod }))
}

fn selinux_text(o: &SELinuxOptions) -> String {
    let part = |p: &Option<String>| p.clone().unwrap_or_default();
    format!("{}:{}:{}:{}", part(&o.user), part(&o.role), part(&o.type_), part(&o.level))
}

fn seccomp_setting(p: &SeccompProfile) -> ProfileSetting {
    ProfileSetting { type_: p.type_.clone(), localhost_profile: p.localhost_profile.clone() }
}

fn apparmor_setting(p: &AppArmorProfile) -> ProfileSetting {
    ProfileSetting { type_: p.type_.clone(), localhost_profile: p.localhost_profile.clone() }
}

/// The effective security of every container of a pod spec (init containers first).
pub fn effective_security(spec: &PodSpec) -> SecurityReport {
    let pod = spec.security_context.as_ref();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (c, true))
        .chain(spec.containers.iter().map(|c| (c, false)));
    let entries = containers
        .map(|(c, init)| {
            let sc = c.security_context.as_ref();
            let caps = sc.and_then(|s| s.capabilities.as_ref());
            EffectiveSecurity {
                container: c.name.clone(),
                init,
                seccomp: sourced(
                    sc.and_then(|s| s.seccomp_profile.as_ref()).map(seccomp_setting),
                    pod.and_then(|p| p.seccomp_profile.as_ref()).map(seccomp_setting),
                ),
                app_armor: sourced(
                    sc.and_then(|s| s.app_armor_profile.as_ref()).map(apparmor_setting),
                    pod.and_then(|p| p.app_armor_profile.as_ref()).map(apparmor_setting),
                ),
                se_linux: sourced(
                    sc.and_then(|s| s.se_linux_options.as_ref()).map(selinux_text),
                    pod.and_then(|p| p.se_linux_options.as_ref()).map(selinux_text),
                ),
                run_as_user: sourced(
                    sc.and_then(|s| s.run_as_user),
                    pod.and_then(|p| p.run_as_user),
                ),
                run_as_group: sourced(
                    sc.and_then(|s| s.run_as_group),
                    pod.and_then(|p| p.run_as_group),
                ),
                run_as_non_root: sourced(
                    sc.and_then(|s| s.run_as_non_root),
                    pod.and_then(|p| p.run_as_non_root),
                ),
                capabilities_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
                capabilities_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
                privileged: sc.and_then(|s| s.privileged),
                allow_privilege_escalation: sc.and_then(|s| s.allow_privilege_escalation),
                read_only_root_filesystem: sc.and_then(|s| s.read_only_root_filesystem),
                proc_mount: sc.and_then(|s| s.proc_mount.clone()),
            }
        })
        .collect();
    SecurityReport { containers: entries }
}

/// The effective security of all containers of a pod, renderable as a job-log table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityReport {
    /// One entry per container, init containers first.
    pub containers: Vec<EffectiveSecurity>,
}

impl SecurityReport {
    /// The entry of a container.
    pub fn container(&self, name: &str) -> Option<&EffectiveSecurity> {
        self.containers.iter().find(|c| c.container == name)
    }
}

fn opt<T: std::fmt::Display>(v: Option<&T>) -> String {
    v.map_or_else(|| "-".to_owned(), ToString::to_string)
}

fn list(v: &[String]) -> String {
    if v.is_empty() { "-".to_owned() } else { v.join(",") }
}

impl std::fmt::Display for SecurityReport {
    /// A fixed-width table, one row per container; `(pod)` marks values inherited from the pod.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header = [
            "CONTAINER",
            "SECCOMP",
            "APPARMOR",
            "SELINUX",
            "USER",
            "GROUP",
            "NON-ROOT",
            "PRIVILEGED",
            "ESCALATION",
            "RO-ROOTFS",
            "CAP-ADD",
            "CAP-DROP",
        ];
        let rows: Vec<[String; 12]> = self
            .containers
            .iter()
            .map(|c| {
                [
                    if c.init { format!("{} (init)", c.container) } else { c.container.clone() },
                    opt(c.seccomp.as_ref()),
                    opt(c.app_armor.as_ref()),
                    opt(c.se_linux.as_ref()),
                    opt(c.run_as_user.as_ref()),
                    opt(c.run_as_group.as_ref()),
                    opt(c.run_as_non_root.as_ref()),
                    opt(c.privileged.as_ref()),
                    opt(c.allow_privilege_escalation.as_ref()),
                    opt(c.read_only_root_filesystem.as_ref()),
                    list(&c.capabilities_add),
                    list(&c.capabilities_drop),
                ]
            })
            .collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut std::fmt::Formatter<'_>, cells: &[&str]| -> std::fmt::Result {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{cell:<w$}  "));
                }
            }
            writeln!(f, "{}", text.trim_end())
        };
        line(f, &header)?;
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            line(f, &cells)?;
        }
        Ok(())
    }
}
