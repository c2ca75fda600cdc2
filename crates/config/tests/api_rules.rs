//! Values the API server or the runtime would refuse are refused at load, located, with the rule
//! in plain words; each next to its nearest valid neighbour, which loads.

use podrunner_config::{LoadOptions, Report, Severity, load_str};

fn runner(body: &str) -> String {
    format!("[[runners]]\nname = \"r\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\n{body}")
}

/// (severity, line, column, key path, message) of every diagnostic.
fn diagnostics(text: &str) -> Vec<(Severity, usize, usize, String, String)> {
    let loaded = load_str(text, LoadOptions::default());
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

/// (the TOML under `[runners.kubernetes]` with a refused value, the same with its nearest valid
/// neighbour, the key path of the diagnostic, a fragment of its message).
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "namespace = \"CI_Jobs\"",
        "namespace = \"ci-jobs\"",
        "namespace",
        "a namespace must be at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit; got `CI_Jobs`",
    ),
    (
        "namespace = \"a234567890123456789012345678901234567890123456789012345678901234567890\"",
        "namespace = \"a23456789012345678901234567890123456789012345678901234567890123\"",
        "namespace",
        "got `a2345",
    ),
    (
        "service_account = \"ci runner\"",
        "service_account = \"ci-runner\"",
        "service_account",
        "a service account name must be",
    ),
    (
        "priority_class_name = \"High\"",
        "priority_class_name = \"high\"",
        "priority_class_name",
        "a priority class name must be",
    ),
    (
        "runtime_class_name = \"gvisor_1\"",
        "runtime_class_name = \"gvisor-1\"",
        "runtime_class_name",
        "a runtime class name must be",
    ),
    (
        "image_pull_secrets = [\"Registry\"]",
        "image_pull_secrets = [\"registry\"]",
        "image_pull_secrets[0]",
        "an image pull secret name must be",
    ),
    (
        "image = \"Alpine:3.20\"",
        "image = \"alpine:3.20\"",
        "image",
        "the build image must be an image reference",
    ),
    (
        "helper_image = \"helper: latest\"",
        "helper_image = \"helper:latest\"",
        "helper_image",
        "the helper image must be an image reference",
    ),
    (
        "[[runners.kubernetes.services]]\nname = \"postgres:16 \"",
        "[[runners.kubernetes.services]]\nname = \"postgres:16\"",
        "services[0].name",
        "a service image must be",
    ),
    (
        "[runners.kubernetes.node_selector]\n\"kubernetes.io/os name\" = \"linux\"",
        "[runners.kubernetes.node_selector]\n\"kubernetes.io/os\" = \"linux\"",
        "node_selector[\"kubernetes.io/os name\"]",
        "a node selector key must be",
    ),
    (
        "[runners.kubernetes.node_selector]\npool = \"ci runners\"",
        "[runners.kubernetes.node_selector]\npool = \"ci-runners\"",
        "node_selector.pool",
        "a node selector value must be",
    ),
    (
        "[runners.kubernetes.pod_labels]\n\"-team\" = \"a\"",
        "[runners.kubernetes.pod_labels]\n\"team\" = \"a\"",
        "pod_labels.-team",
        "a pod label key must be",
    ),
    (
        "[runners.kubernetes.pod_annotations]\n\"example.com/a/b\" = \"x\"",
        "[runners.kubernetes.pod_annotations]\n\"example.com/a-b\" = \"x\"",
        "pod_annotations[\"example.com/a/b\"]",
        "a pod annotation key must be",
    ),
    (
        "[runners.kubernetes.node_tolerations]\n\"gpu=true\" = \"NoScheduleNow\"",
        "[runners.kubernetes.node_tolerations]\n\"gpu=true\" = \"NoSchedule\"",
        "node_tolerations[\"gpu=true\"]",
        "a toleration effect must be NoSchedule, PreferNoSchedule, NoExecute or empty",
    ),
    (
        "[runners.kubernetes.node_tolerations]\n\"gpu type\" = \"NoSchedule\"",
        "[runners.kubernetes.node_tolerations]\n\"gpu-type\" = \"NoSchedule\"",
        "node_tolerations[\"gpu type\"]",
        "a toleration must be",
    ),
    (
        "[[runners.kubernetes.host_aliases]]\nip = \"999.1.1.1\"\nhostnames = [\"db\"]",
        "[[runners.kubernetes.host_aliases]]\nip = \"99.1.1.1\"\nhostnames = [\"db\"]",
        "host_aliases[0].ip",
        "a host alias IP must be an IPv4 or IPv6 address; got `999.1.1.1`",
    ),
    (
        "[[runners.kubernetes.host_aliases]]\nip = \"10.0.0.1\"\nhostnames = [\"db_1\"]",
        "[[runners.kubernetes.host_aliases]]\nip = \"10.0.0.1\"\nhostnames = [\"db-1\"]",
        "host_aliases[0].hostnames[0]",
        "a host alias hostname must be",
    ),
    (
        "[runners.kubernetes.dns_config]\nnameservers = [\"10.0.0.256\"]",
        "[runners.kubernetes.dns_config]\nnameservers = [\"10.0.0.255\"]",
        "dns_config.nameservers[0]",
        "a DNS name server must be an IPv4 or IPv6 address",
    ),
    (
        "[runners.kubernetes.dns_config]\nsearches = [\"svc..cluster.local\"]",
        "[runners.kubernetes.dns_config]\nsearches = [\"svc.cluster.local\"]",
        "dns_config.searches[0]",
        "a DNS search domain must be",
    ),
    (
        "cap_add = [\"NET_FOO\"]",
        "cap_add = [\"NET_RAW\"]",
        "cap_add[0]",
        "a capability must be a Linux capability",
    ),
    (
        "[runners.kubernetes.build_container_security_context.capabilities]\ndrop = [\"EVERYTHING\"]",
        "[runners.kubernetes.build_container_security_context.capabilities]\ndrop = [\"ALL\"]",
        "build_container_security_context.capabilities.drop[0]",
        "a capability must be",
    ),
    (
        "[runners.kubernetes.pod_security_context]\nrun_as_user = -1",
        "[runners.kubernetes.pod_security_context]\nrun_as_user = 0",
        "pod_security_context.run_as_user",
        "a user id must be a whole number from 0 to 2147483647; got `-1`",
    ),
    (
        "[runners.kubernetes.pod_security_context]\nrun_as_group = 4294967296",
        "[runners.kubernetes.pod_security_context]\nrun_as_group = 2147483647",
        "pod_security_context.run_as_group",
        "a group id must be",
    ),
    (
        "[runners.kubernetes.pod_security_context]\nfs_group = -1",
        "[runners.kubernetes.pod_security_context]\nfs_group = 1",
        "pod_security_context.fs_group",
        "an fsGroup must be",
    ),
    (
        "[runners.kubernetes.pod_security_context]\nsupplemental_groups = [2147483648]",
        "[runners.kubernetes.pod_security_context]\nsupplemental_groups = [2147483647]",
        "pod_security_context.supplemental_groups[0]",
        "a supplemental group must be",
    ),
    (
        "[runners.kubernetes.helper_container_security_context]\nrun_as_user = -5",
        "[runners.kubernetes.helper_container_security_context]\nrun_as_user = 5",
        "helper_container_security_context.run_as_user",
        "a user id must be",
    ),
    (
        "[[runners.kubernetes.volumes.secret]]\nname = \"TLS\"\nmount_path = \"/tls\"",
        "[[runners.kubernetes.volumes.secret]]\nname = \"tls\"\nmount_path = \"/tls\"",
        "volumes.secret[0].name",
        "a Secret's name must be",
    ),
    (
        "[[runners.kubernetes.volumes.pvc]]\nname = \"cache_pvc\"\nmount_path = \"/cache\"",
        "[[runners.kubernetes.volumes.pvc]]\nname = \"cache-pvc\"\nmount_path = \"/cache\"",
        "volumes.pvc[0].name",
        "a persistent volume claim's name must be",
    ),
    (
        "[[runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms]]\n[[runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms.match_expressions]]\nkey = \"zone\"\noperator = \"in\"\nvalues = [\"a\"]",
        "[[runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms]]\n[[runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms.match_expressions]]\nkey = \"zone\"\noperator = \"In\"\nvalues = [\"a\"]",
        "match_expressions[0].operator",
        "a node affinity operator must be In, NotIn, Exists, DoesNotExist, Gt or Lt",
    ),
    (
        "[[runners.kubernetes.affinity.pod_affinity.required_during_scheduling_ignored_during_execution]]\ntopology_key = \"zone name\"",
        "[[runners.kubernetes.affinity.pod_affinity.required_during_scheduling_ignored_during_execution]]\ntopology_key = \"topology.kubernetes.io/zone\"",
        "topology_key",
        "a topology key must be",
    ),
    (
        "[[runners.kubernetes.affinity.pod_affinity.required_during_scheduling_ignored_during_execution]]\ntopology_key = \"zone\"\n[runners.kubernetes.affinity.pod_affinity.required_during_scheduling_ignored_during_execution.label_selector.match_labels]\napp = \"ci job\"",
        "[[runners.kubernetes.affinity.pod_affinity.required_during_scheduling_ignored_during_execution]]\ntopology_key = \"zone\"\n[runners.kubernetes.affinity.pod_affinity.required_during_scheduling_ignored_during_execution.label_selector.match_labels]\napp = \"ci-job\"",
        "match_labels.app",
        "a label selector value must be",
    ),
];

#[test]
fn every_refused_value_is_a_located_error_and_its_valid_neighbour_loads() {
    for (bad, good, path, fragment) in CASES {
        let text = runner(bad);
        let got = diagnostics(&text);
        let errors: Vec<_> = got.iter().filter(|d| d.0 == Severity::Error).collect();
        assert_eq!(errors.len(), 1, "{bad}: {got:#?}");
        let (_, line, column, key_path, message) = errors[0];
        assert!(key_path.ends_with(path), "{bad}: at {key_path}, expected {path}");
        assert!(message.contains(fragment), "{bad}: {message:?} lacks {fragment:?}");
        assert!(*line >= 5 && *column >= 1, "{bad}: {line}:{column}");
        assert!(load_str(&text, LoadOptions::default()).config.is_none(), "{bad} loaded");

        let text = runner(good);
        let loaded = load_str(&text, LoadOptions::default());
        assert!(loaded.config.is_some(), "{good}: {:#?}", loaded.diagnostics);
        assert!(
            loaded.diagnostics.iter().all(|d| d.severity != Severity::Error),
            "{good}: {:#?}",
            loaded.diagnostics
        );
    }
}

#[test]
fn the_error_points_at_the_value_or_the_key_it_is_about() {
    let got = diagnostics(&runner("namespace = \"CI_Jobs\""));
    assert_eq!((got[0].1, got[0].2), (5, 13), "the value");
    let got = diagnostics(&runner("[runners.kubernetes.node_selector]\n\"bad key\" = \"linux\""));
    assert_eq!((got[0].1, got[0].2), (6, 1), "the key");
}

#[test]
fn values_known_per_job_templates_and_placeholders_are_not_refused_at_load() {
    for body in [
        "namespace = \"ci-$CI_PROJECT_ID\"",
        "image = \"$CI_REGISTRY_IMAGE/build:latest\"",
        "[runners.kubernetes.pod_labels]\nproject = \"${CI_PROJECT_PATH_SLUG}\"",
    ] {
        let got = diagnostics(&runner(body));
        assert!(got.is_empty(), "{body}: {got:#?}");
    }
    let got = diagnostics(&runner("namespace = \"{{ .Release.Namespace }}\""));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].0, Severity::Warning);
    assert!(got[0].4.contains("looks like a template or an example's placeholder"), "{}", got[0].4);
}

#[test]
fn names_the_builder_mends_are_warnings_that_say_what_is_sent() {
    let got = diagnostics(&runner(
        "[[runners.kubernetes.volumes.empty_dir]]\nname = \"empty_dir\"\nmount_path = \"/scratch\"",
    ));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].0, Severity::Warning);
    assert!(got[0].4.ends_with("got `empty_dir`; it is sent as `empty-dir`"), "{}", got[0].4);
    let got = diagnostics(&runner("[runners.kubernetes.pod_labels]\nteam = \"plat form!\""));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].4.ends_with("it is sent as `plat_form`"), "{}", got[0].4);
    let got = diagnostics(&runner("cap_add = [\"CAP_NET_ADMIN\", \"sys_ptrace\"]"));
    let messages: Vec<&str> = got.iter().map(|d| d.4.as_str()).collect();
    assert_eq!(
        messages,
        [
            "capability `CAP_NET_ADMIN` is sent as `NET_ADMIN`, its canonical name; write `NET_ADMIN`",
            "capability `sys_ptrace` is sent as `SYS_PTRACE`, its canonical name; write `SYS_PTRACE`",
        ]
    );
}

/// Upstream's documented affinity example names namespaces `namespace_1`: Kubernetes refuses
/// such a pod, but the file must load as upstream's does, so it is a warning that says so.
#[test]
fn affinity_namespaces_kubernetes_refuses_are_a_warning_saying_every_job_would_fail() {
    let got = diagnostics(&runner(
        "[[runners.kubernetes.affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution]]\ntopology_key = \"kubernetes.io/hostname\"\nnamespaces = [\"namespace_1\", \"ci\"]",
    ));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].0, Severity::Warning);
    assert!(got[0].3.ends_with("namespaces[0]"), "{}", got[0].3);
    assert!(
        got[0].4.ends_with("every job of this runner would fail at pod creation"),
        "{}",
        got[0].4
    );
}
