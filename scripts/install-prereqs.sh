#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine (idempotent).
# Called by `cargo xtask ci`; safe to run by hand. Needs root for apt (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."

# busybox-static, git and ca-certificates make the test images; libseccomp-dev and pkg-config
# build runc; util-linux (unshare, nsenter), iproute2 and iptables serve the cluster's node;
# apparmor gives apparmor_parser for the profile syntax checks.
APT_PACKAGES=(busybox-static apparmor seccomp iproute2 iptables git ca-certificates
  libseccomp-dev pkg-config util-linux curl)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-prereqs: missing apt packages (${missing[*]}) and not root; install them first" >&2
    exit 1
  fi
  echo "install-prereqs: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# kubernetes-validate (schema checks of rendered pods) in a project-local virtualenv.
KV_VERSION=1.37.0
if ! .venv-kv/bin/kubernetes-validate --version 2>/dev/null | grep -q "$KV_VERSION"; then
  echo "install-prereqs: kubernetes-validate $KV_VERSION into .venv-kv"
  python3 -m venv .venv-kv
  .venv-kv/bin/pip install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi
# moto's S3 server (an S3-compatible server for the cache tests) in its own virtualenv.
MOTO_VERSION=5.2.1
if ! .venv-s3/bin/python -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "install-prereqs: moto[s3] $MOTO_VERSION and its server into .venv-s3"
  python3 -m venv .venv-s3
  # The S3 service and the server mode only (moto[server] pulls every service: 64 s against 24 s).
  .venv-s3/bin/pip install --quiet --disable-pip-version-check "moto[s3]==$MOTO_VERSION" "flask==3.1.3" "flask-cors==6.0.5"
fi
# cargo-nextest runs the test suite (new machines do not have it); built once into ~/.cargo/bin.
NEXTEST_VERSION=0.9.100
if ! cargo nextest --version 2>/dev/null | grep -q "cargo-nextest $NEXTEST_VERSION"; then
  echo "install-prereqs: cargo-nextest $NEXTEST_VERSION (a few minutes, once)"
  cargo install --locked --quiet "cargo-nextest@$NEXTEST_VERSION"
fi
# The real Kubernetes of the local cluster, built from the Go module proxy and cached by version
# (cold: about 10 minutes on 2 cores; then under a second). LOCAL_CLUSTER_KUBERNETES_VERSION picks
# the release (default 1.37.2; 1.34.4 is the other tested one).
bash scripts/build-kubernetes.sh "${LOCAL_CLUSTER_KUBERNETES_VERSION:-1.37.2}" >/dev/null
echo "install-prereqs: ok"
