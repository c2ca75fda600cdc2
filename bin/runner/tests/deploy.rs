//! The manifests in `deploy/base`: the runner's own pod meets Pod Security "restricted", its
//! config loads, and the kustomization names every manifest. (The RBAC is checked against the
//! requests the runner sends in `kubernetes_e2e.rs`; the schemas by `cargo xtask validate`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base")
}

fn yaml(file: &str) -> Value {
    let text = std::fs::read_to_string(base().join(file)).expect("read the manifest");
    serde_norway::from_str(&text).expect("YAML")
}

#[test]
fn the_runner_pod_meets_pod_security_restricted() {
    let deployment = yaml("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null() && pod["hostIPC"].is_null());
    for volume in pod["volumes"].as_array().expect("volumes") {
        assert!(volume["hostPath"].is_null(), "no hostPath: {volume}");
    }
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    for container in containers {
        let context = &container["securityContext"];
        assert_eq!(context["allowPrivilegeEscalation"], false, "{container}");
        assert_eq!(context["readOnlyRootFilesystem"], true, "{container}");
        assert_eq!(context["capabilities"]["drop"], serde_json::json!(["ALL"]), "{container}");
        assert!(context["capabilities"]["add"].is_null(), "{container}");
        assert!(context["privileged"].is_null() || context["privileged"] == false);
    }
}

#[test]
fn the_state_directory_is_writable_and_the_config_is_a_read_only_secret() {
    let deployment = yaml("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> =
        container["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    let after = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
    let (config, state) =
        (after("--config").expect("--config"), after("--state-dir").expect("--state-dir"));
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    let mount_of = |path: &str| {
        mounts
            .iter()
            .find(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("-")))
            .unwrap_or_else(|| panic!("{path} is not on a volume"))
    };
    let volume_of = |name: &Value| {
        pod["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == *name).cloned()
    };
    let config_mount = mount_of(config);
    assert_eq!(config_mount["readOnly"], true);
    let config_volume = volume_of(&config_mount["name"]).expect("config volume");
    assert_eq!(
        config_volume["secret"]["secretName"], "podrunner-config",
        "a Secret, not a ConfigMap"
    );
    let state_mount = mount_of(state);
    assert!(state_mount["readOnly"].is_null() || state_mount["readOnly"] == false);
    assert!(volume_of(&state_mount["name"]).is_some_and(|v| !v["emptyDir"].is_null()));
    let kustomization = yaml("kustomization.yaml");
    assert_eq!(kustomization["secretGenerator"][0]["name"], "podrunner-config");
}

#[test]
fn the_deploy_config_loads_without_problems() {
    let output = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["check-config", "--config"])
        .arg(base().join("config.toml"))
        .output()
        .expect("run check-config");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn the_kustomization_names_every_manifest_of_the_base() {
    let kustomization = yaml("kustomization.yaml");
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    listed.sort();
    let mut present: Vec<String> = std::fs::read_dir(base())
        .expect("deploy/base")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    present.sort();
    assert_eq!(listed, present);
}
