//! Finding, reading and loading the config file; rendering its diagnostics.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
};

use anyhow::Context;
use podrunner_config::{LoadOptions, Loaded, Report, load_str};

use crate::cli::{ConfigArgs, DiagnosticsFormat};

/// The config path: the flag or `CONFIG_FILE`, else gitlab-runner's default locations.
pub(crate) fn resolve_path(args: &ConfigArgs) -> PathBuf {
    if let Some(path) = &args.config {
        return path.clone();
    }
    let local = PathBuf::from("config.toml");
    if local.exists() {
        return local;
    }
    // SAFETY-free check for root: the effective UID is 0 when /proc/self/status says so.
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/etc/gitlab-runner/config.toml");
    }
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".gitlab-runner/config.toml"),
        None => local,
    }
}

/// A loaded config file with its text, for rendering diagnostics.
#[derive(Debug)]
pub(crate) struct LoadedFile {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
    pub(crate) loaded: Loaded,
}

impl LoadedFile {
    /// The diagnostics in the requested format (empty when there are none and `quiet_if_clean`).
    pub(crate) fn render(&self, format: DiagnosticsFormat) -> anyhow::Result<String> {
        let file = self.path.display().to_string();
        let report =
            Report { file: &file, text: &self.text, diagnostics: &self.loaded.diagnostics };
        Ok(match format {
            DiagnosticsFormat::Text => report.to_text(),
            DiagnosticsFormat::Json => {
                let mut json = serde_json::to_string_pretty(&report.to_json())
                    .context("failed to encode diagnostics")?;
                json.push('\n');
                json
            }
        })
    }
}

/// Reads and loads the config file.
pub(crate) fn load(args: &ConfigArgs) -> anyhow::Result<LoadedFile> {
    let path = resolve_path(args);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read config {}", path.display()))?;
    let loaded = load_str(&text, LoadOptions { strict: args.strict });
    Ok(LoadedFile { path, text, loaded })
}

/// Whether stderr is a terminal (for choosing human-oriented output).
#[allow(dead_code, reason = "used by commands that adapt to a terminal")]
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
