//! Phase 2 output: the validated configuration. Security settings are closed enums here, so the
//! pod builder cannot see an invalid profile type or a `Localhost` profile without its path.

use std::{fmt, time::Duration};

use crate::raw::{RawConfig, RawKubernetes, RawRunner};

/// A seccomp or AppArmor profile, as Kubernetes models both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecurityProfile {
    /// The container runtime's default profile.
    RuntimeDefault,
    /// No profile (unconfined).
    Unconfined,
    /// A profile on the node: for seccomp a path relative to the kubelet's seccomp root, for
    /// AppArmor the name of a loaded profile.
    Localhost(String),
}

impl SecurityProfile {
    /// The Kubernetes `type` value: `RuntimeDefault`, `Unconfined` or `Localhost`.
    pub fn type_name(&self) -> &'static str {
        match self {
            SecurityProfile::RuntimeDefault => "RuntimeDefault",
            SecurityProfile::Unconfined => "Unconfined",
            SecurityProfile::Localhost(_) => "Localhost",
        }
    }

    /// The `localhostProfile` value, for `Localhost` only.
    pub fn localhost_profile(&self) -> Option<&str> {
        match self {
            SecurityProfile::Localhost(p) => Some(p),
            _ => None,
        }
    }

    /// The legacy AppArmor annotation value (`runtime/default`, `unconfined`, `localhost/<name>`),
    /// used for clusters older than 1.30.
    pub fn apparmor_annotation_value(&self) -> String {
        match self {
            SecurityProfile::RuntimeDefault => "runtime/default".to_owned(),
            SecurityProfile::Unconfined => "unconfined".to_owned(),
            SecurityProfile::Localhost(name) => format!("localhost/{name}"),
        }
    }
}

impl fmt::Display for SecurityProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecurityProfile::Localhost(p) => write!(f, "Localhost ({p})"),
            other => f.write_str(other.type_name()),
        }
    }
}

/// `seLinuxOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeLinuxOptions {
    /// SELinux user.
    pub user: Option<String>,
    /// SELinux role.
    pub role: Option<String>,
    /// SELinux type.
    pub type_: Option<String>,
    /// SELinux level.
    pub level: Option<String>,
}

impl SeLinuxOptions {
    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.role.is_none() && self.type_.is_none() && self.level.is_none()
    }
}

/// `procMount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcMount {
    /// The default (masked) /proc.
    Default,
    /// An unmasked /proc.
    Unmasked,
}

/// The settings shared by the pod and container security contexts: the ones Kubernetes lets a
/// container override (container value wins over the pod value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedSecurity {
    /// `runAsUser`.
    pub run_as_user: Option<i64>,
    /// `runAsGroup`.
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot`.
    pub run_as_non_root: Option<bool>,
    /// `seLinuxOptions`.
    pub se_linux: Option<SeLinuxOptions>,
    /// `seccompProfile`.
    pub seccomp: Option<SecurityProfile>,
    /// `appArmorProfile` (Kubernetes 1.30+; annotations before).
    pub app_armor: Option<SecurityProfile>,
}

/// `[runners.kubernetes.pod_security_context]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSecurityContext {
    /// The settings a container may override.
    pub shared: SharedSecurity,
    /// `fsGroup`.
    pub fs_group: Option<i64>,
    /// `supplementalGroups`.
    pub supplemental_groups: Vec<i64>,
}

/// `capabilities`, validated. `None` lists leave the global `cap_add`/`cap_drop` in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Replaces the global add list when set.
    pub add: Option<Vec<String>>,
    /// Replaces the global drop list (and the default `NET_RAW` drop) when set.
    pub drop: Option<Vec<String>>,
}

/// A container security context table, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSecurityContext {
    /// The settings that override the pod's.
    pub shared: SharedSecurity,
    /// `capabilities`.
    pub capabilities: Option<Capabilities>,
    /// `privileged` (falls back to the global key).
    pub privileged: Option<bool>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: Option<bool>,
    /// `allowPrivilegeEscalation` (falls back to the global key).
    pub allow_privilege_escalation: Option<bool>,
    /// `procMount`.
    pub proc_mount: Option<ProcMount>,
}

/// Image pull policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// `always` -> `Always`.
    Always,
    /// `if-not-present` -> `IfNotPresent`.
    IfNotPresent,
    /// `never` -> `Never`.
    Never,
}

impl PullPolicy {
    /// Parses gitlab-runner's spelling (`always`, `if-not-present`, `never`), used in
    /// `config.toml` and in a job's `pull_policy`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "always" => Some(PullPolicy::Always),
            "if-not-present" => Some(PullPolicy::IfNotPresent),
            "never" => Some(PullPolicy::Never),
            _ => None,
        }
    }

    /// The Kubernetes spelling.
    pub fn as_kubernetes(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// `dns_policy`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsPolicy {
    /// `none`.
    None,
    /// `default`.
    Default,
    /// `cluster-first`.
    ClusterFirst,
    /// `cluster-first-with-host-net`.
    ClusterFirstWithHostNet,
}

impl DnsPolicy {
    /// The Kubernetes spelling.
    pub fn as_kubernetes(self) -> &'static str {
        match self {
            DnsPolicy::None => "None",
            DnsPolicy::Default => "Default",
            DnsPolicy::ClusterFirst => "ClusterFirst",
            DnsPolicy::ClusterFirstWithHostNet => "ClusterFirstWithHostNet",
        }
    }
}

/// The Kubernetes executor settings of one runner, validated.
///
/// Typed fields hold every setting that needed a semantic check; `raw` keeps all keys as written
/// (use the typed field where one exists).
#[derive(Debug, Clone, Default)]
pub struct KubernetesConfig {
    /// All keys as written.
    pub raw: RawKubernetes,
    /// The pod security context.
    pub pod_security_context: PodSecurityContext,
    /// The `build` container's security context.
    pub build_container_security_context: ContainerSecurityContext,
    /// The `helper` container's security context.
    pub helper_container_security_context: ContainerSecurityContext,
    /// Every service container's security context.
    pub service_container_security_context: ContainerSecurityContext,
    /// The `init-permissions` container's security context.
    pub init_permissions_container_security_context: ContainerSecurityContext,
    /// `pull_policy`; empty means the cluster default.
    pub pull_policy: Vec<PullPolicy>,
    /// `allowed_pull_policies`; empty allows all.
    pub allowed_pull_policies: Vec<PullPolicy>,
    /// `dns_policy`; `None` when the key is invalid (gitlab-runner then leaves `dnsPolicy` empty).
    pub dns_policy: Option<DnsPolicy>,
    /// `poll_interval` (default 3 s).
    pub poll_interval: Duration,
    /// `poll_timeout` (default 180 s).
    pub poll_timeout: Duration,
    /// `cleanup_resources_timeout` (default 5 min).
    pub cleanup_resources_timeout: Duration,
}

/// One validated `[[runners]]` entry.
#[derive(Debug, Clone, Default)]
pub struct RunnerConfig {
    /// Position in the file (0-based).
    pub index: usize,
    /// All keys as written (`kubernetes` included).
    pub raw: RawRunner,
    /// The Kubernetes executor settings, when the runner has a `[runners.kubernetes]` table or uses
    /// the `kubernetes` executor.
    pub kubernetes: Option<KubernetesConfig>,
}

impl RunnerConfig {
    /// The runner's name, or `runners[N]` when it has none.
    pub fn display_name(&self) -> String {
        match self.raw.name.as_deref() {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => format!("runners[{}]", self.index),
        }
    }
}

/// Daemon log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// gitlab-runner's default human format (rendered as text here).
    #[default]
    Runner,
    /// Plain text.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Expands `$VAR` and `${VAR}` in every runner's `url` and `token` through `lookup` (the
    /// process environment, in the binary), as gitlab-runner does after loading.
    pub fn expand_credentials(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        for runner in &mut self.runners {
            for value in [&mut runner.raw.url, &mut runner.raw.token].into_iter().flatten() {
                *value = crate::expand::expand_variables(value, &lookup);
            }
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// All keys as written.
    pub raw: RawConfig,
    /// `concurrent` (default 1).
    pub concurrent: usize,
    /// `check_interval` (default 3 s).
    pub check_interval: Duration,
    /// `shutdown_timeout` (default 30 s).
    pub shutdown_timeout: Duration,
    /// `log_format`.
    pub log_format: LogFormat,
    /// `log_level`, normalised to a `tracing` level name (`error`, `warn`, `info`, `debug`).
    pub log_level: Option<String>,
    /// The runners.
    pub runners: Vec<RunnerConfig>,
}
