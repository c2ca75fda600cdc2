//! What every test of the local cluster needs to decide whether it can run, and small shared
//! helpers: the image cache and a kubeconfig for a plain-HTTP endpoint (a test's proxy).

use std::path::{Path, PathBuf};

/// The shared image archive cache: `$LOCAL_CLUSTER_IMAGE_CACHE` or `<tmp>/podrunner-local-cluster-images`.
pub fn default_image_cache() -> PathBuf {
    std::env::var_os("LOCAL_CLUSTER_IMAGE_CACHE")
        .map_or_else(|| std::env::temp_dir().join("podrunner-local-cluster-images"), PathBuf::from)
}

/// Writes a kubeconfig with one cluster, user and context named `local-cluster` for `server`
/// without credentials (a `kubectl proxy` in front of the API server authenticates).
pub fn write_kubeconfig(path: &Path, server: &str) -> std::io::Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local-cluster\n  cluster:\n    server: {server}\ncontexts:\n- name: local-cluster\n  context:\n    cluster: local-cluster\n    user: local-cluster\n    namespace: default\ncurrent-context: local-cluster\nusers:\n- name: local-cluster\n  user: {{}}\npreferences: {{}}\n"
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)
}

/// What building the test images needs and is missing on this machine, if anything: root, the
/// static `busybox`, `ldd` and `/usr/bin/git` (for the helper image). Every missing one is named.
pub fn missing_prerequisites() -> Option<String> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root".to_owned());
    }
    for tool in ["busybox", "ldd"] {
        if !on_path(tool) {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    if !Path::new("/usr/bin/git").is_file() {
        missing.push("/usr/bin/git".to_owned());
    }
    (!missing.is_empty()).then(|| format!("needs {}", missing.join(", ")))
}

/// Whether this process runs as root (its real uid is 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Whether a missing prerequisite must fail instead of skip (`CI=true`).
pub fn prerequisites_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
