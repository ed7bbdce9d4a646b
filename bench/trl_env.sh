#!/usr/bin/env bash
# Creates bench/.venv-trl: trl 0.23.1 (the last trl with DDPOTrainer) for bench/ddpo_vs_trl.py, kept apart
# from the project venv. torch/torchvision come from the machine's local wheels (pip on Python 3.11).
# Usage: bash bench/trl_env.sh   (idempotent; about 3-4 minutes the first time)
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv-trl
PY=${PYTHON:-python3.11}
# Same versions as the project venv wherever trl 0.23.1 accepts them (see TRL_PINS below).
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"
TRL_PINS=${TRL_PINS:-"trl==0.23.1 diffusers==0.42.1 transformers==5.24.0 peft==0.21.2 accelerate==1.15.0"}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q $TORCH_PINS
"$VENV/bin/pip" install -q $TRL_PINS pillow numpy scipy
"$VENV/bin/python" - <<'PY'
import torch, trl, diffusers, transformers, peft, accelerate
from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline  # noqa: F401
print("trl env ok:", {m.__name__: m.__version__ for m in (torch, trl, diffusers, transformers, peft, accelerate)})
PY
