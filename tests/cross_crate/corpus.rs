//! The Kubernetes `config.toml` examples of the GitLab Runner documentation. They live outside
//! the repository, in `../shared/compat/gitlab-runner-docs/` beside the checkout; a missing
//! corpus is a failure under `CI=true` and a SKIPPED test elsewhere.

use std::path::{Path, PathBuf};

/// One example: its file name and its text, with fragments wrapped into a runner entry.
#[derive(Debug)]
pub(crate) struct Example {
    pub(crate) name: String,
    pub(crate) text: String,
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/compat/gitlab-runner-docs")
}

/// Fragments meant to sit inside a `[[runners]]` entry are wrapped in one, as the corpus says.
fn wrap_fragment(text: &str) -> String {
    if text.lines().any(|l| l.trim_start().starts_with("[[runners]]")) {
        text.to_owned()
    } else {
        format!("[[runners]]\nexecutor = \"kubernetes\"\n{text}")
    }
}

/// Every example in file-name order, or `None` (after printing SKIPPED) when the corpus is absent
/// outside CI.
pub(crate) fn examples() -> Option<Vec<Example>> {
    let dir = examples_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the compat corpus is missing at {}",
            dir.display()
        );
        eprintln!("SKIPPED: the compat corpus is not at {}", dir.display());
        return None;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 60, "expected the whole corpus, found {} files", files.len());
    Some(
        files
            .iter()
            .map(|path| Example {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                text: wrap_fragment(
                    &std::fs::read_to_string(path)
                        .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display())),
                ),
            })
            .collect(),
    )
}
