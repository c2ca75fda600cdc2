//! The parsed document with spans: finds where a key path sits in the file, and removes a key
//! whose value has the wrong type so decoding can go on and report every problem.

use std::ops::Range;

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use crate::diagnostics::{KeyPath, Segment};

/// Where a key and its value sit in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// The key's span (absent for array elements and the root).
    pub(crate) key: Option<Range<usize>>,
    /// The value's span.
    pub(crate) value: Range<usize>,
}

/// A parsed TOML document that keeps every key's and value's span.
#[derive(Debug, Clone)]
pub(crate) struct Document<'i> {
    pub(crate) root: Spanned<DeTable<'i>>,
}

impl<'i> Document<'i> {
    /// Finds a path in the document.
    pub(crate) fn locate(&self, path: &KeyPath) -> Option<Located> {
        let mut located = Located { key: None, value: self.root.span() };
        let mut current: Option<&DeValue<'i>> = None;
        for segment in &path.0 {
            let table = match current {
                None => self.root.get_ref(),
                Some(DeValue::Table(t)) => t,
                Some(DeValue::Array(a)) => {
                    let Segment::Index(i) = segment else { return None };
                    let element = a.get(*i)?;
                    located = Located { key: None, value: element.span() };
                    current = Some(element.get_ref());
                    continue;
                }
                Some(_) => return None,
            };
            let Segment::Key(key) = segment else { return None };
            let (k, v) = table.get_key_value(key.as_str())?;
            located = Located { key: Some(k.span()), value: v.span() };
            current = Some(v.get_ref());
        }
        Some(located)
    }

    /// The best span to point at for a diagnostic about `path`: the key when `prefer_key`, else the
    /// value; falls back to the nearest ancestor present in the file.
    pub(crate) fn span(&self, path: &KeyPath, prefer_key: bool) -> Option<Range<usize>> {
        let mut path = path.clone();
        loop {
            if let Some(found) = self.locate(&path) {
                if path.0.is_empty() {
                    return None;
                }
                return Some(match (prefer_key, found.key) {
                    (true, Some(key)) => key,
                    _ => found.value,
                });
            }
            path.0.pop()?;
        }
    }

    /// Removes the key at `path`; a path ending in an array index removes the key holding the
    /// array. Returns whether something was removed.
    pub(crate) fn remove(&mut self, path: &KeyPath) -> bool {
        let mut segments = path.0.clone();
        while matches!(segments.last(), Some(Segment::Index(_))) {
            segments.pop();
        }
        let Some((Segment::Key(last), parents)) = segments.split_last() else { return false };
        let mut table: &mut DeTable<'i> = self.root.get_mut();
        let mut iter = parents.iter().peekable();
        while let Some(segment) = iter.next() {
            let Segment::Key(key) = segment else { return false };
            let mut value = match table.get_mut(key.as_str()) {
                Some(v) => v.get_mut(),
                None => return false,
            };
            while let Some(Segment::Index(i)) = iter.peek() {
                let DeValue::Array(array) = value else { return false };
                let Some(element) = array.get_mut(*i) else { return false };
                value = element.get_mut();
                iter.next();
            }
            let DeValue::Table(next) = value else { return false };
            table = next;
        }
        table.remove(last.as_str()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Document<'_> {
        Document { root: DeTable::parse(text).expect("test input parses") }
    }

    #[test]
    fn locates_keys_inside_arrays_of_tables_and_inline_tables() {
        let text = "[[runners]]\nname = \"a\"\n[runners.kubernetes]\nbuild = { seccomp_profile = { type = \"X\" } }\n";
        let d = doc(text);
        let path = KeyPath::root()
            .key("runners")
            .index(0)
            .key("kubernetes")
            .key("build")
            .key("seccomp_profile")
            .key("type");
        let found = d.locate(&path).expect("path is in the document");
        assert_eq!(&text[found.key.expect("has a key")], "type");
        assert_eq!(&text[found.value], "\"X\"");
    }

    #[test]
    fn removing_a_key_keeps_the_rest() {
        let text = "[[runners]]\nlimit = \"x\"\nname = \"a\"\n";
        let mut d = doc(text);
        assert!(d.remove(&KeyPath::root().key("runners").index(0).key("limit")));
        assert!(d.locate(&KeyPath::root().key("runners").index(0).key("limit")).is_none());
        assert!(d.locate(&KeyPath::root().key("runners").index(0).key("name")).is_some());
    }
}
