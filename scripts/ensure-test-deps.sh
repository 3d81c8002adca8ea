#!/usr/bin/env bash
# Installs what the tests need from Debian's packages when it is missing: PostgreSQL (a real server for the
# order service's tests), Chromium (the storefront's browser test), and Buildah, Podman with runc and debootstrap
# (the app image built for real over a stand-in base, and run). Nothing is started here; the tests start
# private instances on 127.0.0.1.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
for tool in buildah podman runc debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-test-deps: missing ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "ensure-test-deps: installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
