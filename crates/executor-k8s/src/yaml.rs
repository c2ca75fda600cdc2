//! A small YAML emitter for manifests. `serde_norway` writes YAML 1.2, where `yes`, `on` or
//! `0755` are plain strings; kubectl and most Kubernetes tooling read YAML 1.1, where they are
//! booleans and octal numbers, so an env value `yes` would not decode as a string. This emitter
//! writes a string plain only when it cannot be read as anything else under either version and
//! double-quotes (JSON escapes, valid YAML) everything else.

use std::fmt::Write as _;

use serde_json::Value;

/// Serialises a JSON-like value (e.g. `serde_json::to_value(&pod)`) as a YAML document.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, level: usize) {
    for (key, value) in map {
        indent(out, level);
        out.push_str(&string_text(key));
        out.push(':');
        write_child(out, value, level);
    }
}

fn write_seq(out: &mut String, items: &[Value], level: usize) {
    for item in items {
        indent(out, level);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first entry on the dash line, the others aligned under it.
                let mut first = true;
                for (key, value) in map {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, level + 2);
                    }
                    out.push_str(&string_text(key));
                    out.push(':');
                    write_child(out, value, level + 2);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, level + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

/// The value after `key:`; nested collections go on the following lines.
fn write_child(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, level + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, level);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// Words YAML 1.1 or 1.2 reads as booleans or null.
const RESERVED: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ""];

/// A string as a plain scalar when that is unambiguous, else double-quoted.
fn string_text(s: &str) -> String {
    if is_plain_safe(s) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if RESERVED.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    // Anything starting like a number (including `.5`, `-1`, `+1`, `0x1f`, `1_000`, `1:20`) is
    // quoted: YAML 1.1 has many numeric forms.
    if first.is_ascii_digit() || matches!(first, '.' | '-' | '+') {
        return false;
    }
    // No spaces, so `: ` and ` #` cannot occur; a trailing `:` would read as a key.
    let safe_char = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '@' | '=' | '+')
    };
    (first.is_ascii_alphabetic() || first == '/') && !s.ends_with(':') && s.chars().all(safe_char)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn yaml_1_1_booleans_and_numbers_stay_strings() {
        let text =
            to_yaml(&json!({"a": "yes", "b": "On", "c": "0755", "d": "1.30", "e": "~", "f": ""}));
        assert_eq!(text, "a: \"yes\"\nb: \"On\"\nc: \"0755\"\nd: \"1.30\"\ne: \"~\"\nf: \"\"\n");
    }

    #[test]
    fn nested_maps_and_lists_are_indented_like_kubectl_output() {
        let value = json!({
            "spec": {"containers": [{"name": "build", "args": ["a b", "c"]}], "empty": {}, "none": []},
            "num": 3, "t": true
        });
        let expected = "num: 3\nspec:\n  containers:\n  - args:\n    - \"a b\"\n    - c\n    name: build\n  empty: {}\n  none: []\nt: true\n";
        assert_eq!(to_yaml(&value), expected);
    }

    #[test]
    fn special_characters_are_escaped() {
        assert_eq!(string_text("a: b"), "\"a: b\"");
        assert_eq!(string_text("line\nnext \"q\""), "\"line\\nnext \\\"q\\\"\"");
        assert_eq!(string_text("/scripts-0-0"), "/scripts-0-0");
        assert_eq!(string_text("kubernetes.io/arch"), "kubernetes.io/arch");
        assert_eq!(string_text("postgres:16"), "postgres:16");
        assert_eq!(string_text("key:"), "\"key:\"");
    }
}
