#!/usr/bin/env bash
# Re-pins constraints.txt, the lock CI installs: a throwaway virtual environment gets the newest
# releases pyproject.toml allows for every extra CI uses, and its package list is frozen.
#   usage: scripts/refresh_lock.sh          then: bash .ci/run, and commit constraints.txt
# PyTorch stays out of the lock (its build, CPU or CUDA, is each machine's choice); the version
# installed here only decides the versions of its own dependencies. TORCH_SPEC overrides it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=$(sed -n 's/^pip_install -c constraints.txt -e .\.\[\(.*\)\]. .*/\1/p' .ci/run)
env=$(mktemp -d)
trap 'rm -rf "$env"' EXIT
python3 -m venv "$env"
"$env/bin/python" -m pip install --quiet --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
"$env/bin/python" -m pip install --quiet --disable-pip-version-check ".[$extras]"
{
  echo "# The lock CI installs (bash .ci/run): every dependency but PyTorch, pinned. Refresh: scripts/refresh_lock.sh."
  "$env/bin/python" -m pip freeze --all | grep -v -i -E '^(torch|autohdr|pip)( |==)'
} > constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) packages pinned for extras [$extras]"
