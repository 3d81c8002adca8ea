#!/usr/bin/env bash
# Installs what the benchmarks need from Debian's packages when it is missing: hey (bench.pipeline drives the order
# service with it: a Go client that costs little beside the service) and what the tests need (PostgreSQL for pgbench
# and the service's database, Java for Apache Kafka: scripts/ensure-test-deps.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/ensure-test-deps.sh"
command -v hey >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-bench-deps: hey is missing; install it with: sudo apt-get install -y hey" >&2
  exit 1
fi
echo "ensure-bench-deps: installing hey from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends hey >/dev/null
