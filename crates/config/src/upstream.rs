//! What upstream GitLab Runner knows about `config.toml` beyond the keys this runner reads: keys it
//! removed or renamed, registration options that people write into the file, and its feature
//! flags. Each is one table here; the loader's warnings and the generated `docs/config.md` are
//! read from them, so the two cannot disagree.
//!
//! The facts are upstream's (`common/config.go`, `commands/register.go` and
//! `helpers/featureflags/flags.go` at [`UPSTREAM_VERSION`], with the release where each changed
//! taken from upstream's git history).

use std::fmt::Write as _;

/// The upstream release these tables describe.
pub const UPSTREAM_VERSION: &str = "19.4";

/// A key upstream removed or renamed, or a Kubernetes field name written where upstream has its
/// own key: the loader names the replacement instead of guessing by spelling.
#[derive(Debug, Clone, Copy)]
pub struct RenamedKey {
    /// The table the key was written in, as keys without indices (`["runners", "kubernetes"]`).
    pub table: &'static [&'static str],
    /// The key as written.
    pub key: &'static str,
    /// What to write instead (first: the one suggested).
    pub replacements: &'static [&'static str],
    /// The table the replacements live in, when it is not `table`.
    pub replacement_table: Option<&'static str>,
    /// The upstream release that removed the key; `None` for a name upstream never had.
    pub removed_in: Option<&'static str>,
}

const KUBERNETES: &[&str] = &["runners", "kubernetes"];
const RUNNERS: &[&str] = &["runners"];
const CACHE: &[&str] = &["runners", "cache"];

const fn removed(
    table: &'static [&'static str],
    key: &'static str,
    replacements: &'static [&'static str],
    removed_in: &'static str,
) -> RenamedKey {
    RenamedKey { table, key, replacements, replacement_table: None, removed_in: Some(removed_in) }
}

const fn moved_to_s3(key: &'static str) -> RenamedKey {
    RenamedKey {
        table: CACHE,
        key,
        replacements: &[],
        replacement_table: Some("[runners.cache.s3]"),
        removed_in: Some("12.0"),
    }
}

/// Keys upstream removed or renamed, and Kubernetes spellings of upstream keys.
pub const RENAMED_KEYS: &[RenamedKey] = &[
    removed(KUBERNETES, "cpus", &["cpu_limit", "cpu_request"], "9.0"),
    removed(KUBERNETES, "memory", &["memory_limit", "memory_request"], "9.0"),
    removed(KUBERNETES, "service_cpus", &["service_cpu_limit", "service_cpu_request"], "9.0"),
    removed(
        KUBERNETES,
        "service_memory",
        &["service_memory_limit", "service_memory_request"],
        "9.0",
    ),
    removed(KUBERNETES, "helper_cpus", &["helper_cpu_limit", "helper_cpu_request"], "9.0"),
    removed(KUBERNETES, "helper_memory", &["helper_memory_limit", "helper_memory_request"], "9.0"),
    removed(
        KUBERNETES,
        "terminationGracePeriodSeconds",
        &["pod_termination_grace_period_seconds"],
        "17.0",
    ),
    removed(RUNNERS, "pre_clone_script", &["pre_get_sources_script"], "17.0"),
    removed(RUNNERS, "post_clone_script", &["post_get_sources_script"], "17.0"),
    removed(&[], "metrics_server", &["listen_address"], "12.0"),
    moved_to_s3("ServerAddress"),
    moved_to_s3("AccessKey"),
    moved_to_s3("SecretKey"),
    moved_to_s3("BucketName"),
    moved_to_s3("BucketLocation"),
    moved_to_s3("Insecure"),
    RenamedKey {
        table: KUBERNETES,
        key: "image_pull_policy",
        replacements: &["pull_policy"],
        replacement_table: None,
        removed_in: None,
    },
    RenamedKey {
        table: KUBERNETES,
        key: "service_account_name",
        replacements: &["service_account"],
        replacement_table: None,
        removed_in: None,
    },
];

/// The renamed or removed key `key` written in `table` (keys without indices), if it is one.
pub fn renamed_key(table: &[&str], key: &str) -> Option<&'static RenamedKey> {
    RENAMED_KEYS.iter().find(|r| r.key == key && r.table == table)
}

impl RenamedKey {
    /// The diagnostic's text after `key "x" in [table] ...`.
    pub fn advice(&self) -> String {
        let quoted: Vec<String> = self.replacements.iter().map(|r| format!("{r:?}")).collect();
        let what = match (quoted.as_slice(), self.replacement_table) {
            ([], Some(table)) => format!("write it in {table}"),
            ([one], None) => format!("use {one}"),
            ([first, rest @ ..], None) => format!("use {first} (and {})", rest.join(", ")),
            (list, Some(table)) => format!("use {} in {table}", list.join(", ")),
            ([], None) => "delete it".to_owned(),
        };
        match self.removed_in {
            Some(version) => format!(
                "was removed from gitlab-runner in {version} and is ignored (by gitlab-runner too); {what}"
            ),
            None => format!("is the Kubernetes spelling; this key is ignored, {what}"),
        }
    }
}

/// A `gitlab-runner register` option that is not a `config.toml` key. Written into the file, it
/// does nothing in either runner: GitLab holds these settings.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationOption {
    /// The key people write.
    pub key: &'static str,
    /// The `gitlab-runner register` flag it comes from.
    pub register_flag: &'static str,
}

/// Registration options (upstream's `register` flags and registration request fields).
pub const REGISTRATION_OPTIONS: &[RegistrationOption] = &[
    RegistrationOption { key: "tags", register_flag: "--tag-list" },
    RegistrationOption { key: "tag_list", register_flag: "--tag-list" },
    RegistrationOption { key: "run_untagged", register_flag: "--run-untagged" },
    RegistrationOption { key: "locked", register_flag: "--locked" },
    RegistrationOption { key: "maximum_timeout", register_flag: "--maximum-timeout" },
    RegistrationOption { key: "access_level", register_flag: "--access-level" },
    RegistrationOption { key: "paused", register_flag: "--paused" },
    RegistrationOption { key: "maintenance_note", register_flag: "--maintenance-note" },
    RegistrationOption { key: "description", register_flag: "--description" },
    RegistrationOption { key: "registration_token", register_flag: "--registration-token" },
];

/// The registration option `key`, when written at the top level or in `[[runners]]`.
pub fn registration_option(table: &[&str], key: &str) -> Option<&'static RegistrationOption> {
    (table.is_empty() || table == RUNNERS)
        .then(|| REGISTRATION_OPTIONS.iter().find(|o| o.key == key))
        .flatten()
}

impl RegistrationOption {
    /// The diagnostic's text after `key "x" in [table] ...`.
    pub fn advice(&self) -> String {
        let what = if self.key == "registration_token" {
            "a registration token is exchanged for the runner's own token when it registers; put that token (`glrt-...`) in `token`".to_owned()
        } else {
            format!(
                "it is set in GitLab when the runner is created (the runner's settings page, or `gitlab-runner register {}`)",
                self.register_flag
            )
        };
        format!("is a registration option, not a config.toml key, and is ignored; {what}")
    }
}

/// What upstream says of a feature flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagStatus {
    /// A flag of the current release.
    Current,
    /// Still read, but on its way out.
    Deprecated {
        /// Upstream's plan for it.
        note: &'static str,
    },
    /// Gone: setting it does nothing.
    Removed {
        /// The release that removed it.
        version: &'static str,
    },
}

/// One of upstream's `FF_*` feature flags.
#[derive(Debug, Clone, Copy)]
pub struct FeatureFlag {
    /// `FF_...`.
    pub name: &'static str,
    /// Its value when nothing sets it.
    pub default: bool,
    /// Current, deprecated or removed.
    pub status: FlagStatus,
    /// Whether this runner reads it (the others change nothing here).
    pub honoured: bool,
}

impl FeatureFlag {
    const fn current(name: &'static str, default: bool) -> Self {
        Self { name, default, status: FlagStatus::Current, honoured: false }
    }
    const fn honoured(name: &'static str, default: bool) -> Self {
        Self { name, default, status: FlagStatus::Current, honoured: true }
    }
    const fn removed(name: &'static str, version: &'static str) -> Self {
        Self { name, default: false, status: FlagStatus::Removed { version }, honoured: false }
    }
}

/// `FF_USE_ADVANCED_POD_SPEC_CONFIGURATION`: applies `[[runners.kubernetes.pod_spec]]` patches.
pub const ADVANCED_POD_SPEC: FeatureFlag =
    FeatureFlag::honoured("FF_USE_ADVANCED_POD_SPEC_CONFIGURATION", false);
/// `FF_USE_POD_ACTIVE_DEADLINE_SECONDS`: the pod's `activeDeadlineSeconds` is the job timeout.
pub const POD_ACTIVE_DEADLINE_SECONDS: FeatureFlag =
    FeatureFlag::honoured("FF_USE_POD_ACTIVE_DEADLINE_SECONDS", true);
/// `FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY`: exec instead of attach (no init-permissions).
pub const LEGACY_KUBERNETES_EXECUTION_STRATEGY: FeatureFlag =
    FeatureFlag::honoured("FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY", false);

/// Upstream's feature flags: the current ones with their defaults, then the removed ones.
pub const FEATURE_FLAGS: &[FeatureFlag] = &[
    FeatureFlag::current("FF_NETWORK_PER_BUILD", false),
    LEGACY_KUBERNETES_EXECUTION_STRATEGY,
    FeatureFlag::current("FF_USE_DIRECT_DOWNLOAD", true),
    FeatureFlag {
        name: "FF_USE_FASTZIP",
        default: true,
        status: FlagStatus::Deprecated {
            note: "the legacy zip implementation and this flag are removed in gitlab-runner 19.7",
        },
        honoured: false,
    },
    FeatureFlag::current("FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR", false),
    FeatureFlag::current("FF_ENABLE_BASH_EXIT_CODE_CHECK", false),
    FeatureFlag::current("FF_USE_WINDOWS_LEGACY_PROCESS_STRATEGY", false),
    FeatureFlag::current("FF_USE_LEGACY_BASH_EVAL", false),
    FeatureFlag::current("FF_USE_POWERSHELL_PATH_RESOLVER", false),
    FeatureFlag::current("FF_USE_DYNAMIC_TRACE_FORCE_SEND_INTERVAL", false),
    FeatureFlag::current("FF_SCRIPT_SECTIONS", false),
    FeatureFlag::current("FF_ENABLE_JOB_CLEANUP", false),
    FeatureFlag::current("FF_KUBERNETES_HONOR_ENTRYPOINT", false),
    FeatureFlag::current("FF_POSIXLY_CORRECT_ESCAPES", false),
    FeatureFlag::current("FF_RESOLVE_FULL_TLS_CHAIN", false),
    FeatureFlag::current("FF_DISABLE_POWERSHELL_STDIN", false),
    POD_ACTIVE_DEADLINE_SECONDS,
    ADVANCED_POD_SPEC,
    FeatureFlag::current("FF_SECRET_RESOLVING_FAILS_IF_MISSING", true),
    FeatureFlag::current("FF_PRINT_POD_EVENTS", false),
    FeatureFlag::current("FF_USE_GIT_BUNDLE_URIS", true),
    FeatureFlag::current("FF_USE_GIT_NATIVE_CLONE", false),
    FeatureFlag::current("FF_USE_DUMB_INIT_WITH_KUBERNETES_EXECUTOR", false),
    FeatureFlag::current("FF_USE_INIT_WITH_DOCKER_EXECUTOR", false),
    FeatureFlag::current("FF_LOG_IMAGES_CONFIGURED_FOR_JOB", false),
    FeatureFlag::current("FF_USE_DOCKER_AUTOSCALER_DIAL_STDIO", true),
    FeatureFlag::current("FF_CLEAN_UP_FAILED_CACHE_EXTRACT", false),
    FeatureFlag::current("FF_USE_WINDOWS_JOB_OBJECT", false),
    FeatureFlag::current("FF_TIMESTAMPS", true),
    FeatureFlag::current("FF_DISABLE_AUTOMATIC_TOKEN_ROTATION", false),
    FeatureFlag::current("FF_USE_LEGACY_GCS_CACHE_ADAPTER", false),
    FeatureFlag::current("FF_DISABLE_UMASK_FOR_KUBERNETES_EXECUTOR", false),
    FeatureFlag::current("FF_USE_LEGACY_S3_CACHE_ADAPTER", false),
    FeatureFlag::current("FF_GIT_URLS_WITHOUT_TOKENS", false),
    FeatureFlag::current("FF_WAIT_FOR_POD_TO_BE_REACHABLE", false),
    FeatureFlag::current("FF_MASK_ALL_DEFAULT_TOKENS", true),
    FeatureFlag::current("FF_EXPORT_HIGH_CARDINALITY_METRICS", false),
    FeatureFlag::current("FF_USE_FLEETING_ACQUIRE_HEARTBEATS", false),
    FeatureFlag::current("FF_USE_EXPONENTIAL_BACKOFF_STAGE_RETRY", true),
    FeatureFlag::current("FF_USE_ADAPTIVE_REQUEST_CONCURRENCY", true),
    FeatureFlag::current("FF_USE_GITALY_CORRELATION_ID", true),
    FeatureFlag::current("FF_USE_GIT_PROACTIVE_AUTH", false),
    FeatureFlag::current("FF_HASH_CACHE_KEYS", false),
    FeatureFlag::current("FF_ENABLE_JOB_INPUTS_INTERPOLATION", true),
    FeatureFlag::current("FF_USE_JOB_ROUTER", false),
    FeatureFlag::current("FF_SCRIPT_TO_STEP_MIGRATION", false),
    FeatureFlag::current("FF_USE_PARALLEL_CACHE_TRANSFER", false),
    FeatureFlag::current("FF_USE_PARALLEL_ARTIFACT_TRANSFER", false),
    FeatureFlag::current("FF_CONCRETE", false),
    FeatureFlag::current("FF_SUSPENDABLE_ENVIRONMENTS", false),
    FeatureFlag::current("FF_USE_NATIVE_CONTAINER_STOP", false),
    FeatureFlag::removed("FF_DOCKER_HELPER_IMAGE_V2", "12.0"),
    FeatureFlag::removed("FF_K8S_USE_ENTRYPOINT_OVER_COMMAND", "12.0"),
    FeatureFlag::removed("FF_USE_LEGACY_GIT_CLEAN_STRATEGY", "12.0"),
    FeatureFlag::removed("FF_USE_LEGACY_BUILDS_DIR_FOR_DOCKER", "13.0"),
    FeatureFlag::removed("FF_USE_LEGACY_VOLUMES_MOUNTING_ORDER", "13.0"),
    FeatureFlag::removed("FF_USE_NEW_EVAL_STRATEGY", "13.12"),
    FeatureFlag::removed("FF_RESET_HELPER_IMAGE_ENTRYPOINT", "14.0"),
    FeatureFlag::removed("FF_SHELL_EXECUTOR_USE_LEGACY_PROCESS_KILL", "14.0"),
    FeatureFlag::removed("FF_USE_GO_CLOUD_WITH_CACHE_ARCHIVER", "14.0"),
    FeatureFlag::removed("FF_SKIP_DOCKER_MACHINE_PROVISION_ON_CREATION_FAILURE", "14.3"),
    FeatureFlag::removed("FF_GITLAB_REGISTRY_HELPER_IMAGE", "15.0"),
    FeatureFlag::removed("FF_USE_IMPROVED_URL_MASKING", "16.11"),
    FeatureFlag::removed("FF_CMD_DISABLE_DELAYED_ERROR_LEVEL_EXPANSION", "17.0"),
    FeatureFlag::removed("FF_USE_NEW_SHELL_ESCAPE", "17.0"),
    FeatureFlag::removed("FF_USE_INFORMERS", "17.9"),
    FeatureFlag::removed("FF_RETRIEVE_POD_WARNING_EVENTS", "18.0"),
    FeatureFlag::removed("FF_USE_NATIVE_STEPS", "18.6"),
    FeatureFlag::removed("FF_SET_PERMISSIONS_BEFORE_CLEANUP", "19.3"),
    FeatureFlag::removed("FF_SKIP_NOOP_BUILD_STAGES", "19.3"),
    FeatureFlag::removed("FF_USE_NEW_BASH_EVAL_STRATEGY", "19.3"),
];

/// The flag called `name`, current or removed.
pub fn feature_flag(name: &str) -> Option<&'static FeatureFlag> {
    FEATURE_FLAGS.iter().find(|f| f.name == name)
}

/// The `docs/config.md` section for these tables.
pub fn reference_markdown() -> String {
    let mut out = format!(
        "\n## What gitlab-runner removed, and what is not a config key\n\n\
         Upstream facts as of gitlab-runner {UPSTREAM_VERSION}. `runner check-config` names the replacement \
         for each of these instead of guessing by spelling.\n\n\
         ### Removed and renamed keys\n\n\
         | table | key | write instead | removed in |\n|---|---|---|---|\n"
    );
    for r in RENAMED_KEYS {
        let table = if r.table.is_empty() {
            "(top level)".to_owned()
        } else {
            format!("[{}]", r.table.join("."))
        };
        let mut instead: Vec<String> = r.replacements.iter().map(|k| format!("`{k}`")).collect();
        if let Some(t) = r.replacement_table {
            instead.push(format!("the same key in `{t}`"));
        }
        let removed = r.removed_in.map_or("never an upstream key (Kubernetes spelling)", |v| v);
        let _ = writeln!(out, "| `{table}` | `{}` | {} | {removed} |", r.key, instead.join(", "));
    }
    out.push_str(
        "\n### Registration options\n\n\
         These are set in GitLab when a runner is created, not in `config.toml`; written into the \
         file they are ignored (a warning).\n\n\
         | key | `gitlab-runner register` flag |\n|---|---|\n",
    );
    for o in REGISTRATION_OPTIONS {
        let _ = writeln!(out, "| `{}` | `{}` |", o.key, o.register_flag);
    }
    out.push_str(
        "\n### Feature flags\n\n\
         Set in `[runners.feature_flags]` (highest precedence) or as `FF_*=true` in `environment` \
         (a job's variables can also set them). `check-config` warns about unknown, removed and \
         deprecated flags and flags this runner does not read, and notes entries that only restate \
         the default.\n\n\
         | flag | default | upstream status | read by this runner |\n|---|---|---|---|\n",
    );
    for f in FEATURE_FLAGS {
        let status = match f.status {
            FlagStatus::Current => "current".to_owned(),
            FlagStatus::Deprecated { note } => format!("deprecated: {note}"),
            FlagStatus::Removed { version } => format!("removed in {version}"),
        };
        let default = match f.status {
            FlagStatus::Removed { .. } => "-",
            _ if f.default => "on",
            _ => "off",
        };
        let honoured = if f.honoured { "yes" } else { "no" };
        let _ = writeln!(out, "| `{}` | {default} | {status} | {honoured} |", f.name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_appears_once() {
        let mut flags: Vec<&str> = FEATURE_FLAGS.iter().map(|f| f.name).collect();
        flags.sort_unstable();
        let before = flags.len();
        flags.dedup();
        assert_eq!(flags.len(), before, "a feature flag is listed twice");
        for r in RENAMED_KEYS {
            assert_eq!(
                RENAMED_KEYS.iter().filter(|o| o.key == r.key && o.table == r.table).count(),
                1,
                "{} is listed twice",
                r.key
            );
        }
    }

    #[test]
    fn the_flags_this_runner_reads_are_in_the_table() {
        for flag in
            [ADVANCED_POD_SPEC, POD_ACTIVE_DEADLINE_SECONDS, LEGACY_KUBERNETES_EXECUTION_STRATEGY]
        {
            let listed = feature_flag(flag.name).expect("listed");
            assert!(listed.honoured && listed.default == flag.default, "{}", flag.name);
        }
    }

    #[test]
    fn advice_names_the_replacement_and_the_release() {
        let cpus = renamed_key(KUBERNETES, "cpus").expect("cpus");
        assert_eq!(
            cpus.advice(),
            "was removed from gitlab-runner in 9.0 and is ignored (by gitlab-runner too); use \"cpu_limit\" (and \"cpu_request\")"
        );
        let s3 = renamed_key(CACHE, "BucketName").expect("BucketName");
        assert!(s3.advice().ends_with("write it in [runners.cache.s3]"), "{}", s3.advice());
        assert!(renamed_key(RUNNERS, "cpus").is_none(), "cpus is a removed key only in kubernetes");
    }
}
