#!/usr/bin/env bash
# Std vs io_uring vs fio on the same disk, one run. Installs fio if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v fio >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq fio) >/dev/null 2>&1 || echo "could not install fio; its row will be missing" >&2
fi
cargo bench --bench io_backends
