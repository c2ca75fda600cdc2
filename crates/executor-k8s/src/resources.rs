//! Resource requests and limits, with gitlab-runner's job-variable overwrites bounded by the
//! `*_overwrite_max_allowed` keys.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::ResourceRequirements, apimachinery::pkg::api::resource::Quantity,
};

use podrunner_config::quantity::value as quantity_value;

use crate::{Error, Result};

/// One resource setting: the config value, its overwrite maximum and the job variable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setting<'a> {
    /// `cpu`, `memory` or `ephemeral-storage`.
    pub(crate) resource: &'static str,
    pub(crate) limit: bool,
    pub(crate) value: Option<&'a String>,
    pub(crate) max: Option<&'a String>,
    pub(crate) variable: &'static str,
}

fn non_empty(v: Option<&String>) -> Option<&str> {
    v.map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// The effective value of one setting: the job variable when an overwrite maximum is set and
/// the variable is present (never above the maximum), else the config value.
fn resolve<'v>(
    setting: &Setting<'v>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>> {
    if let Some(max) = non_empty(setting.max)
        && let Some(requested) = lookup(setting.variable).filter(|v| !v.trim().is_empty())
    {
        let requested = requested.trim().to_owned();
        let value = quantity_value(&requested).ok_or_else(|| Error::InvalidQuantity {
            field: setting.variable.to_owned(),
            value: requested.clone(),
        })?;
        let max_value = quantity_value(max).ok_or_else(|| Error::InvalidQuantity {
            field: format!("{} overwrite maximum", setting.variable),
            value: max.to_owned(),
        })?;
        if value > max_value {
            return Err(Error::ResourceAboveMax {
                field: setting.variable.to_owned(),
                value: requested,
                max: max.to_owned(),
            });
        }
        return Ok(Some(requested));
    }
    Ok(non_empty(setting.value).map(str::to_owned))
}

/// Requests and limits from the settings; `None` when nothing is set.
pub(crate) fn requirements(
    settings: &[Setting<'_>],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ResourceRequirements>> {
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    for s in settings {
        if let Some(v) = resolve(s, lookup)? {
            let map = if s.limit { &mut limits } else { &mut requests };
            map.insert(s.resource.to_owned(), Quantity(v));
        }
    }
    if limits.is_empty() && requests.is_empty() {
        return Ok(None);
    }
    Ok(Some(ResourceRequirements {
        limits: (!limits.is_empty()).then_some(limits),
        requests: (!requests.is_empty()).then_some(requests),
        ..ResourceRequirements::default()
    }))
}

/// The settings of one container class, from the `<prefix>cpu_limit` … keys.
macro_rules! settings {
    ($k:expr, $var:literal, $cpu_l:ident, $cpu_lm:ident, $cpu_r:ident, $cpu_rm:ident,
     $mem_l:ident, $mem_lm:ident, $mem_r:ident, $mem_rm:ident
     $(, $eph_l:ident, $eph_lm:ident, $eph_r:ident, $eph_rm:ident)?) => {
        vec![
            Setting { resource: "cpu", limit: true, value: $k.$cpu_l.as_ref(), max: $k.$cpu_lm.as_ref(), variable: concat!($var, "CPU_LIMIT") },
            Setting { resource: "cpu", limit: false, value: $k.$cpu_r.as_ref(), max: $k.$cpu_rm.as_ref(), variable: concat!($var, "CPU_REQUEST") },
            Setting { resource: "memory", limit: true, value: $k.$mem_l.as_ref(), max: $k.$mem_lm.as_ref(), variable: concat!($var, "MEMORY_LIMIT") },
            Setting { resource: "memory", limit: false, value: $k.$mem_r.as_ref(), max: $k.$mem_rm.as_ref(), variable: concat!($var, "MEMORY_REQUEST") },
            $(
            Setting { resource: "ephemeral-storage", limit: true, value: $k.$eph_l.as_ref(), max: $k.$eph_lm.as_ref(), variable: concat!($var, "EPHEMERAL_STORAGE_LIMIT") },
            Setting { resource: "ephemeral-storage", limit: false, value: $k.$eph_r.as_ref(), max: $k.$eph_rm.as_ref(), variable: concat!($var, "EPHEMERAL_STORAGE_REQUEST") },
            )?
        ]
    };
}

/// Build container settings.
pub(crate) fn build(k: &podrunner_config::raw::RawKubernetes) -> Vec<Setting<'_>> {
    settings!(
        k,
        "KUBERNETES_",
        cpu_limit,
        cpu_limit_overwrite_max_allowed,
        cpu_request,
        cpu_request_overwrite_max_allowed,
        memory_limit,
        memory_limit_overwrite_max_allowed,
        memory_request,
        memory_request_overwrite_max_allowed,
        ephemeral_storage_limit,
        ephemeral_storage_limit_overwrite_max_allowed,
        ephemeral_storage_request,
        ephemeral_storage_request_overwrite_max_allowed
    )
}

/// Helper (and init-permissions) settings.
pub(crate) fn helper(k: &podrunner_config::raw::RawKubernetes) -> Vec<Setting<'_>> {
    settings!(
        k,
        "KUBERNETES_HELPER_",
        helper_cpu_limit,
        helper_cpu_limit_overwrite_max_allowed,
        helper_cpu_request,
        helper_cpu_request_overwrite_max_allowed,
        helper_memory_limit,
        helper_memory_limit_overwrite_max_allowed,
        helper_memory_request,
        helper_memory_request_overwrite_max_allowed,
        helper_ephemeral_storage_limit,
        helper_ephemeral_storage_limit_overwrite_max_allowed,
        helper_ephemeral_storage_request,
        helper_ephemeral_storage_request_overwrite_max_allowed
    )
}

/// Service container settings.
pub(crate) fn service(k: &podrunner_config::raw::RawKubernetes) -> Vec<Setting<'_>> {
    settings!(
        k,
        "KUBERNETES_SERVICE_",
        service_cpu_limit,
        service_cpu_limit_overwrite_max_allowed,
        service_cpu_request,
        service_cpu_request_overwrite_max_allowed,
        service_memory_limit,
        service_memory_limit_overwrite_max_allowed,
        service_memory_request,
        service_memory_request_overwrite_max_allowed,
        service_ephemeral_storage_limit,
        service_ephemeral_storage_limit_overwrite_max_allowed,
        service_ephemeral_storage_request,
        service_ephemeral_storage_request_overwrite_max_allowed
    )
}

/// Pod-level settings (`spec.resources`).
pub(crate) fn pod(k: &podrunner_config::raw::RawKubernetes) -> Vec<Setting<'_>> {
    settings!(
        k,
        "KUBERNETES_POD_",
        pod_cpu_limit,
        pod_cpu_limit_overwrite_max_allowed,
        pod_cpu_request,
        pod_cpu_request_overwrite_max_allowed,
        pod_memory_limit,
        pod_memory_limit_overwrite_max_allowed,
        pod_memory_request,
        pod_memory_request_overwrite_max_allowed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_compare_across_units() {
        assert_eq!(quantity_value("500m"), Some(0.5));
        assert_eq!(quantity_value("1Gi"), Some(1024f64.powi(3)));
        assert_eq!(quantity_value("1e3"), Some(1000.0));
        assert!(quantity_value("2Gi").unwrap() > quantity_value("2G").unwrap());
        assert_eq!(quantity_value("abc"), None);
    }

    #[test]
    fn an_overwrite_above_the_maximum_is_refused_with_upstreams_message() {
        let value = "1".to_owned();
        let max = "2".to_owned();
        let setting = Setting {
            resource: "cpu",
            limit: true,
            value: Some(&value),
            max: Some(&max),
            variable: "KUBERNETES_CPU_LIMIT",
        };
        let err = requirements(&[setting], &|_| Some("3".to_owned())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the resource \"KUBERNETES_CPU_LIMIT\" requested \"3\" is higher than limit allowed \"2\""
        );
        let ok = requirements(&[setting], &|_| Some("1500m".to_owned())).unwrap().unwrap();
        assert_eq!(ok.limits.unwrap()["cpu"].0, "1500m");
    }

    #[test]
    fn an_overwrite_without_a_maximum_is_ignored() {
        let value = "1".to_owned();
        let setting = Setting {
            resource: "cpu",
            limit: false,
            value: Some(&value),
            max: None,
            variable: "KUBERNETES_CPU_REQUEST",
        };
        let r = requirements(&[setting], &|_| Some("9".to_owned())).unwrap().unwrap();
        assert_eq!(r.requests.unwrap()["cpu"].0, "1");
    }
}
