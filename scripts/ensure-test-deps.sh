#!/usr/bin/env bash
# Installs what the tests need from Debian's packages when it is missing: PostgreSQL (a real server for the
# order service's tests), Chromium (the storefront's browser test), Java 17 (Apache Kafka, the tests' broker),
# Buildah, Podman with runc and debootstrap (the app image built for real over a stand-in base, and run),
# qemu-user-static with binfmt-support (the same build for linux/arm64, where the kernel allows it), and containerd,
# the CNI plugins, iptables and conntrack (the test cluster's real node), and hey (the HTTP client bench.pipeline
# drives the order service with, beside pgbench). Nothing is started here; the tests start private instances on
# 127.0.0.1. `./run test` and `./run bench.pipeline` run it.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
command -v hey >/dev/null || missing+=(hey)
# Java for Apache Kafka, the tests' broker (its jars come from Maven Central; demokit/kafka/apache.py).
command -v java >/dev/null || [ -n "${JAVA_HOME:-}" ] || missing+=(openjdk-17-jre-headless)
for tool in buildah podman runc debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
# The real node beside the test control plane's kwok nodes (demokit/kube/node): containerd with runc, the standard CNI
# plugins, iptables and conntrack for kube-proxy.
command -v containerd >/dev/null || missing+=(containerd)
[ -e /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null || missing+=(iptables)
command -v conntrack >/dev/null || missing+=(conntrack)
command -v ip >/dev/null || missing+=(iproute2)
# An arm64 image build under emulation (an Apple Silicon minikube node's build), where the kernel allows it.
[ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || missing+=(qemu-user-static)
command -v update-binfmts >/dev/null || missing+=(binfmt-support)

enable_arm64() {
  [ "$(id -u)" -eq 0 ] || return 0
  if [ ! -e /proc/sys/fs/binfmt_misc/register ] && ! mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; then
    echo "ensure-test-deps: binfmt_misc cannot be mounted here; the arm64 image build test will be skipped" >&2
    return 0
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && ! update-binfmts --enable qemu-aarch64; then
    echo "ensure-test-deps: qemu-aarch64 cannot be registered; the arm64 image build test will be skipped" >&2
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  enable_arm64
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-test-deps: missing ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "ensure-test-deps: installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
enable_arm64
