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
fn the_state_and_temporary_directories_are_writable_and_the_config_is_a_read_only_secret() {
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
    // Artifact archives pass through the temporary directory: writable on a read-only root.
    let tmp_mount = mount_of("/tmp/artifact.zip");
    assert!(tmp_mount["readOnly"].is_null() || tmp_mount["readOnly"] == false);
    assert!(volume_of(&tmp_mount["name"]).is_some_and(|v| !v["emptyDir"].is_null()));
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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_dockerfile_builds_with_the_workspace_toolchain_and_runs_as_the_deployment_says() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("rust-version");
    assert!(
        dockerfile.contains(&format!("FROM docker.io/library/rust:{rust_version}-")),
        "the builder image is the workspace's rust-version {rust_version}"
    );
    let deployment = yaml("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let uid = pod["securityContext"]["runAsUser"].as_u64().expect("runAsUser");
    assert!(dockerfile.contains(&format!("USER {uid}:{uid}")), "the same non-root user");
    let args: Vec<String> = pod["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .map(|a| format!("{a:?}"))
        .collect();
    assert!(
        dockerfile.contains(&format!("CMD [{}]", args.join(", "))),
        "the default command is the Deployment's: {args:?}"
    );
}

/// `kubectl kustomize` of an overlay, or `None` (said SKIPPED) without kubectl.
#[allow(clippy::print_stdout)] // reason: a skipped check must say so in the test output
fn render(overlay: &str) -> Option<Vec<Value>> {
    let output = match Command::new("kubectl")
        .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
        .arg(root().join("deploy/overlays").join(overlay))
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            println!("SKIPPED: kubectl is not installed ({e}); cargo xtask validate says the same");
            return None;
        }
    };
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    Some(
        text.split("\n---\n")
            .map(|doc| serde_norway::from_str::<Value>(doc).expect("YAML"))
            .collect(),
    )
}

#[test]
fn the_kind_overlay_runs_the_demo_config_with_the_loaded_image_and_binds_the_jobs_namespace() {
    let Some(objects) = render("kind") else { return };
    let find = |kind: &str, namespace: &str, prefix: &str| {
        objects
            .iter()
            .find(|o| {
                o["kind"] == kind
                    && o["metadata"]["namespace"].as_str().unwrap_or("") == namespace
                    && o["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no {kind} {namespace}/{prefix}*"))
    };
    let secret = find("Secret", "podrunner", "podrunner-config");
    let config = secret["data"]["config.toml"].as_str().expect("config.toml");
    let demo = std::fs::read(root().join("examples/demo.toml")).expect("demo.toml");
    use base64::Engine as _;
    // YAML folds the long value into lines.
    let config: String = config.split_whitespace().collect();
    let config = base64::engine::general_purpose::STANDARD.decode(config).expect("base64");
    assert_eq!(config, demo, "the demo's config itself, not a copy");
    let deployment = find("Deployment", "podrunner", "podrunner");
    let pod = &deployment["spec"]["template"]["spec"];
    let runner = &pod["containers"][0];
    assert_eq!(runner["imagePullPolicy"], "Never");
    assert_eq!(runner["envFrom"][0]["secretRef"]["name"], "podrunner-kind-doubles");
    assert!(runner["args"].as_array().expect("args").contains(&Value::from("--listen-address")));
    assert_eq!(runner["securityContext"]["readOnlyRootFilesystem"], true, "still restricted");
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"], secret["metadata"]["name"],
        "the Deployment mounts the generated Secret"
    );
    let binding = find("RoleBinding", "default", "podrunner-jobs");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["subjects"][0]["namespace"], "podrunner");
}

#[test]
fn every_overlays_config_loads_without_problems() {
    let configs: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/overlays"))
        .expect("deploy/overlays")
        .filter_map(Result::ok)
        .map(|e| e.path().join("config.toml"))
        .filter(|c| c.exists())
        .collect();
    assert!(!configs.is_empty(), "the namespace-per-job overlay has its own config");
    for config in configs {
        let overlay = config.display();
        let output = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["check-config", "--strict", "--config"])
            .arg(&config)
            .output()
            .expect("run check-config");
        assert!(output.status.success(), "{overlay}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

#[test]
fn the_namespace_per_job_overlay_binds_the_job_rules_everywhere_and_grants_namespaces() {
    let Some(objects) = render("namespace-per-job") else { return };
    let of_kind = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind);
    assert_eq!(of_kind("RoleBinding").count(), 0, "the ClusterRoleBinding replaces it");
    let bound: Vec<&str> =
        of_kind("ClusterRoleBinding").filter_map(|b| b["roleRef"]["name"].as_str()).collect();
    for role in ["podrunner-jobs", "podrunner-namespaces", "podrunner-nodes"] {
        assert!(bound.contains(&role), "{role} bound cluster-wide: {bound:?}");
    }
    let secret = of_kind("Secret").next().expect("the config Secret");
    use base64::Engine as _;
    let config: String =
        secret["data"]["config.toml"].as_str().expect("data").split_whitespace().collect();
    let config = base64::engine::general_purpose::STANDARD.decode(config).expect("base64");
    assert!(String::from_utf8_lossy(&config).contains("namespace_per_job = true"));
}
