//! What the Kubernetes API server (or the container runtime) would refuse, checked at load: one
//! [`Rule`] per validation Kubernetes applies to a field this config ends up in, each named after
//! the function it mirrors (`k8s.io/apimachinery/pkg/util/validation`, `pkg/apis/core/validation`),
//! and one [`FIELDS`] table saying which config key goes to which rule. The loader, the pod
//! builder's job-time checks (values known only per job) and the generated `docs/config.md` all
//! read the same table.

use std::net::IpAddr;

/// A validation rule of the API server or the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `IsDNS1123Label`: namespaces, volume names.
    Dns1123Label,
    /// `IsDNS1123Subdomain`: object names (service accounts, secrets, priority classes, ...).
    Dns1123Subdomain,
    /// `IsQualifiedName`: label and annotation keys, topology keys.
    QualifiedName,
    /// `IsValidLabelValue`.
    LabelValue,
    /// `IsValidIP`: host aliases, DNS name servers.
    IpAddress,
    /// `ValidateNonnegativeField` with the int32 bound of user and group ids.
    Id,
    /// `validateTaintEffect` as tolerations use it.
    TolerationEffect,
    /// `validateNodeSelectorRequirement` / `ValidateLabelSelectorRequirement` operators.
    SelectorOperator,
    /// The runtime's image reference grammar (`distribution/reference`): `InvalidImageName`.
    ImageReference,
    /// The Linux capabilities the runtime knows (`CreateContainerError` otherwise).
    Capability,
}

/// The longest DNS-1123 label, label value and qualified-name part.
const LABEL_MAX: usize = 63;
/// The longest DNS-1123 subdomain.
const SUBDOMAIN_MAX: usize = 253;
/// The largest user or group id Kubernetes accepts.
const ID_MAX: i64 = 2_147_483_647;

/// The capabilities of Linux 6.x (without `CAP_`), plus `ALL`.
pub const CAPABILITIES: &[&str] = &[
    "ALL",
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// The canonical spelling of a capability (`NET_ADMIN` for `cap_net_admin`), if Linux has it.
pub fn canonical_capability(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES.contains(&bare).then(|| bare.to_owned())
}

/// `name` made a DNS-1123 label: lower case, anything but letters, digits and '-' replaced by
/// '-', no '-' at either end, at most 63 characters (`"volume"` when nothing is left). A valid
/// label is returned unchanged.
pub fn to_dns1123_label(name: &str) -> String {
    if dns1123_label(name) {
        return name.to_owned();
    }
    let mapped: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if is_alphanumeric_lower(c) { c } else { '-' }
        })
        .collect();
    let mut label: String = mapped.trim_matches('-').chars().take(LABEL_MAX).collect();
    while label.ends_with('-') {
        label.pop();
    }
    if label.is_empty() { "volume".to_owned() } else { label }
}

/// A label value made valid as upstream's `sanitizeLabel` does (the pod builder sends pod label
/// values so): characters outside `[A-Za-z0-9-_.]` become `_`, leading and trailing `-_.` are
/// trimmed, at most 63 characters (trimmed again).
pub fn sanitize_label(value: &str) -> String {
    let keep = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let edge = |c: char| matches!(c, '-' | '_' | '.');
    // Every character outside the set becomes `_`, which is itself trimmed at the edges, so the
    // value is: skip leading edge/foreign characters, take up to 63 mapped characters, trim the end.
    let mut out = String::with_capacity(value.len().min(LABEL_MAX));
    for c in value.chars().skip_while(|c| !keep(*c) || edge(*c)).take(LABEL_MAX) {
        out.push(if keep(c) { c } else { '_' });
    }
    let end = out.trim_end_matches(edge).len();
    out.truncate(end);
    out
}

fn is_alphanumeric_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn dns1123_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= LABEL_MAX
        && value.chars().all(|c| is_alphanumeric_lower(c) || c == '-')
        && value.starts_with(is_alphanumeric_lower)
        && value.ends_with(is_alphanumeric_lower)
}

fn dns1123_subdomain(value: &str) -> bool {
    !value.is_empty() && value.len() <= SUBDOMAIN_MAX && value.split('.').all(dns1123_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn qualified_part(value: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric();
    !value.is_empty()
        && value.len() <= LABEL_MAX
        && value.chars().all(|c| edge(c) || matches!(c, '-' | '_' | '.'))
        && value.starts_with(edge)
        && value.ends_with(edge)
}

fn qualified_name(value: &str) -> bool {
    match value.split_once('/') {
        Some((prefix, name)) => dns1123_subdomain(prefix) && qualified_part(name),
        None => qualified_part(value),
    }
}

impl Rule {
    /// Whether `value` passes.
    pub fn accepts(self, value: &str) -> bool {
        match self {
            Self::Dns1123Label => dns1123_label(value),
            Self::Dns1123Subdomain => dns1123_subdomain(value),
            Self::QualifiedName => qualified_name(value),
            Self::LabelValue => value.is_empty() || qualified_part(value),
            Self::IpAddress => value.parse::<IpAddr>().is_ok(),
            Self::Id => value.parse::<i64>().is_ok_and(|id| (0..=ID_MAX).contains(&id)),
            Self::TolerationEffect => {
                matches!(value, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute")
            }
            Self::SelectorOperator => {
                matches!(value, "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt")
            }
            Self::ImageReference => {
                value.trim() == value && container_image_dist_ref::ImgRef::new(value).is_ok()
            }
            Self::Capability => canonical_capability(value).is_some(),
        }
    }

    /// The rule in plain words, as the diagnostic says it ("must be ...").
    pub fn requirement(self) -> &'static str {
        match self {
            Self::Dns1123Label => {
                "at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            }
            Self::Dns1123Subdomain => {
                "at most 253 characters of lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit"
            }
            Self::QualifiedName => {
                "a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, with an optional DNS subdomain prefix and '/' (\"example.com/role\")"
            }
            Self::LabelValue => {
                "empty, or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            }
            Self::IpAddress => "an IPv4 or IPv6 address",
            Self::Id => "a whole number from 0 to 2147483647",
            Self::TolerationEffect => {
                "NoSchedule, PreferNoSchedule, NoExecute or empty (all effects)"
            }
            Self::SelectorOperator => "In, NotIn, Exists, DoesNotExist, Gt or Lt",
            Self::ImageReference => {
                "an image reference: [registry[:port]/]lowercase/path[:tag][@digest], without spaces"
            }
            Self::Capability => "a Linux capability such as NET_ADMIN or SYS_PTRACE (or ALL)",
        }
    }

    /// The Kubernetes validation this rule mirrors.
    pub fn mirrors(self) -> &'static str {
        match self {
            Self::Dns1123Label => "IsDNS1123Label",
            Self::Dns1123Subdomain => "IsDNS1123Subdomain",
            Self::QualifiedName => "IsQualifiedName",
            Self::LabelValue => "IsValidLabelValue",
            Self::IpAddress => "IsValidIP",
            Self::Id => "ValidateNonnegativeField (int32)",
            Self::TolerationEffect => "validateTaintEffect",
            Self::SelectorOperator => "validateNodeSelectorRequirement",
            Self::ImageReference => "distribution/reference (runtime)",
            Self::Capability => "runtime capability names",
        }
    }

    /// The diagnostic for `value` in the field called `what`, or `None` when it passes.
    pub fn check(self, what: &str, value: &str) -> Option<String> {
        (!self.accepts(value))
            .then(|| format!("{what} must be {}; got `{value}`", self.requirement()))
    }
}

/// Which part of a matched config entry a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The value (a string, a number, or each string of an array).
    Value,
    /// The keys of a table (`node_selector = { "key" = ... }`).
    Keys,
    /// The keys of a `node_tolerations` table, `key[=value]`: the key as a qualified name, the
    /// value as a label value.
    TolerationKeys,
}

/// What a value that breaks its rule costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    /// The API server or the runtime refuses the pod: an error.
    Refused,
    /// The pod builder sends the value made valid (volume names, internal to the pod): a warning
    /// naming what is sent.
    Mended,
    /// The pod builder sends the value sanitised as upstream does (pod label values).
    Sanitized,
    /// The API server refuses the pod, but upstream's own documented examples write such values,
    /// so the file must still load: a warning that says every job will fail.
    Warned,
}

/// One config field and the rule of its destination.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The key path under `[runners.kubernetes]`, `*` for every element of an array.
    pub path: &'static str,
    /// The value part checked.
    pub part: Part,
    /// What the value is, as a diagnostic names it ("a namespace").
    pub what: &'static str,
    /// The rule.
    pub rule: Rule,
    /// Refused, or mended by the builder.
    pub breach: Breach,
}

const fn field(path: &'static str, part: Part, what: &'static str, rule: Rule) -> Field {
    Field { path, part, what, rule, breach: Breach::Refused }
}

use Part::{Keys, TolerationKeys, Value};
use Rule::{
    Capability, Dns1123Label, Dns1123Subdomain, Id, ImageReference, IpAddress, LabelValue,
    QualifiedName, SelectorOperator, TolerationEffect,
};

/// Every config field that ends up in the pod with a rule the API server or runtime applies.
pub const FIELDS: &[Field] = &[
    field("namespace", Value, "a namespace", Dns1123Label),
    field("service_account", Value, "a service account name", Dns1123Subdomain),
    field("priority_class_name", Value, "a priority class name", Dns1123Subdomain),
    field("runtime_class_name", Value, "a runtime class name", Dns1123Subdomain),
    field("scheduler_name", Value, "a scheduler name", Dns1123Subdomain),
    field("image_pull_secrets", Value, "an image pull secret name", Dns1123Subdomain),
    field("image", Value, "the build image", ImageReference),
    field("helper_image", Value, "the helper image", ImageReference),
    field("services.*.name", Value, "a service image", ImageReference),
    field("node_selector", Keys, "a node selector key", QualifiedName),
    field("node_selector.*", Value, "a node selector value", LabelValue),
    field("pod_labels", Keys, "a pod label key", QualifiedName),
    Field {
        path: "pod_labels.*",
        part: Value,
        what: "a pod label value",
        rule: LabelValue,
        breach: Breach::Sanitized,
    },
    field("pod_annotations", Keys, "a pod annotation key", QualifiedName),
    field("node_tolerations", TolerationKeys, "a toleration", QualifiedName),
    field("node_tolerations.*", Value, "a toleration effect", TolerationEffect),
    field("host_aliases.*.ip", Value, "a host alias IP", IpAddress),
    field("host_aliases.*.hostnames", Value, "a host alias hostname", Dns1123Subdomain),
    field("dns_config.nameservers", Value, "a DNS name server", IpAddress),
    field("dns_config.searches", Value, "a DNS search domain", Dns1123Subdomain),
    field("cap_add", Value, "a capability", Capability),
    field("cap_drop", Value, "a capability", Capability),
    field("build_container_security_context.capabilities.add", Value, "a capability", Capability),
    field("build_container_security_context.capabilities.drop", Value, "a capability", Capability),
    field("helper_container_security_context.capabilities.add", Value, "a capability", Capability),
    field("helper_container_security_context.capabilities.drop", Value, "a capability", Capability),
    field("service_container_security_context.capabilities.add", Value, "a capability", Capability),
    field(
        "service_container_security_context.capabilities.drop",
        Value,
        "a capability",
        Capability,
    ),
    field(
        "init_permissions_container_security_context.capabilities.add",
        Value,
        "a capability",
        Capability,
    ),
    field(
        "init_permissions_container_security_context.capabilities.drop",
        Value,
        "a capability",
        Capability,
    ),
    field("pod_security_context.run_as_user", Value, "a user id", Id),
    field("pod_security_context.run_as_group", Value, "a group id", Id),
    field("pod_security_context.fs_group", Value, "an fsGroup", Id),
    field("pod_security_context.supplemental_groups", Value, "a supplemental group", Id),
    field("build_container_security_context.run_as_user", Value, "a user id", Id),
    field("build_container_security_context.run_as_group", Value, "a group id", Id),
    field("helper_container_security_context.run_as_user", Value, "a user id", Id),
    field("helper_container_security_context.run_as_group", Value, "a group id", Id),
    field("service_container_security_context.run_as_user", Value, "a user id", Id),
    field("service_container_security_context.run_as_group", Value, "a group id", Id),
    field("init_permissions_container_security_context.run_as_user", Value, "a user id", Id),
    field("init_permissions_container_security_context.run_as_group", Value, "a group id", Id),
    Field {
        path: "volumes.*.*.name",
        part: Value,
        what: "a volume name",
        rule: Dns1123Label,
        breach: Breach::Mended,
    },
    field("volumes.secret.*.name", Value, "a Secret's name", Dns1123Subdomain),
    field("volumes.config_map.*.name", Value, "a ConfigMap's name", Dns1123Subdomain),
    field("volumes.pvc.*.name", Value, "a persistent volume claim's name", Dns1123Subdomain),
    field(
        "affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms.*.match_expressions.*.key",
        Value,
        "a node affinity key",
        QualifiedName,
    ),
    field(
        "affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms.*.match_expressions.*.operator",
        Value,
        "a node affinity operator",
        SelectorOperator,
    ),
    field(
        "affinity.node_affinity.preferred_during_scheduling_ignored_during_execution.*.preference.match_expressions.*.key",
        Value,
        "a node affinity key",
        QualifiedName,
    ),
    field(
        "affinity.node_affinity.preferred_during_scheduling_ignored_during_execution.*.preference.match_expressions.*.operator",
        Value,
        "a node affinity operator",
        SelectorOperator,
    ),
    field(
        "affinity.*.*.*.label_selector.match_labels",
        Keys,
        "a label selector key",
        QualifiedName,
    ),
    field(
        "affinity.*.*.*.label_selector.match_labels.*",
        Value,
        "a label selector value",
        LabelValue,
    ),
    field(
        "affinity.*.*.*.pod_affinity_term.label_selector.match_labels",
        Keys,
        "a label selector key",
        QualifiedName,
    ),
    field(
        "affinity.*.*.*.pod_affinity_term.label_selector.match_labels.*",
        Value,
        "a label selector value",
        LabelValue,
    ),
    Field {
        path: "affinity.*.*.*.namespaces",
        part: Value,
        what: "an affinity namespace",
        rule: Dns1123Label,
        breach: Breach::Warned,
    },
    Field {
        path: "affinity.*.*.*.pod_affinity_term.namespaces",
        part: Value,
        what: "an affinity namespace",
        rule: Dns1123Label,
        breach: Breach::Warned,
    },
    field(
        "affinity.pod_affinity.required_during_scheduling_ignored_during_execution.*.topology_key",
        Value,
        "a topology key",
        QualifiedName,
    ),
    field(
        "affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution.*.topology_key",
        Value,
        "a topology key",
        QualifiedName,
    ),
    field(
        "affinity.pod_affinity.preferred_during_scheduling_ignored_during_execution.*.pod_affinity_term.topology_key",
        Value,
        "a topology key",
        QualifiedName,
    ),
    field(
        "affinity.pod_anti_affinity.preferred_during_scheduling_ignored_during_execution.*.pod_affinity_term.topology_key",
        Value,
        "a topology key",
        QualifiedName,
    ),
];

/// The `docs/config.md` section listing every checked field with its rule.
pub fn reference_markdown() -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "\n## Values checked against Kubernetes' rules\n\n\
         Every value below ends up in the pod; `runner check-config`, `render-pod` and `runner run` \
         check it at load against the rule its destination has in the API server (or the container \
         runtime), so a value Kubernetes would refuse fails at load with its location, not at every \
         job. Paths are under `[runners.kubernetes]`; `*` is every element. A value holding a job \
         variable (`$CI_PROJECT_ID`) is checked when the job arrives, after expansion; a template \
         (`{{ ... }}`) or an example's placeholder (`<NAME>`) is a warning.\n\n\
         | key | rule | mirrors | when broken |\n|---|---|---|---|\n",
    );
    for f in FIELDS {
        let part = match f.part {
            Part::Value => "",
            Part::Keys => " (keys)",
            Part::TolerationKeys => " (keys, `key[=value]`)",
        };
        let breach = match f.breach {
            Breach::Refused => "error",
            Breach::Mended => "warning; sent as a DNS-1123 label",
            Breach::Sanitized => "warning; sent sanitised, as upstream",
            Breach::Warned => {
                "warning (upstream's documented examples write such values); the API server refuses the pod"
            }
        };
        let _ = writeln!(
            out,
            "| `{}`{part} | {} | `{}` | {breach} |",
            f.path,
            f.rule.requirement().replace('|', "\\|"),
            f.rule.mirrors()
        );
    }
    out
}

/// A value that holds a job variable (`$CI_PROJECT_ID`, `${CI_JOB_ID}`) is only known per job:
/// it is checked after expansion, when the job arrives.
pub fn is_per_job(value: &str) -> bool {
    value.contains('$')
}

/// A value that is a template to be rendered before the file is used (`{{ .Release.Namespace }}`
/// in a Helm chart) or a placeholder of an example (`<SECRET_NAME>`): not a value yet.
pub fn is_placeholder(value: &str) -> bool {
    value.contains("{{") || (value.starts_with('<') && value.ends_with('>'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid and invalid examples per rule, from Kubernetes' own validation tests
    /// (`validation_test.go` of apimachinery and `pkg/apis/core`).
    #[test]
    fn each_rule_accepts_and_refuses_what_kubernetes_does() {
        let long63 = "a".repeat(63);
        let long64 = "a".repeat(64);
        let sub253 =
            format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
        let sub254 = format!("{sub253}e");
        let cases: Vec<(Rule, Vec<&str>, Vec<&str>)> = vec![
            (
                Dns1123Label,
                vec![
                    "a",
                    "ab",
                    "abc",
                    "a1",
                    "a-1",
                    "a--1--2--b",
                    "0",
                    "01",
                    "012",
                    "1a",
                    "1-a",
                    long63.as_str(),
                ],
                vec![
                    "",
                    "A",
                    "ABC",
                    "aBc",
                    "A1",
                    "a_1",
                    "a.1",
                    "a 1",
                    "-",
                    "a-",
                    "-a",
                    "1-",
                    "_",
                    "a$",
                    long64.as_str(),
                    "CI_Jobs",
                ],
            ),
            (
                Dns1123Subdomain,
                vec!["a", "ab", "a.b", "a-1.b-2", "0.a", "11.22.33.44.55", sub253.as_str()],
                vec![
                    "",
                    "A",
                    "a.",
                    ".a",
                    "a..b",
                    "a_b",
                    "a b",
                    "-a.b",
                    "a.b-",
                    sub254.as_str(),
                    "my service",
                ],
            ),
            (
                QualifiedName,
                vec![
                    "simple",
                    "now-with-dashes",
                    "1-starts-with-num",
                    "1234",
                    "simple/simple",
                    "now-with-dashes/simple",
                    "now-with-dashes/now-with-dashes",
                    "now.with.dots/simple",
                    "now-with.dashes-and.dots/simple",
                    "1-num.2-num/3-num",
                    "1234/5678",
                    "1.2.3.4/5678",
                    "Uppercase_Is_OK_123",
                    "example.com/Uppercase_Is_OK_123",
                    long63.as_str(),
                ],
                vec![
                    "",
                    "/simple",
                    "example.com/",
                    "example.com/?",
                    "Nope/ok",
                    "a/b/c",
                    "-ends-with-dash-",
                    "nospecialchars%^=@",
                    "cantendwithadash-",
                    "only/one/slash",
                    long64.as_str(),
                ],
            ),
            (
                LabelValue,
                vec![
                    "",
                    "simple",
                    "now-with-dashes",
                    "1-starts-with-num",
                    "end-with-num-1",
                    "1234",
                    "a.b_c-D",
                    long63.as_str(),
                ],
                vec![
                    "nospecialchars%^=@",
                    "Tama-nui-te-rā.is.Māori.sun",
                    "\\backslashes\\are\\bad",
                    "-starts-with-dash",
                    "ends-with-dash-",
                    ".starts.with.dot",
                    "has space",
                    long64.as_str(),
                ],
            ),
            (
                IpAddress,
                vec!["1.2.3.4", "0.0.0.0", "255.255.255.255", "::1", "2001:db8::1"],
                vec!["", "999.1.1.1", "1.2.3", "a.b.c.d", "1.2.3.4/24", " 1.2.3.4"],
            ),
            (
                Id,
                vec!["0", "1000", "2147483647"],
                vec!["-1", "2147483648", "4294967296", "1.5", "root"],
            ),
            (
                TolerationEffect,
                vec!["", "NoSchedule", "PreferNoSchedule", "NoExecute"],
                vec!["noschedule", "NoScheduleNoAdmit", "Always"],
            ),
            (
                SelectorOperator,
                vec!["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"],
                vec!["in", "Equals", ""],
            ),
            (
                ImageReference,
                vec![
                    "alpine",
                    "alpine:3.20",
                    "docker.io/library/alpine:latest",
                    "localhost:5000/a/b:tag",
                    "registry.example.com/group/image@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                    "localhost/busybox:latest",
                ],
                vec![
                    "",
                    "Alpine",
                    "alpine:",
                    "alpine 3.20",
                    " alpine",
                    "alpine:3.20 ",
                    "a//b",
                    "image:tag:more",
                    ":tag",
                ],
            ),
            (
                Capability,
                vec!["NET_ADMIN", "SYS_PTRACE", "ALL", "CAP_NET_RAW", "net_bind_service"],
                vec!["", "NET_FOO", "CAP_", "SUPERUSER"],
            ),
        ];
        for (rule, valid, invalid) in cases {
            for v in valid {
                assert!(rule.accepts(v), "{rule:?} must accept {v:?}");
            }
            for v in invalid {
                assert!(!rule.accepts(v), "{rule:?} must refuse {v:?}");
            }
        }
    }

    #[test]
    fn the_message_says_the_rule_in_plain_words_and_the_value() {
        assert_eq!(
            Dns1123Label.check("a namespace", "CI_Jobs").as_deref(),
            Some(
                "a namespace must be at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit; got `CI_Jobs`"
            )
        );
        assert_eq!(Dns1123Label.check("a namespace", "ci-jobs"), None);
    }

    #[test]
    fn names_are_mended_into_dns1123_labels() {
        assert_eq!(to_dns1123_label("empty_dir"), "empty-dir");
        assert_eq!(to_dns1123_label("Cache.Vol"), "cache-vol");
        assert_eq!(to_dns1123_label("ok-name"), "ok-name");
        assert_eq!(to_dns1123_label("__"), "volume");
        let mended = to_dns1123_label(&format!("{}_x", "a".repeat(70)));
        assert!(Dns1123Label.accepts(&mended), "{mended}");
    }

    #[test]
    fn capabilities_have_one_canonical_spelling() {
        assert_eq!(canonical_capability("cap_net_admin").as_deref(), Some("NET_ADMIN"));
        assert_eq!(canonical_capability("NET_ADMIN").as_deref(), Some("NET_ADMIN"));
        assert_eq!(canonical_capability("NET_FOO"), None);
    }
}
