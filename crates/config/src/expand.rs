//! `$VAR` / `${VAR}` expansion with Go's `os.Expand` semantics, which gitlab-runner uses for the
//! runner `url` and `token` (from the environment) and for config values expanded with job
//! variables (image names, volume paths, PVC names, pod labels and annotations).

/// Expands `$NAME`, `${NAME}` and the special one-character names (`$1`, `$$`, `$@`, …) through
/// `lookup`; unknown names become empty. Like Go: `${}` and an unclosed `${` are dropped, and a
/// `$` not followed by a name (`$ `, a trailing `$`) stays as it is.
pub fn expand_variables<S: AsRef<str>>(text: &str, lookup: impl Fn(&str) -> Option<S>) -> String {
    let bytes = text.as_bytes();
    if !text.contains('$') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut copied_to = 0;
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.push_str(&text[copied_to..j]);
            let (name, width) = shell_name(&text[j + 1..]);
            match (name, width) {
                ("", 0) => out.push('$'),
                ("", _) => {}
                (name, _) => {
                    if let Some(value) = lookup(name) {
                        out.push_str(value.as_ref());
                    }
                }
            }
            j += width;
            copied_to = j + 1;
        }
        j += 1;
    }
    out.push_str(&text[copied_to.min(text.len())..]);
    out
}

fn is_special(b: u8) -> bool {
    matches!(b, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || b.is_ascii_digit()
}

/// The variable name at the start of `s` (just after a `$`) and how many bytes it spans.
fn shell_name(s: &str) -> (&str, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (&s[1..2], 3);
        }
        return match s[1..].find('}') {
            Some(0) => ("", 2),
            Some(end) => (&s[1..=end], end + 2),
            None => ("", 1),
        };
    }
    if is_special(b[0]) {
        return (&s[..1], 1);
    }
    let len = b.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
    (&s[..len], len)
}

#[cfg(test)]
mod tests {
    use super::expand_variables;

    fn vars(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("gitlab.example.com".into()),
            "CI_CONCURRENT_ID" => Some("54".into()),
            "1" => Some("one".into()),
            _ => None,
        }
    }

    #[track_caller]
    fn check(input: &str, expected: &str) {
        assert_eq!(expand_variables(input, vars), expected, "{input:?}");
    }

    #[test]
    fn expands_like_go_os_expand() {
        check("https://$HOST/", "https://gitlab.example.com/");
        check("build-pvc-${CI_CONCURRENT_ID}", "build-pvc-54");
        check("$UNKNOWN-x", "-x");
        check("a$", "a$");
        check("a$ b", "a$ b");
        check("${}x", "x");
        check("${HOST", "HOST");
        check("$1st", "onest");
        check("price: $$5", "price: 5");
        check("no dollars", "no dollars");
        check("é$HOST€", "égitlab.example.com€");
    }
}
