//! Every Kubernetes example of the GitLab Runner documentation loads without an error (unknown
//! keys are warnings), and every runner in it renders a pod for the sample job that keeps the
//! builder's promises, for a cluster before and after the `appArmorProfile` field (1.29, newest).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::api::core::v1::Pod;
use podrunner_config::{LoadOptions, Report, Severity, load_str};
use podrunner_executor_k8s::{
    BuildInput, BuiltPod, ClusterFacts, Error, PatchFiles, PodIdentity, build_pod, pod_yaml,
    sample::sample_job, version,
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

/// The pods of every Kubernetes runner of every example, at each of `minors`.
#[derive(Debug, Default)]
struct Rendered {
    /// `(example, minor, pod)` for each pod built.
    pods: Vec<(String, u32, BuiltPod)>,
    /// Builds refused for the expected reason (the sample image is outside an allow-list).
    refused: usize,
    /// Everything else that went wrong.
    failures: Vec<String>,
}

fn render_every_example(examples: &[corpus::Example], minors: &[u32]) -> Rendered {
    let job = sample_job();
    let identity = PodIdentity::default();
    let patch_files = PatchFiles::new();
    let mut out = Rendered::default();
    for example in examples {
        let Some(config) = load_str(&example.text, LoadOptions::default()).config else {
            out.failures.push(format!("{}: does not load", example.name));
            continue;
        };
        for runner in config.runners.iter().filter(|r| r.kubernetes.is_some()) {
            for &minor in minors {
                let input = BuildInput {
                    runner,
                    job: &job,
                    cluster: ClusterFacts { kubernetes_minor: minor, ..ClusterFacts::default() },
                    identity: &identity,
                    patch_files: &patch_files,
                };
                match build_pod(&input) {
                    Ok(built) => out.pods.push((example.name.clone(), minor, built)),
                    // The sample job's `rust` image is outside this example's allow-list: the
                    // refusal is the promise kept.
                    Err(Error::ImageNotAllowed { image, allowed })
                        if image == "rust:1.95"
                            && !allowed.iter().any(|a| a.starts_with("rust")) =>
                    {
                        out.refused += 1;
                    }
                    Err(error) => {
                        out.failures.push(format!("{} at 1.{minor}: {error}", example.name));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_documentation_example_renders_a_pod_that_keeps_the_builder_promises() {
    let Some(examples) = corpus::examples() else { return };
    let secrets: Vec<String> =
        sample_job().secrets_to_mask().iter().map(|s| s.expose_secret().to_owned()).collect();
    assert!(secrets.len() >= 2, "the sample job must carry a job token and a masked variable");
    let minors = [29, version::MAX_MINOR];
    let first = render_every_example(&examples, &minors);
    let again = render_every_example(&examples, &minors);
    let mut failures = first.failures.clone();
    for ((name, minor, built), (_, _, built_again)) in first.pods.iter().zip(&again.pods) {
        let json = |b: &BuiltPod| serde_json::to_value(&b.pod).ok();
        if json(built) != json(built_again) {
            failures.push(format!("{name} at 1.{minor}: two builds of the same input differ"));
        }
        let spec = built.pod.spec.as_ref();
        let containers =
            spec.map_or(0, |s| s.containers.len() + s.init_containers.as_ref().map_or(0, Vec::len));
        if built.security.containers.len() != containers {
            failures.push(format!(
                "{name} at 1.{minor}: the security report has {} entries for {containers} containers",
                built.security.containers.len()
            ));
        }
        failures.extend(
            broken_promises(&built.pod, *minor, &secrets)
                .into_iter()
                .map(|b| format!("{name} at 1.{minor}: {b}")),
        );
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
    assert!(
        first.pods.len() >= 2 * 60,
        "expected a pod per runner and version, rendered {}",
        first.pods.len()
    );
    assert_eq!(
        first.refused, 2,
        "only example 48 (allowed_images) refuses the sample job, at two versions"
    );
}

/// `kubernetes-validate` from the project's virtualenv (`scripts/install-prereqs.sh`), or
/// `$KUBERNETES_VALIDATE`.
fn kubernetes_validate() -> Option<PathBuf> {
    let tool = std::env::var_os("KUBERNETES_VALIDATE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-kv/bin/kubernetes-validate"),
        PathBuf::from,
    );
    if tool.exists() {
        return Some(tool);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "kubernetes-validate is missing at {} (scripts/install-prereqs.sh installs it)",
        tool.display()
    );
    eprintln!(
        "SKIPPED: kubernetes-validate not at {} (run scripts/install-prereqs.sh)",
        tool.display()
    );
    None
}

#[test]
fn every_documentation_example_pod_is_valid_for_the_kubernetes_version_it_targets() {
    let Some(examples) = corpus::examples() else { return };
    let Some(tool) = kubernetes_validate() else { return };
    let minors = [29, 30, version::MAX_MINOR];
    let rendered = render_every_example(&examples, &minors);
    assert!(rendered.failures.is_empty(), "{}", rendered.failures.join("\n"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    for minor in minors {
        let mut files = Vec::new();
        for (index, (name, _, built)) in
            rendered.pods.iter().filter(|(_, m, _)| *m == minor).enumerate()
        {
            let file = dir.path().join(format!("{index:03}-1.{minor}-{name}.yaml"));
            let yaml = pod_yaml(&built.pod).expect("a pod renders as yaml");
            std::fs::write(&file, yaml).expect("the manifest is written");
            files.push(file);
        }
        assert!(files.len() >= 60, "expected the whole corpus at 1.{minor}, got {}", files.len());
        let output = Command::new(&tool)
            .args(["--strict", "--quiet", "-k", &format!("1.{minor}.0")])
            .args(&files)
            .output()
            .expect("kubernetes-validate runs");
        assert!(
            output.status.success(),
            "kubernetes-validate --strict -k 1.{minor}.0 rejected rendered pods:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
