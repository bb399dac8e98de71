#!/usr/bin/env bash
# Regenerate requirements.lock from the dev venv: exact versions of everything `make setup`
# installed (the versions CI proved). Run after changing dependencies, then run `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Exact versions make demo / make test install (pip constraints file; regenerate with"
  echo "# tools/lock.sh after a dependency change). pyproject.toml keeps the supported ranges."
  .venv/bin/pip freeze --exclude-editable --exclude steerlab --exclude llama_cpp_python \
    | grep -v '^#' | LC_ALL=C sort -f
} > requirements.lock.tmp
mv requirements.lock.tmp requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
