//! Tidy checks, run as tests with the rest of the suite (`cargo nextest run -p xtask`).

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "snapshots" | ".venv-kv")
                    && !name.starts_with("target")
                {
                    rust_files(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }

    fn sources() -> Vec<(PathBuf, String)> {
        let mut files = Vec::new();
        rust_files(&super::super::root(), &mut files);
        files.sort();
        files.into_iter().filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t))).collect()
    }

    /// The docs say `runner ...` everywhere; the README must say how to get it, with a command
    /// that names the package that builds the `runner` binary.
    #[test]
    fn the_readme_says_how_to_install_runner() {
        let root = super::super::root();
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        assert!(readme.contains("## Install"), "README.md has no Install section");
        let command = "cargo install --locked --path bin/runner";
        assert!(readme.contains(command), "README.md lacks `{command}`");
        let manifest =
            std::fs::read_to_string(root.join("bin/runner/Cargo.toml")).expect("bin/runner");
        assert!(manifest.contains("name = \"runner\""), "bin/runner builds no `runner` binary");
    }

    #[test]
    fn every_rust_file_starts_with_a_module_doc() {
        let missing: Vec<String> = sources()
            .into_iter()
            .filter(|(_, text)| {
                let start = text.trim_start();
                !(start.starts_with("//!") || start.starts_with("#![doc = include_str!"))
            })
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert!(missing.is_empty(), "files without a `//!` module doc:\n{}", missing.join("\n"));
    }

    #[test]
    fn no_trailing_whitespace_should_panic_or_unexplained_ignore() {
        let mut problems = Vec::new();
        let should_panic = ["#[should", "_panic"].concat();
        let bare_ignore = ["#[ig", "nore]"].concat();
        for (path, text) in sources() {
            for (n, line) in text.lines().enumerate() {
                let at = format!("{}:{}", path.display(), n + 1);
                if line.ends_with(' ') || line.ends_with('\t') {
                    problems.push(format!("{at}: trailing whitespace"));
                }
                if line.contains(&should_panic) {
                    problems.push(format!("{at}: assert on the error instead of a panicking test"));
                }
                if line.trim() == bare_ignore {
                    problems.push(format!("{at}: an ignored test needs a reason"));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn error_messages_are_lowercase_without_trailing_punctuation() {
        let marker = ["#[error(", "\""].concat();
        let mut problems = Vec::new();
        for (path, text) in sources() {
            for (n, line) in text.lines().enumerate() {
                let Some(start) = line.find(&marker) else { continue };
                let message = &line[start + marker.len()..];
                let message = message.rsplit_once('"').map_or(message, |(m, _)| m);
                let first_word =
                    message.split(|c: char| !c.is_alphanumeric()).next().unwrap_or_default();
                let acronym = first_word.len() > 1
                    && first_word.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
                let first = message.chars().next();
                if (first.is_some_and(char::is_uppercase) && !acronym) || message.ends_with('.') {
                    problems.push(format!("{}:{}: {message}", path.display(), n + 1));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "error messages must start lowercase and not end with '.':\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn every_package_is_private_and_uses_workspace_lints() {
        let root = super::super::root();
        let manifests = ["crates", "bin", "integration"]
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(root.join(d)).into_iter().flatten().filter_map(Result::ok)
            })
            .map(|e| e.path().join("Cargo.toml"))
            .chain([root.join("tests/Cargo.toml"), root.join("xtask/Cargo.toml")])
            .filter(|p| p.exists());
        let mut problems = Vec::new();
        for manifest in manifests {
            let text = std::fs::read_to_string(&manifest).unwrap_or_default();
            if !text.contains("publish.workspace = true") && !text.contains("publish = false") {
                problems.push(format!("{}: not publish = false", manifest.display()));
            }
            if !text.contains("[lints]\nworkspace = true") {
                problems.push(format!("{}: missing [lints] workspace = true", manifest.display()));
            }
            for line in text.lines() {
                let line = line.trim();
                if line.starts_with("podrunner-") && line.contains("path =") {
                    problems.push(format!(
                        "{}: internal dependency must use workspace = true: {line}",
                        manifest.display()
                    ));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
