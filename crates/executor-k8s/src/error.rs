//! Errors of the pod builder. Every variant is a reason the pod cannot be built; `kind()` tells a
//! configuration problem (fix `config.toml` or the job) from anything else.

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a pod could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither the job nor the config names a build image.
    #[error("no image specified and no default set in config")]
    NoImage,
    /// The build image is not in `allowed_images`.
    #[error("image {image:?} is not present on the list of allowed images {allowed:?}")]
    ImageNotAllowed {
        /// The refused image.
        image: String,
        /// `allowed_images`.
        allowed: Vec<String>,
    },
    /// A service image is not in `allowed_services`.
    #[error("service {image:?} is not present on the list of allowed services {allowed:?}")]
    ServiceNotAllowed {
        /// The refused image.
        image: String,
        /// `allowed_services`.
        allowed: Vec<String>,
    },
    /// A pull policy is not one of the allowed ones (message as gitlab-runner's).
    #[error(
        "pull_policy ({policies}) defined in {source_name} is not one of the allowed_pull_policies ({allowed})"
    )]
    PullPolicyNotAllowed {
        /// The requested policies, e.g. `[Always]`.
        policies: String,
        /// `GitLab pipeline config`, `Runner config` or `Runner config (default)`.
        source_name: &'static str,
        /// The allowed policies, e.g. `[IfNotPresent]`.
        allowed: String,
    },
    /// A job's pull policy is not `always`, `if-not-present` or `never`.
    #[error("unsupported pull_policy {value:?}: expected always, if-not-present or never")]
    InvalidPullPolicy {
        /// The value.
        value: String,
    },
    /// A job-variable overwrite does not match its `*_overwrite_allowed` regex.
    #[error("{variable}: provided value {value:?} does not match {regex:?}")]
    OverwriteNotAllowed {
        /// The job variable.
        variable: String,
        /// Its value.
        value: String,
        /// The regex it had to match.
        regex: String,
    },
    /// A `*_overwrite_allowed` regex does not compile.
    #[error("invalid regex {regex:?} in {key}")]
    InvalidRegex {
        /// The config key.
        key: &'static str,
        /// The regex.
        regex: String,
        /// Why it does not compile.
        #[source]
        source: regex::Error,
    },
    /// An overwrite is not of the form `key=value` (or `key[=value]:effect`).
    #[error("{variable}: invalid value {value:?}: expected {expected}")]
    MalformedOverwrite {
        /// The job variable.
        variable: String,
        /// Its value.
        value: String,
        /// What it should look like.
        expected: &'static str,
    },
    /// A resource overwrite is higher than its `*_overwrite_max_allowed`.
    #[error("the resource {field:?} requested {value:?} is higher than limit allowed {max:?}")]
    ResourceAboveMax {
        /// The job variable.
        field: String,
        /// The requested quantity.
        value: String,
        /// The maximum.
        max: String,
    },
    /// A resource quantity does not parse.
    #[error("invalid quantity {value:?} for {field}")]
    InvalidQuantity {
        /// Where it came from.
        field: String,
        /// The value.
        value: String,
    },
    /// The job user (`image:kubernetes:user`) is not `uid[:gid]`.
    #[error("failed to parse {what} {value:?}: {reason}")]
    InvalidUser {
        /// `UID` or `GID`.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A service alias used as a host alias is not a DNS-1123 subdomain.
    #[error("provided host alias {alias} for service {service} is invalid DNS")]
    InvalidHostAlias {
        /// The alias.
        alias: String,
        /// The service image.
        service: String,
    },
    /// An invalid glob in `allowed_images` or `allowed_services`.
    #[error("invalid pattern {pattern:?} in {key}")]
    InvalidGlob {
        /// The config key.
        key: &'static str,
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: globset::Error,
    },
    /// A `[[pod_spec]]` entry has both `patch` and `patch_path`.
    #[error("ambiguous patch: both patch path and patch provided ({name})")]
    PatchAmbiguous {
        /// The patch name.
        name: String,
    },
    /// A `patch_path` could not be read (the caller reads the files; see `BuildInput::patch_files`).
    #[error("loading patch file ({name}): {reason}")]
    PatchFile {
        /// The patch name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The patch text is neither YAML nor JSON.
    #[error("converting patch to json ({name})")]
    PatchConversion {
        /// The patch name.
        name: String,
        /// The parser's error.
        #[source]
        source: serde_norway::Error,
    },
    /// `patch_type` is not `strategic`, `merge` or `json`.
    #[error("unsupported patch type {patch_type}")]
    PatchType {
        /// The type.
        patch_type: String,
    },
    /// Applying a patch failed.
    #[error("applying patch ({name}): {reason}")]
    PatchApply {
        /// The patch name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The patched pod spec is no longer a valid PodSpec.
    #[error("decoding the patched pod spec ({name})")]
    PatchedSpec {
        /// The patch name.
        name: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A security profile in the final pod is invalid (only possible through `pod_spec` patches).
    #[error("invalid {what} profile on {container}: {reason}")]
    InvalidProfile {
        /// `seccomp` or `AppArmor`.
        what: &'static str,
        /// The container (or `pod`).
        container: String,
        /// Why.
        reason: String,
    },
    /// A value known only per job (a job variable in a config value, a `KUBERNETES_*_OVERWRITE`
    /// variable) breaks the rule the API server or the runtime applies to it.
    #[error("{message} (in the pod's {field}, from {source_keys})")]
    InvalidValue {
        /// The field of the pod (`metadata.namespace`).
        field: String,
        /// Where the value comes from in the config or the job.
        source_keys: &'static str,
        /// The rule in plain words and the value.
        message: String,
    },
    /// The runner entry has no Kubernetes settings.
    #[error("runner {runner} is not a kubernetes runner")]
    NotKubernetes {
        /// The runner's name.
        runner: String,
    },
    /// Serialising the pod spec for patching failed (should not happen).
    #[error("encoding the pod spec")]
    Encode(#[source] serde_json::Error),
}

impl Error {
    /// A stable name for metrics and job failure reasons: `runner_configuration_error` for anything
    /// the config or the job must fix, `runner_system_failure` otherwise.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Encode(_) => "runner_system_failure",
            _ => "runner_configuration_error",
        }
    }

    /// Whether the error is a configuration problem (as opposed to an internal failure).
    pub fn is_configuration(&self) -> bool {
        self.kind() == "runner_configuration_error"
    }
}
