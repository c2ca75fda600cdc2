//! Label selectors (`a=b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`) and field selectors
//! (`metadata.name=x`, `status.phase!=Running`, any dotted path into the object).

use std::collections::BTreeSet;

use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector plus a parsed field selector; empty selectors match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<(String, bool, String)>,
}

impl Selector {
    pub(crate) fn parse(
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Self, ApiError> {
        let mut selector = Selector::default();
        if let Some(text) = label_selector.filter(|t| !t.trim().is_empty()) {
            for part in split_top_level(text) {
                selector.labels.push(parse_label_requirement(part.trim()).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unable to parse requirement: invalid label selector {text:?}"
                    ))
                })?);
            }
        }
        if let Some(text) = field_selector.filter(|t| !t.trim().is_empty()) {
            for part in text.split(',') {
                let part = part.trim();
                let (path, equal, value) = if let Some((p, v)) = part.split_once("!=") {
                    (p, false, v)
                } else if let Some((p, v)) = part.split_once("==") {
                    (p, true, v)
                } else if let Some((p, v)) = part.split_once('=') {
                    (p, true, v)
                } else {
                    return Err(ApiError::bad_request(format!(
                        "invalid selector: '{text}'; can't understand '{part}'"
                    )));
                };
                selector.fields.push((path.trim().to_owned(), equal, value.trim().to_owned()));
            }
        }
        Ok(selector)
    }

    /// Whether the object matches both selectors.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            Requirement::Equals(k, v) => label(k) == Some(v),
            Requirement::NotEquals(k, v) => label(k) != Some(v),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::DoesNotExist(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(path, equal, value)| {
                let pointer = format!("/{}", path.replace('.', "/"));
                let actual = match object.pointer(&pointer) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                (actual == *value) == *equal
            })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_set(text: &str) -> Option<BTreeSet<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect())
}

fn parse_label_requirement(part: &str) -> Option<Requirement> {
    if let Some(key) = part.strip_prefix('!') {
        return Some(Requirement::DoesNotExist(key.trim().to_owned()));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Some(Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned()));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Some(Requirement::Equals(k.trim().to_owned(), v.trim().to_owned()));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Some(Requirement::Equals(k.trim().to_owned(), v.trim().to_owned()));
    }
    if let Some((k, set)) = part.split_once(" notin ") {
        return Some(Requirement::NotIn(k.trim().to_owned(), parse_set(set)?));
    }
    if let Some((k, set)) = part.split_once(" in ") {
        return Some(Requirement::In(k.trim().to_owned(), parse_set(set)?));
    }
    if part.is_empty() || part.contains([' ', '(', ')']) {
        return None;
    }
    Some(Requirement::Exists(part.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[track_caller]
    fn check(labels: Option<&str>, fields: Option<&str>, expected: bool) {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web", "tier": "a"}}, "status": {"phase": "Running"}});
        let selector = Selector::parse(labels, fields).expect("parses");
        assert_eq!(selector.matches(&pod), expected, "{labels:?} {fields:?}");
    }

    #[test]
    fn label_and_field_selectors_match_like_kubernetes() {
        check(Some("app=web"), None, true);
        check(Some("app=web,tier!=a"), None, false);
        check(Some("tier in (a, b)"), None, true);
        check(Some("tier notin (a)"), None, false);
        check(Some("app,!missing"), None, true);
        check(None, Some("metadata.name=p"), true);
        check(None, Some("status.phase!=Running"), false);
        check(Some("app=web"), Some("metadata.name=q"), false);
    }
}
