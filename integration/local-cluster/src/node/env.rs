//! Container environment as the kubelet builds it: `envFrom` sources first, then `env` in order,
//! each value with `$(VAR)` references expanded against the variables defined before it; then
//! `command` and `args` expanded against the final environment.
//!
//! Errors are the kubelet's `CreateContainerConfigError` messages.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod};

use crate::contract::ClusterView;

/// Expands `$(NAME)` with `lookup`; `$$` is a literal `$`; unknown names and unterminated
/// references stay as written (Kubernetes' `expansion.Expand`).
pub(crate) fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push('$');
                    out.push_str(after);
                    rest = "";
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
            None => {
                out.push('$');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Values a `fieldRef` may select.
fn field_ref(pod: &Pod, node_ip: &str, sel: &ObjectFieldSelector) -> Result<String, String> {
    let path = sel.field_path.as_str();
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let bracket = |prefix: &str, map: Option<&std::collections::BTreeMap<String, String>>| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(|key| map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = bracket("metadata.labels['", meta.labels.as_ref()) {
        return Ok(v);
    }
    if let Some(v) = bracket("metadata.annotations['", meta.annotations.as_ref()) {
        return Ok(v);
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => {
            spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default()
        }
        "status.hostIP" | "status.hostIPs" | "status.podIP" | "status.podIPs" => node_ip.to_owned(),
        other => return Err(format!("unsupported fieldRef path {other:?}")),
    })
}

/// The environment of a container, in order.
pub(crate) fn container_env(
    pod: &Pod,
    container: &Container,
    cluster: &dyn ClusterView,
    node_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    fn set(
        order: &mut Vec<String>,
        values: &mut HashMap<String, String>,
        name: String,
        value: String,
    ) {
        if !values.contains_key(&name) {
            order.push(name.clone());
        }
        values.insert(name, value);
    }

    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            match cluster.config_map(ns, &r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.into_iter().flatten() {
                        set(&mut order, &mut values, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmaps {:?} not found", r.name)),
            }
        }
        if let Some(r) = &source.secret_ref {
            match cluster.secret(ns, &r.name) {
                Some(secret) => {
                    for (k, v) in secret_entries(&secret) {
                        set(
                            &mut order,
                            &mut values,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secrets {:?} not found", r.name)),
            }
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match cluster.secret(ns, &r.name) {
                    Some(secret) => {
                        match secret_entries(&secret).into_iter().find(|(k, _)| *k == r.key) {
                            Some((_, v)) => String::from_utf8_lossy(&v).into_owned(),
                            None if optional => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in Secret {ns}/{}",
                                    r.key, r.name
                                ));
                            }
                        }
                    }
                    None if optional => continue,
                    None => return Err(format!("secrets {:?} not found", r.name)),
                }
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match cluster.config_map(ns, &r.name) {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            ));
                        }
                    },
                    None if optional => continue,
                    None => return Err(format!("configmaps {:?} not found", r.name)),
                }
            } else if let Some(sel) = &from.field_ref {
                field_ref(pod, node_ip, sel)?
            } else {
                return Err(format!(
                    "env var {:?}: resourceFieldRef is not supported by this node",
                    var.name
                ));
            }
        } else {
            let raw = var.value.clone().unwrap_or_default();
            expand(&raw, &|name| values.get(name).cloned())
        };
        set(&mut order, &mut values, var.name.clone(), value);
    }
    // The `kubernetes` Service, as the kubelet adds it to every container (after the
    // container's own variables, which win).
    if let Some(service) = cluster.kubernetes_service() {
        let (host, port) = (service.ip().to_string(), service.port().to_string());
        for (name, value) in [
            ("KUBERNETES_SERVICE_HOST", host.clone()),
            ("KUBERNETES_SERVICE_PORT", port.clone()),
            ("KUBERNETES_SERVICE_PORT_HTTPS", port.clone()),
            ("KUBERNETES_PORT", format!("tcp://{service}")),
        ] {
            if !values.contains_key(name) {
                set(&mut order, &mut values, name.to_owned(), value);
            }
        }
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let value = values.get(&name).cloned().unwrap_or_default();
            (name, value)
        })
        .collect())
}

/// A secret's entries: `data` plus `stringData` (which a real API server folds into `data`).
pub(crate) fn secret_entries(
    secret: &k8s_openapi::api::core::v1::Secret,
) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> =
        secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.retain(|(name, _)| name != k);
        out.push((k.clone(), v.clone().into_bytes()));
    }
    out
}

/// `command` and `args` with `$(VAR)` expanded against the container's environment.
pub(crate) fn expand_command(
    container: &Container,
    env: &[(String, String)],
) -> (Vec<String>, Vec<String>) {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |name: &str| map.get(name).map(|v| (*v).to_owned());
    let expand_all = |items: &Option<Vec<String>>| {
        items.iter().flatten().map(|s| expand(s, &lookup)).collect::<Vec<_>>()
    };
    (expand_all(&container.command), expand_all(&container.args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        let lookup = |name: &str| match name {
            "A" => Some("alpha".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand(input, &lookup), expected);
    }

    #[test]
    fn references_expand_like_the_kubelet() {
        check("$(A)", "alpha");
        check("x$(A)y", "xalphay");
        check("$(EMPTY)-", "-");
        check("$(MISSING)", "$(MISSING)");
        check("$$(A)", "$(A)");
        check("$$", "$");
        check("$A", "$A");
        check("tail$", "tail$");
        check("$(A", "$(A");
        check("$(A)$(A)", "alphaalpha");
    }
}
