//! Snapshot tests of rendered pods: the worked examples of `gitlab-runner.md` §2.6, the seccomp and
//! AppArmor feature request's examples and test cases for the pod and all four container kinds,
//! Kubernetes 1.29 against 1.30+, patches, variables, volumes, services, UIDs and capabilities.
//!
//! Most snapshots show the security view (AppArmor annotations, the pod context and each
//! container's context); config diagnostics and job-log lines are the leading `#` comments.
//! Every snapshot was reviewed against the reference; a wrong snapshot is a bug.

mod common;

use common::*;
use insta::assert_snapshot;
use podrunner_executor_k8s::{
    ClusterFacts, HelperOs, PatchFiles, security::Level, version::apparmor_annotation_key,
};

fn sc(built: &podrunner_executor_k8s::BuiltPod, name: &str) -> serde_json::Value {
    let v = value_of(&built.pod);
    v["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(v["spec"]["containers"].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
        .map(|c| c["securityContext"].clone())
        .unwrap_or_else(|| panic!("no container {name}"))
}

// --- gitlab-runner.md §2.6 worked examples -------------------------------------------------

#[test]
fn example_a_gives_every_container_its_own_context() {
    let (loaded, built) = example_a().render(LATEST);
    let build = sc(&built, "build");
    assert_eq!(build["capabilities"]["add"], serde_json::json!(["NET_ADMIN"]));
    assert_eq!(build["capabilities"]["drop"], serde_json::json!(["NET_RAW"]));
    assert_eq!(build["runAsUser"], 65534);
    assert_eq!(sc(&built, "db")["runAsUser"], 1000);
    assert_eq!(sc(&built, "init-permissions")["runAsGroup"], 1000);
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn example_b_copies_the_pod_uid_into_the_helper_but_no_group() {
    let (loaded, built) = example_b().render(LATEST);
    let helper = sc(&built, "helper");
    assert_eq!(helper["runAsUser"], 1001);
    assert!(helper.get("runAsGroup").is_none());
    assert_eq!(sc(&built, "build")["appArmorProfile"]["type"], "Unconfined");
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn example_c_sets_localhost_profiles_on_build() {
    let (loaded, built) = example_c().render(LATEST);
    assert_eq!(
        sc(&built, "build")["seccompProfile"]["localhostProfile"],
        "profiles/my-seccomp-profile.json"
    );
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn example_c_without_localhost_profiles_drops_both_fields_and_still_builds() {
    let (loaded, built) = example_c_without_profiles().render(LATEST);
    let build = sc(&built, "build");
    assert!(build.get("seccompProfile").is_none() && build.get("appArmorProfile").is_none());
    assert_eq!(loaded.diagnostics.len(), 2, "{:?}", loaded.diagnostics);
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn example_d_security_contexts_override_the_job_user() {
    let (loaded, built) = example_d().render(LATEST);
    assert_eq!(sc(&built, "build")["runAsUser"], 2000);
    assert_eq!(sc(&built, "helper")["runAsGroup"], 3001);
    assert_eq!(sc(&built, "cache")["runAsUser"], 4000);
    assert!(sc(&built, "init-permissions").get("runAsUser").is_none());
    assert!(built.job_log.iter().any(|l| l.starts_with("Overriding user for container \"build\"")));
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn a_job_user_alone_applies_to_build_and_services_only() {
    let (loaded, built) = job_user_only().render(LATEST);
    assert_eq!(sc(&built, "build")["runAsUser"], 1000);
    assert_eq!(sc(&built, "cache")["runAsGroup"], 1001);
    assert!(sc(&built, "helper").get("runAsUser").is_none());
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn a_root_job_user_is_refused_without_an_explicit_zero() {
    let (loaded, built) = job_user_root().render(LATEST);
    assert!(sc(&built, "build").get("runAsUser").is_none());
    assert!(
        built.job_log.iter().any(|l| l == "user \"0\" is not in the allowed list: []"),
        "{:?}",
        built.job_log
    );
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn allow_lists_admit_root_only_when_zero_is_listed() {
    let (loaded, built) = job_user_allow_lists().render(LATEST);
    let build = sc(&built, "build");
    assert_eq!(build["runAsUser"], 0);
    assert!(build.get("runAsGroup").is_none(), "1001 is not in allowed_groups");
    assert_snapshot!(security_snapshot(&loaded, &built));
}

// --- the feature request's examples -------------------------------------------------------------

#[test]
fn rootless_buildkit_gets_unconfined_profiles_on_build() {
    let case = fr_buildkit();
    let (loaded, built) = case.render(LATEST);
    assert_snapshot!("fr_buildkit_latest", security_snapshot(&loaded, &built));
    let (loaded, built) = case.render(29);
    assert_snapshot!("fr_buildkit_1_29", security_snapshot(&loaded, &built));
}

#[test]
fn aks_compliance_sets_runtime_default_on_the_pod() {
    let (loaded, built) = fr_aks().render(LATEST);
    let report = built.security.container("db").expect("db");
    assert_eq!(report.seccomp.as_ref().map(|s| s.level), Some(Level::Pod));
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn a_custom_seccomp_profile_is_set_on_build() {
    let (loaded, built) = fr_custom_seccomp().render(LATEST);
    assert_snapshot!(security_snapshot(&loaded, &built));
}

// --- the feature request's test cases, for all four container kinds ----------------------------

#[test]
fn unconfined_applies_to_every_container_kind() {
    let case = unconfined_all_kinds();
    let (loaded, built) = case.render(LATEST);
    for name in ["init-permissions", "build", "helper", "db"] {
        assert_eq!(sc(&built, name)["seccompProfile"]["type"], "Unconfined", "{name}");
        assert_eq!(sc(&built, name)["appArmorProfile"]["type"], "Unconfined", "{name}");
    }
    assert_snapshot!("unconfined_all_kinds_latest", security_snapshot(&loaded, &built));
    let (loaded, built) = case.render(29);
    assert_snapshot!("unconfined_all_kinds_1_29", security_snapshot(&loaded, &built));
}

#[test]
fn localhost_with_a_profile_sets_type_and_path_on_every_container_kind() {
    let case = localhost_all_kinds();
    let (loaded, built) = case.render(LATEST);
    for name in ["init-permissions", "build", "helper", "db"] {
        assert_eq!(sc(&built, name)["seccompProfile"]["localhostProfile"], "profiles/ci.json");
        assert_eq!(sc(&built, name)["appArmorProfile"]["localhostProfile"], "ci-profile");
    }
    assert_snapshot!("localhost_all_kinds_latest", security_snapshot(&loaded, &built));
    let (loaded, built) = case.render(29);
    assert_snapshot!("localhost_all_kinds_1_29", security_snapshot(&loaded, &built));
}

#[test]
fn localhost_without_a_profile_is_warned_and_omitted_on_every_container_kind() {
    let (loaded, built) = localhost_without_profile_all_kinds().render(LATEST);
    assert_eq!(loaded.diagnostics.len(), 8, "{:#?}", loaded.diagnostics);
    assert!(loaded.diagnostics.iter().all(|d| d.starts_with("warning: ")));
    for name in ["init-permissions", "build", "helper", "db"] {
        assert!(sc(&built, name).get("seccompProfile").is_none(), "{name}");
        assert!(sc(&built, name).get("appArmorProfile").is_none(), "{name}");
    }
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn an_invalid_type_is_warned_and_omitted_on_every_container_kind() {
    let (loaded, built) = invalid_type_all_kinds().render(LATEST);
    assert_eq!(loaded.diagnostics.len(), 8, "{:#?}", loaded.diagnostics);
    for name in ["init-permissions", "build", "helper", "db"] {
        assert!(sc(&built, name).get("seccompProfile").is_none(), "{name}");
        assert!(sc(&built, name).get("appArmorProfile").is_none(), "{name}");
    }
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn pod_level_profiles_go_on_the_pod_and_expand_to_every_container_below_1_30() {
    let case = pod_level();
    let (loaded, built) = case.render(LATEST);
    assert!(sc(&built, "build").get("seccompProfile").is_none());
    let pod = value_of(&built.pod);
    assert_eq!(
        pod["spec"]["securityContext"]["appArmorProfile"]["localhostProfile"],
        "pod-profile"
    );
    assert_snapshot!("pod_level_latest", security_snapshot(&loaded, &built));
    let (loaded, built) = case.render(29);
    let annotations = built.pod.metadata.annotations.as_ref().expect("annotations");
    for name in container_names(&built.pod) {
        assert_eq!(
            annotations.get(&apparmor_annotation_key(&name)).map(String::as_str),
            Some("localhost/pod-profile"),
            "{name}"
        );
    }
    assert!(!pod_text(&built.pod).contains("appArmorProfile"));
    assert_snapshot!("pod_level_1_29", security_snapshot(&loaded, &built));
}

#[test]
fn pod_level_invalid_and_incomplete_profiles_are_warned_and_leave_no_pod_context() {
    let (loaded, built) = pod_level_invalid().render(LATEST);
    assert_eq!(loaded.diagnostics.len(), 2, "{:#?}", loaded.diagnostics);
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn pod_level_unconfined_becomes_the_unconfined_annotation_below_1_30() {
    let case = pod_level_unconfined();
    let (loaded, built) = case.render(LATEST);
    assert_snapshot!("pod_level_unconfined_latest", security_snapshot(&loaded, &built));
    let (loaded, built) = case.render(29);
    assert_snapshot!("pod_level_unconfined_1_29", security_snapshot(&loaded, &built));
}

#[test]
fn container_settings_override_the_pod_for_every_kind() {
    let case = container_overrides_pod();
    let (loaded, built) = case.render(LATEST);
    // Both levels are emitted as configured; the report shows what each container runs with.
    let report = &built.security;
    let build = report.container("build").expect("build");
    assert_eq!(
        build.seccomp.as_ref().map(|s| (s.value.type_.as_str(), s.level)),
        Some(("Unconfined", Level::Container))
    );
    let db = report.container("db").expect("db");
    assert_eq!(
        db.seccomp.as_ref().map(|s| (s.value.type_.as_str(), s.level)),
        Some(("RuntimeDefault", Level::Pod))
    );
    assert_eq!(db.app_armor.as_ref().map(|s| s.level), Some(Level::Container));
    let text = format!("{}\n---\n{report}", security_snapshot(&loaded, &built));
    assert_snapshot!("container_overrides_pod_latest", text);
    let (loaded, built) = case.render(29);
    // Below 1.30 the container value wins in the annotation; the pod value fills the rest.
    let annotations = built.pod.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(annotations[&apparmor_annotation_key("build")], "unconfined");
    assert_eq!(annotations[&apparmor_annotation_key("helper")], "runtime/default");
    assert_eq!(annotations[&apparmor_annotation_key("db")], "localhost/svc-profile");
    assert_eq!(annotations[&apparmor_annotation_key("init-permissions")], "localhost/init-profile");
    assert_snapshot!("container_overrides_pod_1_29", security_snapshot(&loaded, &built));
}

// --- Kubernetes versions -----------------------------------------------------------------------------

#[test]
fn apparmor_is_a_field_from_1_30_and_an_annotation_before() {
    let case = container_overrides_pod();
    for minor in [19, 25, 29] {
        let (_, built) = case.render(minor);
        assert!(!pod_text(&built.pod).contains("appArmorProfile"), "1.{minor}");
        assert!(
            pod_text(&built.pod).contains("seccompProfile"),
            "seccomp stays a field at 1.{minor}"
        );
    }
    for minor in [30, 31, LATEST] {
        let (_, built) = case.render(minor);
        assert!(pod_text(&built.pod).contains("appArmorProfile"), "1.{minor}");
        assert!(!pod_text(&built.pod).contains("container.apparmor.security.beta"), "1.{minor}");
    }
}

#[test]
fn no_deprecated_seccomp_annotations_are_emitted() {
    for case in corpus() {
        for minor in [29, LATEST] {
            let (_, built) = case.render(minor);
            assert!(
                !pod_text(&built.pod).contains("seccomp.security.alpha.kubernetes.io"),
                "{}",
                case.name
            );
        }
    }
}

// --- capabilities and privileges ---------------------------------------------------------------------

#[test]
fn every_container_drops_net_raw_by_default() {
    let case = defaults();
    let (loaded, built) = case.render(LATEST);
    for name in container_names(&built.pod) {
        assert_eq!(
            sc(&built, &name),
            serde_json::json!({"capabilities": {"drop": ["NET_RAW"]}}),
            "{name}"
        );
    }
    assert!(value_of(&built.pod)["spec"].get("securityContext").is_none());
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn a_windows_helper_drops_no_capabilities_by_default() {
    let case = defaults_windows_helper();
    let (loaded, built) = case.render(LATEST);
    for name in container_names(&built.pod) {
        assert_eq!(sc(&built, &name), serde_json::json!({}), "{name}");
    }
    assert_snapshot!(security_snapshot(&loaded, &built));
}

#[test]
fn container_capability_lists_replace_the_global_ones() {
    let (loaded, built) = capabilities().render(LATEST);
    // global: add NET_RAW (re-enables the default drop), SYS_TIME; CHOWN added and dropped -> dropped.
    assert!(
        sc(&built, "db").get("capabilities").is_none(),
        "empty lists replace both: nothing added or dropped"
    );
    assert_eq!(sc(&built, "build")["capabilities"]["add"], serde_json::json!(["NET_ADMIN"]));
    assert_eq!(sc(&built, "build")["capabilities"]["drop"], serde_json::json!(["CHOWN", "MKNOD"]));
    assert_eq!(sc(&built, "helper")["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc(&built, "helper")["capabilities"]["add"],
        serde_json::json!(["NET_RAW", "SYS_TIME"])
    );
    assert_eq!(sc(&built, "helper")["allowPrivilegeEscalation"], true);
    assert_eq!(sc(&built, "build")["allowPrivilegeEscalation"], false);
    assert_eq!(sc(&built, "init-permissions")["procMount"], "Unmasked");
    assert_snapshot!(security_snapshot(&loaded, &built));
}

// --- variables -------------------------------------------------------------------------------------

#[test]
fn masked_and_private_variables_never_reach_the_pod() {
    let (loaded, built) = masked_variables().render(LATEST);
    let text = pod_text(&built.pod);
    for secret in [
        "masked-secret-1234",
        "masked-but-public-5678",
        "private-unmasked-9012",
        "service-secret-3456",
        "secret-file-contents",
        "job-token-value",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into the pod");
    }
    // A masked variable is not even usable for expanding config values.
    let annotations = built.pod.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(annotations["example.com/expanded"], "v--visible-v");
    let env = value_of(&built.pod)["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| (c["name"].as_str().unwrap_or_default().to_owned(), c["env"].clone()))
        .collect::<serde_json::Map<_, _>>();
    assert_snapshot!(with_notes(
        &loaded,
        &built,
        &podrunner_executor_k8s::yaml::to_yaml(&serde_json::Value::Object(env))
    ));
}

// --- volumes and services ----------------------------------------------------------------------------

#[test]
fn every_volume_kind_is_mounted_in_upstreams_order() {
    let (loaded, built) = volume_kinds().render(LATEST);
    let pod = value_of(&built.pod);
    let names: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    // The builds dir is on the PVC, so there is no `repo` volume; the PVC is declared once.
    assert_eq!(
        names,
        [
            "docker-sock",
            "registry-ca",
            "builds-0",
            "settings",
            "scratch",
            "inline-csi",
            "shared",
            "scripts",
            "logs"
        ]
    );
    let view = serde_json::json!({
        "volumes": pod["spec"]["volumes"],
        "buildVolumeMounts": pod["spec"]["containers"][0]["volumeMounts"],
        "helperVolumeMountsEqualBuild": pod["spec"]["containers"][1]["volumeMounts"] == pod["spec"]["containers"][0]["volumeMounts"],
        "CI_PROJECT_DIR": pod["spec"]["containers"][0]["env"].as_array().into_iter().flatten()
            .find(|e| e["name"] == "CI_PROJECT_DIR").map(|e| e["value"].clone()),
    });
    assert_snapshot!(with_notes(&loaded, &built, &podrunner_executor_k8s::yaml::to_yaml(&view)));
}

#[test]
fn services_are_named_by_alias_or_svc_n_and_sorted_after_build_and_helper() {
    let (loaded, built) = service_names().render(LATEST);
    let names = container_names(&built.pod);
    assert_eq!(
        names,
        [
            "init-permissions",
            "build",
            "helper",
            "alias",
            "alias5",
            "svc-0",
            "svc-1",
            "svc-2",
            "test-alias"
        ]
    );
    let pod = value_of(&built.pod);
    let view = serde_json::json!({
        "containers": pod["spec"]["containers"].as_array().expect("containers").iter()
            .map(|c| serde_json::json!({"name": c["name"], "image": c["image"]})).collect::<Vec<_>>(),
        "hostAliases": pod["spec"]["hostAliases"],
    });
    assert_snapshot!(with_notes(&loaded, &built, &podrunner_executor_k8s::yaml::to_yaml(&view)));
}

// --- patches ---------------------------------------------------------------------------------------

#[test]
fn strategic_merge_and_json_patches_apply_in_order_with_the_feature_flag() {
    let (loaded, built) = patches().render(LATEST);
    let pod = value_of(&built.pod);
    assert_eq!(pod["spec"]["nodeSelector"]["disk"], "ssd");
    assert!(pod["spec"].get("hostname").is_none(), "the merge patch deleted it");
    assert_eq!(pod["spec"]["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let build = &pod["spec"]["containers"][0];
    assert_eq!(build["securityContext"]["appArmorProfile"]["type"], "Unconfined");
    assert_eq!(build["securityContext"]["capabilities"]["drop"], serde_json::json!(["NET_RAW"]));
    assert_eq!(build["image"], "alpine:3.20", "strategic merge keeps unpatched fields");
    // Patched profiles are part of the effective security and of the 1.29 rewrite.
    assert_eq!(
        built.security.container("build").and_then(|c| c.app_armor.clone()).map(|a| a.level),
        Some(Level::Container)
    );
    let (_, old) = patches().render(29);
    assert_eq!(
        old.pod.metadata.annotations.as_ref().expect("annotations")
            [&apparmor_annotation_key("build")],
        "unconfined"
    );
    assert_snapshot!(pod_snapshot(&loaded, &built));
}

#[test]
fn patches_are_ignored_without_the_feature_flag() {
    let mut case = patches();
    case.config = case.config.replace(
        "FF_USE_ADVANCED_POD_SPEC_CONFIGURATION = true",
        "FF_USE_ADVANCED_POD_SPEC_CONFIGURATION = false",
    );
    let (_, built) = case.render(LATEST);
    assert!(value_of(&built.pod)["spec"].get("nodeSelector").is_none());
    assert!(built.job_log.iter().any(|l| l.contains("not applied")), "{:?}", built.job_log);
}

/// Renders the patch case with one `[[pod_spec]]` entry replaced, returning the error text.
fn patch_error(entry: &str, files: &PatchFiles) -> String {
    let toml = format!(
        "{RUNNER}[runners.feature_flags]\nFF_USE_ADVANCED_POD_SPEC_CONFIGURATION = true\n[runners.kubernetes]\nimage = \"alpine:3.20\"\n[[runners.kubernetes.pod_spec]]\nname = \"p\"\n{entry}\n"
    );
    let loaded = load_or_diagnostics(&toml);
    match loaded {
        Err(diagnostics) => format!("config: {}", diagnostics.join("; ")),
        Ok(loaded) => match try_render(&loaded, &job(JOB_NO_SERVICE), LATEST, files) {
            Ok(_) => "built".to_owned(),
            Err(e) => {
                let mut text = format!("build: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                text
            }
        },
    }
}

fn load_or_diagnostics(toml: &str) -> Result<Loaded, Vec<String>> {
    let loaded = podrunner_config::load_str(toml, podrunner_config::LoadOptions { strict: false });
    let diagnostics: Vec<String> = loaded
        .diagnostics
        .iter()
        .map(|d| format!("{}: {} (at {})", d.severity, d.message, d.key_path))
        .collect();
    match loaded.config {
        Some(mut c) => Ok(Loaded { runner: c.runners.remove(0), diagnostics }),
        None => Err(diagnostics),
    }
}

#[test]
fn bad_patches_fail_with_clear_errors() {
    let mut missing = PatchFiles::new();
    missing.insert(
        "/etc/patch.yaml".to_owned(),
        Err("/etc/patch.yaml: No such file or directory (os error 2)".to_owned()),
    );
    let cases = [
        (
            "ambiguous",
            "patch = \"hostname: x\"\npatch_path = \"/etc/patch.yaml\"",
            PatchFiles::new(),
        ),
        (
            "unsupported type",
            "patch = \"hostname: x\"\npatch_type = \"replace\"",
            PatchFiles::new(),
        ),
        ("unreadable file", "patch_path = \"/etc/patch.yaml\"", missing),
        ("not yaml", "patch = \"{hostname: [\"", PatchFiles::new()),
        (
            "json patch on a missing path",
            "patch_type = \"json\"\npatch = '[{\"op\": \"remove\", \"path\": \"/nodeName\"}]'",
            PatchFiles::new(),
        ),
        (
            "json patch that is not a list of operations",
            "patch_type = \"json\"\npatch = '{\"op\": \"add\"}'",
            PatchFiles::new(),
        ),
        (
            "merge patch giving a wrong type",
            "patch_type = \"merge\"\npatch = '{\"containers\": \"none\"}'",
            PatchFiles::new(),
        ),
        (
            "strategic patch with an invalid profile type",
            "patch = '{\"securityContext\": {\"seccompProfile\": {\"type\": \"Bogus\"}}}'",
            PatchFiles::new(),
        ),
        (
            "strategic patch with localhost but no profile",
            "patch = '{\"containers\": [{\"name\": \"helper\", \"securityContext\": {\"appArmorProfile\": {\"type\": \"Localhost\"}}}]}'",
            PatchFiles::new(),
        ),
    ];
    let mut report = String::new();
    for (name, entry, files) in cases {
        let outcome = patch_error(entry, &files);
        assert_ne!(outcome, "built", "{name} must fail");
        report.push_str(&format!("{name}:\n  {outcome}\n"));
    }
    assert_snapshot!(report);
}

// --- the example config ------------------------------------------------------------------------------

#[test]
fn the_example_config_renders_the_full_pod_for_the_newest_version_and_1_29() {
    let case = example_config();
    let (loaded, built) = case.render(LATEST);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    assert_snapshot!("example_config_latest", pod_snapshot(&loaded, &built));
    let (loaded, built) = case.render(29);
    assert_snapshot!("example_config_1_29", pod_snapshot(&loaded, &built));
}

#[test]
fn pod_names_are_dns_labels_and_the_same_input_renders_the_same_pod() {
    for case in corpus() {
        let (_, a) = case.render(LATEST);
        let (_, b) = case.render(LATEST);
        assert_eq!(pod_text(&a.pod), pod_text(&b.pod), "{} is not deterministic", case.name);
        let name = a.pod.metadata.name.clone().unwrap_or_default();
        assert!(podrunner_executor_k8s::names::is_dns1123_label(&name), "{name}");
    }
}

#[test]
fn pod_level_resources_are_left_out_before_1_32() {
    let loaded = config(&format!(
        "{RUNNER}[runners.kubernetes]\nimage = \"alpine\"\npod_cpu_limit = \"2\"\npod_memory_request = \"1Gi\"\n"
    ));
    let job = job(JOB_NO_SERVICE);
    let facts = |m| ClusterFacts { kubernetes_minor: m, helper_os: HelperOs::Linux };
    let new = try_render_on(&loaded, &job, facts(32), &PatchFiles::new()).expect("builds");
    assert_eq!(value_of(&new.pod)["spec"]["resources"]["limits"]["cpu"], "2");
    let old = try_render_on(&loaded, &job, facts(31), &PatchFiles::new()).expect("builds");
    assert!(value_of(&old.pod)["spec"].get("resources").is_none());
    assert!(old.job_log.iter().any(|l| l.contains("pod-level resources")));
}

// --- metadata, pull policies and allow-lists ------------------------------------------------

#[test]
fn user_labels_cannot_use_runner_gitlab_com_keys_and_values_are_sanitised() {
    let loaded = config(&format!(
        "{RUNNER}[runners.kubernetes]\nimage = \"alpine\"\n[runners.kubernetes.pod_labels]\n\"manager.runner.gitlab.com/foo\" = \"x\"\n\"RuNnEr.gitlab.com/y\" = \"x\"\n\"team\" = \"plat form!\"\n[runners.kubernetes.pod_annotations]\n\"job.runner.gitlab.com/name\" = \"replaced\"\n"
    ));
    let built = render(&loaded, &job(JOB_ONE_SERVICE), LATEST);
    let labels = built.pod.metadata.labels.as_ref().expect("labels");
    assert!(!labels.contains_key("manager.runner.gitlab.com/foo"));
    assert!(!labels.contains_key("RuNnEr.gitlab.com/y"));
    assert_eq!(labels["team"], "plat_form");
    assert_eq!(labels["manager.runner.gitlab.com/name"], "myRunner");
    // Annotations from the config are applied on top of the defaults and may replace them.
    let annotations = built.pod.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(annotations["job.runner.gitlab.com/name"], "replaced");
}

#[test]
fn a_pull_policy_outside_the_allowed_ones_is_refused_with_upstreams_message() {
    let loaded = config(&format!(
        "{RUNNER}[runners.kubernetes]\nimage = \"alpine\"\nallowed_pull_policies = [\"if-not-present\"]\n"
    ));
    let job =
        job(r#"{"id": 1, "token": "t", "image": {"name": "alpine", "pull_policy": "always"}}"#);
    let error = try_render(&loaded, &job, LATEST, &PatchFiles::new()).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "pull_policy ([Always]) defined in GitLab pipeline config is not one of the allowed_pull_policies ([IfNotPresent])"
    );
    assert_eq!(error.kind(), "runner_configuration_error");
}

#[test]
fn a_job_pull_policy_is_read_in_gitlab_runners_spelling() {
    let loaded = config(&format!("{RUNNER}[runners.kubernetes]\nimage = \"alpine\"\n"));
    let job_with = |policy: &str| {
        job(&format!(
            r#"{{"id": 1, "token": "t", "image": {{"name": "alpine", "pull_policy": "{policy}"}}}}"#
        ))
    };
    let built = render(&loaded, &job_with("if-not-present"), LATEST);
    let build = &built.pod.spec.as_ref().expect("spec").containers[0];
    assert_eq!(build.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let error = try_render(&loaded, &job_with("IfNotPresent"), LATEST, &PatchFiles::new())
        .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "unsupported pull_policy \"IfNotPresent\": expected always, if-not-present or never"
    );
}

#[test]
fn images_and_services_outside_the_allow_lists_are_refused() {
    let loaded = config(&format!(
        "{RUNNER}[runners.kubernetes]\nimage = \"alpine\"\nallowed_images = [\"registry.example.com/**\"]\nallowed_services = [\"postgres:*\"]\n"
    ));
    let allowed = job(
        r#"{"id": 1, "token": "t", "image": {"name": "registry.example.com/ci/rust:1"}, "services": [{"name": "postgres:16"}]}"#,
    );
    assert!(try_render(&loaded, &allowed, LATEST, &PatchFiles::new()).is_ok());
    let image = job(r#"{"id": 1, "token": "t", "image": {"name": "docker.io/evil:1"}}"#);
    let error = try_render(&loaded, &image, LATEST, &PatchFiles::new()).expect_err("refused");
    assert!(error.to_string().contains("is not present on the list of allowed images"), "{error}");
    let service = job(r#"{"id": 1, "token": "t", "services": [{"name": "redis:7"}]}"#);
    let error = try_render(&loaded, &service, LATEST, &PatchFiles::new()).expect_err("refused");
    assert!(
        error.to_string().contains("is not present on the list of allowed services"),
        "{error}"
    );
}

/// Values known only per job are checked, after expansion, with the loader's rules: the job
/// fails before anything is created, naming the value, the pod field and where it comes from.
#[test]
fn per_job_values_the_api_would_refuse_fail_the_job_with_the_loaders_rule() {
    let loaded = config(&format!(
        "{RUNNER}[runners.kubernetes]\nimage = \"alpine\"\nnamespace_overwrite_allowed = \".*\"\n"
    ));
    let with_vars = |vars: &str, image: &str| {
        job(&format!(
            r#"{{"id": 1, "token": "t", "image": {{"name": "{image}"}}, "variables": [{vars}]}}"#
        ))
    };
    let overwrite =
        r#"{"key": "KUBERNETES_NAMESPACE_OVERWRITE", "value": "CI_Jobs", "public": true}"#;
    let error = try_render(&loaded, &with_vars(overwrite, "alpine"), LATEST, &PatchFiles::new())
        .expect_err("refused");
    assert!(error.is_configuration());
    assert_eq!(
        error.to_string(),
        "a namespace must be at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit; got `CI_Jobs` (in the pod's metadata.namespace, from namespace or KUBERNETES_NAMESPACE_OVERWRITE)"
    );
    let fine = r#"{"key": "KUBERNETES_NAMESPACE_OVERWRITE", "value": "ci-jobs", "public": true}"#;
    render(&loaded, &with_vars(fine, "alpine"), LATEST);

    let registry =
        r#"{"key": "REGISTRY", "value": "Registry.Example.com:5000/Team", "public": true}"#;
    let error =
        try_render(&loaded, &with_vars(registry, "$REGISTRY/app:1"), LATEST, &PatchFiles::new())
            .expect_err("refused");
    assert!(
        error
            .to_string()
            .starts_with("the image of container \"build\" must be an image reference"),
        "{error}"
    );
    assert!(error.to_string().contains("got `Registry.Example.com:5000/Team/app:1`"), "{error}");
}
