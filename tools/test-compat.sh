#!/usr/bin/env bash
# `make test-compat`: the steering unit tests against the oldest and the newest transformers of
# the range pyproject.toml declares, each in a throwaway venv (removed afterwards). Not part of
# `make test`. Override the versions with TRANSFORMERS_VERSIONS="5.0.0 5.24.0".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
TESTS=${COMPAT_TESTS:-"tests/unit/test_steer.py tests/unit/test_generate.py tests/unit/test_eval_engine.py tests/unit/test_extract.py tests/unit/test_threads.py"}
range=$(grep -o '"transformers[^"]*"' pyproject.toml | tr -d '"')
oldest=$(echo "$range" | sed -n 's/.*>=\([0-9.]*\).*/\1/p')
upper=$(echo "$range" | sed -n 's/.*<\([0-9]*\).*/\1/p')
if [ -z "${TRANSFORMERS_VERSIONS:-}" ]; then
  newest=$($PY -m pip index versions transformers 2>/dev/null | sed -n 's/^Available versions: //p' \
    | tr ',' '\n' | tr -d ' ' | awk -F. -v up="$upper" '$1 < up' | head -1)
  TRANSFORMERS_VERSIONS="$oldest $newest"
fi
echo "declared: $range; testing transformers $TRANSFORMERS_VERSIONS"
status=0
for version in $TRANSFORMERS_VERSIONS; do
  venv=$(mktemp -d -t steerlab-compat-XXXX)
  trap 'rm -rf "$venv"' EXIT
  $PY -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip 2>/dev/null
  "$venv/bin/pip" install --quiet torch==2.13.0 2>/dev/null
  "$venv/bin/pip" install --quiet -e '.[dev]' "transformers==$version" 2>/dev/null
  got=$("$venv/bin/python" -c 'import transformers; print(transformers.__version__)')
  echo "== transformers $got =="
  # shellcheck disable=SC2086
  if "$venv/bin/python" -m pytest $TESTS -q -p no:cacheprovider; then
    echo "transformers $got: passed"
  else
    echo "transformers $got: FAILED"; status=1
  fi
  rm -rf "$venv"; trap - EXIT
done
exit $status
