//! Phase 2: semantic rules. Each rule is documented as an error or a warning; where gitlab-runner
//! silently drops a value (an invalid seccomp type, a `Localhost` profile without a path), the rule
//! still reports it, with its location.

use std::time::Duration;

use crate::{
    api_rules::{self, Breach, Field, Part, Rule},
    diagnostics::{Diagnostic, KeyPath, Severity, line_column},
    document::Document,
    load::suggest,
    model::{
        Capabilities, Config, ContainerSecurityContext, DnsPolicy, KubernetesConfig, LogFormat,
        PodSecurityContext, ProcMount, PullPolicy, RunnerConfig, SeLinuxOptions, SecurityProfile,
        SharedSecurity,
    },
    quantity,
    raw::{
        RawConfig, RawContainerSecurityContext, RawKubernetes, RawPodSecurityContext, RawProfile,
        RawRunner,
    },
    upstream::{self, FeatureFlag, FlagStatus},
    values::parse_go_bool,
};

/// Collects diagnostics with their locations.
struct Sink<'a, 'i> {
    document: &'a Document<'i>,
    text: &'a str,
    out: &'a mut Vec<Diagnostic>,
}

impl Sink<'_, '_> {
    fn push(&mut self, severity: Severity, path: &KeyPath, prefer_key: bool, message: String) {
        let span = self.document.span(path, prefer_key);
        self.out.push(Diagnostic { severity, message, key_path: path.clone(), span });
    }
    /// A warning pointing at the value of `path`.
    fn warn(&mut self, path: &KeyPath, message: String) {
        self.push(Severity::Warning, path, false, message);
    }
    /// An error pointing at the value of `path`.
    fn error(&mut self, path: &KeyPath, message: String) {
        self.push(Severity::Error, path, false, message);
    }
    /// `path (line N)` for naming a second location inside a message.
    fn where_(&self, path: &KeyPath) -> String {
        match self.document.span(path, true) {
            Some(span) => format!("{path} (line {})", line_column(self.text, span.start).line),
            None => path.to_string(),
        }
    }
}

pub(crate) fn validate(
    raw: RawConfig,
    document: &Document<'_>,
    text: &str,
    out: &mut Vec<Diagnostic>,
) -> Config {
    let mut sink = Sink { document, text, out };
    let root = KeyPath::root();
    let concurrent = match raw.concurrent {
        None => 1,
        Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => {
            sink.error(&root.key("concurrent"), format!("concurrent must be at least 1, got {n}"));
            1
        }
    };
    let log_level = raw.log_level.as_deref().and_then(|level| match level {
        "panic" | "fatal" | "error" => Some("error".to_owned()),
        "warn" | "warning" => Some("warn".to_owned()),
        "info" => Some("info".to_owned()),
        "debug" => Some("debug".to_owned()),
        "trace" => Some("trace".to_owned()),
        other => {
            sink.error(
                &root.key("log_level"),
                format!("invalid log_level {other:?}: expected one of panic, fatal, error, warn, warning, info, debug"),
            );
            None
        }
    });
    let log_format = match raw.log_format.as_deref() {
        None | Some("" | "runner") => LogFormat::Runner,
        Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            sink.error(
                &root.key("log_format"),
                format!("invalid log_format {other:?}: expected runner, text or json"),
            );
            LogFormat::Runner
        }
    };
    let runners = raw
        .runners
        .iter()
        .enumerate()
        .map(|(index, runner)| {
            validate_runner(&mut sink, &root.key("runners").index(index), index, runner)
        })
        .collect();
    Config {
        concurrent,
        check_interval: positive_seconds(raw.check_interval, 3),
        shutdown_timeout: positive_seconds(raw.shutdown_timeout, 30),
        log_format,
        log_level,
        runners,
        raw,
    }
}

fn positive_seconds(value: Option<i64>, default: u64) -> Duration {
    Duration::from_secs(
        value.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0).unwrap_or(default),
    )
}

const SUPPORTED_SHELLS: &[&str] = &["bash", "sh", "pwsh", "powershell"];

fn validate_runner(
    sink: &mut Sink<'_, '_>,
    path: &KeyPath,
    index: usize,
    raw: &RawRunner,
) -> RunnerConfig {
    if let Some(url) = raw.url.as_deref()
        && url.trim_end_matches('/').ends_with("/ci")
    {
        sink.warn(&path.key("url"), format!("url {url:?} ends in the legacy \"/ci\" suffix; it is stripped, write the GitLab base URL"));
    }
    if let Some(executor) = raw.executor.as_deref()
        && executor != "kubernetes"
    {
        sink.warn(
            &path.key("executor"),
            format!("executor {executor:?} is not supported by this runner (only \"kubernetes\"); `runner run` refuses this entry"),
        );
    }
    if let Some(shell) = raw.shell.as_deref()
        && !shell.is_empty()
        && !SUPPORTED_SHELLS.contains(&shell)
    {
        sink.warn(
            &path.key("shell"),
            format!("unsupported shell {shell:?}: expected one of {}", SUPPORTED_SHELLS.join(", ")),
        );
    }
    for (i, entry) in raw.environment.iter().enumerate() {
        if !entry.contains('=') {
            sink.warn(
                &path.key("environment").index(i),
                format!("environment entry {entry:?} has no \"=\"; write KEY=VALUE"),
            );
        }
    }
    check_feature_flags(sink, path, raw);
    let uses_kubernetes = raw.kubernetes.is_some() || raw.executor.as_deref() == Some("kubernetes");
    let kubernetes = uses_kubernetes.then(|| {
        validate_kubernetes(
            sink,
            &path.key("kubernetes"),
            &flag_setting(sink, path, raw, &upstream::ADVANCED_POD_SPEC),
            raw.kubernetes.clone().unwrap_or_default(),
        )
    });
    RunnerConfig { index, raw: raw.clone(), kubernetes }
}

fn validate_kubernetes(
    sink: &mut Sink<'_, '_>,
    path: &KeyPath,
    advanced_pod_spec: &FlagSetting,
    raw: RawKubernetes,
) -> KubernetesConfig {
    let pod_security_context = raw
        .pod_security_context
        .as_ref()
        .map(|t| pod_context(sink, &path.key("pod_security_context"), t))
        .unwrap_or_default();
    let mut container = |name: &str, table: &Option<RawContainerSecurityContext>| {
        table
            .as_ref()
            .map(|t| container_context(sink, &path.key(name), t, &raw))
            .unwrap_or_default()
    };
    let build_container_security_context =
        container("build_container_security_context", &raw.build_container_security_context);
    let helper_container_security_context =
        container("helper_container_security_context", &raw.helper_container_security_context);
    let service_container_security_context =
        container("service_container_security_context", &raw.service_container_security_context);
    let init_permissions_container_security_context = container(
        "init_permissions_container_security_context",
        &raw.init_permissions_container_security_context,
    );

    let pull_policy = raw
        .pull_policy
        .as_ref()
        .map(|list| pull_policies(sink, &path.key("pull_policy"), &list.0, list.0.len() > 1))
        .unwrap_or_default();
    let allowed_pull_policies =
        pull_policies(sink, &path.key("allowed_pull_policies"), &raw.allowed_pull_policies, true);
    let dns_policy = match raw.dns_policy.as_deref() {
        None | Some("" | "cluster-first") => Some(DnsPolicy::ClusterFirst),
        Some("none") => Some(DnsPolicy::None),
        Some("default") => Some(DnsPolicy::Default),
        Some("cluster-first-with-host-net") => Some(DnsPolicy::ClusterFirstWithHostNet),
        Some(other) => {
            let valid = ["none", "default", "cluster-first", "cluster-first-with-host-net"];
            let hint =
                suggest(other, valid).map(|s| format!("; did you mean {s:?}?")).unwrap_or_default();
            sink.warn(
                &path.key("dns_policy"),
                format!("invalid dns_policy {other:?}: expected one of {}{hint}; dnsPolicy is left empty", valid.join(", ")),
            );
            None
        }
    };
    check_quantities(sink, path, &raw);
    check_regexes(sink, path, &raw);
    check_numeric_ids(sink, &path.key("allowed_users"), &raw.allowed_users, "allowed_users");
    check_numeric_ids(sink, &path.key("allowed_groups"), &raw.allowed_groups, "allowed_groups");
    check_client_files(sink, path, &raw);
    check_volumes(sink, &path.key("volumes"), &raw);
    check_pod_spec_patches(sink, &path.key("pod_spec"), &raw, advanced_pod_spec);
    check_api_rules(sink, path, &raw);
    for key in raw.pod_labels.keys() {
        if is_runner_gitlab_key(key) {
            sink.warn(
                &path.key("pod_labels").key(key),
                format!(
                    "label {key:?} is in the reserved runner.gitlab.com namespace and is dropped"
                ),
            );
        }
    }
    KubernetesConfig {
        poll_interval: positive_seconds(raw.poll_interval, 3),
        poll_timeout: positive_seconds(raw.poll_timeout, 180),
        cleanup_resources_timeout: raw
            .cleanup_resources_timeout
            .and_then(crate::values::GoDuration::positive)
            .unwrap_or(Duration::from_secs(300)),
        pod_security_context,
        build_container_security_context,
        helper_container_security_context,
        service_container_security_context,
        init_permissions_container_security_context,
        pull_policy,
        allowed_pull_policies,
        dns_policy,
        raw,
    }
}

/// Whether a label key is in the `runner.gitlab.com` namespace (case-insensitive), which users may
/// not set.
pub fn is_runner_gitlab_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let domain = lower.split('/').next().unwrap_or_default();
    domain == "runner.gitlab.com" || domain.ends_with(".runner.gitlab.com")
}

fn pull_policies(
    sink: &mut Sink<'_, '_>,
    path: &KeyPath,
    values: &[String],
    is_list: bool,
) -> Vec<PullPolicy> {
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let at = if is_list { path.index(i) } else { path.clone() };
        match (PullPolicy::parse(value), value.as_str()) {
            (Some(policy), _) => out.push(policy),
            (None, "") => {}
            (None, other) => {
                let valid = ["always", "if-not-present", "never"];
                let hint = suggest(other, valid)
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                sink.error(&at, format!("invalid pull policy {other:?}: expected always, if-not-present or never{hint}"));
            }
        }
    }
    out
}

/// Which profile a rule talks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProfileKind {
    Seccomp,
    AppArmor,
}

impl ProfileKind {
    fn name(self) -> &'static str {
        match self {
            ProfileKind::Seccomp => "seccomp",
            ProfileKind::AppArmor => "AppArmor",
        }
    }
    fn table_key(self) -> &'static str {
        match self {
            ProfileKind::Seccomp => "seccomp_profile",
            ProfileKind::AppArmor => "app_armor_profile",
        }
    }
}

const PROFILE_TYPES: [&str; 3] = ["RuntimeDefault", "Localhost", "Unconfined"];

/// The two spellings of one profile setting: the 18.11 table and the flat keys.
struct ProfileForms<'a> {
    table: Option<&'a RawProfile>,
    flat_type: Option<&'a String>,
    flat_localhost: Option<&'a String>,
}

/// Picks one value set in either form; both set: identical is a warning, different an error.
fn merge_forms(
    sink: &mut Sink<'_, '_>,
    what: &str,
    table_value: Option<&String>,
    table_path: &KeyPath,
    flat_value: Option<&String>,
    flat_path: &KeyPath,
) -> Option<(String, KeyPath)> {
    match (table_value, flat_value) {
        (Some(t), Some(f)) if t == f => {
            sink.push(
                Severity::Warning,
                flat_path,
                true,
                format!(
                    "{what} is set twice, at {} and here, with the same value {f:?}; keep one",
                    sink.where_(table_path)
                ),
            );
            Some((t.clone(), table_path.clone()))
        }
        (Some(t), Some(f)) => {
            sink.push(
                Severity::Error,
                flat_path,
                true,
                format!(
                    "{what} is set twice with different values: {t:?} at {} and {f:?} at {}; keep one",
                    sink.where_(table_path),
                    sink.where_(flat_path)
                ),
            );
            None
        }
        (Some(t), None) => Some((t.clone(), table_path.clone())),
        (None, Some(f)) => Some((f.clone(), flat_path.clone())),
        (None, None) => None,
    }
}

/// The one conversion of a profile setting, used for the pod and all four container tables.
fn profile(
    sink: &mut Sink<'_, '_>,
    context: &KeyPath,
    kind: ProfileKind,
    forms: &ProfileForms<'_>,
) -> Option<SecurityProfile> {
    let table_path = context.key(kind.table_key());
    let flat = kind.table_key();
    let type_ = merge_forms(
        sink,
        &format!("{} profile type", kind.name()),
        non_empty_value(forms.table.and_then(|t| t.type_.as_ref())),
        &table_path.key("type"),
        non_empty_value(forms.flat_type),
        &context.key(&format!("{flat}_type")),
    );
    let localhost = merge_forms(
        sink,
        &format!("{} localhost profile", kind.name()),
        non_empty_value(forms.table.and_then(|t| t.localhost_profile.as_ref())),
        &table_path.key("localhost_profile"),
        non_empty_value(forms.flat_localhost),
        &context.key(&format!("{flat}_localhost_profile")),
    );
    let Some((type_, type_path)) = type_ else {
        let type_conflict = non_empty_value(forms.table.and_then(|t| t.type_.as_ref())).is_some()
            && non_empty_value(forms.flat_type).is_some();
        match localhost {
            // The two types disagree (already an error): the profile is still checked.
            Some((name, at)) if type_conflict => {
                if let Err(reason) = check_localhost_profile(kind, &name) {
                    sink.error(&at, reason);
                }
            }
            Some((_, at)) => sink.warn(&at, format!("{} localhost profile is set without a profile type and is ignored; add type \"Localhost\"", kind.name())),
            None => {}
        }
        return None;
    };
    match type_.as_str() {
        "RuntimeDefault" | "Unconfined" => {
            if let Some((_, at)) = localhost {
                sink.warn(
                    &at,
                    format!(
                        "{} localhost profile is ignored because the profile type is {type_}",
                        kind.name()
                    ),
                );
            }
            Some(if type_ == "Unconfined" {
                SecurityProfile::Unconfined
            } else {
                SecurityProfile::RuntimeDefault
            })
        }
        "Localhost" => {
            let Some((name, at)) = localhost else {
                sink.warn(
                    &type_path,
                    format!(
                        "{} profile type is Localhost but no localhost profile is set (set {flat}_localhost_profile or {flat}.localhost_profile); {}",
                        kind.name(),
                        dropped_profile_consequence(kind, context)
                    ),
                );
                return None;
            };
            if let Err(reason) = check_localhost_profile(kind, &name) {
                sink.error(&at, reason);
                return None;
            }
            if let Some(warning) =
                (kind == ProfileKind::AppArmor).then(|| apparmor_name_warning(&name)).flatten()
            {
                sink.warn(&at, warning);
            }
            Some(SecurityProfile::Localhost(name))
        }
        other => {
            let hint = suggest(other, PROFILE_TYPES)
                .map(|s| format!("; did you mean {s:?}?"))
                .unwrap_or_default();
            sink.warn(
                &type_path,
                format!(
                    "invalid {} profile type {other:?}: expected one of RuntimeDefault, Localhost, Unconfined (case-sensitive){hint}; {}",
                    kind.name(),
                    dropped_profile_consequence(kind, context)
                ),
            );
            None
        }
    }
}

/// What leaving a profile out costs, said wherever a configured profile is dropped: the containers
/// fall back to what the node does without one, which is weaker than what was asked for.
fn dropped_profile_consequence(kind: ProfileKind, context: &KeyPath) -> String {
    let node_default = match kind {
        ProfileKind::Seccomp => {
            "the node's default (Unconfined unless the kubelet runs with --seccomp-default)"
        }
        ProfileKind::AppArmor => {
            "the node's default (the runtime's profile where AppArmor is enabled, none where it is not)"
        }
    };
    let who = if context.leaf() == Some("pod_security_context") {
        format!("containers without their own {} profile run with {node_default}", kind.name())
    } else {
        format!("the container runs with the pod's profile if one is set, else with {node_default}")
    };
    format!("the {} profile is left out, so {who}; `--strict` refuses this config", kind.name())
}

fn check_localhost_profile(kind: ProfileKind, name: &str) -> Result<(), String> {
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{} localhost profile {name:?} contains white space or control characters",
            kind.name()
        ));
    }
    match kind {
        ProfileKind::Seccomp => {
            if name.starts_with('/') {
                return Err(format!(
                    "seccomp localhost profile {name:?} is absolute; it must be a path relative to the kubelet's seccomp root (e.g. \"profiles/audit.json\")"
                ));
            }
            if name.split('/').any(|part| part == "..") {
                return Err(format!(
                    "seccomp localhost profile {name:?} contains \"..\"; it must stay inside the kubelet's seccomp root"
                ));
            }
            Ok(())
        }
        ProfileKind::AppArmor => {
            if let Some(bare) = name.strip_prefix("localhost/") {
                return Err(format!(
                    "AppArmor localhost profile {name:?} uses the annotation syntax; write the bare profile name {bare:?}"
                ));
            }
            if name.len() > APPARMOR_PROFILE_NAME_MAX {
                return Err(format!(
                    "AppArmor localhost profile is {} bytes long; Kubernetes allows at most {APPARMOR_PROFILE_NAME_MAX}",
                    name.len()
                ));
            }
            Ok(())
        }
    }
}

/// Kubernetes' limit on `appArmorProfile.localhostProfile` (`PATH_MAX - 1`).
const APPARMOR_PROFILE_NAME_MAX: usize = 4095;

/// A warning for an AppArmor profile name that Kubernetes accepts but that is most likely not the
/// name of a loaded profile. A profile's name is what `aa-status` lists: the name after `profile`
/// in its file, or for a profile declared without one, its attachment path (so `/usr/bin/man` is a
/// real name); the file it is loaded from (`/etc/apparmor.d/...`) is not.
fn apparmor_name_warning(name: &str) -> Option<String> {
    if name.starts_with("/etc/apparmor.d/") {
        return Some(format!(
            "AppArmor localhost profile {name:?} is the file a profile is loaded from, not its name, so the container fails to start unless a profile of that name is loaded; write the name `aa-status` lists (the word after `profile` in that file)"
        ));
    }
    if !name.starts_with('/') && name.contains('/') && !name.contains("//") {
        return Some(format!(
            "AppArmor localhost profile {name:?} looks like a relative file path (as a seccomp profile is written); AppArmor profiles are named, not files: write the name `aa-status` lists"
        ));
    }
    None
}

fn selinux(
    user: &Option<String>,
    role: &Option<String>,
    type_: &Option<String>,
    level: &Option<String>,
) -> Option<SeLinuxOptions> {
    let keep = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let options = SeLinuxOptions {
        user: keep(user),
        role: keep(role),
        type_: keep(type_),
        level: keep(level),
    };
    (!options.is_empty()).then_some(options)
}

fn pod_context(
    sink: &mut Sink<'_, '_>,
    path: &KeyPath,
    raw: &RawPodSecurityContext,
) -> PodSecurityContext {
    let seccomp = profile(
        sink,
        path,
        ProfileKind::Seccomp,
        &ProfileForms {
            table: raw.seccomp_profile.as_ref(),
            flat_type: raw.seccomp_profile_type.as_ref(),
            flat_localhost: raw.seccomp_profile_localhost_profile.as_ref(),
        },
    );
    let app_armor = profile(
        sink,
        path,
        ProfileKind::AppArmor,
        &ProfileForms {
            table: raw.app_armor_profile.as_ref(),
            flat_type: raw.app_armor_profile_type.as_ref(),
            flat_localhost: raw.app_armor_profile_localhost_profile.as_ref(),
        },
    );
    PodSecurityContext {
        shared: SharedSecurity {
            run_as_user: raw.run_as_user,
            run_as_group: raw.run_as_group,
            run_as_non_root: raw.run_as_non_root,
            se_linux: selinux(
                &raw.selinux_user,
                &raw.selinux_role,
                &raw.selinux_type,
                &raw.selinux_level,
            ),
            seccomp,
            app_armor,
        },
        fs_group: raw.fs_group,
        supplemental_groups: raw.supplemental_groups.clone(),
    }
}

fn container_context(
    sink: &mut Sink<'_, '_>,
    path: &KeyPath,
    raw: &RawContainerSecurityContext,
    kubernetes: &RawKubernetes,
) -> ContainerSecurityContext {
    let seccomp = profile(
        sink,
        path,
        ProfileKind::Seccomp,
        &ProfileForms {
            table: raw.seccomp_profile.as_ref(),
            flat_type: raw.seccomp_profile_type.as_ref(),
            flat_localhost: raw.seccomp_profile_localhost_profile.as_ref(),
        },
    );
    let app_armor = profile(
        sink,
        path,
        ProfileKind::AppArmor,
        &ProfileForms {
            table: raw.app_armor_profile.as_ref(),
            flat_type: raw.app_armor_profile_type.as_ref(),
            flat_localhost: raw.app_armor_profile_localhost_profile.as_ref(),
        },
    );
    let proc_mount = match raw.proc_mount.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(v) if v.eq_ignore_ascii_case("default") => Some(ProcMount::Default),
        Some(v) if v.eq_ignore_ascii_case("unmasked") => Some(ProcMount::Unmasked),
        Some(other) => {
            sink.warn(
                &path.key("proc_mount"),
                format!(
                    "invalid proc_mount {other:?}: expected default or unmasked; it is left out"
                ),
            );
            None
        }
    };
    let privileged = raw.privileged.or(kubernetes.privileged);
    if privileged == Some(true) && (seccomp.is_some() || app_armor.is_some()) {
        let at = if raw.privileged.is_some() { path.key("privileged") } else { path.clone() };
        sink.warn(
            &at,
            "the container is privileged, so the runtime ignores its seccomp and AppArmor profiles; drop privileged or the profiles".to_owned(),
        );
    }
    ContainerSecurityContext {
        shared: SharedSecurity {
            run_as_user: raw.run_as_user,
            run_as_group: raw.run_as_group,
            run_as_non_root: raw.run_as_non_root,
            se_linux: selinux(
                &raw.selinux_user,
                &raw.selinux_role,
                &raw.selinux_type,
                &raw.selinux_level,
            ),
            seccomp,
            app_armor,
        },
        capabilities: raw
            .capabilities
            .as_ref()
            .map(|c| Capabilities { add: c.add.clone(), drop: c.drop.clone() }),
        privileged: raw.privileged,
        read_only_root_filesystem: raw.read_only_root_filesystem,
        allow_privilege_escalation: raw.allow_privilege_escalation,
        proc_mount,
    }
}

/// Every quantity key of `[runners.kubernetes]`, with its value.
fn quantity_keys(raw: &RawKubernetes) -> Vec<(&'static str, &Option<String>)> {
    macro_rules! keys {
        ($($k:ident),* $(,)?) => { vec![$((stringify!($k), &raw.$k)),*] };
    }
    keys!(
        cpu_limit,
        cpu_limit_overwrite_max_allowed,
        cpu_request,
        cpu_request_overwrite_max_allowed,
        memory_limit,
        memory_limit_overwrite_max_allowed,
        memory_request,
        memory_request_overwrite_max_allowed,
        ephemeral_storage_limit,
        ephemeral_storage_limit_overwrite_max_allowed,
        ephemeral_storage_request,
        ephemeral_storage_request_overwrite_max_allowed,
        service_cpu_limit,
        service_cpu_limit_overwrite_max_allowed,
        service_cpu_request,
        service_cpu_request_overwrite_max_allowed,
        service_memory_limit,
        service_memory_limit_overwrite_max_allowed,
        service_memory_request,
        service_memory_request_overwrite_max_allowed,
        service_ephemeral_storage_limit,
        service_ephemeral_storage_limit_overwrite_max_allowed,
        service_ephemeral_storage_request,
        service_ephemeral_storage_request_overwrite_max_allowed,
        helper_cpu_limit,
        helper_cpu_limit_overwrite_max_allowed,
        helper_cpu_request,
        helper_cpu_request_overwrite_max_allowed,
        helper_memory_limit,
        helper_memory_limit_overwrite_max_allowed,
        helper_memory_request,
        helper_memory_request_overwrite_max_allowed,
        helper_ephemeral_storage_limit,
        helper_ephemeral_storage_limit_overwrite_max_allowed,
        helper_ephemeral_storage_request,
        helper_ephemeral_storage_request_overwrite_max_allowed,
        pod_cpu_limit,
        pod_cpu_limit_overwrite_max_allowed,
        pod_cpu_request,
        pod_cpu_request_overwrite_max_allowed,
        pod_memory_limit,
        pod_memory_limit_overwrite_max_allowed,
        pod_memory_request,
        pod_memory_request_overwrite_max_allowed,
        suspend_pvc_size,
    )
}

fn check_quantities(sink: &mut Sink<'_, '_>, path: &KeyPath, raw: &RawKubernetes) {
    for (key, value) in quantity_keys(raw) {
        if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty())
            && let Err(reason) = quantity::check(value)
        {
            sink.error(&path.key(key), format!("invalid quantity {value:?} for {key}: {reason}"));
        }
    }
    if let Some(volumes) = &raw.volumes {
        for (i, volume) in volumes.empty_dir.iter().enumerate() {
            if let Some(size) = volume.size_limit.as_deref().filter(|v| !v.trim().is_empty())
                && let Err(reason) = quantity::check(size.trim())
            {
                sink.warn(
                    &path.key("volumes").key("empty_dir").index(i).key("size_limit"),
                    format!("invalid size_limit {size:?}: {reason}; the volume gets no size limit"),
                );
            }
        }
    }
}

fn check_regexes(sink: &mut Sink<'_, '_>, path: &KeyPath, raw: &RawKubernetes) {
    let keys = [
        ("namespace_overwrite_allowed", &raw.namespace_overwrite_allowed),
        ("service_account_overwrite_allowed", &raw.service_account_overwrite_allowed),
        ("node_selector_overwrite_allowed", &raw.node_selector_overwrite_allowed),
        ("node_tolerations_overwrite_allowed", &raw.node_tolerations_overwrite_allowed),
        ("pod_labels_overwrite_allowed", &raw.pod_labels_overwrite_allowed),
        ("pod_annotations_overwrite_allowed", &raw.pod_annotations_overwrite_allowed),
    ];
    for (key, value) in keys {
        if let Some(pattern) = value.as_deref().filter(|v| !v.is_empty())
            && let Err(error) = regex::Regex::new(pattern)
        {
            let first_line = error.to_string().lines().last().unwrap_or_default().trim().to_owned();
            sink.error(
                &path.key(key),
                format!("invalid regular expression {pattern:?} for {key}: {first_line}"),
            );
        }
    }
}

fn check_numeric_ids(sink: &mut Sink<'_, '_>, path: &KeyPath, values: &[String], key: &str) {
    for (i, value) in values.iter().enumerate() {
        if value.parse::<u64>().is_err() {
            sink.warn(
                &path.index(i),
                format!("{key} entry {value:?} is not a numeric ID and is skipped"),
            );
        }
    }
}

fn check_client_files(sink: &mut Sink<'_, '_>, path: &KeyPath, raw: &RawKubernetes) {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    if set(&raw.cert_file) && !(set(&raw.key_file) && set(&raw.ca_file)) {
        sink.error(&path.key("cert_file"), "cert_file needs key_file and ca_file too".to_owned());
    }
}

fn check_volumes(sink: &mut Sink<'_, '_>, path: &KeyPath, raw: &RawKubernetes) {
    let Some(volumes) = &raw.volumes else { return };
    for (i, nfs) in volumes.nfs.iter().enumerate() {
        let missing: Vec<&str> = [
            ("name", &nfs.name),
            ("mount_path", &nfs.mount_path),
            ("server", &nfs.server),
            ("path", &nfs.path),
        ]
        .into_iter()
        .filter(|(_, v)| v.as_deref().is_none_or(str::is_empty))
        .map(|(k, _)| k)
        .collect();
        if !missing.is_empty() {
            sink.error(
                &path.key("nfs").index(i),
                format!("nfs volume: missing required fields: {}", missing.join(", ")),
            );
        }
    }
    let propagation = |sink: &mut Sink<'_, '_>, at: KeyPath, value: &Option<String>| {
        if let Some(v) = value.as_deref()
            && !["", "None", "HostToContainer", "Bidirectional"].contains(&v)
        {
            sink.warn(&at, format!("invalid mount_propagation {v:?}: expected None, HostToContainer or Bidirectional"));
        }
    };
    for (i, v) in volumes.host_path.iter().enumerate() {
        propagation(
            sink,
            path.key("host_path").index(i).key("mount_propagation"),
            &v.mount_propagation,
        );
    }
    for (i, v) in volumes.pvc.iter().enumerate() {
        propagation(sink, path.key("pvc").index(i).key("mount_propagation"), &v.mount_propagation);
    }
    for (i, v) in volumes.empty_dir.iter().enumerate() {
        propagation(
            sink,
            path.key("empty_dir").index(i).key("mount_propagation"),
            &v.mount_propagation,
        );
    }
}

/// Every field of [`api_rules::FIELDS`] against the rule of its destination: an error where the
/// API server or the runtime would refuse the pod, a warning for a capability spelt otherwise
/// than the runtime's canonical name. Values holding a job variable are checked per job.
fn check_api_rules(sink: &mut Sink<'_, '_>, path: &KeyPath, raw: &RawKubernetes) {
    let Ok(tree) = serde_json::to_value(raw) else { return };
    for field in api_rules::FIELDS {
        let segments: Vec<&str> = field.path.split('.').collect();
        visit(&tree, &segments, path.clone(), &mut |value, at| match field.part {
            Part::Value => check_value(sink, field, value, &at),
            Part::Keys | Part::TolerationKeys => {
                // Reserved runner.gitlab.com keys are dropped (with their own warning).
                let keys = value.as_object().into_iter().flat_map(|o| o.keys());
                for key in keys.filter(|k| !is_runner_gitlab_key(k)) {
                    check_key(sink, field, key, &at.key(key));
                }
            }
        });
    }
}

/// Calls `found` with each value at `segments` below `value` (`*`: every element or entry).
fn visit(
    value: &serde_json::Value,
    segments: &[&str],
    at: KeyPath,
    found: &mut dyn FnMut(&serde_json::Value, KeyPath),
) {
    let Some((first, rest)) = segments.split_first() else {
        found(value, at);
        return;
    };
    match (*first, value) {
        ("*", serde_json::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                visit(item, rest, at.index(i), found);
            }
        }
        ("*", serde_json::Value::Object(entries)) => {
            for (key, item) in entries {
                visit(item, rest, at.key(key), found);
            }
        }
        (key, serde_json::Value::Object(entries)) => {
            if let Some(item) = entries.get(key) {
                visit(item, rest, at.key(key), found);
            }
        }
        _ => {}
    }
}

fn check_value(sink: &mut Sink<'_, '_>, field: &Field, value: &serde_json::Value, at: &KeyPath) {
    match value {
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_value(sink, field, item, &at.index(i));
            }
        }
        serde_json::Value::String(text) => check_text(sink, field, text, at, false),
        serde_json::Value::Number(n) => check_text(sink, field, &n.to_string(), at, false),
        _ => {}
    }
}

fn check_key(sink: &mut Sink<'_, '_>, field: &Field, key: &str, at: &KeyPath) {
    if field.part == Part::TolerationKeys {
        let (name, value) = key.split_once('=').unwrap_or((key, ""));
        if !name.is_empty() {
            check_text(sink, field, name, at, true);
        }
        if let Some(message) = Rule::LabelValue.check("a toleration value", value) {
            sink.push(Severity::Error, at, true, message);
        }
        return;
    }
    check_text(sink, field, key, at, true);
}

fn check_text(sink: &mut Sink<'_, '_>, field: &Field, text: &str, at: &KeyPath, at_key: bool) {
    if api_rules::is_per_job(text) || (text.is_empty() && field.rule != Rule::Id) {
        return;
    }
    if api_rules::is_placeholder(text) {
        if !field.rule.accepts(text) {
            sink.push(
                Severity::Warning,
                at,
                at_key,
                format!("`{text}` looks like a template or an example's placeholder, not {}: render or replace it before use (the API server refuses it as it is)", field.what),
            );
        }
        return;
    }
    if field.rule == Rule::Capability
        && let Some(canonical) = api_rules::canonical_capability(text)
    {
        if canonical != text {
            sink.push(
                Severity::Warning,
                at,
                at_key,
                format!("capability `{text}` is sent as `{canonical}`, its canonical name; write `{canonical}`"),
            );
        }
        return;
    }
    let Some(message) = field.rule.check(field.what, text) else { return };
    match field.breach {
        Breach::Refused => {
            sink.push(Severity::Error, at, at_key, format!("{message} ({})", field.rule.mirrors()));
        }
        Breach::Mended => sink.push(
            Severity::Warning,
            at,
            at_key,
            format!("{message}; it is sent as `{}`", api_rules::to_dns1123_label(text)),
        ),
        Breach::Warned => sink.push(
            Severity::Warning,
            at,
            at_key,
            format!(
                "{message} ({}): the API server refuses such a pod, so every job of this runner would fail at pod creation",
                field.rule.mirrors()
            ),
        ),
        Breach::Sanitized => sink.push(
            Severity::Warning,
            at,
            at_key,
            format!("{message}; it is sent as `{}`", api_rules::sanitize_label(text)),
        ),
    }
}

/// How the config sets a feature flag, for rules that depend on it.
enum FlagSetting {
    /// Nothing in the config sets it: the default applies, unless a job's variables set it.
    Default,
    /// The config sets it, at this location (`[runners.feature_flags]` or `environment`).
    Set { on: bool, at: String, final_: bool },
}

/// Where and how the runner's config sets `flag`: `[runners.feature_flags]` wins over
/// `environment`, as upstream resolves flags (a job's variables come between the two).
fn flag_setting(
    sink: &Sink<'_, '_>,
    path: &KeyPath,
    raw: &RawRunner,
    flag: &FeatureFlag,
) -> FlagSetting {
    if let Some(on) = raw.feature_flags.get(flag.name) {
        let at = sink.where_(&path.key("feature_flags").key(flag.name));
        return FlagSetting::Set { on: *on, at, final_: true };
    }
    for (i, entry) in raw.environment.iter().enumerate().rev() {
        if let Some((name, value)) = entry.split_once('=')
            && name == flag.name
            && let Some(on) = parse_go_bool(value)
        {
            let at = sink.where_(&path.key("environment").index(i));
            return FlagSetting::Set { on, at, final_: false };
        }
    }
    FlagSetting::Default
}

/// Checks every `FF_*` entry of `[runners.feature_flags]` and `environment` against upstream's
/// flags: unknown (with the closest name), removed, deprecated, not read by this runner, not a
/// boolean, or only restating the default.
fn check_feature_flags(sink: &mut Sink<'_, '_>, path: &KeyPath, raw: &RawRunner) {
    for (name, on) in &raw.feature_flags {
        check_feature_flag(sink, &path.key("feature_flags").key(name), true, name, Ok(*on));
    }
    for (i, entry) in raw.environment.iter().enumerate() {
        if let Some((name, value)) = entry.split_once('=')
            && name.starts_with("FF_")
        {
            let value = parse_go_bool(value).ok_or(value);
            check_feature_flag(sink, &path.key("environment").index(i), false, name, value);
        }
    }
}

/// One flag entry; `at_key`: point at the entry's key (a `[runners.feature_flags]` name) rather
/// than at its value (an `environment` string).
fn check_feature_flag(
    sink: &mut Sink<'_, '_>,
    at: &KeyPath,
    at_key: bool,
    name: &str,
    value: Result<bool, &str>,
) {
    let warn = |sink: &mut Sink<'_, '_>, message: String| {
        sink.push(Severity::Warning, at, at_key, message);
    };
    let Some(flag) = upstream::feature_flag(name) else {
        let current = upstream::FEATURE_FLAGS
            .iter()
            .filter(|f| !matches!(f.status, FlagStatus::Removed { .. }))
            .map(|f| f.name);
        let hint =
            suggest(name, current).map(|s| format!("; did you mean {s:?}?")).unwrap_or_default();
        warn(
            sink,
            format!(
                "{name} is not a gitlab-runner feature flag (as of {}), so it changes nothing{hint}",
                upstream::UPSTREAM_VERSION
            ),
        );
        return;
    };
    let on_off = |on: bool| if on { "on" } else { "off" };
    let value = match (flag.status, value) {
        (FlagStatus::Removed { version }, _) => {
            warn(
                sink,
                format!(
                    "feature flag {name} was removed from gitlab-runner in {version} and changes nothing; delete it"
                ),
            );
            return;
        }
        (_, Err(text)) => {
            warn(
                sink,
                format!(
                    "feature flag {name} is set to {text:?}, which is not a boolean (1, t, true, TRUE, True or 0, f, false, FALSE, False); it stays {}",
                    on_off(flag.default)
                ),
            );
            return;
        }
        (_, Ok(value)) => value,
    };
    if let FlagStatus::Deprecated { note } = flag.status {
        warn(sink, format!("feature flag {name} is deprecated: {note}; delete the entry"));
        return;
    }
    if value == flag.default {
        sink.push(
            Severity::Note,
            at,
            at_key,
            format!(
                "feature flag {name} is {} by default; this entry changes nothing",
                on_off(value)
            ),
        );
    } else if !flag.honoured {
        warn(
            sink,
            format!(
                "feature flag {name} is a gitlab-runner flag this runner does not read: turning it {} changes nothing here",
                on_off(value)
            ),
        );
    }
}

/// `[[pod_spec]]` entries. They only matter when FF_USE_ADVANCED_POD_SPEC_CONFIGURATION is on:
/// upstream ignores them (without a word) otherwise. So a mistake in them is an error when the
/// config turns the flag on, and a warning when it does not; and patches that are not applied
/// are said to be so.
fn check_pod_spec_patches(
    sink: &mut Sink<'_, '_>,
    path: &KeyPath,
    raw: &RawKubernetes,
    flag: &FlagSetting,
) {
    if raw.pod_spec.is_empty() {
        return;
    }
    let name = upstream::ADVANCED_POD_SPEC.name;
    let applied = match flag {
        FlagSetting::Set { on: true, .. } => true,
        FlagSetting::Set { on: false, at, final_: true } => {
            sink.warn(path, format!("these pod_spec patches are never applied: {name} is false at {at}; set it to true to apply them"));
            false
        }
        FlagSetting::Set { on: false, at, final_: false } => {
            sink.warn(path, format!("these pod_spec patches are not applied: {name} is false at {at}; set it to true to apply them (a job that sets the variable to true applies them to itself)"));
            false
        }
        FlagSetting::Default => {
            sink.warn(path, format!("these pod_spec patches are not applied: {name} is off by default; set it to true in [runners.feature_flags] to apply them (a job that sets the variable to true applies them to itself)"));
            false
        }
    };
    let problem = |sink: &mut Sink<'_, '_>, at: &KeyPath, message: String| {
        if applied {
            sink.error(at, message);
        } else {
            sink.warn(at, format!("{message} (an error once {name} is on)"));
        }
    };
    for (i, patch) in raw.pod_spec.iter().enumerate() {
        let at = path.index(i);
        let patch_name = patch.name.as_deref().unwrap_or_default();
        let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        match (has(&patch.patch), has(&patch.patch_path)) {
            (true, true) => problem(
                sink,
                &at,
                format!("ambiguous patch: both patch path and patch provided ({patch_name})"),
            ),
            (false, false) => problem(
                sink,
                &at,
                format!("pod_spec patch {patch_name:?} has neither patch nor patch_path"),
            ),
            _ => {}
        }
        match patch.patch_type.as_deref() {
            None | Some("" | "strategic" | "merge" | "json") => {}
            Some(other) => problem(
                sink,
                &at.key("patch_type"),
                format!("unsupported patch type {other}: expected strategic, merge or json"),
            ),
        }
    }
}

fn non_empty_value(value: Option<&String>) -> Option<&String> {
    value.filter(|s| !s.is_empty())
}
