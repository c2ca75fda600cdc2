//! Names: the runner's short token, the project-unique pod name prefix, label sanitising and the
//! DNS-1123 checks Kubernetes applies.

/// The label of the runner configuration (the token's short form) on everything a job creates.
pub const RUNNER_LABEL: &str = "manager.runner.gitlab.com/id-short";

/// The label of the runner process (its system id) on everything a job creates, as upstream
/// labels its pause pods.
pub const SYSTEM_ID_LABEL: &str = "manager.runner.gitlab.com/system-id";

/// The annotation with the job id on a job's pod.
pub const JOB_ID_ANNOTATION: &str = "job.runner.gitlab.com/id";

/// The runner token without its known prefix, cut to 9 characters (`glrt-t1_abc…` -> `abc…`).
pub fn short_token(token: &str) -> String {
    let mut rest = token;
    if let Some(r) = rest.strip_prefix("glrtr-") {
        rest = r;
    } else if let Some(r) = rest.strip_prefix("glrt-") {
        rest = ["t1_", "t2_", "t3_"].iter().find_map(|p| r.strip_prefix(p)).unwrap_or(r);
    } else if let Some(r) = rest.strip_prefix("glcbt-") {
        rest = r;
    } else if rest.len() >= 9
        && rest.starts_with("GR")
        && rest.as_bytes()[2..9].iter().all(u8::is_ascii_hexdigit)
    {
        rest = &rest[9..];
    }
    rest.chars().take(9).collect()
}

/// Makes `name` a DNS-1123 label: lower case, every other character becomes `-`, at most 63
/// characters, no leading or trailing `-`.
pub fn rfc1123(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' { c } else { '-' }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let cut: String = trimmed.chars().take(63).collect();
    cut.trim_end_matches('-').to_owned()
}

/// `runner-<short token>-project-<project id>-concurrent-<project runner id>`, DNS-safe.
pub fn project_unique_name(short_token: &str, project_id: u64, project_runner_id: u32) -> String {
    rfc1123(&format!("runner-{short_token}-project-{project_id}-concurrent-{project_runner_id}"))
}

/// A generated object name: the prefix cut to 54 characters, `-`, then the 8-character suffix
/// (63 characters at most, a DNS label when the suffix is `[a-z0-9]`).
pub fn generated_name(prefix: &str, suffix: &str) -> String {
    let cut: String = prefix.chars().take(54).collect();
    let suffix: String =
        suffix.chars().filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit()).take(8).collect();
    if suffix.is_empty() { cut.trim_end_matches('-').to_owned() } else { format!("{cut}-{suffix}") }
}

/// Sanitises a label value as upstream does (see [`podrunner_config::api_rules::sanitize_label`]).
pub fn sanitize_label(value: &str) -> String {
    podrunner_config::api_rules::sanitize_label(value)
}

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    podrunner_config::api_rules::Rule::Dns1123Label.accepts(s)
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    podrunner_config::api_rules::Rule::Dns1123Subdomain.accepts(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tokens_drop_known_prefixes() {
        assert_eq!(short_token("glrt-aaa_cccbbbdddooo2222"), "aaa_cccbb");
        assert_eq!(short_token("glrt-t2_abcdefghijkl"), "abcdefghi");
        assert_eq!(short_token("GR1348941xyzxyzxyzxyz"), "xyzxyzxyz");
        assert_eq!(short_token("plain"), "plain");
    }

    // upstream: util_test TestSanitizeLabel
    #[test]
    fn labels_are_sanitised_like_upstream() {
        assert_eq!(sanitize_label("label++@"), "label");
        assert_eq!(sanitize_label("--label-"), "label");
        assert_eq!(sanitize_label(&"a".repeat(65)).len(), 63);
        assert_eq!(sanitize_label("a\u{c5}z"), "a_z");
    }

    // upstream: "makes service name compatible with RFC1123", "non-DNS-1123-compatible-token"
    #[test]
    fn pod_names_are_dns_labels_even_for_odd_tokens() {
        let unique = project_unique_name(&short_token("glrt-AB_CD.EF$GH!"), 42, 3);
        let name = generated_name(&unique, "x1y2z3w4");
        assert!(is_dns1123_label(&name), "{name}");
        let long = project_unique_name("abcdefghi", u64::MAX, u32::MAX);
        let name = generated_name(&long, "abcd1234");
        assert!(name.len() <= 63 && name.ends_with("-abcd1234"), "{name}");
    }
}
