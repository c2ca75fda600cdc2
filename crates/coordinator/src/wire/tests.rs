//! Decoding tests of the job payload.

use super::*;

const FULL_JOB: &str = r#"{
  "id": 4321, "token": "glcbt-64_secretjobtoken", "allow_git_fetch": true,
  "job_info": {"id": 4321, "name": "build", "stage": "test", "pipeline_id": 9, "project_id": 42,
               "project_name": "demo", "project_full_path": "g/demo", "time_in_queue_seconds": 1.5,
               "some_future_key": {"x": 1}},
  "git_info": {"repo_url": "https://x/g/demo.git", "ref": "main", "sha": "abc", "before_sha": "000",
               "ref_type": "branch", "refspecs": null, "depth": 20, "protected": true},
  "runner_info": {"timeout": 3600, "runner_session_url": null},
  "variables": [
    {"key": "PLAIN", "value": "visible", "public": true, "masked": false},
    {"key": "SECRET", "value": "hunter2hunter2", "public": false, "masked": true, "raw": true},
    {"key": "KUBECONFIG", "value": "apiVersion: v1", "file": true, "masked": false, "public": false},
    {"key": "NULLVAL", "value": null}
  ],
  "steps": [
    {"name": "script", "script": ["echo hi"], "timeout": 3600, "when": "on_success", "allow_failure": false},
    {"name": "after_script", "script": ["echo bye"], "timeout": 300, "when": "always", "allow_failure": true},
    {"name": "release", "script": ["release-cli"], "timeout": 60, "when": null, "allow_failure": false}
  ],
  "image": {"name": "alpine:3.20", "alias": "", "entrypoint": ["/bin/sh", "-c"], "command": null,
            "ports": [{"number": 8080, "protocol": "http", "name": "web"}],
            "pull_policy": "if-not-present",
            "executor_opts": {"kubernetes": {"user": 1000}, "docker": {"platform": "amd64"}}},
  "services": [{"name": "postgres:16", "alias": "db,pg", "command": ["postgres", "-c", "fsync=off"],
                "variables": [{"key": "POSTGRES_PASSWORD", "value": "pw", "masked": true}],
                "pull_policy": ["always", "if-not-present"]}],
  "artifacts": [{"name": "out", "untracked": null, "paths": ["out/"], "when": "on_success",
                 "artifact_type": "archive", "artifact_format": "zip", "expire_in": "1 week"}],
  "cache": [{"key": "k", "untracked": false, "policy": "pull-push", "paths": ["c/"], "when": "on_success",
             "fallback_keys": ["main"]}],
  "credentials": [{"type": "registry", "url": "registry.example.com", "username": "gitlab-ci-token",
                   "password": "regpassword"}],
  "dependencies": [{"id": 1, "token": "deptoken", "name": "prep",
                    "artifacts_file": {"filename": "a.zip", "size": 10}}],
  "features": {"trace_sections": true, "token_mask_prefixes": ["glpat-"],
               "failure_reasons": ["script_failure", "image_pull_failure"]},
  "hooks": [{"name": "pre_get_sources_script", "script": ["echo pre"]}],
  "suspend_options": {"suspend_on_success": false}
}"#;

fn decode(text: &str) -> Result<Job, (String, serde_json::Error)> {
    decode_json(text.as_bytes())
}

#[test]
fn full_job_payload_decodes_every_modelled_field() {
    let job = decode(FULL_JOB).expect("fixture decodes");
    assert_eq!(job.id, 4321);
    assert_eq!(job.token.expose_secret(), "glcbt-64_secretjobtoken");
    assert_eq!(job.job_info.name, "build");
    assert_eq!(job.git_info.ref_name, "main");
    assert!(job.git_info.refspecs.is_empty());
    assert_eq!(job.runner_info.timeout, Some(3600));
    let secret = job.variable("SECRET").expect("variable present");
    assert!(secret.masked && secret.raw && !secret.public);
    assert!(job.variable("KUBECONFIG").is_some_and(|v| v.file));
    assert_eq!(
        job.variable("NULLVAL").map(|v| v.value.expose_secret().to_owned()),
        Some(String::new())
    );
    assert_eq!(job.steps.len(), 3);
    assert_eq!(job.step(&StepName::AfterScript).map(|s| s.when), Some(StepWhen::Always));
    assert_eq!(job.steps[2].name, StepName::Other("release".to_owned()));
    let image = job.image.as_ref().expect("image present");
    assert_eq!(image.name, "alpine:3.20");
    assert_eq!(image.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(image.pull_policy, ["if-not-present"]);
    assert_eq!(image.ports[0].number, 8080);
    let k8s = image.executor_opts.kubernetes.as_ref().expect("kubernetes options");
    assert_eq!(k8s.user.as_deref(), Some("1000"));
    assert!(image.executor_opts.docker.is_some());
    assert_eq!(job.services[0].alias, "db,pg");
    assert_eq!(job.services[0].pull_policy, ["always", "if-not-present"]);
    assert!(job.services[0].variables[0].masked);
    assert_eq!(job.artifacts[0].paths, ["out/"]);
    assert_eq!(job.cache[0].fallback_keys, ["main"]);
    assert_eq!(job.credentials[0].password.expose_secret(), "regpassword");
    assert_eq!(job.dependencies[0].artifacts_file.as_ref().map(|a| a.size), Some(10));
    assert_eq!(job.features.token_mask_prefixes, ["glpat-"]);
    assert_eq!(job.hooks[0].name, "pre_get_sources_script");
}

#[test]
fn debug_output_of_a_job_never_shows_secrets() {
    let job = decode(FULL_JOB).expect("fixture decodes");
    let dump = format!("{job:?}");
    for secret in ["glcbt-64_secretjobtoken", "hunter2hunter2", "regpassword", "deptoken", "pw\""] {
        assert!(!dump.contains(secret), "{secret} leaked in {dump}");
    }
    assert!(dump.contains("visible"), "public values stay visible");
}

#[test]
fn secrets_to_mask_cover_token_masked_values_dependency_tokens_and_registry_passwords() {
    let job = decode(FULL_JOB).expect("fixture decodes");
    let secrets: Vec<String> =
        job.secrets_to_mask().iter().map(|s| s.expose_secret().to_owned()).collect();
    assert_eq!(secrets, ["glcbt-64_secretjobtoken", "hunter2hunter2", "deptoken", "regpassword"]);
}

#[test]
fn minimal_job_with_nulls_everywhere_decodes() {
    let job = decode(
        r#"{"id": 1, "token": "t", "variables": null, "steps": null, "image": null,
            "services": null, "features": null, "git_info": null, "job_info": null}"#,
    )
    .expect("lenient decode");
    assert!(job.image.is_none() && job.services.is_empty() && job.steps.is_empty());
}

#[test]
fn type_errors_name_the_path_of_the_field() {
    let err = decode(
        r#"{"id": 1, "token": "t", "variables": [{"key": "A", "value": "v", "masked": "yes"}]}"#,
    )
    .map(|_| ())
    .expect_err("masked must be a bool");
    assert_eq!(err.0, "variables[0].masked");
}

#[test]
fn features_info_omits_false_flags() {
    let json = serde_json::to_value(FeaturesInfo { trace_reset: true, ..FeaturesInfo::default() })
        .expect("serialises");
    assert_eq!(json, serde_json::json!({"trace_reset": true}));
    let all = serde_json::to_value(FeaturesInfo::podrunner()).expect("serialises");
    for key in [
        "image",
        "services",
        "cancel_gracefully",
        "two_phase_job_commit",
        "trace_checksum",
        "refspecs",
    ] {
        assert_eq!(all.get(key), Some(&serde_json::Value::Bool(true)), "{key}");
    }
    assert_eq!(all.get("shared"), None);
}
