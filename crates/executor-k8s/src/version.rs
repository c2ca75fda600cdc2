//! Per-version field allow-list: the builder works with the newest types (k8s-openapi `latest`)
//! and removes or rewrites what an older API server does not know.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{AppArmorProfile, Pod};

/// The oldest minor version the builder supports (seccomp fields exist since 1.19; the schema
/// checks run from 1.25, the oldest `kubernetes-validate` ships).
pub const MIN_MINOR: u32 = 19;
/// The newest minor version the types describe (k8s-openapi 0.29 `latest`).
pub const MAX_MINOR: u32 = 37;
/// `securityContext.appArmorProfile` exists from this minor version on.
pub const APPARMOR_FIELD_MINOR: u32 = 30;
/// Pod-level `spec.resources` exists from this minor version on.
pub const POD_RESOURCES_MINOR: u32 = 32;

/// The annotation key that carries a container's AppArmor profile before 1.30.
pub fn apparmor_annotation_key(container: &str) -> String {
    format!("container.apparmor.security.beta.kubernetes.io/{container}")
}

/// The annotation value of a profile: `runtime/default`, `unconfined` or `localhost/<name>`.
fn annotation_value(p: &AppArmorProfile) -> String {
    match (p.type_.as_str(), &p.localhost_profile) {
        ("Localhost", Some(name)) => format!("localhost/{name}"),
        ("Unconfined", _) => "unconfined".to_owned(),
        _ => "runtime/default".to_owned(),
    }
}

/// Rewrites `pod` for `minor`. Returns job-log notes about dropped settings.
pub(crate) fn adapt(pod: &mut Pod, minor: u32) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(spec) = pod.spec.as_mut() else { return notes };
    if minor < APPARMOR_FIELD_MINOR {
        let pod_profile = spec.security_context.as_mut().and_then(|sc| sc.app_armor_profile.take());
        let mut annotations: BTreeMap<String, String> = BTreeMap::new();
        let containers =
            spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut());
        for c in containers {
            let own = c.security_context.as_mut().and_then(|sc| sc.app_armor_profile.take());
            if let Some(profile) = own.as_ref().or(pod_profile.as_ref()) {
                annotations.insert(apparmor_annotation_key(&c.name), annotation_value(profile));
            }
        }
        if !annotations.is_empty() {
            pod.metadata.annotations.get_or_insert_with(BTreeMap::new).extend(annotations);
        }
    }
    if minor < POD_RESOURCES_MINOR && spec.resources.take().is_some() {
        notes.push(format!(
            "pod-level resources (pod_cpu_*, pod_memory_*) need Kubernetes 1.{POD_RESOURCES_MINOR} or newer; they are left out for 1.{minor}"
        ));
    }
    notes
}
