//! The project's local test cluster: real Kubernetes (etcd, kube-apiserver, controller-manager,
//! scheduler, kube-proxy and the kubelet on containerd, built from upstream's sources by
//! `scripts/build-kubernetes.sh`) run as processes ([`kubernetes`]), the test images it runs
//! ([`node`]), and what the end-to-end tests, the demo and the bench share: the runner as a
//! child process ([`runner_process`]), an S3 server ([`s3`]), the demo's cases ([`demo`]).
//!
//! This crate is test infrastructure. It is never linked into the shipped `runner` binary.

pub mod cluster;
pub mod demo;
pub mod kubernetes;
pub mod node;
pub mod runner_process;
pub mod s3;
