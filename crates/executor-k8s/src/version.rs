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

/// Parses a Kubernetes version as `1.NN`, `v1.NN` or `1.NN.P` into its minor number, checking
/// it is within [`MIN_MINOR`]..=[`MAX_MINOR`].
///
/// # Errors
///
/// A message naming the accepted form or range.
pub fn parse_minor(text: &str) -> Result<u32, String> {
    let trimmed = text.trim().trim_start_matches('v');
    let mut parts = trimmed.split('.');
    let (Some("1"), Some(minor)) = (parts.next(), parts.next()) else {
        return Err(format!("invalid Kubernetes version {text:?}: expected 1.NN, e.g. 1.30"));
    };
    let patch_ok = parts.next().is_none_or(|p| p.parse::<u32>().is_ok()) && parts.next().is_none();
    let minor = match minor.parse::<u32>() {
        Ok(m) if patch_ok => m,
        _ => return Err(format!("invalid Kubernetes version {text:?}: expected 1.NN, e.g. 1.30")),
    };
    if !(MIN_MINOR..=MAX_MINOR).contains(&minor) {
        return Err(format!(
            "unsupported Kubernetes version {text:?}: supported are 1.{MIN_MINOR} to 1.{MAX_MINOR}"
        ));
    }
    Ok(minor)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_in_their_usual_spellings() {
        assert_eq!(parse_minor("1.29"), Ok(29));
        assert_eq!(parse_minor("v1.30"), Ok(30));
        assert_eq!(parse_minor("1.37.2"), Ok(37));
        assert!(parse_minor("1.18").unwrap_err().contains("supported are 1.19 to 1.37"));
        assert!(parse_minor("1.38").is_err());
        assert!(parse_minor("2.0").is_err());
        assert!(parse_minor("1.x").is_err());
        assert!(parse_minor("1.30.1.2").is_err());
    }
}
