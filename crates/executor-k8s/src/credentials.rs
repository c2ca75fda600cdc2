//! The registry-credentials Secret of a job: GitLab's `credentials` of type `registry`, as a
//! `kubernetes.io/dockerconfigjson` Secret the pod names in `imagePullSecrets`. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use podrunner_coordinator::wire::{Credentials, Job};
use secrecy::ExposeSecret as _;

use crate::names;

/// Whether GitLab's credential is one the Secret carries: a registry with a URL.
pub fn is_registry(c: &Credentials) -> bool {
    c.kind == "registry" && !c.url.is_empty()
}

/// The deterministic name of a job's credentials Secret (a replayed create names the same one).
pub fn secret_name(short_token: &str, job_id: u64) -> String {
    names::rfc1123(&format!("runner-{short_token}-job-{job_id}-registry"))
}

/// The Secret for the job's registry credentials, or `None` when it has none. `labels` are the
/// pod's, so the Secret is found (and swept) as the pod is.
pub fn registry_secret(
    job: &Job,
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<Secret> {
    let mut auths = serde_json::Map::new();
    for c in job.credentials.iter().filter(|c| is_registry(c)) {
        auths.insert(
            c.url.clone(),
            serde_json::json!({ "username": c.username, "password": c.password.expose_secret() }),
        );
    }
    if auths.is_empty() {
        return None;
    }
    let config = serde_json::json!({ "auths": auths }).to_string();
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                crate::names::JOB_ID_ANNOTATION.to_owned(),
                job.id.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".to_owned()),
        string_data: Some(BTreeMap::from([(".dockerconfigjson".to_owned(), config)])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(credentials: serde_json::Value) -> Job {
        let mut job = serde_json::json!({"id": 7, "token": "t"});
        job["credentials"] = credentials;
        serde_json::from_value(job).expect("job")
    }

    #[test]
    fn registry_credentials_become_one_docker_config_json_secret() {
        let j = job(serde_json::json!([
            {"type": "registry", "url": "registry.example.com", "username": "u", "password": "p4ss"},
            {"type": "other", "url": "x", "username": "a", "password": "b"}
        ]));
        let labels = BTreeMap::from([("a".to_owned(), "b".to_owned())]);
        let s = registry_secret(&j, &secret_name("abc", 7), "ci", &labels).expect("a secret");
        assert_eq!(s.metadata.name.as_deref(), Some("runner-abc-job-7-registry"));
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        let config: serde_json::Value =
            serde_json::from_str(&s.string_data.expect("data")[".dockerconfigjson"]).expect("json");
        assert_eq!(config["auths"]["registry.example.com"]["password"], "p4ss");
        assert!(config["auths"].get("x").is_none());
        assert_eq!(s.metadata.labels, Some(labels));
    }

    #[test]
    fn a_job_without_registry_credentials_has_no_secret() {
        assert!(
            registry_secret(&job(serde_json::json!([])), "n", "ci", &BTreeMap::new()).is_none()
        );
    }
}
