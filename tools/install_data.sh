#!/usr/bin/env bash
# Installs the offline data and models the case studies use, idempotently:
# runs every tools/install_data_<topic>.sh in turn. Each says what it fetched and where it lives.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
shopt -s nullglob
scripts=("$here"/install_data_*.sh)
if [ ${#scripts[@]} -eq 0 ]; then
  echo "offline data: nothing to install"
fi
for script in "${scripts[@]}"; do
  echo "== $(basename "$script")"
  bash "$script"
done
