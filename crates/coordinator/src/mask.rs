//! Streaming masking of secrets in job output.
//!
//! Output arrives in arbitrary chunks, so a secret may be split across two `write` calls. The
//! masker therefore holds back any tail that is a proper prefix of a secret (at most the
//! longest secret's length minus one byte) until more data arrives or the stream ends.
//!
//! Two kinds of patterns are masked:
//! - literal secrets (masked variable values, the job token): replaced whole by `[MASKED]`;
//! - token prefixes (`features.token_mask_prefixes`, e.g. `glpat-`): the prefix stays and the
//!   token characters after it (`[A-Za-z0-9_-]`) are replaced by one `[MASKED]`.

use secrecy::{ExposeSecret, SecretString};

/// The replacement text.
pub const MASK: &[u8] = b"[MASKED]";

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A streaming masker. Not `Debug`-printable beyond counts: it holds secrets.
pub struct Masker {
    secrets: Vec<Vec<u8>>,
    prefixes: Vec<Vec<u8>>,
    /// Bytes received but not yet emitted (a possible start of a secret).
    pending: Vec<u8>,
    /// Inside a prefixed token: drop token bytes until a non-token byte.
    in_token: bool,
    /// Bitmap of the first bytes of all patterns, for a fast scan.
    first: [bool; 256],
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("secrets", &self.secrets.len())
            .field("prefixes", &self.prefixes.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Masker {
    /// A masker for these secret values and token prefixes. Empty values are ignored.
    pub fn new<'a>(
        secrets: impl IntoIterator<Item = &'a SecretString>,
        prefixes: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.expose_secret().as_bytes().to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        // Longest first, so the longest secret wins at a position.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let mut prefixes: Vec<Vec<u8>> =
            prefixes.into_iter().map(|p| p.as_bytes().to_vec()).filter(|p| !p.is_empty()).collect();
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        prefixes.dedup();
        let mut first = [false; 256];
        for p in secrets.iter().chain(prefixes.iter()) {
            first[usize::from(p[0])] = true;
        }
        Self { secrets, prefixes, pending: Vec::new(), in_token: false, first }
    }

    /// Whether anything is masked at all.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.prefixes.is_empty()
    }

    /// Bytes currently held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Feeds `data`; appends to `out` everything that is certain not to be part of a secret,
    /// with secrets replaced.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.is_empty() {
            out.extend_from_slice(data);
            return;
        }
        self.pending.extend_from_slice(data);
        let consumed = self.scan(out, false);
        self.pending.drain(..consumed);
    }

    /// Ends the stream: emits the held-back tail (masking what still matches).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.flush(out);
    }

    /// Emits the held-back tail as if the stream ended here (masking what still matches); what
    /// is pushed afterwards is masked as usual.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        let consumed = self.scan(out, true);
        self.pending.drain(..consumed);
        debug_assert!(self.pending.is_empty());
        self.pending.clear();
    }

    /// Whether the masker is inside a prefixed token (the token bytes that follow are dropped).
    pub fn in_token(&self) -> bool {
        self.in_token
    }

    /// Continues a stream that stopped inside a prefixed token (see [`Masker::in_token`]).
    pub fn set_in_token(&mut self, in_token: bool) {
        self.in_token = in_token && !self.prefixes.is_empty();
    }

    /// Scans `pending`, emitting into `out`; returns how many bytes were consumed.
    fn scan(&mut self, out: &mut Vec<u8>, at_end: bool) -> usize {
        let p = &self.pending;
        let mut i = 0;
        let mut plain_start = 0;
        while i < p.len() {
            if self.in_token {
                if is_token_byte(p[i]) {
                    // Dropped: part of a masked token.
                    out.extend_from_slice(&p[plain_start..i]);
                    i += 1;
                    plain_start = i;
                    continue;
                }
                self.in_token = false;
            }
            if !self.first[usize::from(p[i])] {
                i += 1;
                continue;
            }
            let rest = &p[i..];
            // A proper prefix of a longer pattern: wait for more data (unless at the end).
            if !at_end
                && self
                    .secrets
                    .iter()
                    .chain(self.prefixes.iter())
                    .any(|s| rest.len() < s.len() && s.starts_with(rest))
            {
                out.extend_from_slice(&p[plain_start..i]);
                return i;
            }
            if let Some(s) = self.secrets.iter().find(|s| rest.starts_with(s)) {
                out.extend_from_slice(&p[plain_start..i]);
                out.extend_from_slice(MASK);
                i += s.len();
                plain_start = i;
                continue;
            }
            if let Some(pre) = self.prefixes.iter().find(|pre| rest.starts_with(pre)) {
                let after = i + pre.len();
                // Only a prefix followed by token characters is a token.
                match p.get(after) {
                    Some(b) if is_token_byte(*b) => {
                        out.extend_from_slice(&p[plain_start..after]);
                        out.extend_from_slice(MASK);
                        self.in_token = true;
                        i = after;
                        plain_start = i;
                        continue;
                    }
                    None if !at_end => {
                        out.extend_from_slice(&p[plain_start..i]);
                        return i;
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        out.extend_from_slice(&p[plain_start..]);
        p.len()
    }
}

/// Masks a whole buffer at once (for one-shot strings such as error messages).
pub fn mask_all(masker_template: &Masker, data: &[u8]) -> Vec<u8> {
    let mut m = Masker {
        secrets: masker_template.secrets.clone(),
        prefixes: masker_template.prefixes.clone(),
        pending: Vec::new(),
        in_token: false,
        first: masker_template.first,
    };
    let mut out = Vec::with_capacity(data.len());
    m.push(data, &mut out);
    m.finish(&mut out);
    out
}

#[cfg(test)]
mod tests;
