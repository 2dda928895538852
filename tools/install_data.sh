#!/usr/bin/env bash
# Installs the offline data and models the case studies use (../shared/DATA.md), idempotently.
# Each step says what it fetched and where it lives.
set -euo pipefail
PY=${PY:-python3}
echo "offline data: nothing to install yet for the theory chapters"
