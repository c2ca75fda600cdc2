//! Wire models of the GitLab runner API (`gitlab-runner.md` §4).
//!
//! Decoding is lenient: unknown fields are ignored, `null` is accepted wherever GitLab may send
//! it, and missing optional fields take their defaults. Decode through [`decode_json`] so that a
//! type error names the path of the offending field (`variables[3].masked`).
//!
//! Secrets (job token, variable values, registry passwords, dependency tokens) are
//! [`SecretString`]s; the types that hold them implement `Debug` by hand and redact them.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

/// Decodes JSON, naming the path of the first field that failed (`steps[0].script[2]`).
///
/// # Errors
///
/// Returns the path of the failing field and the underlying serde error.
pub fn decode_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, (String, serde_json::Error)> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        (path, e.into_inner())
    })
}

/// `null` and a missing field both become `T::default()`.
fn null_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A string secret; `null` or missing becomes the empty string.
fn secret<'de, D: Deserializer<'de>>(de: D) -> Result<SecretString, D::Error> {
    let s: Option<String> = Option::deserialize(de)?;
    Ok(SecretString::from(s.unwrap_or_default()))
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}

/// A string that may also arrive as a number (GitLab sends some ids and sizes either way).
fn string_or_number<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        I(i64),
        F(f64),
    }
    Ok(Option::<Either>::deserialize(de)?.map(|v| match v {
        Either::S(s) => s,
        Either::I(i) => i.to_string(),
        Either::F(f) => f.to_string(),
    }))
}

/// A string or a list of strings (`pull_policy`, `entrypoint` in some GitLab versions).
fn string_or_seq<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Either>::deserialize(de)? {
        None => Vec::new(),
        Some(Either::One(s)) => vec![s],
        Some(Either::Many(v)) => v,
    })
}

/// The job returned by `POST /api/v4/jobs/request` with status 201 (`spec.Job`).
#[derive(Deserialize)]
#[non_exhaustive]
pub struct Job {
    /// Job id.
    pub id: u64,
    /// The job token (`CI_JOB_TOKEN`), used for trace and update calls.
    #[serde(deserialize_with = "secret", default = "empty_secret")]
    pub token: SecretString,
    /// Whether the runner may fetch into an existing clone.
    #[serde(default, deserialize_with = "null_default")]
    pub allow_git_fetch: bool,
    /// Job metadata.
    #[serde(default, deserialize_with = "null_default")]
    pub job_info: JobInfo,
    /// Where to get the sources.
    #[serde(default, deserialize_with = "null_default")]
    pub git_info: GitInfo,
    /// Runner-side settings chosen by GitLab (timeout).
    #[serde(default, deserialize_with = "null_default")]
    pub runner_info: RunnerInfo,
    /// Job variables, in the order GitLab sent them.
    #[serde(default, deserialize_with = "null_default")]
    pub variables: Vec<JobVariable>,
    /// Steps (`script`, `after_script`, or release steps).
    #[serde(default, deserialize_with = "null_default")]
    pub steps: Vec<Step>,
    /// The job image; `None` when the job has none (the runner's default applies).
    #[serde(default)]
    pub image: Option<Image>,
    /// Service containers.
    #[serde(default, deserialize_with = "null_default")]
    pub services: Vec<Image>,
    /// Artifacts to upload.
    #[serde(default, deserialize_with = "null_default")]
    pub artifacts: Vec<Artifact>,
    /// Caches to restore and save.
    #[serde(default, deserialize_with = "null_default")]
    pub cache: Vec<Cache>,
    /// Registry and other credentials.
    #[serde(default, deserialize_with = "null_default")]
    pub credentials: Vec<Credentials>,
    /// Jobs whose artifacts this job downloads.
    #[serde(default, deserialize_with = "null_default")]
    pub dependencies: Vec<Dependency>,
    /// Server-side features.
    #[serde(default, deserialize_with = "null_default")]
    pub features: JobFeatures,
    /// Job hooks (`pre_get_sources_script`, ...).
    #[serde(default, deserialize_with = "null_default")]
    pub hooks: Vec<Hook>,
    /// External secrets (Vault, ...); kept as raw JSON, not acted on yet.
    #[serde(default)]
    pub secrets: Option<serde_json::Value>,
    /// Job inputs; kept as raw JSON.
    #[serde(default)]
    pub inputs: Option<serde_json::Value>,
    /// Native steps (`run:`); kept as raw JSON.
    #[serde(default)]
    pub run: Option<serde_json::Value>,
    /// Policy options; kept as raw JSON.
    #[serde(default)]
    pub policy_options: Option<serde_json::Value>,
    /// Suspend options.
    #[serde(default)]
    pub suspend_options: Option<SuspendOptions>,
    /// The payload as GitLab sent it (set by [`Job::from_payload`]), kept so that a runner
    /// process started after this one can resume the job. Holds the secrets: never logged.
    #[serde(skip)]
    payload: Option<std::sync::Arc<[u8]>>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("token", &"[MASKED]")
            .field("job_info", &self.job_info)
            .field("git_info", &self.git_info)
            .field("runner_info", &self.runner_info)
            .field("variables", &self.variables)
            .field("steps", &self.steps)
            .field("image", &self.image)
            .field("services", &self.services)
            .field("credentials", &self.credentials)
            .field("dependencies", &self.dependencies)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// Decodes a job payload (`POST /jobs/request`'s 201 body, or one saved earlier) and keeps
    /// its bytes ([`Job::payload`]).
    ///
    /// # Errors
    ///
    /// The path of the field that failed and the decode error.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, (String, serde_json::Error)> {
        let mut job: Self = decode_json(bytes)?;
        job.payload = Some(std::sync::Arc::from(bytes));
        Ok(job)
    }

    /// The payload this job was decoded from, when it was decoded by [`Job::from_payload`].
    pub fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }

    /// The step with this name, if the job has one.
    pub fn step(&self, name: &StepName) -> Option<&Step> {
        self.steps.iter().find(|s| &s.name == name)
    }

    /// The value of the last variable with this key.
    pub fn variable(&self, key: &str) -> Option<&JobVariable> {
        self.variables.iter().rev().find(|v| v.key == key)
    }

    /// Values that must never reach the job log: masked variables, the job token, the tokens
    /// of dependencies and the passwords of registry credentials. Empty values are left out.
    pub fn secrets_to_mask(&self) -> Vec<SecretString> {
        let mut out = Vec::new();
        let token = self.token.expose_secret();
        if !token.is_empty() {
            out.push(SecretString::from(token.to_owned()));
        }
        for v in &self.variables {
            let value = v.value.expose_secret();
            if v.masked && !value.is_empty() {
                out.push(SecretString::from(value.to_owned()));
            }
        }
        for d in &self.dependencies {
            let token = d.token.expose_secret();
            if !token.is_empty() {
                out.push(SecretString::from(token.to_owned()));
            }
        }
        for c in &self.credentials {
            let password = c.password.expose_secret();
            if !password.is_empty() {
                out.push(SecretString::from(password.to_owned()));
            }
        }
        out
    }
}

/// `job_info`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct JobInfo {
    pub id: Option<u64>,
    pub name: String,
    pub stage: String,
    pub pipeline_id: Option<u64>,
    pub project_id: Option<u64>,
    pub project_name: String,
    pub project_full_path: String,
    pub namespace_id: Option<u64>,
    pub root_namespace_id: Option<u64>,
    pub organization_id: Option<u64>,
    pub instance_id: Option<u64>,
    pub instance_uuid: Option<String>,
    pub user_id: Option<u64>,
    pub scoped_user_id: Option<u64>,
    pub time_in_queue_seconds: Option<f64>,
    pub project_jobs_running_on_instance_runners_count: Option<serde_json::Value>,
    pub queue_size: Option<u64>,
    pub queue_depth: Option<u64>,
}

/// `git_info`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
#[non_exhaustive]
pub struct GitInfo {
    pub repo_url: String,
    pub repo_object_format: Option<String>,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub sha: String,
    pub before_sha: String,
    pub ref_type: String,
    #[serde(deserialize_with = "null_default")]
    pub refspecs: Vec<String>,
    pub depth: i64,
    pub protected: Option<bool>,
}

/// `runner_info`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
#[non_exhaustive]
pub struct RunnerInfo {
    /// Runner UUID as GitLab knows it.
    pub uuid: Option<String>,
    /// Job timeout in seconds.
    pub timeout: Option<u64>,
    /// Session URL (interactive terminal); unused.
    pub runner_session_url: Option<String>,
}

/// One job variable. `Debug` shows the value only for public, unmasked variables.
#[derive(Deserialize)]
#[non_exhaustive]
pub struct JobVariable {
    /// Variable name.
    pub key: String,
    /// Variable value (secret unless `public` and not `masked`).
    #[serde(deserialize_with = "secret", default = "empty_secret")]
    pub value: SecretString,
    /// Whether GitLab marks the value as public.
    #[serde(default, deserialize_with = "null_default")]
    pub public: bool,
    /// Whether the value is exposed as a file path instead of a string.
    #[serde(default, deserialize_with = "null_default")]
    pub file: bool,
    /// Whether the value must be masked in the job log.
    #[serde(default, deserialize_with = "null_default")]
    pub masked: bool,
    /// Whether `$VAR` references in the value must not be expanded.
    #[serde(default, deserialize_with = "null_default")]
    pub raw: bool,
}

impl JobVariable {
    /// Builds a variable (tests and internal variables).
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: SecretString::from(value.into()),
            public: false,
            file: false,
            masked: false,
            raw: false,
        }
    }
}

impl fmt::Debug for JobVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown =
            if self.public && !self.masked { self.value.expose_secret() } else { "[MASKED]" };
        f.debug_struct("JobVariable")
            .field("key", &self.key)
            .field("value", &shown)
            .field("public", &self.public)
            .field("file", &self.file)
            .field("masked", &self.masked)
            .field("raw", &self.raw)
            .finish()
    }
}

/// Step names. `script` is `before_script` + `script`; release steps carry other names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    /// `before_script` followed by `script`.
    Script,
    /// `after_script`.
    AfterScript,
    /// Release and other named steps.
    #[serde(untagged)]
    Other(String),
}

/// When a step runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepWhen {
    /// Only when the previous steps succeeded.
    #[default]
    OnSuccess,
    /// Only when a previous step failed.
    OnFailure,
    /// Always.
    Always,
}

/// One step of the job.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Step {
    /// Step name.
    pub name: StepName,
    /// Script lines.
    #[serde(default, deserialize_with = "null_default")]
    pub script: Vec<String>,
    /// Timeout in seconds.
    #[serde(default)]
    pub timeout: Option<u64>,
    /// When it runs.
    #[serde(default, deserialize_with = "null_default")]
    pub when: StepWhen,
    /// Whether a failure of this step fails the job.
    #[serde(default, deserialize_with = "null_default")]
    pub allow_failure: bool,
}

/// A port of an image or service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Port {
    /// Port number.
    pub number: u16,
    /// `http`, `https`, ...
    pub protocol: Option<String>,
    /// Port name.
    pub name: Option<String>,
}

/// `executor_opts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ExecutorOptions {
    /// Docker options (not used by this runner, kept to report them as unsupported).
    pub docker: Option<serde_json::Map<String, serde_json::Value>>,
    /// Kubernetes options.
    pub kubernetes: Option<KubernetesOptions>,
    /// Keys this runner does not know; reported as unsupported.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `executor_opts.kubernetes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct KubernetesOptions {
    /// `uid[:gid]` to run the container as.
    #[serde(deserialize_with = "string_or_number")]
    pub user: Option<String>,
    /// Keys this runner does not know; reported as unsupported.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A job image or a service (same shape).
#[derive(Debug, Deserialize)]
#[non_exhaustive]
pub struct Image {
    /// Image reference.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Service alias (may hold several, comma or space separated).
    #[serde(default, deserialize_with = "null_default")]
    pub alias: String,
    /// Command override.
    #[serde(default, deserialize_with = "string_or_seq")]
    pub command: Vec<String>,
    /// Entrypoint override.
    #[serde(default, deserialize_with = "string_or_seq")]
    pub entrypoint: Vec<String>,
    /// Exposed ports.
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<Port>,
    /// Service variables.
    #[serde(default, deserialize_with = "null_default")]
    pub variables: Vec<JobVariable>,
    /// Pull policies (`always`, `if-not-present`, `never`).
    #[serde(default, deserialize_with = "string_or_seq")]
    pub pull_policy: Vec<String>,
    /// Executor-specific options.
    #[serde(default, deserialize_with = "null_default")]
    pub executor_opts: ExecutorOptions,
}

/// `artifacts[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Artifact {
    pub name: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub untracked: bool,
    #[serde(deserialize_with = "null_default")]
    pub paths: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub exclude: Vec<String>,
    pub when: Option<String>,
    pub artifact_type: Option<String>,
    pub artifact_format: Option<String>,
    pub expire_in: Option<String>,
}

/// `cache[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Cache {
    pub key: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub untracked: bool,
    pub policy: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub paths: Vec<String>,
    pub when: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub fallback_keys: Vec<String>,
}

/// `credentials[]`; the password is secret.
#[derive(Deserialize)]
#[non_exhaustive]
pub struct Credentials {
    /// Credential type (`registry`).
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
    /// Registry URL.
    #[serde(default, deserialize_with = "null_default")]
    pub url: String,
    /// User name.
    #[serde(default, deserialize_with = "null_default")]
    pub username: String,
    /// Password or token.
    #[serde(deserialize_with = "secret", default = "empty_secret")]
    pub password: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"[MASKED]")
            .finish()
    }
}

/// `dependencies[].artifacts_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ArtifactsFile {
    /// File name.
    pub filename: String,
    /// Size in bytes.
    pub size: u64,
}

/// `dependencies[]`; the token is secret.
#[derive(Deserialize)]
#[non_exhaustive]
pub struct Dependency {
    /// Job id.
    pub id: u64,
    /// Job token of the dependency.
    #[serde(deserialize_with = "secret", default = "empty_secret")]
    pub token: SecretString,
    /// Job name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Its artifacts archive.
    #[serde(default)]
    pub artifacts_file: Option<ArtifactsFile>,
}

impl fmt::Debug for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dependency")
            .field("id", &self.id)
            .field("token", &"[MASKED]")
            .field("name", &self.name)
            .field("artifacts_file", &self.artifacts_file)
            .finish()
    }
}

/// `features` sent by GitLab with the job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct JobFeatures {
    /// GitLab parses section markers.
    #[serde(deserialize_with = "null_default")]
    pub trace_sections: bool,
    /// Token prefixes (`glpat-`, ...) whose tokens must be masked.
    #[serde(deserialize_with = "null_default")]
    pub token_mask_prefixes: Vec<String>,
    /// The `failure_reason` values this GitLab understands.
    #[serde(deserialize_with = "null_default")]
    pub failure_reasons: Vec<String>,
    /// Tracing settings; raw.
    pub tracing: Option<serde_json::Value>,
}

/// `hooks[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Hook {
    /// Hook name (`pre_get_sources_script`, ...).
    pub name: String,
    /// Script lines.
    #[serde(deserialize_with = "null_default")]
    pub script: Vec<String>,
}

/// `suspend_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SuspendOptions {
    pub suspend_on_success: bool,
    pub suspend_on_failure: bool,
    pub runtime_environment_key: Option<String>,
}

/// `features` the runner announces in `info` (`FeaturesInfo`). `false` fields are omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FeaturesInfo {
    #[serde(skip_serializing_if = "is_false")]
    pub variables: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub image: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub services: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub artifacts: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub cache: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub fallback_cache_keys: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub shared: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub upload_multiple_artifacts: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub upload_raw_artifacts: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub session: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub terminal: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub refspecs: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub masking: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub proxy: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub raw_variables: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub artifacts_exclude: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub multi_build_steps: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub trace_reset: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub trace_checksum: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub trace_size: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub vault_secrets: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub cancelable: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub return_exit_code: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub service_variables: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub service_multiple_aliases: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub image_executor_opts: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub service_executor_opts: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub cancel_gracefully: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub native_steps_integration: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub two_phase_job_commit: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub job_inputs: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl FeaturesInfo {
    /// The features this runner implements: the network layer's (trace reset/checksum/size,
    /// graceful cancel, two-phase commit), the Kubernetes executor's image/services/variables,
    /// and the bash shell's. Artifacts, cache, sessions and vault secrets are not implemented
    /// and therefore not announced.
    pub fn podrunner() -> Self {
        Self {
            variables: true,
            image: true,
            services: true,
            refspecs: true,
            masking: true,
            raw_variables: true,
            multi_build_steps: true,
            trace_reset: true,
            trace_checksum: true,
            trace_size: true,
            cancelable: true,
            return_exit_code: true,
            service_variables: true,
            service_multiple_aliases: true,
            image_executor_opts: true,
            cancel_gracefully: true,
            two_phase_job_commit: true,
            ..Self::default()
        }
    }
}

/// `info.config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigInfo {
    /// GPU request string (empty: none).
    pub gpus: String,
}

/// The `info` object sent with every request (`VersionInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// Runner name (description).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Runner version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Source revision.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// OS (`linux`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub platform: String,
    /// Architecture (`amd64`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    /// Executor name (`kubernetes`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub executor: String,
    /// Shell (`bash`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub shell: String,
    /// Announced features.
    pub features: FeaturesInfo,
    /// Config details.
    pub config: ConfigInfo,
    /// Runner labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl VersionInfo {
    /// Info for this build: crate version, Linux platform, Go-style architecture name.
    pub fn podrunner(name: impl Into<String>, executor: impl Into<String>) -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        Self {
            name: name.into(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision: crate::REVISION.to_owned(),
            platform: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            executor: executor.into(),
            shell: "bash".to_owned(),
            features: FeaturesInfo::podrunner(),
            config: ConfigInfo::default(),
            labels: BTreeMap::new(),
        }
    }
}

/// Body of `POST /api/v4/jobs/request`.
#[derive(Serialize)]
pub(crate) struct JobRequest<'a> {
    pub(crate) info: &'a VersionInfo,
    pub(crate) token: &'a str,
    pub(crate) system_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_update: Option<&'a str>,
}

/// Body of `POST /api/v4/runners/verify`.
#[derive(Serialize)]
pub(crate) struct VerifyRequest<'a> {
    pub(crate) info: &'a VersionInfo,
    pub(crate) token: &'a str,
    pub(crate) system_id: &'a str,
}

/// 200 body of `POST /api/v4/runners/verify`.
#[derive(Deserialize)]
pub(crate) struct VerifyResponseBody {
    #[serde(default)]
    pub(crate) id: Option<u64>,
    #[serde(default)]
    pub(crate) token_expires_at: Option<String>,
}

/// `output` of the job update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceOutput {
    /// `crc32:%08x` over the whole sent trace.
    pub checksum: String,
    /// Size of the sent trace in bytes.
    pub bytesize: u64,
}

/// Job states the runner reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Still running (touch).
    Running,
    /// Finished successfully.
    Success,
    /// Finished with a failure.
    Failed,
}

impl JobState {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
        }
    }

    /// The state of a wire name.
    pub fn from_wire(name: &str) -> Option<Self> {
        [Self::Running, Self::Success, Self::Failed].into_iter().find(|s| s.as_str() == name)
    }
}

/// The job update (`UpdateJobRequest`) minus `info` and `token`, which the client adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUpdate {
    /// New state.
    pub state: JobState,
    /// Failure reason, already resolved against `features.failure_reasons`.
    pub failure_reason: Option<&'static str>,
    /// Exit code; omitted on the wire when 0 or `None`.
    pub exit_code: Option<i32>,
    /// Trace checksum and size.
    pub output: Option<TraceOutput>,
}

#[derive(Serialize)]
pub(crate) struct UpdateJobBody<'a> {
    pub(crate) info: &'a VersionInfo,
    pub(crate) token: &'a str,
    pub(crate) state: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failure_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) checksum: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) output: Option<&'a TraceOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exit_code: Option<i32>,
}

#[cfg(test)]
mod tests;
