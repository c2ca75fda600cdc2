//! Loading behaviour: the feature request's examples and test cases, every diagnostic rule with its
//! exact location and severity, gitlab-runner's value quirks, and the documentation's examples.

use podrunner_config::{
    Diagnostic, LoadOptions, Loaded, Report, SecurityProfile, Severity, load_str,
    model::{ContainerSecurityContext, KubernetesConfig, PodSecurityContext},
};

fn load(text: &str) -> Loaded {
    load_str(text, LoadOptions::default())
}

/// The first runner's Kubernetes settings of a file that must load.
#[track_caller]
fn kubernetes(text: &str) -> KubernetesConfig {
    let loaded = load(text);
    let config =
        loaded.config.unwrap_or_else(|| panic!("config did not load: {:#?}", loaded.diagnostics));
    config.runners[0].kubernetes.clone().expect("runner has kubernetes settings")
}

/// Wraps security-context tables in a kubernetes runner.
fn runner(body: &str) -> String {
    format!("[[runners]]\nname = \"r\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\n{body}")
}

/// (severity, line, column, key path, message) of each diagnostic.
fn summary(text: &str, loaded: &Loaded) -> Vec<(Severity, usize, usize, String, String)> {
    let report = Report { file: "config.toml", text, diagnostics: &loaded.diagnostics };
    loaded
        .diagnostics
        .iter()
        .map(|d: &Diagnostic| {
            let pos = report.position(d).expect("diagnostic has a location");
            (d.severity, pos.line, pos.column, d.key_path.to_string(), d.message.clone())
        })
        .collect()
}

/// Asserts exactly one diagnostic with this severity, position and key path, whose message
/// contains every fragment.
#[track_caller]
fn check_one(
    text: &str,
    severity: Severity,
    line: usize,
    column: usize,
    key_path: &str,
    fragments: &[&str],
) -> Loaded {
    let loaded = load(text);
    let got = summary(text, &loaded);
    assert_eq!(got.len(), 1, "expected one diagnostic, got {got:#?}");
    let (s, l, c, p, m) = &got[0];
    assert_eq!((*s, *l, *c, p.as_str()), (severity, line, column, key_path), "diagnostic: {m}");
    for fragment in fragments {
        assert!(m.contains(fragment), "message {m:?} lacks {fragment:?}");
    }
    loaded
}

// --- The feature request's example configs -------------------------------------------------

#[test]
fn rootless_buildkit_example_loads_cleanly_with_unconfined_profiles() {
    let text = r#"
[[runners]]
executor = "kubernetes"
[runners.kubernetes]
[runners.kubernetes.build_container_security_context]
app_armor_profile_type = "Unconfined"
seccomp_profile_type = "Unconfined"
"#;
    assert!(load(text).diagnostics.is_empty());
    let build = kubernetes(text).build_container_security_context;
    assert_eq!(build.shared.app_armor, Some(SecurityProfile::Unconfined));
    assert_eq!(build.shared.seccomp, Some(SecurityProfile::Unconfined));
}

#[test]
fn aks_compliance_example_sets_runtime_default_at_pod_level() {
    let text = "[[runners]]\nexecutor = \"kubernetes\"\n[runners.kubernetes]\n[runners.kubernetes.pod_security_context]\nseccomp_profile_type = \"RuntimeDefault\"\n";
    assert!(load(text).diagnostics.is_empty());
    assert_eq!(
        kubernetes(text).pod_security_context.shared.seccomp,
        Some(SecurityProfile::RuntimeDefault)
    );
}

#[test]
fn custom_seccomp_profile_example_keeps_the_relative_path() {
    let text = runner(
        "[runners.kubernetes.build_container_security_context]\nseccomp_profile_type = \"Localhost\"\nseccomp_profile_localhost_profile = \"profiles/my-profile.json\"\n",
    );
    assert!(load(&text).diagnostics.is_empty());
    assert_eq!(
        kubernetes(&text).build_container_security_context.shared.seccomp,
        Some(SecurityProfile::Localhost("profiles/my-profile.json".into()))
    );
}

// --- Both forms, all five tables ------------------------------------------------------------

const TABLES: [&str; 5] = [
    "pod_security_context",
    "build_container_security_context",
    "helper_container_security_context",
    "service_container_security_context",
    "init_permissions_container_security_context",
];

fn profiles_of(
    k: &KubernetesConfig,
    table: &str,
) -> (Option<SecurityProfile>, Option<SecurityProfile>) {
    let c = |c: &ContainerSecurityContext| (c.shared.seccomp.clone(), c.shared.app_armor.clone());
    let p = |p: &PodSecurityContext| (p.shared.seccomp.clone(), p.shared.app_armor.clone());
    match table {
        "pod_security_context" => p(&k.pod_security_context),
        "build_container_security_context" => c(&k.build_container_security_context),
        "helper_container_security_context" => c(&k.helper_container_security_context),
        "service_container_security_context" => c(&k.service_container_security_context),
        _ => c(&k.init_permissions_container_security_context),
    }
}

#[test]
fn flat_keys_and_nested_tables_give_the_same_profiles_in_every_table() {
    let cases = [
        ("Unconfined", None, Some(SecurityProfile::Unconfined)),
        ("RuntimeDefault", None, Some(SecurityProfile::RuntimeDefault)),
        (
            "Localhost",
            Some("profiles/p.json"),
            Some(SecurityProfile::Localhost("profiles/p.json".into())),
        ),
    ];
    for table in TABLES {
        for (type_, localhost, expected) in &cases {
            let apparmor_local = localhost.map(|_| "my-profile");
            let flat = format!(
                "[runners.kubernetes.{table}]\nseccomp_profile_type = {type_:?}\n{}app_armor_profile_type = {type_:?}\n{}",
                localhost
                    .map(|l| format!("seccomp_profile_localhost_profile = {l:?}\n"))
                    .unwrap_or_default(),
                apparmor_local
                    .map(|l| format!("app_armor_profile_localhost_profile = {l:?}\n"))
                    .unwrap_or_default(),
            );
            let nested = format!(
                "[runners.kubernetes.{table}]\nseccomp_profile = {{ type = {type_:?}{} }}\napp_armor_profile = {{ type = {type_:?}{} }}\n",
                localhost.map(|l| format!(", localhost_profile = {l:?}")).unwrap_or_default(),
                apparmor_local.map(|l| format!(", localhost_profile = {l:?}")).unwrap_or_default(),
            );
            let expected_apparmor = match expected {
                Some(SecurityProfile::Localhost(_)) => {
                    Some(SecurityProfile::Localhost("my-profile".into()))
                }
                other => other.clone(),
            };
            for text in [runner(&flat), runner(&nested)] {
                assert!(
                    load(&text).diagnostics.is_empty(),
                    "{text}: {:#?}",
                    load(&text).diagnostics
                );
                assert_eq!(
                    profiles_of(&kubernetes(&text), table),
                    (expected.clone(), expected_apparmor.clone()),
                    "{text}"
                );
            }
        }
    }
}

#[test]
fn an_empty_type_omits_the_profile_without_a_diagnostic() {
    let text = runner(
        "[runners.kubernetes.build_container_security_context]\nseccomp_profile_type = \"\"\napp_armor_profile = { type = \"\" }\n",
    );
    assert!(load(&text).diagnostics.is_empty());
    assert_eq!(profiles_of(&kubernetes(&text), "build_container_security_context"), (None, None));
}

// --- The feature request's test cases as diagnostics ---------------------------------------

#[test]
fn invalid_profile_type_is_a_warning_at_the_value_with_a_spelling_suggestion() {
    // line 6 is the `seccomp_profile_type` line of this document
    let text = runner(
        "[runners.kubernetes.build_container_security_context]\nseccomp_profile_type = \"runtimedefault\"\n",
    );
    let loaded = check_one(
        &text,
        Severity::Warning,
        6,
        24,
        "runners[0].kubernetes.build_container_security_context.seccomp_profile_type",
        &[
            "invalid seccomp profile type \"runtimedefault\"",
            "RuntimeDefault, Localhost, Unconfined",
            "did you mean \"RuntimeDefault\"?",
            "the seccomp profile is left out, so the container runs with the pod's profile if one is set, else with the node's default (Unconfined unless the kubelet runs with --seccomp-default)",
            "`--strict` refuses this config",
        ],
    );
    let k = loaded.config.expect("warnings do not stop loading").runners[0]
        .kubernetes
        .clone()
        .expect("kubernetes");
    assert_eq!(k.build_container_security_context.shared.seccomp, None);
}

#[test]
fn invalid_profile_type_far_from_any_valid_one_gets_no_suggestion() {
    let text = runner(
        "[runners.kubernetes.pod_security_context]\napp_armor_profile = { type = \"BadValue\" }\n",
    );
    let loaded = check_one(
        &text,
        Severity::Warning,
        6,
        30,
        "runners[0].kubernetes.pod_security_context.app_armor_profile.type",
        &[
            "invalid AppArmor profile type \"BadValue\"",
            "containers without their own AppArmor profile run with the node's default",
        ],
    );
    assert!(!loaded.diagnostics[0].message.contains("did you mean"));
}

#[test]
fn localhost_without_a_profile_is_a_warning_and_the_profile_is_left_out() {
    let text = runner(
        "[runners.kubernetes.helper_container_security_context]\nseccomp_profile_type = \"Localhost\"\n",
    );
    let loaded = check_one(
        &text,
        Severity::Warning,
        6,
        24,
        "runners[0].kubernetes.helper_container_security_context.seccomp_profile_type",
        &[
            "Localhost but no localhost profile is set",
            "left out, so the container runs with the pod's profile if one is set, else with the node's default (Unconfined",
            "`--strict` refuses this config",
        ],
    );
    let k = loaded.config.expect("loads").runners[0].kubernetes.clone().expect("kubernetes");
    assert_eq!(k.helper_container_security_context.shared.seccomp, None);
}

#[test]
fn a_localhost_profile_with_another_type_is_a_warning_that_it_is_ignored() {
    let text = runner(
        "[runners.kubernetes.service_container_security_context]\napp_armor_profile_type = \"RuntimeDefault\"\napp_armor_profile_localhost_profile = \"x\"\n",
    );
    check_one(
        &text,
        Severity::Warning,
        7,
        39,
        "runners[0].kubernetes.service_container_security_context.app_armor_profile_localhost_profile",
        &["ignored because the profile type is RuntimeDefault"],
    );
}

#[test]
fn an_absolute_seccomp_localhost_profile_is_an_error() {
    let text = runner(
        "[runners.kubernetes.init_permissions_container_security_context]\nseccomp_profile = { type = \"Localhost\", localhost_profile = \"/var/lib/kubelet/seccomp/x.json\" }\n",
    );
    let loaded = check_one(
        &text,
        Severity::Error,
        6,
        61,
        "runners[0].kubernetes.init_permissions_container_security_context.seccomp_profile.localhost_profile",
        &["is absolute", "relative to the kubelet's seccomp root"],
    );
    assert!(loaded.config.is_none());
}

#[test]
fn a_seccomp_localhost_profile_leaving_the_root_is_an_error() {
    let text = runner(
        "[runners.kubernetes.pod_security_context]\nseccomp_profile_type = \"Localhost\"\nseccomp_profile_localhost_profile = \"profiles/../../etc/x.json\"\n",
    );
    check_one(
        &text,
        Severity::Error,
        7,
        37,
        "runners[0].kubernetes.pod_security_context.seccomp_profile_localhost_profile",
        &["contains \"..\""],
    );
}

#[test]
fn an_apparmor_localhost_profile_in_the_annotation_syntax_or_too_long_is_an_error() {
    let too_long = "p".repeat(4096);
    for (value, fragment) in [
        ("localhost/my-profile", "write the bare profile name \"my-profile\""),
        (too_long.as_str(), "4096 bytes long; Kubernetes allows at most 4095"),
    ] {
        let text = runner(&format!(
            "[runners.kubernetes.build_container_security_context]\napp_armor_profile_type = \"Localhost\"\napp_armor_profile_localhost_profile = {value:?}\n"
        ));
        check_one(
            &text,
            Severity::Error,
            7,
            39,
            "runners[0].kubernetes.build_container_security_context.app_armor_profile_localhost_profile",
            &[fragment],
        );
    }
}

/// Kubernetes accepts any AppArmor profile name that is not blank, padded or longer than 4095
/// bytes, and a profile declared without a name is named after its attachment path: so an
/// absolute path loads (and renders as `localhost//usr/bin/man` at 1.29); a file under
/// `/etc/apparmor.d` or a relative path is most likely a mistake and gets a warning.
#[test]
fn an_apparmor_profile_named_like_a_path_loads_with_a_warning_where_it_is_likely_a_file() {
    let cases: [(&str, Option<&str>); 4] = [
        ("/usr/bin/man", None),
        ("parent//child", None),
        ("/etc/apparmor.d/buildkit", Some("is the file a profile is loaded from, not its name")),
        ("profiles/buildkit", Some("looks like a relative file path")),
    ];
    for (value, warning) in cases {
        let text = runner(&format!(
            "[runners.kubernetes.build_container_security_context]\napp_armor_profile_type = \"Localhost\"\napp_armor_profile_localhost_profile = {value:?}\n"
        ));
        let loaded = load(&text);
        let got = summary(&text, &loaded);
        match warning {
            None => assert!(got.is_empty(), "{value}: {got:#?}"),
            Some(fragment) => {
                assert_eq!(got.len(), 1, "{value}: {got:#?}");
                assert_eq!((got[0].0, got[0].1, got[0].2), (Severity::Warning, 7, 39), "{value}");
                assert!(got[0].4.contains(fragment), "{value}: {}", got[0].4);
            }
        }
        let k = loaded.config.expect("loads").runners[0].kubernetes.clone().expect("kubernetes");
        assert_eq!(
            k.build_container_security_context.shared.app_armor,
            Some(SecurityProfile::Localhost(value.to_owned())),
            "{value}"
        );
    }
}

#[test]
fn a_misspelt_security_key_is_a_warning_with_a_suggestion_at_the_key() {
    let text = runner(
        "[runners.kubernetes.build_container_security_context]\nseccomp_profle_type = \"Unconfined\"\n",
    );
    check_one(
        &text,
        Severity::Warning,
        6,
        1,
        "runners[0].kubernetes.build_container_security_context.seccomp_profle_type",
        &[
            "unknown key \"seccomp_profle_type\" in [runners.kubernetes.build_container_security_context]",
            "did you mean \"seccomp_profile_type\"?",
            "a misspelt security setting weakens the pod",
            "`--strict` refuses this config",
        ],
    );
}

#[test]
fn camel_case_keys_suggest_the_snake_case_key() {
    let text = runner("allowPrivilegeEscalation = false\n");
    check_one(
        &text,
        Severity::Warning,
        5,
        1,
        "runners[0].kubernetes.allowPrivilegeEscalation",
        &["did you mean \"allow_privilege_escalation\"?"],
    );
}

#[test]
fn the_removed_termination_grace_period_key_names_its_replacement() {
    let text = runner("terminationGracePeriodSeconds = 10\n");
    check_one(
        &text,
        Severity::Warning,
        5,
        1,
        "runners[0].kubernetes.terminationGracePeriodSeconds",
        &["use \"pod_termination_grace_period_seconds\""],
    );
}

#[test]
fn both_forms_with_different_values_is_an_error_naming_both_locations() {
    let text = runner(
        "[runners.kubernetes.build_container_security_context]\nseccomp_profile = { type = \"Unconfined\" }\nseccomp_profile_type = \"RuntimeDefault\"\n",
    );
    let loaded = check_one(
        &text,
        Severity::Error,
        7,
        1,
        "runners[0].kubernetes.build_container_security_context.seccomp_profile_type",
        &[
            "set twice with different values",
            "runners[0].kubernetes.build_container_security_context.seccomp_profile.type (line 6)",
            "runners[0].kubernetes.build_container_security_context.seccomp_profile_type (line 7)",
        ],
    );
    assert!(loaded.config.is_none());
}

#[test]
fn conflicting_types_still_check_the_localhost_profile() {
    let text = runner(
        "[runners.kubernetes.helper_container_security_context]\nseccomp_profile = { type = \"RuntimeDefault\" }\nseccomp_profile_type = \"Localhost\"\nseccomp_profile_localhost_profile = \"/etc/x.json\"\n",
    );
    let loaded = load(&text);
    let found = summary(&text, &loaded);
    assert_eq!(found.len(), 2, "{found:#?}");
    let context = "runners[0].kubernetes.helper_container_security_context";
    assert_eq!(
        (found[0].0, found[0].1, found[0].3.as_str()),
        (Severity::Error, 7, &*format!("{context}.seccomp_profile_type"))
    );
    assert!(found[0].4.contains("set twice with different values"), "{}", found[0].4);
    assert_eq!(
        (found[1].0, found[1].1, found[1].2, found[1].3.as_str()),
        (Severity::Error, 8, 37, &*format!("{context}.seccomp_profile_localhost_profile"))
    );
    assert!(found[1].4.contains("\"/etc/x.json\""), "{}", found[1].4);
}

#[test]
fn both_forms_with_identical_values_is_a_warning() {
    let text = runner(
        "[runners.kubernetes.pod_security_context]\napp_armor_profile = { type = \"Unconfined\" }\napp_armor_profile_type = \"Unconfined\"\n",
    );
    let loaded = check_one(
        &text,
        Severity::Warning,
        7,
        1,
        "runners[0].kubernetes.pod_security_context.app_armor_profile_type",
        &["set twice", "same value \"Unconfined\""],
    );
    assert_eq!(
        loaded.config.expect("loads").runners[0].kubernetes.as_ref().map(|k| k
            .pod_security_context
            .shared
            .app_armor
            .clone()),
        Some(Some(SecurityProfile::Unconfined))
    );
}

#[test]
fn a_profile_on_a_privileged_container_is_a_warning() {
    let text = runner(
        "[runners.kubernetes.build_container_security_context]\nprivileged = true\nseccomp_profile_type = \"RuntimeDefault\"\n",
    );
    check_one(
        &text,
        Severity::Warning,
        6,
        14,
        "runners[0].kubernetes.build_container_security_context.privileged",
        &["runtime ignores its seccomp and AppArmor profiles"],
    );
}

#[test]
fn strict_mode_turns_every_warning_into_an_error() {
    let text = runner(
        "[runners.kubernetes.build_container_security_context]\nseccomp_profile_type = \"Localhost\"\nnamespce = \"x\"\n",
    );
    let lenient = load(&text);
    assert!(lenient.config.is_some());
    assert_eq!(lenient.diagnostics.iter().filter(|d| d.severity == Severity::Warning).count(), 2);
    let strict = load_str(&text, LoadOptions { strict: true });
    assert!(strict.config.is_none());
    assert!(strict.diagnostics.iter().all(|d| d.severity == Severity::Error));
    assert_eq!(strict.diagnostics.len(), 2);
}

// --- Types and syntax ------------------------------------------------------------------------

#[test]
fn every_wrong_type_is_reported_not_just_the_first() {
    let text = "concurrent = \"four\"\n[[runners]]\nlimit = \"two\"\n[runners.kubernetes]\nprivileged = \"yes\"\ncap_add = [\"A\", 5]\n";
    let loaded = load(text);
    let got = summary(text, &loaded);
    let positions: Vec<(Severity, usize, usize, &str)> =
        got.iter().map(|(s, l, c, p, _)| (*s, *l, *c, p.as_str())).collect();
    assert_eq!(
        positions,
        [
            (Severity::Error, 1, 14, "concurrent"),
            (Severity::Error, 3, 9, "runners[0].limit"),
            (Severity::Error, 5, 14, "runners[0].kubernetes.privileged"),
            (Severity::Error, 6, 17, "runners[0].kubernetes.cap_add[1]"),
        ]
    );
    assert!(got[0].4.contains("wrong type for key \"concurrent\""), "{}", got[0].4);
    assert!(got[0].4.contains("expected an integer"), "{}", got[0].4);
    assert!(loaded.config.is_none());
}

#[test]
fn malformed_toml_is_an_error_with_its_location() {
    let text = "[[runners]]\nname = \"a\nexecutor = \"kubernetes\"\n";
    let loaded = load(text);
    let got = summary(text, &loaded);
    assert!(!got.is_empty());
    assert_eq!((got[0].0, got[0].1), (Severity::Error, 2));
    assert!(got[0].4.starts_with("invalid TOML"), "{}", got[0].4);
}

#[test]
fn gitlab_runner_value_quirks_are_accepted() {
    let text = r#"
connection_max_age = "15m0s"
[[runners]]
executor = "kubernetes"
token_obtained_at = 0001-01-01T00:00:00Z
token_expires_at = "0001-01-01T00:00:00Z"
unhealthy_interval = 3600000000000
prepare_timeout = "1h30m"
[runners.kubernetes]
pull_policy = "if-not-present"
cleanup_resources_timeout = "500ms"
[[runners]]
executor = "kubernetes"
[runners.kubernetes]
pull_policy = ["always", "if-not-present"]
"#;
    let loaded = load(text);
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let config = loaded.config.expect("loads");
    let first = config.runners[0].kubernetes.as_ref().expect("kubernetes");
    assert_eq!(first.pull_policy, [podrunner_config::model::PullPolicy::IfNotPresent]);
    assert_eq!(first.cleanup_resources_timeout, std::time::Duration::from_millis(500));
    assert_eq!(
        config.runners[0].raw.prepare_timeout.map(|d| d.to_string()),
        Some("1h30m0s".into())
    );
    assert_eq!(config.runners[1].kubernetes.as_ref().map(|k| k.pull_policy.len()), Some(2));
}

#[test]
fn a_pull_policy_of_another_type_is_an_error() {
    let text = runner("pull_policy = 5\n");
    check_one(
        &text,
        Severity::Error,
        5,
        15,
        "runners[0].kubernetes.pull_policy",
        &["a string or an array of strings"],
    );
    let text = runner("pull_policy = \"allways\"\n");
    check_one(
        &text,
        Severity::Error,
        5,
        15,
        "runners[0].kubernetes.pull_policy",
        &["invalid pull policy \"allways\"", "did you mean \"always\"?"],
    );
}

#[test]
fn a_malformed_duration_is_an_error_at_its_value() {
    let text = runner("cleanup_resources_timeout = \"5 minutes\"\n");
    check_one(
        &text,
        Severity::Error,
        5,
        29,
        "runners[0].kubernetes.cleanup_resources_timeout",
        &["invalid duration \"5 minutes\""],
    );
}

#[test]
fn an_nfs_volume_names_every_missing_field() {
    let text = runner("[[runners.kubernetes.volumes.nfs]]\nread_only = true\n");
    check_one(
        &text,
        Severity::Error,
        5,
        1,
        "runners[0].kubernetes.volumes.nfs[0]",
        &["nfs volume: missing required fields: name, mount_path, server, path"],
    );
}

#[test]
fn tri_state_booleans_keep_unset_apart_from_false() {
    let k = kubernetes(&runner("privileged = false\n"));
    assert_eq!((k.raw.privileged, k.raw.allow_privilege_escalation), (Some(false), None));
}

#[test]
fn full_selinux_options_are_read_for_pod_and_containers() {
    let k = kubernetes(&runner(
        "[runners.kubernetes.pod_security_context]\nselinux_type = \"spc_t\"\nselinux_level = \"s0:c1,c2\"\n[runners.kubernetes.build_container_security_context]\nselinux_user = \"system_u\"\nselinux_role = \"system_r\"\n",
    ));
    let pod = k.pod_security_context.shared.se_linux.expect("pod selinux");
    assert_eq!(
        (pod.type_.as_deref(), pod.level.as_deref(), pod.user),
        (Some("spc_t"), Some("s0:c1,c2"), None)
    );
    let build = k.build_container_security_context.shared.se_linux.expect("build selinux");
    assert_eq!(
        (build.user.as_deref(), build.role.as_deref()),
        (Some("system_u"), Some("system_r"))
    );
}

#[test]
fn invalid_quantities_and_regexes_are_errors() {
    let text = runner("cpu_limit = \"1 core\"\nnamespace_overwrite_allowed = \"ci-(\"\n");
    let loaded = load(&text);
    let got = summary(&text, &loaded);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(
        (got[0].0, got[0].1, got[0].3.as_str()),
        (Severity::Error, 5, "runners[0].kubernetes.cpu_limit")
    );
    assert_eq!(
        (got[1].0, got[1].1, got[1].3.as_str()),
        (Severity::Error, 6, "runners[0].kubernetes.namespace_overwrite_allowed")
    );
}

// --- Rendering ---------------------------------------------------------------------------------

#[test]
fn rendered_diagnostics_match_the_snapshot() {
    let text = r#"concurrent = 2
[[runners]]
name = "k8s"
executor = "kubernetes"
[runners.kubernetes]
namespce = "ci"
[runners.kubernetes.pod_security_context]
seccomp_profile_type = "runtimedefault"
[runners.kubernetes.build_container_security_context]
app_armor_profile = { type = "Localhost" }
seccomp_profile = { type = "Localhost", localhost_profile = "/abs/profile.json" }
"#;
    let loaded = load(text);
    let report = Report { file: "config.toml", text, diagnostics: &loaded.diagnostics };
    insta::assert_snapshot!("rendered_text", report.to_text());
    insta::assert_json_snapshot!("rendered_json", report.to_json());
}

#[test]
fn a_key_written_in_the_wrong_table_says_where_it_belongs() {
    let text = runner("environment = [\"FF_X=true\"]\n");
    check_one(
        &text,
        Severity::Warning,
        5,
        1,
        "runners[0].kubernetes.environment",
        &["it belongs in [runners]"],
    );
    let text = "[[runners]]\nexecutor = \"kubernetes\"\nallow_privilege_escalation = false\n";
    check_one(
        text,
        Severity::Warning,
        3,
        1,
        "runners[0].allow_privilege_escalation",
        &["it belongs in [runners.kubernetes]"],
    );
}
