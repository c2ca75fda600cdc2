//! A minimal Kubernetes for tests: an API server ([`apiserver`]) and a node agent ([`node`]) that
//! drives the real containerd through CRI, so seccomp profiles are enforced by the real kernel.
//!
//! This crate is test infrastructure. It is never linked into the shipped `runner` binary.
//! The two halves meet only through the traits in [`contract`].

pub mod apiserver;
pub mod cluster;
pub mod contract;
pub mod demo;
pub mod kubernetes;
pub mod node;
pub mod runner_process;
pub mod s3;
