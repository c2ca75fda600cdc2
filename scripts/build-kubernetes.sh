#!/usr/bin/env bash
# Builds the real Kubernetes components for the local test cluster from the Go module proxy, at
# pinned versions, cached by version outside the work tree (a second run costs a second):
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl,
#   containerd (+ its shim), runc, and the CNI plugins bridge, host-local, loopback and portmap.
# Usage: scripts/build-kubernetes.sh [KUBERNETES_VERSION]   (default: $LOCAL_CLUSTER_KUBERNETES_VERSION or 1.37.2)
# Prints the directory holding the binaries on its last line.
set -euo pipefail

K8S_VERSION=${1:-${LOCAL_CLUSTER_KUBERNETES_VERSION:-1.37.2}}
K8S_VERSION=${K8S_VERSION#v}
ETCD_VERSION=3.6.16
CONTAINERD_VERSION=2.2.9
RUNC_VERSION=1.4.4
CNI_PLUGINS_VERSION=1.9.0
CACHE=${PODRUNNER_CACHE:-/var/cache/podrunner}
OUT="$CACHE/kubernetes/v$K8S_VERSION"
RUNTIME_OUT="$CACHE/runtime/containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION-cni-$CNI_PLUGINS_VERSION"
ETCD_OUT="$CACHE/etcd/v$ETCD_VERSION"
export GOFLAGS="-mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local

log() { echo "build-kubernetes: $*" >&2; }

# A wrapper module that requires $1@$2 and replaces the modules its own go.mod points at local
# directories with their published versions (k8s.io/kubernetes' staging modules).
wrapper_module() {
  local dir=$1 module=$2 version=$3 replace_version=$4
  rm -rf "$dir" && mkdir -p "$dir"
  local mod_url="${GOPROXY_URL:-https://proxy.golang.org}/$module/@v/v$version.mod"
  local mod
  mod=$(curl -fsS --max-time 60 "$mod_url") || { log "cannot read $mod_url"; exit 1; }
  {
    echo "module podrunner.test/build"
    echo "go $(go env GOVERSION | sed 's/^go//')"
    echo "require $module v$version"
    echo "replace ("
    echo "$mod" | sed -n 's#^[[:space:]]*\([^[:space:]]*\) => \./.*#\1#p' | sort -u | while read -r m; do
      echo "  $m => $m v$replace_version"
    done
    echo ")"
  } >"$dir/go.mod"
  echo "package build" >"$dir/build.go"
}

build_kubernetes() {
  [ -x "$OUT/kubelet" ] && "$OUT/kubelet" --version 2>/dev/null | grep -qx "Kubernetes v$K8S_VERSION" && return
  local minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  local work="$CACHE/build/kubernetes-v$K8S_VERSION"
  log "building Kubernetes v$K8S_VERSION from the module proxy into $OUT (cold: tens of minutes)"
  wrapper_module "$work" k8s.io/kubernetes "$K8S_VERSION" "0.$minor.${K8S_VERSION##*.}"
  local v=k8s.io/component-base/version cv=k8s.io/client-go/pkg/version
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ldflags="-s -w"
  for p in $v $cv; do
    ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  (cd "$work" && go get "k8s.io/kubernetes@v$K8S_VERSION" >/dev/null 2>&1 || go get "k8s.io/kubernetes@v$K8S_VERSION")
  mkdir -p "$OUT.tmp"
  (cd "$work" && go build -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$OUT.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-proxy)
  rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
}

build_etcd() {
  [ -x "$ETCD_OUT/etcd" ] && return
  local work="$CACHE/build/etcd-v$ETCD_VERSION"
  log "building etcd v$ETCD_VERSION into $ETCD_OUT"
  wrapper_module "$work" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION"
  (cd "$work" && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null 2>&1 || go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION")
  mkdir -p "$ETCD_OUT.tmp"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$ETCD_OUT.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$ETCD_OUT" && mv "$ETCD_OUT.tmp" "$ETCD_OUT"
}

build_runtime() {
  [ -x "$RUNTIME_OUT/runc" ] && return
  log "building containerd v$CONTAINERD_VERSION, runc v$RUNC_VERSION and CNI plugins v$CNI_PLUGINS_VERSION into $RUNTIME_OUT"
  mkdir -p "$RUNTIME_OUT.tmp"
  local gobin="$RUNTIME_OUT.tmp"
  GOBIN="$gobin" go install -trimpath -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd@v$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@v$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@v$CONTAINERD_VERSION"
  GOBIN="$gobin" CGO_ENABLED=1 go install -trimpath -tags seccomp \
    -ldflags "-s -w -X main.version=$RUNC_VERSION" "github.com/opencontainers/runc@v$RUNC_VERSION"
  GOBIN="$gobin" go install -trimpath -ldflags "-s -w" \
    "github.com/containernetworking/plugins/plugins/main/bridge@v$CNI_PLUGINS_VERSION" \
    "github.com/containernetworking/plugins/plugins/ipam/host-local@v$CNI_PLUGINS_VERSION" \
    "github.com/containernetworking/plugins/plugins/main/loopback@v$CNI_PLUGINS_VERSION" \
    "github.com/containernetworking/plugins/plugins/meta/portmap@v$CNI_PLUGINS_VERSION"
  rm -rf "$RUNTIME_OUT" && mv "$RUNTIME_OUT.tmp" "$RUNTIME_OUT"
}

build_etcd
build_runtime
build_kubernetes
echo "KUBERNETES_BIN=$OUT ETCD_BIN=$ETCD_OUT RUNTIME_BIN=$RUNTIME_OUT"
