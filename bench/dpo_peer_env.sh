#!/usr/bin/env bash
# Creates bench/.venv-dpo for bench/dpo_vs_ddpo.py's diffusers side: the project venv's packages (same torch,
# diffusers, transformers, peft, accelerate) seen through a .pth file, plus `datasets`, which diffusers'
# train_diffusion_dpo.py imports and the project does not depend on. The project venv itself is left unchanged.
# Usage: bash bench/dpo_peer_env.sh   (idempotent; needs .venv, i.e. `make test` or `pip install -e .` first)
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv-dpo
BASE=../.venv
DATASETS_PIN=${DATASETS_PIN:-"datasets==5.2.0"}
[ -x "$BASE/bin/python" ] || { echo "no project venv at $(cd .. && pwd)/.venv: create it first" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$(readlink -f "$BASE/bin/python")" -m venv "$VENV"
printf '*\n' > "$VENV/.gitignore"
BASE_SITE=$("$BASE/bin/python" -c "import site; print(site.getsitepackages()[0])")
VENV_SITE=$("$VENV/bin/python" -c "import site; print(site.getsitepackages()[0])")
echo "$BASE_SITE" > "$VENV_SITE/project_venv.pth"
"$VENV/bin/pip" install -q "$DATASETS_PIN"
"$VENV/bin/python" - <<'PY'
import datasets, diffusers, torch, transformers, peft, accelerate
print("dpo peer env ok:", {m.__name__: m.__version__ for m in (datasets, torch, diffusers, transformers, peft, accelerate)})
PY
