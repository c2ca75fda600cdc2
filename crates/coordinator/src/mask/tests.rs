//! Tests of the streaming masker, including every split point of the input.

use super::*;

fn masker(secrets: &[&str], prefixes: &[&str]) -> Masker {
    let secrets: Vec<SecretString> = secrets.iter().map(|s| SecretString::from(*s)).collect();
    Masker::new(secrets.iter(), prefixes.iter().copied())
}

/// Feeds `chunks` one by one and returns the whole output.
fn run(m: &mut Masker, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        m.push(c, &mut out);
    }
    m.finish(&mut out);
    out
}

#[track_caller]
fn check(secrets: &[&str], prefixes: &[&str], input: &str, expected: &str) {
    let whole = run(&mut masker(secrets, prefixes), &[input.as_bytes()]);
    assert_eq!(String::from_utf8_lossy(&whole), expected, "whole input");
    let bytes = input.as_bytes();
    // Every single split point, and every pair of split points.
    for a in 0..=bytes.len() {
        let out = run(&mut masker(secrets, prefixes), &[&bytes[..a], &bytes[a..]]);
        assert_eq!(String::from_utf8_lossy(&out), expected, "split at {a}");
        for b in a..=bytes.len() {
            let out =
                run(&mut masker(secrets, prefixes), &[&bytes[..a], &bytes[a..b], &bytes[b..]]);
            assert_eq!(String::from_utf8_lossy(&out), expected, "split at {a} and {b}");
        }
    }
    // Byte by byte.
    let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
    let out = run(&mut masker(secrets, prefixes), &chunks);
    assert_eq!(String::from_utf8_lossy(&out), expected, "byte by byte");
}

#[test]
fn masked_value_is_replaced_at_every_split_point() {
    check(&["s3cr3t-value"], &[], "echo s3cr3t-value done\n", "echo [MASKED] done\n");
}

#[test]
fn several_occurrences_and_adjacent_secrets_are_all_masked() {
    check(
        &["hunter22", "tok3n"],
        &[],
        "hunter22hunter22 tok3ntok3n hunter2 end",
        "[MASKED][MASKED] [MASKED][MASKED] hunter2 end",
    );
}

#[test]
fn longest_secret_wins_when_one_is_a_prefix_of_another() {
    check(
        &["abcd1234", "abcd"],
        &[],
        "x abcd1234 abcd abcd12 y",
        "x [MASKED] [MASKED] [MASKED]12 y",
    );
}

#[test]
fn partial_secret_at_the_end_of_the_stream_is_emitted_unmasked() {
    check(&["password1"], &[], "the pass", "the pass");
}

#[test]
fn token_prefixes_keep_the_prefix_and_mask_the_token() {
    check(
        &[],
        &["glpat-", "glrt-"],
        "push with glpat-AbC_12-xyz; glrt- alone; glrt-z\n",
        "push with glpat-[MASKED]; glrt- alone; glrt-[MASKED]\n",
    );
}

#[test]
fn no_secrets_means_output_passes_through_untouched() {
    let mut m = masker(&[], &[]);
    assert!(m.is_empty());
    assert_eq!(run(&mut m, &[b"abc", b"def"]), b"abcdef");
}

#[test]
fn held_back_tail_is_shorter_than_the_longest_secret() {
    let mut m = masker(&["0123456789"], &[]);
    let mut out = Vec::new();
    m.push(b"zz012345678", &mut out);
    assert_eq!(out, b"zz");
    assert_eq!(m.pending_len(), 9);
    m.push(b"9!", &mut out);
    assert_eq!(out, b"zz[MASKED]!");
}

/// A small deterministic PRNG (xorshift), so the property test needs no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("invariant: below usize")
    }
}

#[test]
fn secrets_never_leak_under_random_chunking_property() {
    let secrets = ["Sup3rS3cret", "glcbt-job-token-value", "ab"];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let alphabet = b"abSup3rS3cret glcbt-job-token-value\n";
    for case in 0..500 {
        // Random text seeded with secrets.
        let mut text = Vec::new();
        for _ in 0..rng.below(20) + 1 {
            if rng.below(3) == 0 {
                text.extend_from_slice(secrets[rng.below(secrets.len())].as_bytes());
            } else {
                for _ in 0..rng.below(8) {
                    text.push(alphabet[rng.below(alphabet.len())]);
                }
            }
        }
        let expected = mask_all(&masker(&secrets, &[]), &text);
        // Random chunking of the same text.
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let n = (rng.below(7) + 1).min(text.len() - at);
            chunks.push(&text[at..at + n]);
            at += n;
        }
        let out = run(&mut masker(&secrets, &[]), &chunks);
        assert_eq!(out, expected, "case {case}: chunking changed the output");
        for s in secrets.iter().take(2) {
            assert!(
                !out.windows(s.len()).any(|w| w == s.as_bytes()),
                "case {case}: secret {s} leaked in {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }
}
