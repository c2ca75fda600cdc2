//! Decoding with `fieldValidation` semantics, per-version field gating, and object validation
//! worded as the API server's `validation.go` words it.
//!
//! Unknown fields are found by decoding the request into the k8s-openapi type and comparing the
//! request JSON with the JSON of the decoded object: every key the round trip lost is a field the
//! server does not know. Fields that exist in the k8s-openapi types (1.37) but appeared after
//! the reported Kubernetes version are dropped the same way, from a short per-version list.

use k8s_openapi::api::core::v1::{AppArmorProfile, Container, Pod, SeccompProfile};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{
    status::{ApiError, FieldError},
    store::Kind,
};

/// The Kubernetes version the server reports (`1.NN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    /// Minor version, e.g. `29`.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl KubeVersion {
    /// Parses `1.29`, `v1.29` or `1.29.3`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let mut parts = text.split('.');
        if parts.next()? != "1" {
            return None;
        }
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self { minor, patch })
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "1.{}.{}", self.minor, self.patch)
    }
}

/// The `fieldValidation` directive of a write request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("" | "Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// Pod fields that appeared after Kubernetes 1.29, with the minor version that introduced them
/// (from the Kubernetes release notes). `[*]` matches every element of a list; `containers`
/// stands for `containers`, `initContainers` and `ephemeralContainers`.
const GATED_POD_FIELDS: &[(u32, &str)] = &[
    (30, "spec.securityContext.appArmorProfile"),
    (30, "spec.containers[*].securityContext.appArmorProfile"),
    (30, "spec.containers[*].volumeMounts[*].recursiveReadOnly"),
    (31, "spec.securityContext.supplementalGroupsPolicy"),
    (31, "spec.volumes[*].image"),
    (32, "spec.resources"),
    (32, "spec.securityContext.seLinuxChangePolicy"),
    (33, "spec.containers[*].lifecycle.stopSignal"),
];

/// The outcome of decoding a write request.
#[derive(Debug)]
pub(crate) struct Decoded<K> {
    pub(crate) object: K,
    /// `Warning` header texts (`unknown field "…"`), empty unless the directive is `Warn`.
    pub(crate) warnings: Vec<String>,
}

/// Decodes a request body into `K` with `fieldValidation` semantics for `version`.
pub(crate) fn decode<K: DeserializeOwned + Serialize>(
    kind: Kind,
    raw: &Value,
    version: KubeVersion,
    directive: FieldValidation,
) -> Result<Decoded<K>, ApiError> {
    let cannot_handle = |detail: String| {
        ApiError::bad_request(format!(
            "{} in version \"v1\" cannot be handled as a {}: {detail}",
            kind.kind(),
            kind.kind()
        ))
    };
    if !raw.is_object() {
        return Err(cannot_handle("the request body is not a JSON object".to_owned()));
    }
    let typed: K = serde_json::from_value(raw.clone()).map_err(|e| cannot_handle(e.to_string()))?;
    let mut round_trip =
        serde_json::to_value(&typed).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut unknown = Vec::new();
    unknown_fields(raw, &round_trip, "", &mut unknown);
    if kind == Kind::Pod {
        for (since, pattern) in GATED_POD_FIELDS {
            if version.minor < *since {
                for expanded in expand_container_lists(pattern) {
                    let segments: Vec<&str> = expanded.split('.').collect();
                    remove_matching(&mut round_trip, &segments, "", &mut unknown);
                }
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    let object = if unknown.is_empty() {
        typed
    } else {
        if directive == FieldValidation::Strict {
            let list: Vec<String> =
                unknown.iter().map(|f| format!("unknown field {f:?}")).collect();
            return Err(cannot_handle(format!("strict decoding error: {}", list.join(", "))));
        }
        serde_json::from_value(round_trip).map_err(|e| ApiError::internal(e.to_string()))?
    };
    let warnings = match directive {
        FieldValidation::Warn => unknown.iter().map(|f| format!("unknown field {f:?}")).collect(),
        FieldValidation::Ignore | FieldValidation::Strict => Vec::new(),
    };
    Ok(Decoded { object, warnings })
}

/// Formats warning texts as `Warning` header values (`299 - "<text>"`, RFC 7234).
pub(crate) fn warning_header_value(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("299 - \"{escaped}\"")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// Collects the paths of keys present (and not null) in `raw` but absent from `typed`.
fn unknown_fields(raw: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (raw, typed) {
        (Value::Object(raw), Value::Object(typed)) => {
            for (key, value) in raw {
                if value.is_null() {
                    continue;
                }
                match typed.get(key) {
                    Some(inner) => unknown_fields(value, inner, &join(path, key), out),
                    None => out.push(join(path, key)),
                }
            }
        }
        (Value::Array(raw), Value::Array(typed)) => {
            for (i, (r, t)) in raw.iter().zip(typed).enumerate() {
                unknown_fields(r, t, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn expand_container_lists(pattern: &str) -> Vec<String> {
    if pattern.starts_with("spec.containers[*]") {
        ["containers", "initContainers", "ephemeralContainers"]
            .iter()
            .map(|list| pattern.replacen("containers", list, 1))
            .collect()
    } else {
        vec![pattern.to_owned()]
    }
}

/// Removes every field matching `segments` (`name` or `name[*]`) and records its path.
fn remove_matching(value: &mut Value, segments: &[&str], path: &str, out: &mut Vec<String>) {
    let Some((first, rest)) = segments.split_first() else { return };
    let Some(object) = value.as_object_mut() else { return };
    if let Some(list) = first.strip_suffix("[*]") {
        if let Some(Value::Array(items)) = object.get_mut(list) {
            for (i, item) in items.iter_mut().enumerate() {
                remove_matching(item, rest, &format!("{}[{i}]", join(path, list)), out);
            }
        }
    } else if rest.is_empty() {
        if object.remove(*first).is_some_and(|v| !v.is_null()) {
            out.push(join(path, first));
        }
    } else if let Some(inner) = object.get_mut(*first) {
        remove_matching(inner, rest, &join(path, first), out);
    }
}

const LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

fn is_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// The messages of `validation.IsDNS1123Label`.
pub(crate) fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_owned());
    }
    if !is_label(value) {
        errors.push(format!(
            "{LABEL_ERR} (e.g. 'my-name',  or '123-abc', regex used for validation is '{LABEL_FMT}')"
        ));
    }
    errors
}

/// The messages of `validation.IsDNS1123Subdomain`.
pub(crate) fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 253 {
        errors.push("must be no more than 253 characters".to_owned());
    }
    if !value.split('.').all(is_label) {
        errors.push(format!(
            "{SUBDOMAIN_ERR} (e.g. 'example.com', regex used for validation is '{LABEL_FMT}(\\.{LABEL_FMT})*')"
        ));
    }
    errors
}

/// Validates `metadata.name` (already generated from `generateName` if that was used).
pub(crate) fn validate_name(kind: Kind, name: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required("metadata.name", "name or generateName is required")];
    }
    let messages = if kind == Kind::Namespace {
        dns1123_label_errors(name)
    } else {
        dns1123_subdomain_errors(name)
    };
    messages.iter().map(|m| FieldError::invalid("metadata.name", name, m)).collect()
}

/// Validates a pod spec as `ValidatePodCreate` does, for the rules this cluster cares about.
pub(crate) fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = &pod.spec else {
        errors.push(FieldError::required("spec.containers", ""));
        return errors;
    };
    if spec.containers.is_empty() {
        errors.push(FieldError::required("spec.containers", ""));
    }
    let mut names = std::collections::BTreeSet::new();
    let lists: [(&str, &[Container]); 2] = [
        ("spec.initContainers", spec.init_containers.as_deref().unwrap_or_default()),
        ("spec.containers", &spec.containers),
    ];
    for (list, containers) in lists {
        for (i, container) in containers.iter().enumerate() {
            let path = format!("{list}[{i}]");
            validate_container(container, &path, &mut names, &mut errors);
        }
    }
    if let Some(policy) = &spec.restart_policy {
        check_enum(&mut errors, "spec.restartPolicy", policy, &["Always", "Never", "OnFailure"]);
    }
    if let Some(policy) = &spec.dns_policy {
        check_enum(
            &mut errors,
            "spec.dnsPolicy",
            policy,
            &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        );
    }
    if let Some(ctx) = &spec.security_context {
        if let Some(profile) = &ctx.seccomp_profile {
            validate_seccomp(profile, "spec.securityContext.seccompProfile", &mut errors);
        }
        if let Some(profile) = &ctx.app_armor_profile {
            validate_app_armor(profile, "spec.securityContext.appArmorProfile", &mut errors);
        }
    }
    errors
}

fn validate_container(
    container: &Container,
    path: &str,
    names: &mut std::collections::BTreeSet<String>,
    errors: &mut Vec<FieldError>,
) {
    if container.name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name"), ""));
    } else {
        for message in dns1123_label_errors(&container.name) {
            errors.push(FieldError::invalid(format!("{path}.name"), &container.name, &message));
        }
        if !names.insert(container.name.clone()) {
            errors.push(FieldError::duplicate(format!("{path}.name"), &container.name));
        }
    }
    match container.image.as_deref() {
        None | Some("") => errors.push(FieldError::required(format!("{path}.image"), "")),
        Some(image) if image.trim() != image => errors.push(FieldError::invalid(
            format!("{path}.image"),
            image,
            "must not have leading or trailing whitespace",
        )),
        Some(_) => {}
    }
    if let Some(policy) = &container.image_pull_policy {
        check_enum(
            errors,
            &format!("{path}.imagePullPolicy"),
            policy,
            &["Always", "IfNotPresent", "Never"],
        );
    }
    if let Some(ctx) = &container.security_context {
        if let Some(profile) = &ctx.seccomp_profile {
            validate_seccomp(profile, &format!("{path}.securityContext.seccompProfile"), errors);
        }
        if let Some(profile) = &ctx.app_armor_profile {
            validate_app_armor(profile, &format!("{path}.securityContext.appArmorProfile"), errors);
        }
    }
}

fn check_enum(errors: &mut Vec<FieldError>, path: &str, value: &str, supported: &[&str]) {
    if !supported.contains(&value) {
        errors.push(FieldError::not_supported(path, value, supported));
    }
}

const PROFILE_TYPES: &[&str] = &["Localhost", "RuntimeDefault", "Unconfined"];

fn validate_seccomp(profile: &SeccompProfile, path: &str, errors: &mut Vec<FieldError>) {
    match profile.type_.as_str() {
        "Localhost" => match &profile.localhost_profile {
            None => errors.push(FieldError::required(
                format!("{path}.localhostProfile"),
                "must be set when seccomp type is Localhost",
            )),
            Some(local) => {
                validate_local_descending_path(local, &format!("{path}.localhostProfile"), errors);
            }
        },
        "RuntimeDefault" | "Unconfined" => {
            if let Some(local) = &profile.localhost_profile {
                errors.push(FieldError::invalid(
                    format!("{path}.localhostProfile"),
                    local,
                    "can only be set when seccomp type is Localhost",
                ));
            }
        }
        other => {
            errors.push(FieldError::not_supported(format!("{path}.type"), other, PROFILE_TYPES));
        }
    }
}

fn validate_app_armor(profile: &AppArmorProfile, path: &str, errors: &mut Vec<FieldError>) {
    let field = format!("{path}.localhostProfile");
    match profile.type_.as_str() {
        "Localhost" => match &profile.localhost_profile {
            None => errors
                .push(FieldError::required(field, "must be set when AppArmor type is Localhost")),
            Some(local) if local.trim() != local => {
                errors.push(FieldError::invalid(
                    field,
                    local,
                    "must not be padded with whitespace",
                ));
            }
            Some(local) if local.is_empty() => {
                errors.push(FieldError::required(
                    field,
                    "must be set when AppArmor type is Localhost",
                ));
            }
            Some(local) if local.len() > 4095 => {
                errors.push(FieldError::invalid(
                    field,
                    local,
                    "must be no more than 4095 characters",
                ));
            }
            Some(_) => {}
        },
        "RuntimeDefault" | "Unconfined" => {
            if let Some(local) = &profile.localhost_profile {
                errors.push(FieldError::invalid(
                    field,
                    local,
                    "can only be set when AppArmor type is Localhost",
                ));
            }
        }
        other => {
            errors.push(FieldError::not_supported(format!("{path}.type"), other, PROFILE_TYPES));
        }
    }
}

/// `validateLocalDescendingPath`: relative, without `..` elements.
fn validate_local_descending_path(target: &str, path: &str, errors: &mut Vec<FieldError>) {
    if target.starts_with('/') {
        errors.push(FieldError::invalid(path, target, "must be a relative path"));
    }
    if target.split(['/', '\\']).any(|part| part == "..") {
        errors.push(FieldError::invalid(path, target, "must not contain '..'"));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn v(minor: u32) -> KubeVersion {
        KubeVersion { minor, patch: 0 }
    }

    fn pod_with_app_armor() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {
                "appArmorProfile": {"type": "Unconfined"}, "seccompProfile": {"type": "RuntimeDefault"}}}]}
        })
    }

    #[test]
    fn app_armor_profile_is_dropped_with_a_warning_on_1_29() {
        let decoded: Decoded<Pod> =
            decode(Kind::Pod, &pod_with_app_armor(), v(29), FieldValidation::Warn)
                .expect("decodes");
        assert_eq!(
            decoded.warnings,
            vec![r#"unknown field "spec.containers[0].securityContext.appArmorProfile""#]
        );
        let ctx =
            decoded.object.spec.expect("spec").containers[0].security_context.clone().expect("ctx");
        assert!(ctx.app_armor_profile.is_none());
        assert!(ctx.seccomp_profile.is_some());
    }

    #[test]
    fn app_armor_profile_is_kept_on_1_33() {
        let decoded: Decoded<Pod> =
            decode(Kind::Pod, &pod_with_app_armor(), v(33), FieldValidation::Warn)
                .expect("decodes");
        assert!(decoded.warnings.is_empty());
        let ctx =
            decoded.object.spec.expect("spec").containers[0].security_context.clone().expect("ctx");
        assert!(ctx.app_armor_profile.is_some());
    }

    #[test]
    fn strict_validation_rejects_fields_unknown_at_any_version() {
        let mut raw = pod_with_app_armor();
        raw["spec"]["containers"][0]["bogusField"] = json!(1);
        let err =
            decode::<Pod>(Kind::Pod, &raw, v(33), FieldValidation::Strict).expect_err("rejected");
        assert_eq!(
            err.to_status()["message"],
            r#"Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field "spec.containers[0].bogusField""#
        );
        assert_eq!(err.code(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn ignore_validation_drops_unknown_fields_silently() {
        let mut raw = pod_with_app_armor();
        raw["metadata"]["surprise"] = json!("x");
        let decoded: Decoded<Pod> =
            decode(Kind::Pod, &raw, v(29), FieldValidation::Ignore).expect("decodes");
        assert!(decoded.warnings.is_empty());
    }

    #[test]
    fn warning_header_escapes_quotes() {
        assert_eq!(
            warning_header_value(r#"unknown field "a.b""#),
            r#"299 - "unknown field \"a.b\"""#
        );
    }

    #[track_caller]
    fn check_pod(spec: &Value, expected: &[&str]) {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec}))
            .expect("pod json");
        let messages: Vec<String> = validate_pod(&pod).iter().map(FieldError::message).collect();
        assert_eq!(messages, expected);
    }

    #[test]
    fn localhost_seccomp_without_a_profile_is_required() {
        check_pod(
            &json!({"containers": [{"name": "c", "image": "i", "securityContext": {"seccompProfile": {"type": "Localhost"}}}]}),
            &[
                "spec.containers[0].securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
            ],
        );
    }

    #[test]
    fn unknown_seccomp_type_is_not_supported() {
        check_pod(
            &json!({"containers": [{"name": "c", "image": "i"}], "securityContext": {"seccompProfile": {"type": "Bogus"}}}),
            &[
                r#"spec.securityContext.seccompProfile.type: Unsupported value: "Bogus": supported values: "Localhost", "RuntimeDefault", "Unconfined""#,
            ],
        );
    }

    #[test]
    fn container_names_must_be_unique_labels_and_images_required() {
        check_pod(
            &json!({"containers": [{"name": "Bad_Name", "image": "i"}, {"name": "a", "image": ""}, {"name": "a", "image": "i"}]}),
            &[
                r#"spec.containers[0].name: Invalid value: "Bad_Name": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"#,
                "spec.containers[1].image: Required value",
                r#"spec.containers[2].name: Duplicate value: "a""#,
            ],
        );
    }

    #[test]
    fn localhost_profile_must_not_escape_the_seccomp_root() {
        check_pod(
            &json!({"containers": [{"name": "c", "image": "i", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "../x.json"}}}]}),
            &[
                r#"spec.containers[0].securityContext.seccompProfile.localhostProfile: Invalid value: "../x.json": must not contain '..'"#,
            ],
        );
    }

    #[test]
    fn pod_names_must_be_subdomains() {
        assert_eq!(validate_name(Kind::Pod, "a.b-c").len(), 0);
        assert_eq!(validate_name(Kind::Pod, "A").len(), 1);
        assert_eq!(
            validate_name(Kind::Pod, "")[0].message(),
            "metadata.name: Required value: name or generateName is required"
        );
    }

    #[test]
    fn versions_parse_with_and_without_patch() {
        assert_eq!(KubeVersion::parse("1.29"), Some(v(29)));
        assert_eq!(KubeVersion::parse("v1.33.2"), Some(KubeVersion { minor: 33, patch: 2 }));
        assert_eq!(KubeVersion::parse("2.0"), None);
    }
}
