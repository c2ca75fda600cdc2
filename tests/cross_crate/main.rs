//! Hermetic cross-crate tests: one binary, one module per concern.

#![allow(clippy::print_stderr, reason = "a skipped test says SKIPPED and why")]

mod corpus;
mod documentation_examples;
