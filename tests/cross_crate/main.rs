//! Hermetic cross-crate tests: one binary, one module per concern.
