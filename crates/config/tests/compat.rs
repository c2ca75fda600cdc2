//! Every Kubernetes `config.toml` example of the GitLab Runner documentation loads without an error
//! (unknown keys are warnings). The examples live outside the repository, in
//! `../shared/compat/gitlab-runner-docs/`, beside the checkout.

#![allow(clippy::print_stderr, reason = "a skipped test says SKIPPED and why")]

use std::path::PathBuf;

use podrunner_config::{LoadOptions, Report, Severity, load_str};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/compat/gitlab-runner-docs")
}

/// Fragments meant to sit inside a `[[runners]]` entry are wrapped in one, as the corpus says.
pub fn wrap_fragment(text: &str) -> String {
    if text.lines().any(|l| l.trim_start().starts_with("[[runners]]")) {
        text.to_owned()
    } else {
        format!("[[runners]]\nexecutor = \"kubernetes\"\n{text}")
    }
}

#[test]
fn every_documentation_example_loads_without_an_error() {
    let dir = examples_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "compat corpus missing at {}",
            dir.display()
        );
        eprintln!("SKIPPED: compat corpus not found at {}", dir.display());
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 60, "expected the whole corpus, found {} files", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = wrap_fragment(&std::fs::read_to_string(file).expect("readable example"));
        let loaded = load_str(&text, LoadOptions::default());
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if loaded.config.is_none()
            || loaded.diagnostics.iter().any(|d| d.severity == Severity::Error)
        {
            failures.push(
                Report { file: &name, text: &text, diagnostics: &loaded.diagnostics }.to_text(),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} examples failed to load:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
