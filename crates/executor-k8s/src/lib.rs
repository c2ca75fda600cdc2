//! The Kubernetes executor's pod builder: a pure function from a validated runner config, a GitLab
//! job and a few facts about the cluster to the exact `Pod` the executor submits.
//!
//! [`build_pod`] does no I/O, reads no clock and draws no random numbers: the pod-name suffix,
//! the credentials secret name and the contents of `pod_spec` patch files come in through
//! [`PodIdentity`] and [`BuildInput::patch_files`]. Beside the pod it returns the *effective*
//! security of every container ([`SecurityReport`], container value else pod value) and the
//! messages the job log must show ([`BuiltPod::job_log`]).
//!
//! Kubernetes versions: the types are k8s-openapi's newest (`latest` = 1.37, chosen by the
//! binary); [`ClusterFacts::kubernetes_minor`] drives a per-version rewrite. Below 1.30 no
//! `appArmorProfile` field is emitted anywhere; the per-container annotation
//! `container.apparmor.security.beta.kubernetes.io/<container>` carries the profile instead (a
//! pod-level profile is expanded to every container without its own, init containers included).

pub mod archive;
pub mod cache;
pub mod classify;
pub mod cluster;
pub mod credentials;
mod error;
pub mod executor;
mod leftovers;
pub mod names;
pub mod patch;
mod pod;
pub mod progress;
pub mod resources;
pub mod sample;
pub mod script;
pub mod security;
pub mod stage;
pub mod throttle;
pub mod transfer;
mod vars;
pub mod version;
mod volumes;
pub mod yaml;

pub use error::{Error, Result};
pub use executor::{KubernetesExecutor, KubernetesRunner};
pub use k8s_openapi;
pub use patch::PatchFiles;
pub use pod::{DEFAULT_TIMEOUT_SECONDS, DETECT_SHELL_SCRIPT, HELPER_IMAGE_REPOSITORY};
pub use security::{
    ContainerKind, EffectiveSecurity, Level, ProfileSetting, SecurityReport, Sourced,
};

use k8s_openapi::api::core::v1::Pod;
use podrunner_config::RunnerConfig;
use podrunner_coordinator::wire::Job;

/// The gitlab-runner release whose helper image is used by default.
pub const DEFAULT_HELPER_VERSION: &str = "18.11.0";

/// The operating system of the helper image (decides the default capability drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HelperOs {
    /// Linux: `NET_RAW` is dropped from every container by default.
    #[default]
    Linux,
    /// Windows: no default capability changes.
    Windows,
}

/// What the builder needs to know about the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterFacts {
    /// The API server's minor version (`29` for 1.29).
    pub kubernetes_minor: u32,
    /// The helper image's OS.
    pub helper_os: HelperOs,
}

impl Default for ClusterFacts {
    fn default() -> Self {
        Self { kubernetes_minor: version::MAX_MINOR, helper_os: HelperOs::Linux }
    }
}

/// Names and counters chosen outside the builder (randomness and runner state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// The 8-character `[a-z0-9]` suffix of the pod name.
    pub name_suffix: String,
    /// `CI_CONCURRENT_ID`: the runner-wide job slot.
    pub concurrent_id: u32,
    /// `CI_CONCURRENT_PROJECT_ID`: the per-project slot (part of the pod name).
    pub project_runner_id: u32,
    /// The name of the registry credentials Secret created for this job, if any.
    pub credentials_secret: Option<String>,
    /// The gitlab-runner version of the default helper image tag.
    pub runner_version: String,
    /// The system id of the runner process, as the `manager.runner.gitlab.com/system-id` label
    /// (so a sweep only ever deletes its own process's pods); no label when `None`.
    pub system_id: Option<String>,
}

impl Default for PodIdentity {
    fn default() -> Self {
        Self {
            name_suffix: "00000000".to_owned(),
            concurrent_id: 0,
            project_runner_id: 0,
            credentials_secret: None,
            runner_version: DEFAULT_HELPER_VERSION.to_owned(),
            system_id: None,
        }
    }
}

/// Everything [`build_pod`] reads.
#[derive(Debug, Clone, Copy)]
pub struct BuildInput<'a> {
    /// The runner entry; must have Kubernetes settings.
    pub runner: &'a RunnerConfig,
    /// The job, as GitLab sent it.
    pub job: &'a Job,
    /// Facts about the cluster.
    pub cluster: ClusterFacts,
    /// Names chosen outside.
    pub identity: &'a PodIdentity,
    /// Contents of the `patch_path` files of `[[pod_spec]]` (read by the caller).
    pub patch_files: &'a PatchFiles,
}

/// The result of [`build_pod`].
#[derive(Debug, Clone)]
pub struct BuiltPod {
    /// The pod, exactly as it is submitted.
    pub pod: Pod,
    /// The effective security of each container (before the per-version rewrite, so AppArmor
    /// shows even where it travels as an annotation).
    pub security: SecurityReport,
    /// Messages for the job log (warnings about ignored or overridden settings).
    pub job_log: Vec<String>,
    /// Where the job's files live in the pod, and what its scripts export.
    pub layout: JobLayout,
}

/// The directories of a job inside its pod and the variables its scripts export, as the builder
/// decided them (the job lifecycle never recomputes them).
#[derive(Clone)]
pub struct JobLayout {
    /// The scripts volume's mount path (`/scripts-<project>-<job>`).
    pub scripts_dir: String,
    /// The logs volume's mount path (`/logs-<project>-<job>`).
    pub logs_dir: String,
    /// `CI_BUILDS_DIR`.
    pub builds_dir: String,
    /// `CI_PROJECT_DIR`.
    pub project_dir: String,
    /// The build image, after expansion.
    pub build_image: String,
    /// Every variable in export order, masked ones included; file variables carry their content.
    pub variables: Vec<ScriptVariable>,
}

impl std::fmt::Debug for JobLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLayout")
            .field("scripts_dir", &self.scripts_dir)
            .field("logs_dir", &self.logs_dir)
            .field("builds_dir", &self.builds_dir)
            .field("project_dir", &self.project_dir)
            .field("build_image", &self.build_image)
            .field("variables", &self.variables.len())
            .finish()
    }
}

impl JobLayout {
    /// The directory of file variables and runner state (`<project_dir>.tmp`).
    pub fn tmp_dir(&self) -> String {
        format!("{}.tmp", self.project_dir)
    }
}

/// A variable as the job's scripts export it. `Debug` shows the name only.
#[derive(Clone)]
pub struct ScriptVariable {
    /// The name.
    pub key: String,
    /// The value; for a file variable, the path of its file.
    pub value: String,
    /// The content of a file variable.
    pub file_content: Option<String>,
}

impl std::fmt::Debug for ScriptVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptVariable").field("key", &self.key).finish_non_exhaustive()
    }
}

/// Builds the pod for a job. Pure: no I/O, no clock, no randomness.
///
/// # Errors
///
/// [`Error`] for a configuration or job that cannot produce a valid pod (no image, a refused
/// pull policy or overwrite, a bad patch, ...).
pub fn build_pod(input: &BuildInput<'_>) -> Result<BuiltPod> {
    pod::build(input)
}

/// The pod as a YAML manifest (`apiVersion: v1`, `kind: Pod` first), safe for YAML 1.1 readers.
///
/// # Errors
///
/// [`Error::Encode`] if the pod cannot be serialised (not expected for builder output).
pub fn pod_yaml(pod: &Pod) -> Result<String> {
    let value = serde_json::to_value(pod).map_err(Error::Encode)?;
    Ok(yaml::to_yaml(&manifest_order(value)))
}

/// The pod as pretty JSON with a trailing newline.
///
/// # Errors
///
/// [`Error::Encode`] if the pod cannot be serialised.
pub fn pod_json(pod: &Pod) -> Result<String> {
    let value = serde_json::to_value(pod).map_err(Error::Encode)?;
    let mut text = serde_json::to_string_pretty(&manifest_order(value)).map_err(Error::Encode)?;
    text.push('\n');
    Ok(text)
}

/// Every map with its keys sorted, whether or not serde_json's `preserve_order` feature is
/// unified into the build, so output is stable (`apiVersion`, `kind`, `metadata`, `spec` sort
/// first at the top level).
fn manifest_order(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries.into_iter().map(|(k, v)| (k, manifest_order(v))).collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(manifest_order).collect())
        }
        scalar => scalar,
    }
}

/// The `patch_path` values of a runner's `[[pod_spec]]` entries (the files the caller reads
/// into [`BuildInput::patch_files`]).
pub fn patch_paths(runner: &RunnerConfig) -> Vec<&str> {
    runner
        .kubernetes
        .iter()
        .flat_map(|k| &k.raw.pod_spec)
        .filter_map(|p| p.patch_path.as_deref())
        .filter(|p| !p.is_empty())
        .collect()
}
