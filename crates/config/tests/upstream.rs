//! Real users' files: what upstream removed or never had (renamed keys, registration options,
//! feature flags) is named with what to do, and `pod_spec` mistakes only refuse a file when its
//! patches would be applied.

use podrunner_config::{LoadOptions, Loaded, Report, Severity, load_str};

fn load(text: &str) -> Loaded {
    load_str(text, LoadOptions::default())
}

/// (severity, line, column, key path, message) of each diagnostic.
fn diagnostics(text: &str) -> Vec<(Severity, usize, usize, String, String)> {
    let loaded = load(text);
    let report = Report { file: "config.toml", text, diagnostics: &loaded.diagnostics };
    loaded
        .diagnostics
        .iter()
        .map(|d| {
            let pos = report.position(d).expect("located");
            (d.severity, pos.line, pos.column, d.key_path.to_string(), d.message.clone())
        })
        .collect()
}

/// The only diagnostic of `text`, which must be at `line:column` with this severity and contain
/// every fragment and none of `absent`.
#[track_caller]
fn only(text: &str, severity: Severity, line: usize, column: usize, fragments: &[&str]) -> String {
    let got = diagnostics(text);
    assert_eq!(got.len(), 1, "{got:#?}");
    let (s, l, c, _, message) = &got[0];
    assert_eq!((*s, *l, *c), (severity, line, column), "{message}");
    for fragment in fragments {
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    }
    message.clone()
}

fn runner(body: &str) -> String {
    format!("[[runners]]\nname = \"r\"\nexecutor = \"kubernetes\"\n{body}")
}

#[test]
fn a_removed_key_names_its_replacement_and_the_release_not_a_look_alike() {
    let cases = [
        (
            "pre_clone_script = \"echo\"\n",
            "pre_clone_script",
            &["\"pre_get_sources_script\"", "17.0"][..],
            "pre_build_script",
        ),
        (
            "post_clone_script = \"echo\"\n",
            "post_clone_script",
            &["\"post_get_sources_script\"", "17.0"][..],
            "post_build_script",
        ),
        (
            "[runners.kubernetes]\ncpus = \"2\"\n",
            "cpus",
            &["\"cpu_limit\" (and \"cpu_request\")", "9.0"][..],
            "did you mean",
        ),
        (
            "[runners.kubernetes]\nmemory = \"2Gi\"\n",
            "memory",
            &["\"memory_limit\" (and \"memory_request\")"][..],
            "did you mean",
        ),
        (
            "[runners.kubernetes]\nservice_cpus = \"1\"\n",
            "service_cpus",
            &["\"service_cpu_limit\""][..],
            "\"services\"",
        ),
        (
            "[runners.kubernetes]\nservice_memory = \"1Gi\"\n",
            "service_memory",
            &["\"service_memory_limit\""][..],
            "did you mean",
        ),
        (
            "[runners.kubernetes]\nimage_pull_policy = \"always\"\n",
            "image_pull_policy",
            &["Kubernetes spelling", "use \"pull_policy\""][..],
            "image_pull_secrets",
        ),
        (
            "[runners.cache]\nBucketName = \"b\"\n",
            "BucketName",
            &["12.0", "write it in [runners.cache.s3]"][..],
            "did you mean",
        ),
    ];
    for (body, key, fragments, absent) in cases {
        let text = runner(body);
        let got = diagnostics(&text);
        assert_eq!(got.len(), 1, "{key}: {got:#?}");
        let (severity, _, column, path, message) = &got[0];
        assert_eq!((*severity, *column), (Severity::Warning, 1), "{key}: {message}");
        assert!(path.ends_with(key), "{path}");
        assert!(
            message.contains("was removed from gitlab-runner")
                || message.contains("Kubernetes spelling"),
            "{message}"
        );
        for fragment in fragments {
            assert!(message.contains(fragment), "{key}: {message:?} lacks {fragment:?}");
        }
        assert!(!message.contains(absent), "{key}: {message:?} suggests {absent:?}");
    }
}

#[test]
fn metrics_server_at_the_top_level_names_listen_address() {
    only(
        "metrics_server = \":9252\"\n",
        Severity::Warning,
        1,
        1,
        &[
            "\"metrics_server\" in the top level was removed from gitlab-runner in 12.0",
            "use \"listen_address\"",
        ],
    );
}

#[test]
fn registration_options_say_they_are_set_in_gitlab() {
    for (key, value, flag) in [
        ("tags", "[\"k8s\"]", "--tag-list"),
        ("run_untagged", "true", "--run-untagged"),
        ("locked", "false", "--locked"),
        ("maximum_timeout", "3600", "--maximum-timeout"),
        ("access_level", "\"ref_protected\"", "--access-level"),
    ] {
        let text = runner(&format!("{key} = {value}\n"));
        let message = only(
            &text,
            Severity::Warning,
            4,
            1,
            &[
                "is a registration option, not a config.toml key",
                "set in GitLab when the runner is created",
                flag,
            ],
        );
        assert!(!message.contains("did you mean"), "{message}");
    }
    only(
        &runner("registration_token = \"GR1348941x\"\n"),
        Severity::Warning,
        4,
        1,
        &["put that token (`glrt-...`) in `token`"],
    );
}

#[test]
fn unknown_feature_flags_get_the_closest_name_in_either_place() {
    only(
        &runner("[runners.feature_flags]\nFF_USE_ADVANCED_POD_SPEC_CONFIG = true\n"),
        Severity::Warning,
        5,
        1,
        &[
            "FF_USE_ADVANCED_POD_SPEC_CONFIG is not a gitlab-runner feature flag",
            "did you mean \"FF_USE_ADVANCED_POD_SPEC_CONFIGURATION\"?",
        ],
    );
    only(
        &runner("environment = [\"FF_PRINT_POD_EVENT=true\"]\n"),
        Severity::Warning,
        4,
        16,
        &["did you mean \"FF_PRINT_POD_EVENTS\"?"],
    );
}

#[test]
fn a_removed_feature_flag_says_when_it_went() {
    only(
        &runner("[runners.feature_flags]\nFF_SKIP_NOOP_BUILD_STAGES = false\n"),
        Severity::Warning,
        5,
        1,
        &[
            "FF_SKIP_NOOP_BUILD_STAGES was removed from gitlab-runner in 19.3 and changes nothing; delete it",
        ],
    );
    only(
        &runner("environment = [\"FF_USE_NEW_BASH_EVAL_STRATEGY=true\"]\n"),
        Severity::Warning,
        4,
        16,
        &["removed from gitlab-runner in 19.3"],
    );
}

#[test]
fn a_flag_set_to_its_default_is_a_note_that_strict_leaves_alone() {
    let text = runner("[runners.feature_flags]\nFF_USE_POD_ACTIVE_DEADLINE_SECONDS = true\n");
    only(
        &text,
        Severity::Note,
        5,
        1,
        &["FF_USE_POD_ACTIVE_DEADLINE_SECONDS is on by default; this entry changes nothing"],
    );
    let strict = load_str(&text, LoadOptions { strict: true });
    assert!(strict.config.is_some(), "{:#?}", strict.diagnostics);
    assert_eq!(strict.diagnostics[0].severity, Severity::Note);
    let report = Report { file: "config.toml", text: &text, diagnostics: &strict.diagnostics };
    assert_eq!(report.summary(), "config.toml: ok, 1 note");
    assert!(
        report.to_text().contains("config.toml:5:1: note: feature flag"),
        "{}",
        report.to_text()
    );
}

#[test]
fn deprecated_unread_and_non_boolean_flags_are_warnings_that_say_why() {
    only(
        &runner("environment = [\"FF_USE_FASTZIP=false\"]\n"),
        Severity::Warning,
        4,
        16,
        &["FF_USE_FASTZIP is deprecated", "removed in gitlab-runner 19.7"],
    );
    only(
        &runner("[runners.feature_flags]\nFF_KUBERNETES_HONOR_ENTRYPOINT = true\n"),
        Severity::Warning,
        5,
        1,
        &["this runner does not read: turning it on changes nothing here"],
    );
    only(
        &runner("environment = [\"FF_USE_ADVANCED_POD_SPEC_CONFIGURATION=yes\"]\n"),
        Severity::Warning,
        4,
        16,
        &["is set to \"yes\", which is not a boolean", "it stays off"],
    );
}

const PATCH_WITHOUT_CONTENT: &str = "[[runners.kubernetes.pod_spec]]\nname = \"hostname\"\n";

/// The production file of the issue: a `pod_spec` entry with neither `patch` nor `patch_path` and
/// the flag off. Upstream ignores the entry; so does this runner, with warnings that say so.
#[test]
fn a_pod_spec_mistake_with_the_flag_off_is_a_warning_and_the_file_loads() {
    let text =
        runner(&format!("[runners.kubernetes]\nnamespace = \"ci\"\n{PATCH_WITHOUT_CONTENT}"));
    let loaded = load(&text);
    assert!(loaded.config.is_some(), "{:#?}", loaded.diagnostics);
    let got = diagnostics(&text);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got.iter().all(|d| d.0 == Severity::Warning), "{got:#?}");
    assert!(got[0].4.contains("these pod_spec patches are not applied: FF_USE_ADVANCED_POD_SPEC_CONFIGURATION is off by default; set it to true in [runners.feature_flags]"), "{}", got[0].4);
    assert!(got[1].4.contains("has neither patch nor patch_path (an error once FF_USE_ADVANCED_POD_SPEC_CONFIGURATION is on)"), "{}", got[1].4);
}

#[test]
fn a_pod_spec_mistake_with_the_flag_on_is_an_error_wherever_the_flag_is_set() {
    for flag in [
        "[runners.feature_flags]\nFF_USE_ADVANCED_POD_SPEC_CONFIGURATION = true\n",
        "environment = [\"FF_USE_ADVANCED_POD_SPEC_CONFIGURATION=true\"]\n",
    ] {
        let text = runner(&format!("{flag}[runners.kubernetes]\n{PATCH_WITHOUT_CONTENT}"));
        let loaded = load(&text);
        assert!(loaded.config.is_none(), "{flag}");
        let got = diagnostics(&text);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].0, Severity::Error);
        assert!(got[0].4.ends_with("has neither patch nor patch_path"), "{}", got[0].4);
    }
}

#[test]
fn patches_turned_off_in_the_flag_table_are_never_applied() {
    let text = runner(&format!(
        "[runners.feature_flags]\nFF_USE_ADVANCED_POD_SPEC_CONFIGURATION = false\n[runners.kubernetes]\n{PATCH_WITHOUT_CONTENT}patch = \"hostname: x\"\n"
    ));
    let got = diagnostics(&text);
    let patches: Vec<_> = got.iter().filter(|d| d.3.ends_with("pod_spec")).collect();
    assert_eq!(patches.len(), 1, "{got:#?}");
    assert!(
        patches[0].4.contains("never applied: FF_USE_ADVANCED_POD_SPEC_CONFIGURATION is false at runners[0].feature_flags.FF_USE_ADVANCED_POD_SPEC_CONFIGURATION (line 5)"),
        "{}",
        patches[0].4
    );
}

#[test]
fn the_generated_reference_lists_the_upstream_tables() {
    let reference = podrunner_config::schema::reference_markdown();
    for row in [
        "| `[runners]` | `pre_clone_script` | `pre_get_sources_script` | 17.0 |",
        "| `tags` | `--tag-list` |",
        "| `FF_USE_ADVANCED_POD_SPEC_CONFIGURATION` | off | current | yes |",
        "| `FF_SKIP_NOOP_BUILD_STAGES` | - | removed in 19.3 | no |",
    ] {
        assert!(reference.contains(row), "docs/config.md lacks {row}");
    }
}
