//! `docs/config.md` and `docs/config.schema.json` are generated from the raw types; this test fails
//! when they are stale. `cargo xtask codegen` (which sets `UPDATE_GENERATED=1`) rewrites them.

use std::path::{Path, PathBuf};

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Compares `path` with `expected`; rewrites it under `UPDATE_GENERATED=1`, else fails when stale.
#[track_caller]
fn ensure_file_contents(path: &Path, expected: &str) {
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    if actual == expected {
        return;
    }
    if std::env::var("UPDATE_GENERATED").as_deref() == Ok("1") {
        std::fs::write(path, expected)
            .unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
        return;
    }
    panic!("{} is stale: run `cargo xtask codegen` and commit the result", path.display());
}

#[test]
fn config_reference_is_current() {
    ensure_file_contents(
        &docs_dir().join("config.md"),
        &podrunner_config::schema::reference_markdown(),
    );
}

#[test]
fn config_json_schema_is_current() {
    let mut schema = serde_json::to_string_pretty(podrunner_config::schema::json_schema())
        .expect("schema serialises");
    schema.push('\n');
    ensure_file_contents(&docs_dir().join("config.schema.json"), &schema);
}
