"""Where the project keeps things: shipped models and prompts in ``data/``, run-time artefacts in ``data/runs/``."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
MODELS = DATA / "models"
TOY_PIPELINE = MODELS / "toy-sd"
TOY_CLIP = MODELS / "toy-clip"
TOY_LCM = MODELS / "toy-lcm"
PROMPTS = DATA / "prompts"
RUNS = DATA / "runs"  # git-ignored: databases, images, checkpoints
