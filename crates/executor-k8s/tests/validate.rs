//! Schema check of every pod the test corpus renders, with `kubernetes-validate --strict` (from
//! PyPI, installed into `.venv-kv` by `scripts/install-prereqs.sh`): pods rendered for 1.29 are
//! checked against 1.29 (no `appArmorProfile` may appear there), pods rendered for 1.30 against
//! 1.30 and pods rendered for the newest version against it. One tool invocation per version
//! (the tool is slow to start).
//!
//! Without the tool the test prints `SKIPPED: <reason>` and returns, except under `CI=true`,
//! where a missing tool is a failure.

#![allow(clippy::print_stdout, reason = "the SKIPPED line must reach the test output")]

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{LATEST, corpus};
use podrunner_executor_k8s::pod_yaml;

fn tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-kv/bin/kubernetes-validate")
}

#[test]
fn every_rendered_pod_passes_kubernetes_validate_strict_for_its_version() {
    let tool = tool();
    if !tool.exists() {
        let reason = format!(
            "{} is missing; run scripts/install-prereqs.sh to install kubernetes-validate",
            tool.display()
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
        println!("SKIPPED: {reason}");
        return;
    }
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubernetes-validate");
    let _ = std::fs::remove_dir_all(&root);
    let cases = corpus();
    let mut failures = Vec::new();
    let mut total = 0;
    for minor in [29, 30, LATEST] {
        let dir = root.join(format!("1.{minor}"));
        std::fs::create_dir_all(&dir).expect("scratch dir is creatable");
        let mut files = Vec::new();
        for case in &cases {
            let (_, built) = case.render(minor);
            let text = pod_yaml(&built.pod).expect("pods serialise");
            if minor < 30 {
                assert!(!text.contains("appArmorProfile"), "{} at 1.{minor}: {text}", case.name);
            }
            let file = dir.join(format!("{}.yaml", case.name));
            std::fs::write(&file, text).expect("scratch file is writable");
            files.push(file);
        }
        total += files.len();
        let output = Command::new(&tool)
            .arg("--strict")
            .arg("--kubernetes-version")
            .arg(format!("1.{minor}.0"))
            .args(&files)
            .output()
            .expect("kubernetes-validate starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let passed =
            stdout.lines().filter(|l| l.starts_with("INFO") && l.contains(" passed ")).count();
        if !output.status.success() || passed != files.len() {
            failures.push(format!(
                "1.{minor}: exit {:?}, {passed}/{} passed\n{stdout}{stderr}",
                output.status.code(),
                files.len()
            ));
        }
    }
    assert!(failures.is_empty(), "kubernetes-validate failures:\n{}", failures.join("\n"));
    assert_eq!(total, 3 * cases.len());
}
