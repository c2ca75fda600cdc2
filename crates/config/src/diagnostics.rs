//! Diagnostics: what is wrong with a config file, where, and what would be right.
//!
//! Every diagnostic carries a key path (`runners[0].kubernetes.namespace`) and, when the file has
//! the key, the byte span of the key or value. Line and column are computed once, when a
//! [`Report`] is rendered.

use std::{fmt, ops::Range};

use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file loads and does what it says, but an entry in it changes nothing (a feature flag
    /// set to its default). `--strict` leaves notes alone.
    Note,
    /// The file loads, but something is probably not what the author meant.
    Warning,
    /// The file does not load.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One segment of a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path to a key or value in the document, e.g. `runners[0].kubernetes.namespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    /// The empty path (the document itself).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path with a key appended.
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_owned()));
        next
    }

    /// This path with an array index appended.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    /// The last key segment, if the path ends in a key.
    pub fn leaf(&self) -> Option<&str> {
        match self.0.last() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// The path without its last segment.
    pub fn parent(&self) -> KeyPath {
        let mut parent = self.clone();
        parent.0.pop();
        parent
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) => {
                    let plain = !k.is_empty()
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    match (i, plain) {
                        (0, true) => write!(f, "{k}")?,
                        (_, true) => write!(f, ".{k}")?,
                        (_, false) => write!(f, "[{k:?}]")?,
                    }
                }
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Warning or error.
    pub severity: Severity,
    /// What is wrong and what would be right.
    pub message: String,
    /// Where in the document (may be empty for whole-file problems such as a syntax error).
    pub key_path: KeyPath,
    /// Byte range in the file, when known.
    pub span: Option<Range<usize>>,
}

/// A resolved line and column (both 1-based; the column counts characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineColumn {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// Converts a byte offset in `text` into a 1-based line and character column.
pub fn line_column(text: &str, offset: usize) -> LineColumn {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    LineColumn { line, column: before[line_start..].chars().count() + 1 }
}

/// The diagnostics of one file, ready to render.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// The file name as the user gave it.
    pub file: &'a str,
    /// The file's text (for line/column and snippets).
    pub text: &'a str,
    /// The diagnostics, in document order.
    pub diagnostics: &'a [Diagnostic],
}

/// One diagnostic in the JSON output of `check-config --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonDiagnostic<'a> {
    /// `warning` or `error`.
    pub severity: Severity,
    /// The message.
    pub message: &'a str,
    /// The file name.
    pub file: &'a str,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The key path, e.g. `runners[0].kubernetes.namespace`.
    pub key_path: String,
}

impl Report<'_> {
    /// Line and column of a diagnostic.
    pub fn position(&self, diagnostic: &Diagnostic) -> Option<LineColumn> {
        diagnostic.span.as_ref().map(|s| line_column(self.text, s.start))
    }

    /// Number of diagnostics with this severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == severity).count()
    }

    /// One line per diagnostic, `FILE:LINE:COL: severity: message`, each followed by the source line
    /// and a caret, then a summary line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for d in self.diagnostics {
            match self.position(d) {
                Some(pos) => out.push_str(&format!(
                    "{}:{}:{}: {}: {}\n",
                    self.file, pos.line, pos.column, d.severity, d.message
                )),
                None => out.push_str(&format!("{}: {}: {}\n", self.file, d.severity, d.message)),
            }
            if let (Some(span), Some(pos)) = (&d.span, self.position(d)) {
                let source_line = self.text.lines().nth(pos.line - 1).unwrap_or("");
                let width =
                    self.text[span.clone()].lines().next().map_or(1, |l| l.chars().count().max(1));
                let width =
                    width.min(source_line.chars().count().saturating_sub(pos.column - 1).max(1));
                out.push_str(&format!(
                    "   | {source_line}\n   | {}{}\n",
                    " ".repeat(pos.column - 1),
                    "^".repeat(width)
                ));
            }
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// `config.toml: 1 error, 2 warnings` (`, 1 note` when there are notes), or `config.toml: ok`
    /// (`ok, 1 note`).
    pub fn summary(&self) -> String {
        let (errors, warnings) = (self.count(Severity::Error), self.count(Severity::Warning));
        let notes = match self.count(Severity::Note) {
            0 => String::new(),
            n => format!(", {}", plural(n, "note")),
        };
        if errors == 0 && warnings == 0 {
            return format!("{}: ok{notes}", self.file);
        }
        format!(
            "{}: {}, {}{notes}",
            self.file,
            plural(errors, "error"),
            plural(warnings, "warning")
        )
    }

    /// The diagnostics as JSON objects.
    pub fn to_json(&self) -> Vec<JsonDiagnostic<'_>> {
        self.diagnostics
            .iter()
            .map(|d| {
                let pos = self.position(d);
                JsonDiagnostic {
                    severity: d.severity,
                    message: &d.message,
                    file: self.file,
                    line: pos.map(|p| p.line),
                    column: pos.map(|p| p.column),
                    key_path: d.key_path.to_string(),
                }
            })
            .collect()
    }
}

/// `1 error`, `3 warnings`: a count with its noun (regular plurals only).
pub fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_render_like_the_documentation() {
        let path =
            KeyPath::root().key("runners").index(0).key("kubernetes").key("seccomp_profile_type");
        assert_eq!(path.to_string(), "runners[0].kubernetes.seccomp_profile_type");
        assert_eq!(
            KeyPath::root().key("a").key("exceeded quota").to_string(),
            "a[\"exceeded quota\"]"
        );
    }

    #[test]
    fn line_and_column_count_characters_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), LineColumn { line: 1, column: 1 });
        assert_eq!(line_column(text, 6), LineColumn { line: 2, column: 1 });
        assert_eq!(line_column(text, 10), LineColumn { line: 2, column: 4 });
    }
}
