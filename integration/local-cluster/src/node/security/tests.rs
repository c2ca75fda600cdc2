//! Unit tests of the security-context translation.

use std::path::Path;

use k8s_cri::v1::security_profile::ProfileType;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::*;

fn pod(value: serde_json::Value) -> Pod {
    serde_json::from_value(value).expect("valid pod JSON")
}

fn first(pod: &Pod) -> &Container {
    &pod.spec.as_ref().expect("spec").containers[0]
}

const ROOT: &str = "/seccomp";

#[track_caller]
fn check_seccomp(p: serde_json::Value, expected_type: ProfileType, expected_ref: &str) {
    let p = pod(p);
    let profile = container_seccomp(&p, first(&p), Path::new(ROOT));
    assert_eq!(profile.profile_type, expected_type as i32, "{profile:?}");
    assert_eq!(profile.localhost_ref, expected_ref);
}

#[test]
fn seccomp_defaults_to_unconfined_without_any_profile() {
    check_seccomp(json!({"spec": {"containers": [{"name": "c"}]}}), ProfileType::Unconfined, "");
}

#[test]
fn pod_level_seccomp_applies_to_a_container_without_its_own() {
    check_seccomp(
        json!({"spec": {
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/x.json"}},
            "containers": [{"name": "c"}]}}),
        ProfileType::Localhost,
        "/seccomp/profiles/x.json",
    );
}

#[test]
fn container_level_seccomp_wins_over_pod_level() {
    check_seccomp(
        json!({"spec": {
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/x.json"}},
            "containers": [{"name": "c", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}]}}),
        ProfileType::RuntimeDefault,
        "",
    );
}

#[test]
fn run_as_non_root_refuses_uid_zero_and_root_images() {
    let explicit = pod(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"containers": [{"name": "c", "securityContext": {"runAsNonRoot": true, "runAsUser": 0}}]}}));
    let err =
        verify_run_as_non_root(&explicit, first(&explicit), None, "").expect_err("uid 0 refused");
    assert_eq!(
        err,
        "container's runAsUser breaks non-root policy (pod: \"p_ns(u)\", container: c)"
    );

    let image_root = pod(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c"}]}}));
    let err = verify_run_as_non_root(&image_root, first(&image_root), None, "")
        .expect_err("root image refused");
    assert_eq!(
        err,
        "container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)"
    );
    assert!(verify_run_as_non_root(&image_root, first(&image_root), Some(1000), "").is_ok());
    assert!(verify_run_as_non_root(&image_root, first(&image_root), None, "builder").is_err());

    let non_root = pod(
        json!({"spec": {"containers": [{"name": "c", "securityContext": {"runAsNonRoot": true, "runAsUser": 1000}}]}}),
    );
    assert!(verify_run_as_non_root(&non_root, first(&non_root), None, "").is_ok());
}

#[test]
fn apparmor_confinement_is_rejected_on_a_host_without_apparmor() {
    let field = pod(json!({"spec": {"containers": [{"name": "c",
        "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}]}}));
    assert_eq!(
        apparmor_admission(&field, false).as_deref(),
        Some("Cannot enforce AppArmor: AppArmor is not enabled on the host")
    );
    assert_eq!(apparmor_admission(&field, true), None);

    let annotation = pod(json!({"metadata": {"annotations": {
        "container.apparmor.security.beta.kubernetes.io/c": "localhost/x"}},
        "spec": {"containers": [{"name": "c"}]}}));
    assert!(apparmor_admission(&annotation, false).is_some());

    let unconfined = pod(json!({"metadata": {"annotations": {
        "container.apparmor.security.beta.kubernetes.io/c": "unconfined"}},
        "spec": {"securityContext": {"appArmorProfile": {"type": "Unconfined"}}, "containers": [{"name": "c"}]}}));
    assert_eq!(apparmor_admission(&unconfined, false), None);
}

#[test]
fn container_context_carries_user_groups_caps_and_no_new_privs() {
    let p = pod(json!({"spec": {
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000]},
        "containers": [{"name": "c", "securityContext": {
            "runAsUser": 1001, "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}}));
    let sc = container_security_context(&p, first(&p), Path::new(ROOT));
    assert_eq!(sc.run_as_user.map(|v| v.value), Some(1001));
    assert_eq!(sc.run_as_group.map(|v| v.value), Some(3000));
    assert_eq!(sc.supplemental_groups, vec![2000, 4000]);
    assert!(sc.no_new_privs);
    assert!(sc.readonly_rootfs);
    let caps = sc.capabilities.expect("capabilities");
    assert_eq!(caps.drop_capabilities, vec!["ALL"]);
    assert_eq!(caps.add_capabilities, vec!["NET_BIND_SERVICE"]);
    assert_eq!(sc.namespace_options.map(|n| n.network), Some(NamespaceMode::Node as i32));
}

#[test]
fn the_sandbox_is_privileged_when_any_container_is() {
    let plain = pod(json!({"spec": {"containers": [{"name": "c"}]}}));
    assert!(!sandbox_security_context(&plain, Path::new(ROOT)).privileged);
    let init_privileged = pod(json!({"spec": {
        "initContainers": [{"name": "i", "securityContext": {"privileged": true}}],
        "containers": [{"name": "c", "securityContext": {"privileged": false}}]}}));
    assert!(sandbox_security_context(&init_privileged, Path::new(ROOT)).privileged);
}
