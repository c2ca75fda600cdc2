//! Fuzz target: loading any text as a config, and rendering its diagnostics, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podrunner_config::{LoadOptions, Report, load_str};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for strict in [false, true] {
        let loaded = load_str(text, LoadOptions { strict });
        let report = Report { file: "fuzz.toml", text, diagnostics: &loaded.diagnostics };
        let _ = report.to_text();
        let _ = report.to_json();
    }
});
