//! `[[pod_spec]]` patches: strategic merge (with the PodSpec merge keys), RFC 7386 merge and
//! RFC 6902 JSON patches, written as YAML or JSON.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use podrunner_config::raw::RawPodSpecPatch;
use serde_json::Value;

use crate::{Error, Result};

/// The contents of `patch_path` files, read by the caller: path -> text, or why it could not be read.
pub type PatchFiles = BTreeMap<String, std::result::Result<String, String>>;

/// The patch type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// Kubernetes strategic merge patch (the default).
    Strategic,
    /// RFC 7386 JSON merge patch.
    Merge,
    /// RFC 6902 JSON patch.
    Json,
}

/// A patch, converted to JSON.
#[derive(Debug, Clone)]
pub struct PodSpecPatch {
    /// The patch name (for messages).
    pub name: String,
    /// The type.
    pub patch_type: PatchType,
    /// The patch document.
    pub patch: Value,
}

/// Resolves one `[[pod_spec]]` entry: text (inline or from `files`), YAML -> JSON, type.
pub fn resolve(entry: &RawPodSpecPatch, files: &PatchFiles) -> Result<PodSpecPatch> {
    let name = entry.name.clone().unwrap_or_default();
    let inline = entry.patch.as_ref().filter(|p| !p.is_empty());
    let path = entry.patch_path.as_ref().filter(|p| !p.is_empty());
    let text = match (inline, path) {
        (Some(_), Some(_)) => return Err(Error::PatchAmbiguous { name }),
        (Some(text), None) => text.clone(),
        (None, Some(path)) => match files.get(path) {
            Some(Ok(text)) => text.clone(),
            Some(Err(reason)) => return Err(Error::PatchFile { name, reason: reason.clone() }),
            None => {
                return Err(Error::PatchFile {
                    name,
                    reason: format!("{path}: file was not read"),
                });
            }
        },
        (None, None) => String::new(),
    };
    let patch_type = match entry.patch_type.as_deref().unwrap_or("") {
        "" | "strategic" => PatchType::Strategic,
        "merge" => PatchType::Merge,
        "json" => PatchType::Json,
        other => return Err(Error::PatchType { patch_type: other.to_owned() }),
    };
    let patch: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_norway::from_str(&text)
            .map_err(|source| Error::PatchConversion { name: name.clone(), source })?
    };
    Ok(PodSpecPatch { name, patch_type, patch })
}

/// Applies the patches in order to the spec.
pub fn apply(spec: PodSpec, patches: &[PodSpecPatch]) -> Result<PodSpec> {
    if patches.is_empty() {
        return Ok(spec);
    }
    let mut doc = serde_json::to_value(&spec).map_err(Error::Encode)?;
    let mut last = String::new();
    for p in patches {
        last.clone_from(&p.name);
        if p.patch.is_null() {
            continue;
        }
        match p.patch_type {
            PatchType::Strategic => strategic_merge(&mut doc, &p.patch, Scope::PodSpec),
            PatchType::Merge => json_patch::merge(&mut doc, &p.patch),
            PatchType::Json => {
                let ops: json_patch::Patch =
                    serde_json::from_value(p.patch.clone()).map_err(|e| Error::PatchApply {
                        name: p.name.clone(),
                        reason: e.to_string(),
                    })?;
                json_patch::patch(&mut doc, &ops).map_err(|e| Error::PatchApply {
                    name: p.name.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
    }
    serde_json::from_value(doc).map_err(|source| Error::PatchedSpec { name: last, source })
}

/// Which object a strategic merge is working on (decides the list merge keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    PodSpec,
    Container,
    Other,
}

/// The merge key of a list field, per the PodSpec's `x-kubernetes-patch-merge-key`.
fn merge_key(scope: Scope, field: &str) -> Option<&'static str> {
    match (scope, field) {
        (Scope::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => Some("name"),
        (Scope::PodSpec, "volumes" | "imagePullSecrets" | "resourceClaims") => Some("name"),
        (Scope::PodSpec, "hostAliases") => Some("ip"),
        (Scope::Container, "env") => Some("name"),
        (Scope::Container, "volumeMounts") => Some("mountPath"),
        (Scope::Container, "volumeDevices") => Some("devicePath"),
        (Scope::Container, "ports") => Some("containerPort"),
        _ => None,
    }
}

fn child_scope(scope: Scope, field: &str) -> Scope {
    match (scope, field) {
        (Scope::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
            Scope::Container
        }
        _ => Scope::Other,
    }
}

/// A strategic merge patch: maps merge recursively, `null` deletes, lists with a merge key merge
/// element-wise (`$patch: delete` removes an element, `$patch: replace` on a list element
/// replaces the whole list), other lists are replaced.
fn strategic_merge(doc: &mut Value, patch: &Value, scope: Scope) {
    let Value::Object(patch_map) = patch else {
        *doc = patch.clone();
        return;
    };
    if !doc.is_object() {
        *doc = Value::Object(serde_json::Map::new());
    }
    let Value::Object(doc_map) = doc else { return };
    for (key, value) in patch_map {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            doc_map.remove(key);
            continue;
        }
        match (merge_key(scope, key), value) {
            (Some(mk), Value::Array(items)) => {
                let target = doc_map.entry(key.clone()).or_insert_with(|| Value::Array(Vec::new()));
                if !target.is_array() {
                    *target = Value::Array(Vec::new());
                }
                merge_list(target, items, mk, child_scope(scope, key));
            }
            (_, Value::Object(_)) => {
                let target = doc_map.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(target, value, child_scope(scope, key));
            }
            _ => {
                doc_map.insert(key.clone(), value.clone());
            }
        }
    }
}

fn merge_list(target: &mut Value, items: &[Value], key: &str, scope: Scope) {
    let Value::Array(list) = target else { return };
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        *list = items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect();
        return;
    }
    for item in items {
        let id = item.get(key).cloned();
        let position = id.as_ref().and_then(|id| list.iter().position(|e| e.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut list[i], item, scope),
            (None, false) => {
                let mut fresh = Value::Object(serde_json::Map::new());
                strategic_merge(&mut fresh, item, scope);
                list.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> PodSpec {
        serde_json::from_value(json!({
            "containers": [
                {"name": "build", "image": "alpine", "env": [{"name": "A", "value": "1"}]},
                {"name": "helper", "image": "helper"}
            ],
            "nodeName": "n1",
            "serviceAccountName": "sa"
        }))
        .unwrap()
    }

    fn patch(text: &str, patch_type: &str) -> PodSpecPatch {
        let entry = RawPodSpecPatch {
            name: Some("p".to_owned()),
            patch: Some(text.to_owned()),
            patch_path: None,
            patch_type: Some(patch_type.to_owned()),
        };
        resolve(&entry, &PatchFiles::new()).unwrap()
    }

    // upstream: TestKubernetesPodSpecContents "YAML hostname"
    #[test]
    fn yaml_patches_become_json_and_default_to_strategic() {
        let entry =
            RawPodSpecPatch { patch: Some("hostname: \"test\"".to_owned()), ..Default::default() };
        let p = resolve(&entry, &PatchFiles::new()).unwrap();
        assert_eq!(p.patch_type, PatchType::Strategic);
        assert_eq!(p.patch, json!({"hostname": "test"}));
    }

    // upstream: TestKubernetesPodSpecContents errPatchAmbiguous / errPatchFileFail / errPatchConversion
    #[test]
    fn bad_patch_entries_give_upstreams_messages() {
        let both = RawPodSpecPatch {
            name: Some("x".into()),
            patch: Some("a: 1".into()),
            patch_path: Some("/p".into()),
            patch_type: None,
        };
        assert_eq!(
            resolve(&both, &PatchFiles::new()).unwrap_err().to_string(),
            "ambiguous patch: both patch path and patch provided (x)"
        );
        let missing = RawPodSpecPatch {
            name: Some("x".into()),
            patch_path: Some("/p".into()),
            ..Default::default()
        };
        let mut files = PatchFiles::new();
        files.insert("/p".into(), Err("no such file or directory".into()));
        assert_eq!(
            resolve(&missing, &files).unwrap_err().to_string(),
            "loading patch file (x): no such file or directory"
        );
        let invalid = RawPodSpecPatch {
            name: Some("x".into()),
            patch: Some("{a: [".into()),
            ..Default::default()
        };
        assert!(
            resolve(&invalid, &files)
                .unwrap_err()
                .to_string()
                .starts_with("converting patch to json (x)")
        );
        let unknown = RawPodSpecPatch {
            patch: Some("a: 1".into()),
            patch_type: Some("unknown".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&unknown, &files).unwrap_err().to_string(),
            "unsupported patch type unknown"
        );
    }

    // upstream: TestDoPodSpecMerge (merge with nodeName: null)
    #[test]
    fn merge_patches_delete_with_null() {
        let out = apply(spec(), &[patch("{\"nodeName\": null}", "merge")]).unwrap();
        assert_eq!(out.node_name, None);
        assert_eq!(out.service_account_name.as_deref(), Some("sa"));
    }

    // upstream: TestDoPodSpecMerge (JSON patch remove/add)
    #[test]
    fn json_patches_follow_rfc_6902() {
        let out = apply(
            spec(),
            &[patch(r#"[{"op":"remove","path":"/nodeName"},{"op":"add","path":"/nodeSelector","value":{"key1":"val1"}}]"#, "json")],
        )
        .unwrap();
        assert_eq!(out.node_name, None);
        assert_eq!(out.node_selector.unwrap()["key1"], "val1");
    }

    // upstream: TestDoPodSpecMerge (strategic containers append) and "add custom podSpec"
    #[test]
    fn strategic_patches_merge_containers_by_name() {
        let p = patch(
            "containers:\n- name: build\n  env:\n  - name: B\n    value: '2'\n  securityContext:\n    appArmorProfile: {type: Unconfined}\n- name: new-container\n  image: busybox\n",
            "strategic",
        );
        let out = apply(spec(), &[p]).unwrap();
        assert_eq!(out.containers.len(), 3);
        let build = &out.containers[0];
        assert_eq!(build.image.as_deref(), Some("alpine"));
        assert_eq!(build.env.as_ref().unwrap().len(), 2);
        assert_eq!(
            build.security_context.as_ref().unwrap().app_armor_profile.as_ref().unwrap().type_,
            "Unconfined"
        );
        assert_eq!(out.containers[2].name, "new-container");
    }

    // upstream: TestDoPodSpecMerge (pod-level resources via strategic)
    #[test]
    fn strategic_patches_set_pod_level_resources() {
        let out = apply(spec(), &[patch("resources:\n  limits:\n    cpu: '1'\n", "")]).unwrap();
        assert_eq!(out.resources.unwrap().limits.unwrap()["cpu"].0, "1");
    }

    #[test]
    fn strategic_patches_delete_list_elements_by_key() {
        let out =
            apply(spec(), &[patch("containers:\n- name: helper\n  $patch: delete\n", "")]).unwrap();
        assert_eq!(out.containers.len(), 1);
    }
}
