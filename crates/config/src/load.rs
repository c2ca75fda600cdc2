//! Loading: TOML syntax, then types (every type error, not just the first), then unknown keys,
//! then the semantic rules of [`crate::validate`]. Nothing stops at the first problem.

use serde::Deserialize;
use toml::de::DeTable;

use crate::{
    diagnostics::{Diagnostic, KeyPath, Segment, Severity},
    document::Document,
    model::Config,
    raw::RawConfig,
    schema, upstream, validate,
};

/// How to load.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Turn every warning into an error (fail closed).
    pub strict: bool,
}

/// The outcome of loading one file.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration, when no diagnostic is an error.
    pub config: Option<Config>,
    /// Every diagnostic, in document order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }
}

/// The most type errors reported before giving up (each one costs a decoding pass).
const MAX_TYPE_ERRORS: usize = 100;

/// Loads a config from its text. Never panics, whatever the input.
pub fn load_str(text: &str, options: LoadOptions) -> Loaded {
    let mut diagnostics = Vec::new();
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for error in syntax_errors {
            diagnostics.push(Diagnostic {
                severity: Severity::Error,
                message: format!("invalid TOML: {}", error.message().trim_end()),
                key_path: KeyPath::root(),
                span: error.span(),
            });
        }
        return finish(None, diagnostics, options);
    }
    let original = Document { root };
    let mut document = original.clone();
    let mut type_errors = 0;
    let raw = loop {
        let mut unknown: Vec<KeyPath> = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        let result = {
            let de = toml::de::Deserializer::from(document.root.clone());
            let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
            let ignored = serde_ignored::Deserializer::new(de, &mut record);
            RawConfig::deserialize(serde_path_to_error::Deserializer::new(ignored, &mut track))
        };
        match result {
            Ok(raw) => {
                for path in unknown {
                    diagnostics.push(unknown_key(&original, path));
                }
                break Some(raw);
            }
            Err(error) => {
                let path = tracked_path(&track.path());
                let span = original.span(&path, false).or_else(|| error.span());
                diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    message: type_error_message(&path, error.message()),
                    key_path: path.clone(),
                    span,
                });
                type_errors += 1;
                if type_errors >= MAX_TYPE_ERRORS || !document.remove(&path) {
                    break None;
                }
            }
        }
    };
    let config = raw.map(|raw| validate::validate(raw, &original, text, &mut diagnostics));
    finish(config, diagnostics, options)
}

fn finish(
    config: Option<Config>,
    mut diagnostics: Vec<Diagnostic>,
    options: LoadOptions,
) -> Loaded {
    if options.strict {
        for d in &mut diagnostics {
            if d.severity == Severity::Warning {
                d.severity = Severity::Error;
                d.message.push_str(" (an error under --strict)");
            }
        }
    }
    diagnostics.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    Loaded { config: if has_errors { None } else { config }, diagnostics }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> KeyPath {
    fn walk(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
        match path {
            serde_ignored::Path::Root => {}
            serde_ignored::Path::Seq { parent, index } => {
                walk(parent, out);
                out.push(Segment::Index(*index));
            }
            serde_ignored::Path::Map { parent, key } => {
                walk(parent, out);
                out.push(Segment::Key(key.clone()));
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut segments = Vec::new();
    walk(path, &mut segments);
    KeyPath(segments)
}

fn tracked_path(path: &serde_path_to_error::Path) -> KeyPath {
    KeyPath(
        path.iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
                _ => None,
            })
            .collect(),
    )
}

fn type_error_message(path: &KeyPath, message: &str) -> String {
    let readable = message
        .trim_end()
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table");
    let readable = match readable.find("expected struct ") {
        Some(i) => format!("{}expected a table", &readable[..i]),
        None => readable,
    };
    match path.leaf() {
        Some(key) => format!("wrong type for key {key:?}: {readable}"),
        None => format!("wrong type at {path}: {readable}"),
    }
}

fn unknown_key(document: &Document<'_>, path: KeyPath) -> Diagnostic {
    let leaf = path.leaf().unwrap_or_default().to_owned();
    let parent = path.parent();
    let table = table_name(&parent);
    let table_keys: Vec<&str> = parent
        .0
        .iter()
        .filter_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
        .collect();
    let known = schema::known_keys(&parent);
    // What upstream documents (a rename, a registration option) wins over a guess by spelling.
    let message = if let Some(renamed) = upstream::renamed_key(&table_keys, &leaf) {
        format!("key {leaf:?} in {table} {}", renamed.advice())
    } else if let Some(option) = upstream::registration_option(&table_keys, &leaf) {
        format!("key {leaf:?} in {table} {}", option.advice())
    } else {
        match suggest(&leaf, known.iter().map(String::as_str)) {
            Some(s) => format!("unknown key {leaf:?} in {table} is ignored; did you mean {s:?}?"),
            None => match misplaced_in(&parent, &leaf) {
                Some(owner) => format!(
                    "unknown key {leaf:?} in {table} is ignored; it belongs in {}",
                    table_name(&owner)
                ),
                None => format!("unknown key {leaf:?} in {table} is ignored"),
            },
        }
    };
    let message = if in_security_context(&parent) {
        format!(
            "{message}; a misspelt security setting weakens the pod: the container gets the pod's or the node's default for it instead, and `--strict` refuses this config"
        )
    } else {
        message
    };
    let span = document.span(&path, true);
    Diagnostic { severity: Severity::Warning, message, key_path: path, span }
}

/// Whether `table` is a security-context table or one inside it (`capabilities`, `seccomp_profile`).
fn in_security_context(table: &KeyPath) -> bool {
    table.0.iter().any(|s| matches!(s, Segment::Key(k) if k.ends_with("security_context")))
}

/// The nearest ancestor (or child) table of `table` where `key` is a known key, for keys written in
/// the wrong table (`environment` inside `[runners.kubernetes]` belongs in `[[runners]]`).
fn misplaced_in(table: &KeyPath, key: &str) -> Option<KeyPath> {
    let mut ancestor = table.parent();
    loop {
        if schema::known_keys(&ancestor).iter().any(|k| k == key) {
            return Some(ancestor);
        }
        if ancestor.0.is_empty() {
            break;
        }
        ancestor = ancestor.parent();
    }
    schema::known_keys(table)
        .into_iter()
        .map(|child| table.key(&child))
        .find(|child| schema::known_keys(child).iter().any(|k| k == key))
}

/// `[runners.kubernetes]`, or `the top level`.
pub(crate) fn table_name(path: &KeyPath) -> String {
    let keys: Vec<&str> = path
        .0
        .iter()
        .filter_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
        .collect();
    if keys.is_empty() { "the top level".to_owned() } else { format!("[{}]", keys.join(".")) }
}

/// The closest candidate to `word`: an exact match ignoring case, `-`/`_` and camelCase, else the
/// best Jaro-Winkler score of at least 0.8.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let fold = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let folded = fold(word);
    let mut best: Option<(&str, f64)> = None;
    for candidate in candidates {
        if fold(candidate) == folded {
            return Some(candidate);
        }
        let score = strsim::jaro_winkler(word, candidate);
        if score >= 0.8 && best.is_none_or(|(_, s)| score > s) {
            best = Some((candidate, score));
        }
    }
    best.map(|(c, _)| c)
}
