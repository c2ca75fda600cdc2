//! Loading never panics: a bounded, deterministic mutation run over the documentation examples
//! (the cargo-fuzz target in `fuzz/` explores further). Runs on every CI run.

use std::path::PathBuf;

use podrunner_config::{LoadOptions, Report, load_str};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

const INTERESTING: &[&str] = &[
    "[",
    "]",
    "[[",
    "\"",
    "'",
    "=",
    "\n",
    "{",
    "}",
    ",",
    "0x",
    "1e9999",
    "-",
    ".",
    "é",
    "\u{0}",
    "9223372036854775808",
    "true",
    "\"\"\"",
    "#",
    "1979-05-27T07:32:00Z",
    "[runners.kubernetes]",
    "\\u",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 if !chars.is_empty() => {
                chars.remove(at.min(chars.len() - 1));
            }
            1 => chars.truncate(at),
            2 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                for (i, c) in piece.chars().enumerate() {
                    chars.insert((at + i).min(chars.len()), c);
                }
            }
            _ if !chars.is_empty() => {
                let from = rng.below(chars.len());
                let len = rng.below(40).min(chars.len() - from);
                let copy: Vec<char> = chars[from..from + len].to_vec();
                for (i, c) in copy.into_iter().enumerate() {
                    chars.insert((at + i).min(chars.len()), c);
                }
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

#[test]
fn mutated_documentation_examples_never_panic() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/compat/gitlab-runner-docs");
    let mut seeds: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    seeds.push("[[runners]]\n[runners.kubernetes.build_container_security_context]\nseccomp_profile = { type = \"Localhost\" }\n".into());
    seeds.sort();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut loaded_any = 0;
    for round in 0..4000 {
        let seed = &seeds[round % seeds.len()];
        let text = mutate(&mut rng, seed);
        let loaded = load_str(&text, LoadOptions { strict: round % 2 == 0 });
        let report = Report { file: "mutant.toml", text: &text, diagnostics: &loaded.diagnostics };
        let _ = report.to_text();
        let _ = report.to_json();
        loaded_any += usize::from(loaded.config.is_some());
    }
    // The mutations must not all be trivially broken: some mutants still load.
    assert!(loaded_any > 100, "only {loaded_any} mutants loaded");
}
