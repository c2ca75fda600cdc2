//! Phase 1 of loading: the `config.toml` schema exactly as written, decoded with serde.
//!
//! Keys are spelled as gitlab-runner spells them (including `tls-ca-file` and the CamelCase keys of
//! `[runners.cache]`). Every field's doc comment is user documentation: `docs/config.md` and
//! `docs/config.schema.json` are generated from these types. Semantic checks happen in phase 2
//! ([`crate::validate`]); nothing here rejects a value that has the right TOML type, except
//! durations and times, whose text must parse.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::{GoDuration, StringOrArray, TimeValue};

/// An opaque table kept as written (settings of other executors, which this runner does not use).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(transparent)]
pub struct OpaqueTable(pub BTreeMap<String, toml::Value>);

impl JsonSchema for OpaqueTable {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OpaqueTable".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "object", "description": "Kept as written; not used by this runner." })
    }
}

/// The whole `config.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawConfig {
    /// Global cap on the jobs running at once across all `[[runners]]`. Default 1; 0 is rejected.
    pub concurrent: Option<i64>,
    /// Seconds between job requests (divided between the runners). Default 3 when unset or <= 0.
    pub check_interval: Option<i64>,
    /// Daemon log level: `panic`, `fatal`, `error`, `warn` (`warning`), `info` or `debug`.
    pub log_level: Option<String>,
    /// Daemon log format: `runner` (the default), `text` or `json`.
    pub log_format: Option<String>,
    /// User for the service install (unused by this runner; accepted for compatibility).
    pub user: Option<String>,
    /// `host:port` of the HTTP server with Prometheus metrics and the health check.
    pub listen_address: Option<String>,
    /// Error reporting DSN (accepted for compatibility; unused).
    pub sentry_dsn: Option<String>,
    /// Maximum lifetime of a keep-alive connection to GitLab. Default `15m`.
    pub connection_max_age: Option<GoDuration>,
    /// Seconds running jobs get to finish after a shutdown signal. Default 30 when unset or <= 0.
    pub shutdown_timeout: Option<i64>,
    /// Default runner labels, merged under each runner's own `labels`.
    pub labels: BTreeMap<String, String>,
    /// The interactive web terminal's session server.
    pub session_server: Option<RawSessionServer>,
    /// docker+machine settings (accepted for compatibility; unused).
    pub machine: Option<OpaqueTable>,
    /// Experimental settings (accepted for compatibility; unused).
    pub experimental: Option<OpaqueTable>,
    /// One entry per runner.
    pub runners: Vec<RawRunner>,
}

/// `[session_server]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawSessionServer {
    /// Address the session server listens on.
    pub listen_address: Option<String>,
    /// Address advertised to GitLab.
    pub advertise_address: Option<String>,
    /// Session lifetime in seconds. Default 1800.
    pub session_timeout: Option<i64>,
}

/// One `[[runners]]` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawRunner {
    /// The runner's description.
    pub name: Option<String>,
    /// GitLab base URL; `$VAR` and `${VAR}` are expanded from the environment.
    pub url: Option<String>,
    /// Runner ID (written by registration).
    pub id: Option<i64>,
    /// Runner authentication token (`glrt-…`); `$VAR` and `${VAR}` are expanded from the environment.
    pub token: Option<String>,
    /// When the token was obtained (token rotation bookkeeping).
    pub token_obtained_at: Option<TimeValue>,
    /// When the token expires (token rotation bookkeeping).
    pub token_expires_at: Option<TimeValue>,
    /// CA bundle for TLS to GitLab.
    #[serde(rename = "tls-ca-file")]
    pub tls_ca_file: Option<String>,
    /// Client certificate for TLS to GitLab.
    #[serde(rename = "tls-cert-file")]
    pub tls_cert_file: Option<String>,
    /// Client key for TLS to GitLab.
    #[serde(rename = "tls-key-file")]
    pub tls_key_file: Option<String>,
    /// Maximum jobs this runner runs at once; 0 means no limit.
    pub limit: Option<i64>,
    /// Maximum job log size in KiB. Default 4096.
    pub output_limit: Option<i64>,
    /// Job requests in flight at once. Default 1.
    pub request_concurrency: Option<i64>,
    /// Turns off the quick re-poll after a job is received.
    pub strict_check_interval: Option<bool>,
    /// Failed job requests before the runner is paused for `unhealthy_interval`. Default 3.
    pub unhealthy_requests_limit: Option<i64>,
    /// How long an unhealthy runner is paused. Default `60m`.
    pub unhealthy_interval: Option<GoDuration>,
    /// Retries for the final job state update. Default 10.
    pub job_status_final_update_retry_limit: Option<i64>,
    /// The executor: `kubernetes` is the one this runner implements.
    pub executor: Option<String>,
    /// Root of the build directory (`/builds` on Kubernetes).
    pub builds_dir: Option<String>,
    /// Local cache directory (`/cache`).
    pub cache_dir: Option<String>,
    /// Override for the git clone URL.
    pub clone_url: Option<String>,
    /// Extra job variables, `KEY=VALUE`; may set `FF_*` feature flags.
    pub environment: Vec<String>,
    /// Experimental helper proxy-exec.
    pub proxy_exec: Option<bool>,
    /// Script run before fetching sources.
    pub pre_get_sources_script: Option<String>,
    /// Script run after fetching sources.
    pub post_get_sources_script: Option<String>,
    /// Script run before the build script.
    pub pre_build_script: Option<String>,
    /// Script run after the build script.
    pub post_build_script: Option<String>,
    /// Timeout of the prepare stage (default: the job timeout).
    pub prepare_timeout: Option<GoDuration>,
    /// Timeout of the get-sources stage (default: the job timeout).
    pub get_sources_timeout: Option<GoDuration>,
    /// Ignore `CI_DEBUG_TRACE`.
    pub debug_trace_disabled: Option<bool>,
    /// Mark the checkout as a git `safe.directory` (default true on Kubernetes).
    pub safe_directory_checkout: Option<bool>,
    /// Clean the git config before and after the job (default true).
    pub clean_git_config: Option<bool>,
    /// Shell for job scripts: `bash` (default), `sh`, `pwsh`, `powershell`.
    pub shell: Option<String>,
    /// Per-runner labels (override the global ones).
    pub labels: BTreeMap<String, String>,
    /// Feature-flag overrides with the highest precedence, e.g. `FF_USE_POD_ACTIVE_DEADLINE_SECONDS = false`.
    pub feature_flags: BTreeMap<String, bool>,
    /// docker executor slot cgroups (accepted for compatibility; unused).
    pub use_slot_cgroups: Option<bool>,
    /// docker executor slot cgroup template (accepted for compatibility; unused).
    pub slot_cgroup_template: Option<String>,
    /// Image of the steps integration.
    pub step_runner_image: Option<String>,
    /// Whether jobs may choose their clone path (`GIT_CLONE_PATH`).
    pub custom_build_dir: Option<RawCustomBuildDir>,
    /// Distributed cache settings.
    pub cache: Option<RawCache>,
    /// Artifact transfer settings.
    pub artifact: Option<RawArtifact>,
    /// Referees (accepted for compatibility; unused).
    pub referees: Option<OpaqueTable>,
    /// Monitoring (accepted for compatibility; unused).
    pub monitoring: Option<OpaqueTable>,
    /// Experimental runner settings (accepted for compatibility; unused).
    pub experimental: Option<OpaqueTable>,
    /// Instance executor settings (accepted for compatibility; unused).
    pub instance: Option<OpaqueTable>,
    /// Autoscaler settings of other executors (accepted for compatibility; unused).
    pub autoscaler: Option<OpaqueTable>,
    /// docker executor settings (accepted for compatibility; unused).
    pub docker: Option<OpaqueTable>,
    /// ssh executor settings (accepted for compatibility; unused).
    pub ssh: Option<OpaqueTable>,
    /// docker+machine settings (accepted for compatibility; unused).
    pub machine: Option<OpaqueTable>,
    /// custom executor settings (accepted for compatibility; unused).
    pub custom: Option<OpaqueTable>,
    /// parallels executor settings (accepted for compatibility; unused).
    pub parallels: Option<OpaqueTable>,
    /// virtualbox executor settings (accepted for compatibility; unused).
    pub virtualbox: Option<OpaqueTable>,
    /// The Kubernetes executor.
    pub kubernetes: Option<RawKubernetes>,
}

/// `[runners.custom_build_dir]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawCustomBuildDir {
    /// Allow `GIT_CLONE_PATH` (default true on Kubernetes).
    pub enabled: Option<bool>,
}

/// `[runners.artifact]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawArtifact {
    /// Upload timeout. Default `1h`.
    pub upload_timeout: Option<GoDuration>,
    /// Response header timeout. Default `10m`.
    pub response_header_timeout: Option<GoDuration>,
}

/// `[runners.cache]` (CamelCase keys, as gitlab-runner spells them).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawCache {
    /// Cache backend: `s3`, `gcs` or `azure`.
    #[serde(rename = "Type")]
    pub type_: Option<String>,
    /// Path prefix inside the bucket.
    #[serde(rename = "Path")]
    pub path: Option<String>,
    /// Share the cache between runners.
    #[serde(rename = "Shared")]
    pub shared: Option<bool>,
    /// Largest cache archive to upload, in bytes.
    #[serde(rename = "MaxUploadedArchiveSize")]
    pub max_uploaded_archive_size: Option<i64>,
    /// S3 settings, as upstream spells them: `BucketName`, `ServerAddress` (host:port of an
    /// S3-compatible server; AWS when absent), `BucketLocation` (region, default `us-east-1`),
    /// `Insecure` (plain HTTP), `AccessKey`, `SecretKey`, `SessionToken`; without keys, or with
    /// `AuthenticationType = "iam"`, credentials come from the environment or the IAM role.
    pub s3: Option<OpaqueTable>,
    /// Google Cloud Storage settings: `BucketName`, `CredentialsFile` (a service-account key;
    /// else the environment's credentials).
    pub gcs: Option<OpaqueTable>,
    /// Azure Blob Storage settings: `AccountName`, `AccountKey`, `ContainerName`,
    /// `StorageDomain`.
    pub azure: Option<OpaqueTable>,
}

/// `[runners.kubernetes]`: every key of gitlab-runner's `KubernetesConfig` (113), plus this
/// runner's additions (the flat seccomp/AppArmor keys and full SELinux options in the security
/// context tables).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawKubernetes {
    /// API server URL. When empty: in-cluster config first, then the default kubeconfig.
    pub host: Option<String>,
    /// kubeconfig context, used only when `host` is empty.
    pub context: Option<String>,
    /// Client certificate; needs `key_file` and `ca_file` too.
    pub cert_file: Option<String>,
    /// Client key.
    pub key_file: Option<String>,
    /// CA bundle of the API server.
    pub ca_file: Option<String>,
    /// Bearer token for API calls (used with `host`). Masked in dumps.
    pub bearer_token: Option<String>,
    /// Lets the job variable `KUBERNETES_BEARER_TOKEN` replace the token.
    pub bearer_token_overwrite_allowed: Option<bool>,
    /// Attempts per API request for network-class errors. Default 5.
    pub retry_limit: Option<i64>,
    /// Maximum backoff between API retries in milliseconds. Default 2000; at least 500.
    pub retry_backoff_max: Option<i64>,
    /// Per-error-substring retry counts, e.g. `"exceeded quota" = 20`.
    pub retry_limits: BTreeMap<String, i64>,
    /// Build image used when the job names none.
    pub image: Option<String>,
    /// Namespace of the build pod. Default `default`.
    pub namespace: Option<String>,
    /// Regex that the job variable `KUBERNETES_NAMESPACE_OVERWRITE` must match; empty disables it.
    pub namespace_overwrite_allowed: Option<String>,
    /// Create a namespace `ci-job-<jobID>` per job, and delete it afterwards.
    pub namespace_per_job: Option<bool>,
    /// `spec.serviceAccountName` of the build pod.
    pub service_account: Option<String>,
    /// Regex that the job variable `KUBERNETES_SERVICE_ACCOUNT_OVERWRITE` must match; empty disables it.
    pub service_account_overwrite_allowed: Option<String>,
    /// `spec.automountServiceAccountToken` (unset leaves the cluster default).
    pub automount_service_account_token: Option<bool>,
    /// Existing secret names for `spec.imagePullSecrets`.
    pub image_pull_secrets: Vec<String>,
    /// Use the service account's pull secrets: no `imagePullSecrets` at all.
    pub use_service_account_image_pull_secrets: Option<bool>,
    /// Checks (5 s apart) that the service account and pull secrets exist before creating the pod; 0 disables.
    pub resource_availability_check_max_attempts: Option<i64>,
    /// Helper image. Default `registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v<version>`.
    pub helper_image: Option<String>,
    /// Helper image flavour: `alpine` (default), `ubuntu`, `ubi-fips`, …
    pub helper_image_flavor: Option<String>,
    /// Take the helper's architecture and OS from the runner host.
    pub helper_image_autoset_arch_and_os: Option<bool>,
    /// `always`, `if-not-present` or `never`, or a list of them tried in order after pull failures.
    pub pull_policy: Option<StringOrArray>,
    /// Pull policies jobs and config may use; empty allows all.
    pub allowed_pull_policies: Vec<String>,
    /// Glob allowlist for build images; empty allows all.
    pub allowed_images: Vec<String>,
    /// Glob allowlist for service images; empty allows all.
    pub allowed_services: Vec<String>,
    /// Numeric UIDs a job may request (`image:kubernetes:user`); empty allows any non-root. Root needs `"0"`.
    pub allowed_users: Vec<String>,
    /// Numeric GIDs a job may request; empty allows any non-root. Root needs `"0"`.
    pub allowed_groups: Vec<String>,
    /// Fallback `privileged` for every container whose own security context leaves it unset.
    pub privileged: Option<bool>,
    /// Fallback `allowPrivilegeEscalation` for every container whose own security context leaves it unset.
    pub allow_privilege_escalation: Option<bool>,
    /// Capabilities added to all containers (no `CAP_` prefix).
    pub cap_add: Vec<String>,
    /// Capabilities dropped from all containers; drop beats add. `NET_RAW` is dropped by default.
    pub cap_drop: Vec<String>,
    /// Pod-level `securityContext`.
    pub pod_security_context: Option<RawPodSecurityContext>,
    /// Security context of the `build` container.
    pub build_container_security_context: Option<RawContainerSecurityContext>,
    /// Security context of the `helper` container.
    pub helper_container_security_context: Option<RawContainerSecurityContext>,
    /// Security context of every service container.
    pub service_container_security_context: Option<RawContainerSecurityContext>,
    /// Security context of the `init-permissions` init container.
    pub init_permissions_container_security_context: Option<RawContainerSecurityContext>,
    /// `spec.runtimeClassName`.
    pub runtime_class_name: Option<String>,
    /// Cpu limit for the build container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_CPU_LIMIT` may overwrite it up to `cpu_limit_overwrite_max_allowed`.
    pub cpu_limit: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_CPU_LIMIT`; empty disables that overwrite.
    pub cpu_limit_overwrite_max_allowed: Option<String>,
    /// Cpu request for the build container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_CPU_REQUEST` may overwrite it up to `cpu_request_overwrite_max_allowed`.
    pub cpu_request: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_CPU_REQUEST`; empty disables that overwrite.
    pub cpu_request_overwrite_max_allowed: Option<String>,
    /// Memory limit for the build container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_MEMORY_LIMIT` may overwrite it up to `memory_limit_overwrite_max_allowed`.
    pub memory_limit: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_MEMORY_LIMIT`; empty disables that overwrite.
    pub memory_limit_overwrite_max_allowed: Option<String>,
    /// Memory request for the build container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_MEMORY_REQUEST` may overwrite it up to `memory_request_overwrite_max_allowed`.
    pub memory_request: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_MEMORY_REQUEST`; empty disables that overwrite.
    pub memory_request_overwrite_max_allowed: Option<String>,
    /// Ephemeral storage limit for the build container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_EPHEMERAL_STORAGE_LIMIT` may overwrite it up to `ephemeral_storage_limit_overwrite_max_allowed`.
    pub ephemeral_storage_limit: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_EPHEMERAL_STORAGE_LIMIT`; empty disables that overwrite.
    pub ephemeral_storage_limit_overwrite_max_allowed: Option<String>,
    /// Ephemeral storage request for the build container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_EPHEMERAL_STORAGE_REQUEST` may overwrite it up to `ephemeral_storage_request_overwrite_max_allowed`.
    pub ephemeral_storage_request: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_EPHEMERAL_STORAGE_REQUEST`; empty disables that overwrite.
    pub ephemeral_storage_request_overwrite_max_allowed: Option<String>,
    /// Cpu limit for each service container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_SERVICE_CPU_LIMIT` may overwrite it up to `service_cpu_limit_overwrite_max_allowed`.
    pub service_cpu_limit: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_SERVICE_CPU_LIMIT`; empty disables that overwrite.
    pub service_cpu_limit_overwrite_max_allowed: Option<String>,
    /// Cpu request for each service container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_SERVICE_CPU_REQUEST` may overwrite it up to `service_cpu_request_overwrite_max_allowed`.
    pub service_cpu_request: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_SERVICE_CPU_REQUEST`; empty disables that overwrite.
    pub service_cpu_request_overwrite_max_allowed: Option<String>,
    /// Memory limit for each service container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_SERVICE_MEMORY_LIMIT` may overwrite it up to `service_memory_limit_overwrite_max_allowed`.
    pub service_memory_limit: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_SERVICE_MEMORY_LIMIT`; empty disables that overwrite.
    pub service_memory_limit_overwrite_max_allowed: Option<String>,
    /// Memory request for each service container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_SERVICE_MEMORY_REQUEST` may overwrite it up to `service_memory_request_overwrite_max_allowed`.
    pub service_memory_request: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_SERVICE_MEMORY_REQUEST`; empty disables that overwrite.
    pub service_memory_request_overwrite_max_allowed: Option<String>,
    /// Ephemeral storage limit for each service container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_SERVICE_EPHEMERAL_STORAGE_LIMIT` may overwrite it up to `service_ephemeral_storage_limit_overwrite_max_allowed`.
    pub service_ephemeral_storage_limit: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_SERVICE_EPHEMERAL_STORAGE_LIMIT`; empty disables that overwrite.
    pub service_ephemeral_storage_limit_overwrite_max_allowed: Option<String>,
    /// Ephemeral storage request for each service container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_SERVICE_EPHEMERAL_STORAGE_REQUEST` may overwrite it up to `service_ephemeral_storage_request_overwrite_max_allowed`.
    pub service_ephemeral_storage_request: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_SERVICE_EPHEMERAL_STORAGE_REQUEST`; empty disables that overwrite.
    pub service_ephemeral_storage_request_overwrite_max_allowed: Option<String>,
    /// Cpu limit for the helper (and init-permissions) container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_HELPER_CPU_LIMIT` may overwrite it up to `helper_cpu_limit_overwrite_max_allowed`.
    pub helper_cpu_limit: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_HELPER_CPU_LIMIT`; empty disables that overwrite.
    pub helper_cpu_limit_overwrite_max_allowed: Option<String>,
    /// Cpu request for the helper (and init-permissions) container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_HELPER_CPU_REQUEST` may overwrite it up to `helper_cpu_request_overwrite_max_allowed`.
    pub helper_cpu_request: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_HELPER_CPU_REQUEST`; empty disables that overwrite.
    pub helper_cpu_request_overwrite_max_allowed: Option<String>,
    /// Memory limit for the helper (and init-permissions) container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_HELPER_MEMORY_LIMIT` may overwrite it up to `helper_memory_limit_overwrite_max_allowed`.
    pub helper_memory_limit: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_HELPER_MEMORY_LIMIT`; empty disables that overwrite.
    pub helper_memory_limit_overwrite_max_allowed: Option<String>,
    /// Memory request for the helper (and init-permissions) container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_HELPER_MEMORY_REQUEST` may overwrite it up to `helper_memory_request_overwrite_max_allowed`.
    pub helper_memory_request: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_HELPER_MEMORY_REQUEST`; empty disables that overwrite.
    pub helper_memory_request_overwrite_max_allowed: Option<String>,
    /// Ephemeral storage limit for the helper (and init-permissions) container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_HELPER_EPHEMERAL_STORAGE_LIMIT` may overwrite it up to `helper_ephemeral_storage_limit_overwrite_max_allowed`.
    pub helper_ephemeral_storage_limit: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_HELPER_EPHEMERAL_STORAGE_LIMIT`; empty disables that overwrite.
    pub helper_ephemeral_storage_limit_overwrite_max_allowed: Option<String>,
    /// Ephemeral storage request for the helper (and init-permissions) container: a Kubernetes quantity (`"500m"`, `"1Gi"`). Empty means not set.
    /// Job variable `KUBERNETES_HELPER_EPHEMERAL_STORAGE_REQUEST` may overwrite it up to `helper_ephemeral_storage_request_overwrite_max_allowed`.
    pub helper_ephemeral_storage_request: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_HELPER_EPHEMERAL_STORAGE_REQUEST`; empty disables that overwrite.
    pub helper_ephemeral_storage_request_overwrite_max_allowed: Option<String>,
    /// Pod-level CPU limit (`spec.resources`; Kubernetes 1.32+ alpha, 1.34+ beta). Empty means not set.
    pub pod_cpu_limit: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_POD_CPU_LIMIT`; empty disables that overwrite.
    pub pod_cpu_limit_overwrite_max_allowed: Option<String>,
    /// Pod-level CPU request (`spec.resources`; Kubernetes 1.32+ alpha, 1.34+ beta). Empty means not set.
    pub pod_cpu_request: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_POD_CPU_REQUEST`; empty disables that overwrite.
    pub pod_cpu_request_overwrite_max_allowed: Option<String>,
    /// Pod-level memory limit (`spec.resources`; Kubernetes 1.32+ alpha, 1.34+ beta). Empty means not set.
    pub pod_memory_limit: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_POD_MEMORY_LIMIT`; empty disables that overwrite.
    pub pod_memory_limit_overwrite_max_allowed: Option<String>,
    /// Pod-level memory request (`spec.resources`; Kubernetes 1.32+ alpha, 1.34+ beta). Empty means not set.
    pub pod_memory_request: Option<String>,
    /// Upper bound for the job variable `KUBERNETES_POD_MEMORY_REQUEST`; empty disables that overwrite.
    pub pod_memory_request_overwrite_max_allowed: Option<String>,
    /// `spec.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// Regex that job variables `KUBERNETES_NODE_SELECTOR_*` (`k=v`) must match; empty disables them.
    pub node_selector_overwrite_allowed: Option<String>,
    /// Tolerations: `"key[=value]" = "Effect"`; a bare key tolerates any value, `""` tolerates everything.
    pub node_tolerations: BTreeMap<String, String>,
    /// Regex that job variables `KUBERNETES_NODE_TOLERATIONS_*` must match; empty disables them.
    pub node_tolerations_overwrite_allowed: Option<String>,
    /// Node affinity, pod affinity and pod anti-affinity.
    pub affinity: Option<RawAffinity>,
    /// Extra pod labels; values are expanded with job variables. Keys under `runner.gitlab.com` are refused.
    pub pod_labels: BTreeMap<String, String>,
    /// Regex that job variables `KUBERNETES_POD_LABELS_*` (`k=v`) must match; empty disables them.
    pub pod_labels_overwrite_allowed: Option<String>,
    /// Extra pod annotations; values are expanded and may replace the runner's defaults.
    pub pod_annotations: BTreeMap<String, String>,
    /// Regex that job variables `KUBERNETES_POD_ANNOTATIONS_*` (`k=v`) must match; empty disables them.
    pub pod_annotations_overwrite_allowed: Option<String>,
    /// `spec.schedulerName`.
    pub scheduler_name: Option<String>,
    /// `spec.priorityClassName`.
    pub priority_class_name: Option<String>,
    /// `none`, `default`, `cluster-first` (the default) or `cluster-first-with-host-net`.
    pub dns_policy: Option<String>,
    /// `spec.dnsConfig`.
    pub dns_config: Option<RawDnsConfig>,
    /// Extra `/etc/hosts` entries.
    pub host_aliases: Vec<RawHostAlias>,
    /// `spec.terminationGracePeriodSeconds`.
    pub pod_termination_grace_period_seconds: Option<i64>,
    /// Create a PodDisruptionBudget (minAvailable 1) for the build pod.
    pub pod_disruption_budget: Option<bool>,
    /// Patches applied to the built pod spec, in order (with `FF_USE_ADVANCED_POD_SPEC_CONFIGURATION`).
    pub pod_spec: Vec<RawPodSpecPatch>,
    /// Volumes mounted into every container.
    pub volumes: Option<RawVolumes>,
    /// Services started with every job, in addition to the job's own.
    pub services: Vec<RawService>,
    /// `postStart` / `preStop` handlers for build, helper and service containers.
    pub container_lifecycle: Option<RawContainerLifecycle>,
    /// Prefix of the logs directory (`<prefix>/logs-<project>-<job>`). Default `/`.
    pub logs_base_dir: Option<String>,
    /// Prefix of the scripts directory (`<prefix>/scripts-<project>-<job>`). Default `/`.
    pub scripts_base_dir: Option<String>,
    /// Seconds between pod status checks. Default 3.
    pub poll_interval: Option<i64>,
    /// Seconds to wait for the pod to start. Default 180.
    pub poll_timeout: Option<i64>,
    /// `gracePeriodSeconds` of the pod deletion at cleanup.
    pub cleanup_grace_period_seconds: Option<i64>,
    /// Deadline of the whole cleanup. Default `5m`.
    pub cleanup_resources_timeout: Option<GoDuration>,
    /// Print pod warning events when a job fails and pod conditions while waiting. Default true.
    pub print_pod_warning_events: Option<bool>,
    /// PVC size for suspendable environments. Default `20Gi`.
    pub suspend_pvc_size: Option<String>,
    /// Storage class for suspendable environments.
    pub suspend_pvc_storage_class: Option<String>,
    /// Pause-pod pre-warming.
    pub autoscaler: Option<RawKubernetesAutoscaler>,
}

/// The seccomp or AppArmor profile table: `{ type = "…", localhost_profile = "…" }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(default)]
pub struct RawProfile {
    /// `RuntimeDefault`, `Localhost` or `Unconfined` (exact spelling).
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// With `Localhost`: for seccomp a path relative to the kubelet's seccomp root
    /// (`profiles/my.json`), for AppArmor the profile name loaded on the node.
    pub localhost_profile: Option<String>,
}

/// `[runners.kubernetes.pod_security_context]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawPodSecurityContext {
    /// `fsGroup`.
    pub fs_group: Option<i64>,
    /// `runAsGroup`, inherited by containers without their own.
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot`.
    pub run_as_non_root: Option<bool>,
    /// `runAsUser`, inherited by containers without their own.
    pub run_as_user: Option<i64>,
    /// `supplementalGroups`.
    pub supplemental_groups: Vec<i64>,
    /// `seLinuxOptions.type`.
    pub selinux_type: Option<String>,
    /// `seLinuxOptions.user` (an addition of this runner).
    pub selinux_user: Option<String>,
    /// `seLinuxOptions.role` (an addition of this runner).
    pub selinux_role: Option<String>,
    /// `seLinuxOptions.level`, e.g. `s0:c123,c456` (an addition of this runner).
    pub selinux_level: Option<String>,
    /// Pod-level seccomp profile (GitLab Runner 18.11 table form).
    pub seccomp_profile: Option<RawProfile>,
    /// Pod-level AppArmor profile, Kubernetes 1.30+ (GitLab Runner 18.11 table form).
    pub app_armor_profile: Option<RawProfile>,
    /// Flat form of `seccomp_profile.type`: `RuntimeDefault`, `Localhost` or `Unconfined`.
    pub seccomp_profile_type: Option<String>,
    /// Flat form of `seccomp_profile.localhost_profile`.
    pub seccomp_profile_localhost_profile: Option<String>,
    /// Flat form of `app_armor_profile.type`: `RuntimeDefault`, `Localhost` or `Unconfined`.
    pub app_armor_profile_type: Option<String>,
    /// Flat form of `app_armor_profile.localhost_profile`.
    pub app_armor_profile_localhost_profile: Option<String>,
}

/// A container security context table (`build_`, `helper_`, `service_`, `init_permissions_container_security_context`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawContainerSecurityContext {
    /// Capabilities; a list given here replaces the matching global `cap_add`/`cap_drop` list (and the default `NET_RAW` drop).
    pub capabilities: Option<RawCapabilities>,
    /// `privileged`; unset falls back to the global `privileged`.
    pub privileged: Option<bool>,
    /// `runAsUser`; beats the pod's value and the job's user.
    pub run_as_user: Option<i64>,
    /// `runAsGroup`; beats the pod's value and the job's group.
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot`.
    pub run_as_non_root: Option<bool>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: Option<bool>,
    /// `allowPrivilegeEscalation`; unset falls back to the global `allow_privilege_escalation`.
    pub allow_privilege_escalation: Option<bool>,
    /// `seLinuxOptions.type`.
    pub selinux_type: Option<String>,
    /// `seLinuxOptions.user` (an addition of this runner).
    pub selinux_user: Option<String>,
    /// `seLinuxOptions.role` (an addition of this runner).
    pub selinux_role: Option<String>,
    /// `seLinuxOptions.level` (an addition of this runner).
    pub selinux_level: Option<String>,
    /// `procMount`: `default` or `unmasked` (any case).
    pub proc_mount: Option<String>,
    /// Container seccomp profile (GitLab Runner 18.11 table form); beats the pod's.
    pub seccomp_profile: Option<RawProfile>,
    /// Container AppArmor profile, Kubernetes 1.30+ (table form); beats the pod's.
    pub app_armor_profile: Option<RawProfile>,
    /// Flat form of `seccomp_profile.type`: `RuntimeDefault`, `Localhost` or `Unconfined`.
    pub seccomp_profile_type: Option<String>,
    /// Flat form of `seccomp_profile.localhost_profile`.
    pub seccomp_profile_localhost_profile: Option<String>,
    /// Flat form of `app_armor_profile.type`: `RuntimeDefault`, `Localhost` or `Unconfined`.
    pub app_armor_profile_type: Option<String>,
    /// Flat form of `app_armor_profile.localhost_profile`.
    pub app_armor_profile_localhost_profile: Option<String>,
}

/// `capabilities = { add = [...], drop = [...] }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawCapabilities {
    /// Capabilities to add (no `CAP_` prefix).
    pub add: Option<Vec<String>>,
    /// Capabilities to drop.
    pub drop: Option<Vec<String>>,
}

/// `[runners.kubernetes.dns_config]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawDnsConfig {
    /// Name server IPs.
    pub nameservers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// Resolver options.
    pub options: Vec<RawDnsOption>,
}

/// `[[runners.kubernetes.dns_config.options]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawDnsOption {
    /// Option name, e.g. `ndots`.
    pub name: String,
    /// Option value, e.g. `"2"`.
    pub value: Option<String>,
}

/// `[[runners.kubernetes.host_aliases]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawHostAlias {
    /// IP address.
    pub ip: String,
    /// Host names for the IP.
    pub hostnames: Vec<String>,
}

/// `[[runners.kubernetes.pod_spec]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawPodSpecPatch {
    /// Name of the patch (for messages).
    pub name: Option<String>,
    /// Inline patch, YAML or JSON.
    pub patch: Option<String>,
    /// File holding the patch; exclusive with `patch`.
    pub patch_path: Option<String>,
    /// `strategic` (default), `merge` (RFC 7386) or `json` (RFC 6902).
    pub patch_type: Option<String>,
}

/// `[runners.kubernetes.volumes]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawVolumes {
    /// Host path volumes.
    pub host_path: Vec<RawHostPathVolume>,
    /// PersistentVolumeClaim volumes (deduplicated by name).
    pub pvc: Vec<RawPvcVolume>,
    /// ConfigMap volumes.
    pub config_map: Vec<RawKeyedVolume>,
    /// Secret volumes.
    pub secret: Vec<RawKeyedVolume>,
    /// emptyDir volumes.
    pub empty_dir: Vec<RawEmptyDirVolume>,
    /// CSI volumes.
    pub csi: Vec<RawCsiVolume>,
    /// NFS volumes (`name`, `mount_path`, `server` and `path` are required).
    pub nfs: Vec<RawNfsVolume>,
}

/// `[[…volumes.host_path]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawHostPathVolume {
    /// Volume name.
    pub name: String,
    /// Mount path in the containers (expanded with job variables).
    pub mount_path: String,
    /// Sub path of the volume to mount.
    pub sub_path: Option<String>,
    /// Mount read-only.
    pub read_only: Option<bool>,
    /// Path on the host; empty means `mount_path`.
    pub host_path: Option<String>,
    /// `None`, `HostToContainer` or `Bidirectional`.
    pub mount_propagation: Option<String>,
}

/// `[[…volumes.pvc]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawPvcVolume {
    /// Claim name, also the volume name (expanded with job variables).
    pub name: String,
    /// Mount path.
    pub mount_path: String,
    /// Sub path.
    pub sub_path: Option<String>,
    /// Mount read-only.
    pub read_only: Option<bool>,
    /// `None`, `HostToContainer` or `Bidirectional`.
    pub mount_propagation: Option<String>,
}

/// `[[…volumes.config_map]]` and `[[…volumes.secret]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawKeyedVolume {
    /// Volume name, also the ConfigMap or Secret name.
    pub name: String,
    /// Mount path.
    pub mount_path: String,
    /// Sub path.
    pub sub_path: Option<String>,
    /// Mount read-only.
    pub read_only: Option<bool>,
    /// Keys to project, `key = "relative/path"`.
    pub items: BTreeMap<String, String>,
}

/// `[[…volumes.empty_dir]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawEmptyDirVolume {
    /// Volume name.
    pub name: String,
    /// Mount path.
    pub mount_path: String,
    /// Sub path.
    pub sub_path: Option<String>,
    /// `""` (node disk) or `Memory`.
    pub medium: Option<String>,
    /// Size limit, a Kubernetes quantity.
    pub size_limit: Option<String>,
    /// `None`, `HostToContainer` or `Bidirectional`.
    pub mount_propagation: Option<String>,
}

/// `[[…volumes.csi]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawCsiVolume {
    /// Volume name.
    pub name: String,
    /// Mount path.
    pub mount_path: String,
    /// Sub path.
    pub sub_path: Option<String>,
    /// CSI driver name.
    pub driver: String,
    /// File system type.
    pub fs_type: Option<String>,
    /// Mount read-only.
    pub read_only: Option<bool>,
    /// Driver-specific attributes.
    pub volume_attributes: BTreeMap<String, String>,
}

/// `[[…volumes.nfs]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawNfsVolume {
    /// Volume name (required).
    pub name: Option<String>,
    /// Mount path (required).
    pub mount_path: Option<String>,
    /// Sub path.
    pub sub_path: Option<String>,
    /// NFS server (required).
    pub server: Option<String>,
    /// Exported path (required).
    pub path: Option<String>,
    /// Mount read-only.
    pub read_only: Option<bool>,
}

/// `[[runners.kubernetes.services]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawService {
    /// Image of the service.
    pub name: Option<String>,
    /// Aliases, separated by spaces or commas.
    pub alias: Option<String>,
    /// Arguments (`args`) of the service container.
    pub command: Vec<String>,
    /// Entrypoint (`command`) of the service container.
    pub entrypoint: Vec<String>,
    /// Service-scoped variables, `KEY=VALUE`.
    pub environment: Vec<String>,
    /// Data path kept across suspension (suspendable environments).
    pub suspend_data_path: Option<String>,
}

/// `[runners.kubernetes.container_lifecycle]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawContainerLifecycle {
    /// `postStart` handler.
    pub post_start: Option<RawLifecycleHandler>,
    /// `preStop` handler.
    pub pre_stop: Option<RawLifecycleHandler>,
}

/// A lifecycle handler: one of `exec`, `http_get` or `tcp_socket`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawLifecycleHandler {
    /// Run a command.
    pub exec: Option<RawExecAction>,
    /// Send an HTTP GET.
    pub http_get: Option<RawHttpGetAction>,
    /// Open a TCP connection.
    pub tcp_socket: Option<RawTcpSocketAction>,
}

/// `exec = { command = [...] }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawExecAction {
    /// The command.
    pub command: Vec<String>,
}

/// `http_get = { … }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawHttpGetAction {
    /// Host (default: the pod IP).
    pub host: Option<String>,
    /// Port number.
    pub port: i64,
    /// Path.
    pub path: Option<String>,
    /// `HTTP` or `HTTPS`.
    pub scheme: Option<String>,
    /// Extra headers.
    pub http_headers: Vec<RawHttpHeader>,
}

/// `[[…http_headers]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawHttpHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// `tcp_socket = { … }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawTcpSocketAction {
    /// Host (default: the pod IP).
    pub host: Option<String>,
    /// Port number.
    pub port: i64,
}

/// `[runners.kubernetes.affinity]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawAffinity {
    /// Node affinity.
    pub node_affinity: Option<RawNodeAffinity>,
    /// Pod affinity.
    pub pod_affinity: Option<RawPodAffinity>,
    /// Pod anti-affinity.
    pub pod_anti_affinity: Option<RawPodAffinity>,
}

/// Node affinity.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawNodeAffinity {
    /// Hard requirement.
    pub required_during_scheduling_ignored_during_execution: Option<RawNodeSelector>,
    /// Weighted preferences.
    pub preferred_during_scheduling_ignored_during_execution: Vec<RawPreferredSchedulingTerm>,
}

/// A node selector: terms are ORed.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawNodeSelector {
    /// The terms.
    pub node_selector_terms: Vec<RawNodeSelectorTerm>,
}

/// A node selector term: requirements are ANDed.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawNodeSelectorTerm {
    /// Requirements on node labels.
    pub match_expressions: Vec<RawSelectorRequirement>,
    /// Requirements on node fields.
    pub match_fields: Vec<RawSelectorRequirement>,
}

/// A weighted node selector term.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawPreferredSchedulingTerm {
    /// Weight 1–100.
    pub weight: i64,
    /// The term.
    pub preference: RawNodeSelectorTerm,
}

/// A selector requirement: `key`, `operator` (`In`, `NotIn`, `Exists`, …) and `values`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawSelectorRequirement {
    /// Label or field key.
    pub key: String,
    /// Operator.
    pub operator: String,
    /// Values.
    pub values: Vec<String>,
}

/// Pod affinity or anti-affinity.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawPodAffinity {
    /// Hard requirements.
    pub required_during_scheduling_ignored_during_execution: Vec<RawPodAffinityTerm>,
    /// Weighted preferences.
    pub preferred_during_scheduling_ignored_during_execution: Vec<RawWeightedPodAffinityTerm>,
}

/// A pod affinity term.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawPodAffinityTerm {
    /// Selects the pods.
    pub label_selector: Option<RawLabelSelector>,
    /// Namespaces to consider.
    pub namespaces: Vec<String>,
    /// Topology key, e.g. `kubernetes.io/hostname`.
    pub topology_key: String,
    /// Selects the namespaces.
    pub namespace_selector: Option<RawLabelSelector>,
    /// Label keys whose values are taken from the incoming pod (match).
    pub match_label_keys: Vec<String>,
    /// Label keys whose values are taken from the incoming pod (mismatch).
    pub mismatch_label_keys: Vec<String>,
}

/// A weighted pod affinity term.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawWeightedPodAffinityTerm {
    /// Weight 1–100.
    pub weight: i64,
    /// The term.
    pub pod_affinity_term: RawPodAffinityTerm,
}

/// A label selector.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawLabelSelector {
    /// Exact label matches.
    pub match_labels: BTreeMap<String, String>,
    /// Expressions.
    pub match_expressions: Vec<RawSelectorRequirement>,
}

/// `[runners.kubernetes.autoscaler]`: pause-pod pre-warming.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawKubernetesAutoscaler {
    /// Maximum pause pods (0 = unlimited).
    pub max_pause_pods: Option<i64>,
    /// Pause pod image. Default `registry.k8s.io/pause:3.10`.
    pub pause_pod_image: Option<String>,
    /// Priority class of pause pods.
    pub pause_pod_priority_class_name: Option<String>,
    /// Pull secrets of pause pods.
    pub pause_pod_image_pull_secrets: Vec<String>,
    /// Scaling policies.
    pub policy: Vec<RawAutoscalerPolicy>,
}

/// `[[runners.kubernetes.autoscaler.policy]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RawAutoscalerPolicy {
    /// Cron periods.
    pub periods: Vec<String>,
    /// Time zone of the periods.
    pub timezone: Option<String>,
    /// Idle pause pods to keep.
    pub idle_count: Option<i64>,
    /// How long idle pause pods live.
    pub idle_time: Option<GoDuration>,
    /// Scale factor.
    pub scale_factor: Option<f64>,
    /// Scale factor limit.
    pub scale_factor_limit: Option<i64>,
    /// Preemptive mode.
    pub preemptive_mode: Option<bool>,
}
