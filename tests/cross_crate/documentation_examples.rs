//! Every Kubernetes example of the GitLab Runner documentation loads without an error (unknown
//! keys are warnings), and every runner in it renders a pod for the sample job that keeps the
//! builder's promises, for a cluster before and after the `appArmorProfile` field (1.29, newest).

use k8s_openapi::api::core::v1::Pod;
use podrunner_config::{LoadOptions, Report, Severity, load_str};
use podrunner_executor_k8s::{
    BuildInput, ClusterFacts, Error, PatchFiles, PodIdentity, build_pod, sample::sample_job,
    version,
};
use secrecy::ExposeSecret as _;
use serde_json::Value;

use crate::corpus;

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

#[test]
fn every_documentation_example_loads_without_an_error() {
    let Some(examples) = corpus::examples() else { return };
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|example| {
            let loaded = load_str(&example.text, LoadOptions::default());
            let failed = loaded.config.is_none()
                || loaded.diagnostics.iter().any(|d| d.severity == Severity::Error);
            failed.then(|| {
                Report {
                    file: &example.name,
                    text: &example.text,
                    diagnostics: &loaded.diagnostics,
                }
                .to_text()
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} examples failed to load:\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n")
    );
}

/// Every object key anywhere in `value`.
fn keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The promises every rendered pod keeps; returns what is broken.
fn broken_promises(pod: &Pod, minor: u32, secrets: &[String]) -> Vec<String> {
    let mut broken = Vec::new();
    let json = serde_json::to_string(pod).expect("a pod serialises");
    for secret in secrets {
        if json.contains(secret.as_str()) {
            broken.push(format!("a secret of the job appears in the pod: {secret}"));
        }
    }
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if !is_dns_label(name) {
        broken.push(format!("pod name {name:?} is not a DNS label"));
    }
    let Some(spec) = &pod.spec else {
        broken.push("the pod has no spec".to_owned());
        return broken;
    };
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    if names.get(..2) != Some(&["build", "helper"][..]) {
        broken.push(format!("containers do not start with build, helper: {names:?}"));
    }
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        if c.security_context.is_none() {
            broken.push(format!("container {} has no security context", c.name));
        }
    }
    let mut all_keys = Vec::new();
    keys(&serde_json::to_value(spec).expect("a spec serialises"), &mut all_keys);
    let has_field = all_keys.iter().any(|k| k == "appArmorProfile");
    let has_annotation = pod
        .metadata
        .annotations
        .iter()
        .flatten()
        .any(|(k, _)| k.starts_with(APPARMOR_ANNOTATION_PREFIX));
    if minor < 30 && has_field {
        broken.push(format!("1.{minor} pod has an appArmorProfile field"));
    }
    if minor >= 30 && has_annotation {
        broken.push(format!("1.{minor} pod has a deprecated AppArmor annotation"));
    }
    broken
}

#[test]
fn every_documentation_example_renders_a_pod_that_keeps_the_builder_promises() {
    let Some(examples) = corpus::examples() else { return };
    let job = sample_job();
    let secrets: Vec<String> =
        job.secrets_to_mask().iter().map(|s| s.expose_secret().to_owned()).collect();
    assert!(secrets.len() >= 2, "the sample job must carry a job token and a masked variable");
    let identity = PodIdentity::default();
    let patch_files = PatchFiles::new();
    let mut rendered = 0;
    let mut refused = 0;
    let mut failures = Vec::new();
    for example in &examples {
        let Some(config) = load_str(&example.text, LoadOptions::default()).config else {
            failures.push(format!("{}: does not load", example.name));
            continue;
        };
        for runner in config.runners.iter().filter(|r| r.kubernetes.is_some()) {
            for minor in [29, version::MAX_MINOR] {
                let facts = ClusterFacts { kubernetes_minor: minor, ..ClusterFacts::default() };
                let input = BuildInput {
                    runner,
                    job: &job,
                    cluster: facts,
                    identity: &identity,
                    patch_files: &patch_files,
                };
                let first = match build_pod(&input) {
                    Ok(built) => built,
                    // The sample job's `rust` image is outside this example's allow-list: the
                    // refusal is the promise kept.
                    Err(Error::ImageNotAllowed { image, allowed })
                        if image == "rust:1.95"
                            && !allowed.iter().any(|a| a.starts_with("rust")) =>
                    {
                        refused += 1;
                        continue;
                    }
                    Err(error) => {
                        failures.push(format!("{} at 1.{minor}: {error}", example.name));
                        continue;
                    }
                };
                let again = build_pod(&input).expect("a second build of the same input");
                if serde_json::to_value(&first.pod).ok() != serde_json::to_value(&again.pod).ok() {
                    failures.push(format!("{} at 1.{minor}: two builds differ", example.name));
                }
                let spec = first.pod.spec.as_ref();
                let containers = spec.map_or(0, |s| {
                    s.containers.len() + s.init_containers.as_ref().map_or(0, Vec::len)
                });
                if first.security.containers.len() != containers {
                    failures.push(format!(
                        "{} at 1.{minor}: security report has {} entries for {containers} containers",
                        example.name,
                        first.security.containers.len()
                    ));
                }
                failures.extend(
                    broken_promises(&first.pod, minor, &secrets)
                        .into_iter()
                        .map(|b| format!("{} at 1.{minor}: {b}", example.name)),
                );
                rendered += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
    assert!(rendered >= 2 * 60, "expected a pod per runner and version, rendered {rendered}");
    assert_eq!(
        refused, 2,
        "only example 48 (allowed_images) refuses the sample job, at two versions"
    );
}
