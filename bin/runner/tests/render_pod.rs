//! `runner render-pod` as a user runs it: exit codes, runner selection, the 1.29 rewrite,
//! output formats and bad job files.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("render_pod").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir is creatable");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("scratch file is writable");
    path
}

fn runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .current_dir(workspace_root())
        .env_remove("CONFIG_FILE")
        .env_remove("RUNNER_STRICT_CONFIG")
        .env_remove("RUNNER_KUBERNETES_VERSION")
        .output()
        .expect("the runner binary starts")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const TWO_RUNNERS: &str = r#"
[[runners]]
name = "shell-one"
url = "https://gitlab.example.com"
token = "glrt-t1_shellshellshell"
executor = "shell"

[[runners]]
name = "first-k8s"
url = "https://gitlab.example.com"
token = "glrt-t1_firstfirstfirst"
executor = "kubernetes"
[runners.kubernetes]
namespace = "first"
image = "alpine:3.20"

[[runners]]
name = "second-k8s"
url = "https://gitlab.example.com"
token = "glrt-t1_secondsecondsec"
executor = "kubernetes"
[runners.kubernetes]
namespace = "second"
image = "alpine:3.20"
[runners.kubernetes.build_container_security_context]
app_armor_profile_type = "Unconfined"
seccomp_profile_type = "Unconfined"
"#;

#[test]
fn the_example_config_renders_a_pod_with_the_sample_job_and_exit_code_0() {
    let out = runner(&["render-pod", "--config", "examples/config.toml"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("apiVersion: v1\nkind: Pod\n"), "{text}");
    // The sample job has one service (postgres, alias db).
    assert!(text.contains("name: db\n"), "{text}");
    assert!(text.contains("image: postgres:16\n"), "{text}");
    // Its masked variable never shows up.
    assert!(!text.contains("DEPLOY_TOKEN") && !text.contains("s3cr3t"), "{text}");
    // The newest version keeps the AppArmor fields.
    assert!(text.contains("appArmorProfile:"), "{text}");
    assert!(stderr(&out).is_empty(), "no diagnostics expected: {}", stderr(&out));
}

#[test]
fn kubernetes_1_29_gets_apparmor_annotations_instead_of_fields() {
    let out =
        runner(&["render-pod", "--config", "examples/config.toml", "--kubernetes-version", "1.29"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("appArmorProfile"), "{text}");
    for container in ["build", "helper", "db", "init-permissions"] {
        assert!(
            text.contains(&format!("container.apparmor.security.beta.kubernetes.io/{container}: ")),
            "annotation for {container} missing: {text}"
        );
    }
    assert!(text.contains(
        "container.apparmor.security.beta.kubernetes.io/helper: localhost/gitlab-helper"
    ));
}

#[test]
fn json_output_is_a_pod_manifest() {
    let out = runner(&["render-pod", "--config", "examples/config.toml", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(value["apiVersion"], "v1");
    assert_eq!(value["kind"], "Pod");
    assert_eq!(value["spec"]["containers"][0]["name"], "build");
}

#[test]
fn the_first_kubernetes_runner_is_the_default_and_runner_picks_by_name() {
    let dir = scratch("selection");
    let config = write(&dir, "config.toml", TWO_RUNNERS);
    let config = config.to_str().expect("utf-8 path");
    let out = runner(&["render-pod", "--config", config]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("namespace: first\n"));
    let out = runner(&["render-pod", "--config", config, "--runner", "second-k8s"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("namespace: second\n"));
    assert!(text.contains("appArmorProfile:\n        type: Unconfined\n"), "{text}");
}

#[test]
fn an_unknown_or_non_kubernetes_runner_exits_2() {
    let dir = scratch("unknown-runner");
    let config = write(&dir, "config.toml", TWO_RUNNERS);
    let config = config.to_str().expect("utf-8 path");
    let out = runner(&["render-pod", "--config", config, "--runner", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no runner named \"nope\""), "{}", stderr(&out));
    let out = runner(&["render-pod", "--config", config, "--runner", "shell-one"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a kubernetes runner"), "{}", stderr(&out));
}

#[test]
fn config_errors_go_to_stderr_in_check_config_format_and_exit_1() {
    let dir = scratch("config-errors");
    let config = write(
        &dir,
        "config.toml",
        "[[runners]]\nname = \"r\"\nurl = \"https://x\"\ntoken = \"t\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\nimage = \"alpine\"\n[runners.kubernetes.build_container_security_context]\nseccomp_profile_type = \"Localhost\"\nseccomp_profile_localhost_profile = \"/abs/path.json\"\n",
    );
    let out = runner(&["render-pod", "--config", config.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(&out));
    assert!(out.stdout.is_empty(), "no pod on errors");
    let err = stderr(&out);
    assert!(err.contains("config.toml:10:"), "{err}");
    assert!(err.contains(": error: "), "{err}");
}

/// A value the API server would refuse stops render-pod with the same located diagnostics as
/// check-config, and no pod.
#[test]
fn a_value_kubernetes_would_refuse_stops_render_pod_as_check_config_does() {
    let dir = scratch("api-rules");
    let config = write(
        &dir,
        "config.toml",
        "[[runners]]\nname = \"r\"\nurl = \"https://x\"\ntoken = \"t\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\nimage = \"alpine\"\nnamespace = \"CI_Jobs\"\n[[runners.kubernetes.host_aliases]]\nip = \"999.1.1.1\"\nhostnames = [\"db\"]\n",
    );
    let path = config.to_str().expect("utf-8 path");
    let rendered = runner(&["render-pod", "--config", path]);
    let checked = runner(&["check-config", "--config", path]);
    assert_eq!(rendered.status.code(), Some(1), "stdout: {}", stdout(&rendered));
    assert_eq!(checked.status.code(), Some(1));
    assert!(rendered.stdout.is_empty(), "no pod on errors");
    let err = stderr(&rendered);
    for expected in [
        "config.toml:8:13: error: a namespace must be at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit; got `CI_Jobs` (IsDNS1123Label)",
        "config.toml:10:6: error: a host alias IP must be an IPv4 or IPv6 address; got `999.1.1.1` (IsValidIP)",
    ] {
        assert!(err.contains(expected), "render-pod: {err}");
        assert!(
            stdout(&checked).contains(expected) || stderr(&checked).contains(expected),
            "check-config"
        );
    }
}

#[test]
fn config_warnings_are_printed_and_the_pod_is_still_rendered() {
    let dir = scratch("config-warnings");
    let config = write(
        &dir,
        "config.toml",
        "[[runners]]\nname = \"r\"\nurl = \"https://x\"\ntoken = \"t\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\nimage = \"alpine\"\nnamespce = \"x\"\n",
    );
    let path = config.to_str().expect("utf-8 path");
    let out = runner(&["render-pod", "--config", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: unknown key"), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("apiVersion: v1\n"));
    let strict = runner(&["render-pod", "--config", path, "--strict"]);
    assert_eq!(strict.status.code(), Some(1), "{}", stderr(&strict));
}

#[test]
fn a_job_file_replaces_the_sample_job() {
    let dir = scratch("job-file");
    let job = write(
        &dir,
        "job.json",
        r#"{"id": 7, "token": "t", "job_info": {"project_id": 3, "name": "lint"},
            "image": {"name": "node:22", "executor_opts": {"kubernetes": {"user": "1000:1001"}}},
            "services": [{"name": "redis:7"}, {"name": "docker:dind", "alias": "docker"}],
            "variables": [{"key": "SECRET", "value": "topsecretvalue", "masked": true, "public": false}]}"#,
    );
    let out = runner(&[
        "render-pod",
        "--config",
        "examples/config.toml",
        "--job",
        job.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("image: node:22\n"));
    assert!(text.contains("name: svc-0\n") && text.contains("name: docker\n"), "{text}");
    assert!(!text.contains("topsecretvalue"));
    // The pod security context overrides the job user (config: run_as_user 1000, group 1000).
    assert!(stderr(&out).contains("Overriding group for container \"build\""), "{}", stderr(&out));
}

#[test]
fn invalid_job_json_exits_2_and_names_the_field() {
    let dir = scratch("bad-job");
    let job = write(&dir, "job.json", r#"{"id": "not-a-number"}"#);
    let out = runner(&[
        "render-pod",
        "--config",
        "examples/config.toml",
        "--job",
        job.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("invalid job JSON") && err.contains("at id"), "{err}");
    let missing = runner(&[
        "render-pod",
        "--config",
        "examples/config.toml",
        "--job",
        "/nonexistent/job.json",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("failed to read job /nonexistent/job.json"));
}

#[test]
fn an_unsupported_kubernetes_version_exits_2() {
    for version in ["1.18", "1.38", "2.1", "latest"] {
        let out = runner(&[
            "render-pod",
            "--config",
            "examples/config.toml",
            "--kubernetes-version",
            version,
        ]);
        assert_eq!(out.status.code(), Some(2), "{version}: {}", stderr(&out));
        assert!(stderr(&out).contains("Kubernetes version"), "{}", stderr(&out));
    }
}

#[test]
fn a_pod_that_cannot_be_built_exits_1_with_the_reason() {
    let dir = scratch("unbuildable");
    let config = write(
        &dir,
        "config.toml",
        "[[runners]]\nname = \"r\"\nurl = \"https://x\"\ntoken = \"t\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\nimage = \"alpine\"\nallowed_images = [\"alpine\"]\n",
    );
    let out = runner(&["render-pod", "--config", config.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not present on the list of allowed images"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_config_file_exits_2() {
    let out = runner(&["render-pod", "--config", "/nonexistent/config.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("failed to read config /nonexistent/config.toml"));
}

#[test]
fn summary_prints_the_job_logs_security_table_on_stderr_and_leaves_stdout_to_the_pod() {
    let plain = runner(&["render-pod", "--config", "examples/config.toml"]);
    let out = runner(&["render-pod", "--config", "examples/config.toml", "--summary"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(out.stdout, plain.stdout, "the pod is unchanged");
    let err = stderr(&out);
    assert!(err.starts_with("CONTAINER "), "{err}");
    let build = err.lines().find(|l| l.starts_with("build ")).expect("a build row");
    assert!(build.contains("Localhost (profiles/ci-build.json)"), "{build}");
    let helper = err.lines().find(|l| l.starts_with("helper ")).expect("a helper row");
    assert!(helper.contains("RuntimeDefault (pod)"), "inherited values say so: {helper}");
}
