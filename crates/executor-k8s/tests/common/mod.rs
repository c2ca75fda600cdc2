//! Shared fixtures of the pod-builder tests: loading configs and jobs, rendering, the compact
//! security view used by most snapshots, and the corpus of every case (rendered again by the
//! `kubernetes-validate` test).

#![allow(dead_code, reason = "each test binary uses a different part")]

use k8s_openapi::api::core::v1::Pod;
use podrunner_config::{LoadOptions, RunnerConfig, load_str};
use podrunner_coordinator::wire::{Job, decode_json};
use podrunner_executor_k8s::{
    BuildInput, BuiltPod, ClusterFacts, HelperOs, PatchFiles, PodIdentity, build_pod, pod_yaml,
    yaml::to_yaml,
};
use serde_json::{Map, Value};

/// The newest minor version the builder supports.
pub(crate) const LATEST: u32 = podrunner_executor_k8s::version::MAX_MINOR;

/// A runner header to prepend to `[runners.kubernetes]` fragments.
pub(crate) const RUNNER: &str = "[[runners]]\nname = \"myRunner\"\nurl = \"https://gitlab.example.com\"\ntoken = \"glrt-t1_abcdefghijklmnop\"\nexecutor = \"kubernetes\"\n";

/// A job with an image and one service, no job user.
pub(crate) const JOB_ONE_SERVICE: &str = r#"{
  "id": 55, "token": "job-token",
  "job_info": {"name": "test", "project_id": 7, "project_name": "demo", "project_full_path": "g/demo"},
  "git_info": {"repo_url": "https://gitlab.example.com/g/demo.git", "ref": "main", "sha": "abc123", "before_sha": "000000"},
  "image": {"name": "alpine:3.20"},
  "services": [{"name": "postgres:16", "alias": "db"}]
}"#;

/// A job with an image, no services.
pub(crate) const JOB_NO_SERVICE: &str =
    r#"{"id": 56, "token": "t", "job_info": {"project_id": 7}, "image": {"name": "alpine:3.20"}}"#;

/// A job whose image sets `kubernetes: user`.
pub(crate) fn job_with_user(user: &str) -> String {
    format!(
        r#"{{"id": 57, "token": "t", "job_info": {{"project_id": 7}},
            "image": {{"name": "alpine:3.20", "executor_opts": {{"kubernetes": {{"user": "{user}"}}}}}},
            "services": [{{"name": "redis:7", "alias": "cache",
                           "executor_opts": {{"kubernetes": {{"user": "{user}"}}}}}}]}}"#
    )
}

/// A loaded config: the first runner and the rendered diagnostics (`severity: message`).
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) runner: RunnerConfig,
    pub(crate) diagnostics: Vec<String>,
}

/// Loads a config that must have no errors.
#[track_caller]
pub(crate) fn config(toml: &str) -> Loaded {
    let loaded = load_str(toml, LoadOptions { strict: false });
    let diagnostics: Vec<String> = loaded
        .diagnostics
        .iter()
        .map(|d| format!("{}: {} (at {})", d.severity, d.message, d.key_path))
        .collect();
    let Some(mut config) = loaded.config else {
        panic!("config has errors: {diagnostics:#?}");
    };
    Loaded { runner: config.runners.remove(0), diagnostics }
}

/// Decodes a job payload.
#[track_caller]
pub(crate) fn job(json: &str) -> Job {
    decode_json(json.as_bytes()).unwrap_or_else(|(path, e)| panic!("job JSON at {path}: {e}"))
}

/// Renders with defaults for everything but the version.
pub(crate) fn try_render(
    loaded: &Loaded,
    job: &Job,
    minor: u32,
    patch_files: &PatchFiles,
) -> podrunner_executor_k8s::Result<BuiltPod> {
    try_render_on(
        loaded,
        job,
        ClusterFacts { kubernetes_minor: minor, helper_os: HelperOs::Linux },
        patch_files,
    )
}

/// Renders with explicit cluster facts.
pub(crate) fn try_render_on(
    loaded: &Loaded,
    job: &Job,
    cluster: ClusterFacts,
    patch_files: &PatchFiles,
) -> podrunner_executor_k8s::Result<BuiltPod> {
    let identity = PodIdentity { name_suffix: "abcd1234".to_owned(), ..PodIdentity::default() };
    build_pod(&BuildInput {
        runner: &loaded.runner,
        job,
        cluster,
        identity: &identity,
        patch_files,
    })
}

/// Renders a case that must build.
#[track_caller]
pub(crate) fn render(loaded: &Loaded, job: &Job, minor: u32) -> BuiltPod {
    try_render(loaded, job, minor, &PatchFiles::new())
        .unwrap_or_else(|e| panic!("build failed: {e}"))
}

fn security_context_of(c: &Value) -> Value {
    c.get("securityContext").cloned().unwrap_or(Value::Null)
}

/// The security-relevant part of a pod: AppArmor annotations, the pod context and each
/// container's context (init containers first), by container name.
pub(crate) fn security_view(pod: &Pod) -> Value {
    let value = serde_json::to_value(pod).expect("pods serialise");
    let annotations: Map<String, Value> = value["metadata"]["annotations"]
        .as_object()
        .map(|a| {
            a.iter()
                .filter(|(k, _)| k.starts_with("container.apparmor.security.beta.kubernetes.io/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let containers = |key: &str| -> Map<String, Value> {
        value["spec"][key]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|c| {
                        (c["name"].as_str().unwrap_or_default().to_owned(), security_context_of(c))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut view = Map::new();
    if !annotations.is_empty() {
        view.insert("apparmorAnnotations".to_owned(), Value::Object(annotations));
    }
    view.insert(
        "podSecurityContext".to_owned(),
        value["spec"].get("securityContext").cloned().unwrap_or(Value::Null),
    );
    view.insert("initContainers".to_owned(), Value::Object(containers("initContainers")));
    view.insert("containers".to_owned(), Value::Object(containers("containers")));
    Value::Object(view)
}

/// Notes (config diagnostics and job-log lines) as YAML comments, then `body`.
pub(crate) fn with_notes(loaded: &Loaded, built: &BuiltPod, body: &str) -> String {
    let mut out = String::new();
    for d in &loaded.diagnostics {
        out.push_str(&format!("# config {d}\n"));
    }
    for line in &built.job_log {
        out.push_str(&format!("# job log: {line}\n"));
    }
    out.push_str(body);
    out
}

/// The security view as a snapshot text.
pub(crate) fn security_snapshot(loaded: &Loaded, built: &BuiltPod) -> String {
    with_notes(loaded, built, &to_yaml(&security_view(&built.pod)))
}

/// The whole pod as a snapshot text.
pub(crate) fn pod_snapshot(loaded: &Loaded, built: &BuiltPod) -> String {
    with_notes(loaded, built, &pod_yaml(&built.pod).expect("pods serialise"))
}

/// The names of the pod's containers, init containers first.
pub(crate) fn container_names(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref().expect("a spec");
    spec.init_containers.iter().flatten().chain(&spec.containers).map(|c| c.name.clone()).collect()
}

/// The pod serialised as JSON text (to search for leaked values).
pub(crate) fn pod_text(pod: &Pod) -> String {
    serde_json::to_string(pod).expect("pods serialise")
}

/// One case of the corpus: a config and a job that build a pod.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) config: String,
    pub(crate) job: String,
    pub(crate) patch_files: Vec<(&'static str, &'static str)>,
    pub(crate) helper_os: HelperOs,
}

impl Case {
    pub(crate) fn new(
        name: &'static str,
        config: impl Into<String>,
        job: impl Into<String>,
    ) -> Self {
        Self {
            name,
            config: config.into(),
            job: job.into(),
            patch_files: Vec::new(),
            helper_os: HelperOs::Linux,
        }
    }

    pub(crate) fn loaded(&self) -> Loaded {
        config(&self.config)
    }

    pub(crate) fn job(&self) -> Job {
        job(&self.job)
    }

    pub(crate) fn patch_files(&self) -> PatchFiles {
        self.patch_files.iter().map(|(p, t)| ((*p).to_owned(), Ok((*t).to_owned()))).collect()
    }

    /// Renders the case for `minor`.
    #[track_caller]
    pub(crate) fn render(&self, minor: u32) -> (Loaded, BuiltPod) {
        let loaded = self.loaded();
        let built = try_render_on(
            &loaded,
            &self.job(),
            ClusterFacts { kubernetes_minor: minor, helper_os: self.helper_os },
            &self.patch_files(),
        )
        .unwrap_or_else(|e| panic!("case {} does not build: {e}", self.name));
        (loaded, built)
    }
}

fn runner(fragment: &str) -> String {
    format!("{RUNNER}{fragment}")
}

/// The four container tables, each with the same profile settings.
fn all_kinds(settings: &str) -> String {
    let mut out = String::from("[runners.kubernetes]\nimage = \"alpine:3.20\"\n");
    for table in [
        "build_container_security_context",
        "helper_container_security_context",
        "service_container_security_context",
        "init_permissions_container_security_context",
    ] {
        out.push_str(&format!("[runners.kubernetes.{table}]\n{settings}\n"));
    }
    runner(&out)
}

/// `gitlab-runner.md` §2.6 Example A.
pub(crate) fn example_a() -> Case {
    Case::new(
        "example_a",
        r#"concurrent = 4
check_interval = 30

[[runners]]
name = "myRunner"
url = "gitlab.example.com"
token = "glrt-t1_abcdefghijklmnop"
executor = "kubernetes"

[runners.kubernetes]
helper_image = "gitlab-registry.example.com/helper:latest"
pod_security_context = { run_as_non_root = true, run_as_user = 59417, run_as_group = 59417, fs_group = 59417 }
init_permissions_container_security_context = { run_as_user = 1000, run_as_group = 1000 }
build_container_security_context = { run_as_user = 65534, run_as_group = 65534, capabilities = { add = ["NET_ADMIN"] } }
helper_container_security_context = { run_as_user = 1000, run_as_group = 1000 }
service_container_security_context = { run_as_user = 1000, run_as_group = 1000 }
"#,
        JOB_ONE_SERVICE,
    )
}

/// §2.6 Example B.
pub(crate) fn example_b() -> Case {
    Case::new(
        "example_b",
        r#"concurrent = 4
check_interval = 30

[[runners]]
name = "myRunner"
url = "gitlab.example.com"
token = "glrt-t1_abcdefghijklmnop"
executor = "kubernetes"

[runners.kubernetes]
image = "alpine:3.20"

[runners.kubernetes.pod_security_context]
run_as_non_root = true
run_as_user = 1001
seccomp_profile = { type = "RuntimeDefault" }

[runners.kubernetes.build_container_security_context]
run_as_user = 1001
run_as_group = 1001
seccomp_profile = { type = "Unconfined" }
app_armor_profile = { type = "Unconfined" }
"#,
        JOB_ONE_SERVICE,
    )
}

/// §2.6 Example C (the fragment inside a Kubernetes runner).
pub(crate) fn example_c() -> Case {
    Case::new(
        "example_c",
        runner(
            r#"[runners.kubernetes]
image = "alpine:3.20"
[runners.kubernetes.build_container_security_context]
seccomp_profile = { type = "Localhost", localhost_profile = "profiles/my-seccomp-profile.json" }
app_armor_profile = { type = "Localhost", localhost_profile = "my-apparmor-profile" }
"#,
        ),
        JOB_NO_SERVICE,
    )
}

/// §2.6 Example C with the `localhost_profile` keys removed.
pub(crate) fn example_c_without_profiles() -> Case {
    Case::new(
        "example_c_without_profiles",
        runner(
            r#"[runners.kubernetes]
image = "alpine:3.20"
[runners.kubernetes.build_container_security_context]
seccomp_profile = { type = "Localhost" }
app_armor_profile = { type = "Localhost" }
"#,
        ),
        JOB_NO_SERVICE,
    )
}

const EXAMPLE_D: &str = r#"[[runners]]
name = "k8s-runner"
url = "https://gitlab.example.com"
token = "glrt-t1_abcdefghijklmnop"
executor = "kubernetes"

[runners.kubernetes]
image = "alpine:3.20"
allowed_users = ["1000", "1001", "65534"]
allowed_groups = ["1001", "65534"]
pod_security_context = { run_as_user = 1500, run_as_group = 1500 }
build_container_security_context = { run_as_user = 2000, run_as_group = 2001 }
helper_container_security_context = { run_as_user = 3000, run_as_group = 3001 }
service_container_security_context = { run_as_user = 4000, run_as_group = 4001 }
"#;

/// §2.6 Example D with a job user that the security contexts override.
pub(crate) fn example_d() -> Case {
    Case::new("example_d", EXAMPLE_D, job_with_user("1000:1001"))
}

/// §2.6 job-user-only case.
pub(crate) fn job_user_only() -> Case {
    Case::new(
        "job_user_only",
        runner("[runners.kubernetes]\nimage = \"alpine:3.20\"\n"),
        job_with_user("1000:1001"),
    )
}

/// §2.6 job-user-only case with root.
pub(crate) fn job_user_root() -> Case {
    Case::new(
        "job_user_root",
        runner("[runners.kubernetes]\nimage = \"alpine:3.20\"\n"),
        job_with_user("0:0"),
    )
}

/// Allow-lists: the job user must be listed; root only when 0 is listed explicitly.
pub(crate) fn job_user_allow_lists() -> Case {
    Case::new(
        "job_user_allow_lists",
        runner(
            "[runners.kubernetes]\nimage = \"alpine:3.20\"\nallowed_users = [\"0\", \"1000\"]\nallowed_groups = [\"2000\", \"not-a-number\"]\n",
        ),
        job_with_user("0:1001"),
    )
}

/// Feature request example: rootless BuildKit on Ubuntu 23.10+.
pub(crate) fn fr_buildkit() -> Case {
    Case::new(
        "fr_buildkit",
        runner(
            "[runners.kubernetes]\nimage = \"moby/buildkit:rootless\"\n[runners.kubernetes.build_container_security_context]\napp_armor_profile_type = \"Unconfined\"\nseccomp_profile_type = \"Unconfined\"\n",
        ),
        JOB_NO_SERVICE,
    )
}

/// Feature request example: AKS compliance with RuntimeDefault seccomp on the pod.
pub(crate) fn fr_aks() -> Case {
    Case::new(
        "fr_aks",
        runner(
            "[runners.kubernetes]\nimage = \"alpine:3.20\"\n[runners.kubernetes.pod_security_context]\nseccomp_profile_type = \"RuntimeDefault\"\n",
        ),
        JOB_ONE_SERVICE,
    )
}

/// Feature request example: a custom seccomp profile.
pub(crate) fn fr_custom_seccomp() -> Case {
    Case::new(
        "fr_custom_seccomp",
        runner(
            "[runners.kubernetes]\nimage = \"alpine:3.20\"\n[runners.kubernetes.build_container_security_context]\nseccomp_profile_type = \"Localhost\"\nseccomp_profile_localhost_profile = \"profiles/my-profile.json\"\n",
        ),
        JOB_NO_SERVICE,
    )
}

/// Test case: Unconfined on every container kind.
pub(crate) fn unconfined_all_kinds() -> Case {
    Case::new(
        "unconfined_all_kinds",
        all_kinds("seccomp_profile_type = \"Unconfined\"\napp_armor_profile_type = \"Unconfined\""),
        JOB_ONE_SERVICE,
    )
}

/// Test case: Localhost with profiles on every container kind.
pub(crate) fn localhost_all_kinds() -> Case {
    Case::new(
        "localhost_all_kinds",
        all_kinds(
            "seccomp_profile_type = \"Localhost\"\nseccomp_profile_localhost_profile = \"profiles/ci.json\"\napp_armor_profile_type = \"Localhost\"\napp_armor_profile_localhost_profile = \"ci-profile\"",
        ),
        JOB_ONE_SERVICE,
    )
}

/// Test case: Localhost without a profile on every container kind (warned, left out).
pub(crate) fn localhost_without_profile_all_kinds() -> Case {
    Case::new(
        "localhost_without_profile_all_kinds",
        all_kinds("seccomp_profile_type = \"Localhost\"\napp_armor_profile_type = \"Localhost\""),
        JOB_ONE_SERVICE,
    )
}

/// Test case: an invalid type on every container kind (warned, left out).
pub(crate) fn invalid_type_all_kinds() -> Case {
    Case::new(
        "invalid_type_all_kinds",
        all_kinds("seccomp_profile_type = \"runtimedefault\"\napp_armor_profile_type = \"Bogus\""),
        JOB_ONE_SERVICE,
    )
}

/// Test case: the same settings at pod level.
pub(crate) fn pod_level() -> Case {
    Case::new(
        "pod_level",
        runner(
            "[runners.kubernetes]\nimage = \"alpine:3.20\"\n[runners.kubernetes.pod_security_context]\nseccomp_profile_type = \"Localhost\"\nseccomp_profile_localhost_profile = \"profiles/pod.json\"\napp_armor_profile_type = \"Localhost\"\napp_armor_profile_localhost_profile = \"pod-profile\"\n",
        ),
        JOB_ONE_SERVICE,
    )
}

/// Test case: pod-level Unconfined, and the invalid and Localhost-without-profile variants at pod level.
pub(crate) fn pod_level_invalid() -> Case {
    Case::new(
        "pod_level_invalid",
        runner(
            "[runners.kubernetes]\nimage = \"alpine:3.20\"\n[runners.kubernetes.pod_security_context]\nseccomp_profile_type = \"Localhost\"\napp_armor_profile_type = \"unconfined\"\n",
        ),
        JOB_NO_SERVICE,
    )
}

/// Test case: pod-level Unconfined.
pub(crate) fn pod_level_unconfined() -> Case {
    Case::new(
        "pod_level_unconfined",
        runner(
            "[runners.kubernetes]\nimage = \"alpine:3.20\"\n[runners.kubernetes.pod_security_context]\nseccomp_profile = { type = \"Unconfined\" }\napp_armor_profile = { type = \"Unconfined\" }\n",
        ),
        JOB_NO_SERVICE,
    )
}

/// Test case: every container kind overrides the pod differently.
pub(crate) fn container_overrides_pod() -> Case {
    Case::new(
        "container_overrides_pod",
        runner(
            r#"[runners.kubernetes]
image = "alpine:3.20"
[runners.kubernetes.pod_security_context]
seccomp_profile = { type = "RuntimeDefault" }
app_armor_profile = { type = "RuntimeDefault" }
run_as_user = 1000
[runners.kubernetes.build_container_security_context]
seccomp_profile = { type = "Unconfined" }
app_armor_profile = { type = "Unconfined" }
run_as_user = 2000
[runners.kubernetes.helper_container_security_context]
seccomp_profile = { type = "Localhost", localhost_profile = "profiles/helper.json" }
[runners.kubernetes.service_container_security_context]
app_armor_profile = { type = "Localhost", localhost_profile = "svc-profile" }
[runners.kubernetes.init_permissions_container_security_context]
seccomp_profile = { type = "Unconfined" }
app_armor_profile = { type = "Localhost", localhost_profile = "init-profile" }
"#,
        ),
        JOB_ONE_SERVICE,
    )
}

/// No security configuration at all: only the default `NET_RAW` drop.
pub(crate) fn defaults() -> Case {
    Case::new(
        "defaults",
        runner("[runners.kubernetes]\nimage = \"alpine:3.20\"\n"),
        JOB_ONE_SERVICE,
    )
}

/// Defaults with a Windows helper: no default capability drop.
pub(crate) fn defaults_windows_helper() -> Case {
    Case {
        helper_os: HelperOs::Windows,
        ..Case::new("defaults_windows_helper", defaults().config, JOB_NO_SERVICE)
    }
}

/// Global `cap_add`/`cap_drop`, replaced per container.
pub(crate) fn capabilities() -> Case {
    Case::new(
        "capabilities",
        runner(
            r#"[runners.kubernetes]
image = "alpine:3.20"
cap_add = ["NET_RAW", "SYS_TIME", "CHOWN"]
cap_drop = ["CHOWN", "MKNOD"]
privileged = false
allow_privilege_escalation = false
[runners.kubernetes.build_container_security_context]
capabilities = { add = ["NET_ADMIN"] }
[runners.kubernetes.helper_container_security_context]
capabilities = { drop = ["ALL"] }
allow_privilege_escalation = true
[runners.kubernetes.service_container_security_context]
capabilities = { add = [], drop = [] }
[runners.kubernetes.init_permissions_container_security_context]
privileged = true
proc_mount = "unmasked"
read_only_root_filesystem = true
"#,
        ),
        JOB_ONE_SERVICE,
    )
}

/// Every volume kind, with the builds dir on a PVC.
pub(crate) fn volume_kinds() -> Case {
    Case::new(
        "volume_kinds",
        runner(
            r#"[runners.kubernetes]
image = "alpine:3.20"
[[runners.kubernetes.volumes.host_path]]
name = "docker-sock"
mount_path = "/var/run/docker.sock"
host_path = "/var/run/docker.sock"
read_only = true
[[runners.kubernetes.volumes.secret]]
name = "registry-ca"
mount_path = "/etc/registry-ca"
read_only = true
[runners.kubernetes.volumes.secret.items]
"ca.crt" = "ca.pem"
[[runners.kubernetes.volumes.pvc]]
name = "builds-${CI_CONCURRENT_ID}"
mount_path = "/builds"
[[runners.kubernetes.volumes.pvc]]
name = "builds-${CI_CONCURRENT_ID}"
mount_path = "/cache"
sub_path = "cache"
[[runners.kubernetes.volumes.config_map]]
name = "settings"
mount_path = "/etc/settings"
[runners.kubernetes.volumes.config_map.items]
"settings.json" = "app.json"
[[runners.kubernetes.volumes.empty_dir]]
name = "scratch"
mount_path = "/scratch"
medium = "Memory"
size_limit = "512Mi"
[[runners.kubernetes.volumes.csi]]
name = "inline-csi"
mount_path = "/csi"
driver = "secrets-store.csi.k8s.io"
read_only = true
[runners.kubernetes.volumes.csi.volume_attributes]
secretProviderClass = "vault"
[[runners.kubernetes.volumes.nfs]]
name = "shared"
mount_path = "/shared"
server = "nfs.example.com"
path = "/exports/ci"
"#,
        ),
        JOB_NO_SERVICE,
    )
}

/// Service naming: config services [alias, -, -, -, alias5] then the job's [test-alias].
pub(crate) fn service_names() -> Case {
    Case::new(
        "service_names",
        runner(
            r#"[runners.kubernetes]
image = "alpine:3.20"
[[runners.kubernetes.services]]
name = "mysql:8"
alias = "alias"
[[runners.kubernetes.services]]
name = "redis:7"
[[runners.kubernetes.services]]
name = "registry.example.com/group/tools/minio:latest"
alias = "my.minio"
[[runners.kubernetes.services]]
name = "memcached:1"
alias = "alias"
[[runners.kubernetes.services]]
name = "nginx:1"
alias = "alias5"
"#,
        ),
        r#"{"id": 58, "token": "t", "job_info": {"project_id": 7}, "image": {"name": "alpine:3.20"},
            "services": [{"name": "docker:dind", "alias": "test-alias"},
                         {"name": "", "alias": "skipped"}]}"#,
    )
}

/// Masked, file and public variables in the job and a service.
pub(crate) const JOB_SECRETS: &str = r#"{
  "id": 59, "token": "job-token-value", "job_info": {"project_id": 7},
  "image": {"name": "alpine:3.20"},
  "variables": [
    {"key": "PUBLIC_VAR", "value": "visible", "public": true, "masked": false},
    {"key": "MASKED_VAR", "value": "masked-secret-1234", "public": false, "masked": true},
    {"key": "MASKED_PUBLIC", "value": "masked-but-public-5678", "public": true, "masked": true},
    {"key": "PRIVATE_VAR", "value": "private-unmasked-9012", "public": false, "masked": false},
    {"key": "KUBECONFIG", "value": "apiVersion: v1 secret-file-contents", "public": true, "file": true},
    {"key": "DOLLARS", "value": "a$b$(c)", "public": true}
  ],
  "services": [{"name": "postgres:16", "alias": "db", "variables": [
    {"key": "POSTGRES_PASSWORD", "value": "service-secret-3456", "public": false, "masked": true},
    {"key": "POSTGRES_DB", "value": "test", "public": true}
  ]}]
}"#;

/// Masked variables and the `$` escape.
pub(crate) fn masked_variables() -> Case {
    Case::new(
        "masked_variables",
        runner(
            "[runners.kubernetes]\nimage = \"alpine:3.20\"\n[runners.kubernetes.pod_annotations]\n\"example.com/expanded\" = \"v-$MASKED_VAR-$PUBLIC_VAR-v\"\n",
        ),
        JOB_SECRETS,
    )
}

/// Patches of the three types, with the feature flag.
pub(crate) fn patches() -> Case {
    let mut case = Case::new(
        "patches",
        runner(
            r#"[runners.feature_flags]
FF_USE_ADVANCED_POD_SPEC_CONFIGURATION = true
[runners.kubernetes]
image = "alpine:3.20"
[[runners.kubernetes.pod_spec]]
name = "strategic"
patch_type = "strategic"
patch = '''
containers:
- name: build
  securityContext:
    appArmorProfile: {type: Unconfined}
  env:
  - name: PATCHED
    value: "yes"
hostname: patched-host
'''
[[runners.kubernetes.pod_spec]]
name = "merge"
patch_type = "merge"
patch = '{"nodeSelector": {"disk": "ssd"}, "hostname": null}'
[[runners.kubernetes.pod_spec]]
name = "json"
patch_type = "json"
patch_path = "patches/json.yaml"
"#,
        ),
        JOB_ONE_SERVICE,
    );
    case.patch_files = vec![(
        "patches/json.yaml",
        "- op: add\n  path: /securityContext\n  value: {seccompProfile: {type: RuntimeDefault}}\n- op: replace\n  path: /restartPolicy\n  value: Never\n",
    )];
    case
}

/// The example config of the repository with the built-in sample job.
pub(crate) fn example_config() -> Case {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config.toml");
    let text = std::fs::read_to_string(&path).expect("examples/config.toml is readable");
    Case::new("example_config", text, podrunner_executor_k8s::sample::SAMPLE_JOB_JSON)
}

/// Every case of the corpus (all of them build a pod).
pub(crate) fn corpus() -> Vec<Case> {
    vec![
        example_a(),
        example_b(),
        example_c(),
        example_c_without_profiles(),
        example_d(),
        job_user_only(),
        job_user_root(),
        job_user_allow_lists(),
        fr_buildkit(),
        fr_aks(),
        fr_custom_seccomp(),
        unconfined_all_kinds(),
        localhost_all_kinds(),
        localhost_without_profile_all_kinds(),
        invalid_type_all_kinds(),
        pod_level(),
        pod_level_invalid(),
        pod_level_unconfined(),
        container_overrides_pod(),
        defaults(),
        defaults_windows_helper(),
        capabilities(),
        volume_kinds(),
        service_names(),
        masked_variables(),
        patches(),
        example_config(),
    ]
}

/// A JSON value, for small assertions.
pub(crate) fn value_of(pod: &Pod) -> Value {
    serde_json::to_value(pod).expect("pods serialise")
}
