import os

# Every test runs offline, as CI and a newcomer's laptop do.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
