# Two commands do everything on a fresh machine: `make demo` and `make test` (each sets up .venv first).
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: demo test train-toy

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e .
	bash scripts/install_browser.sh || echo "no headless Chromium: the real-browser app test will be skipped"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m rlhf.round demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

train-toy: $(VENV)/.installed
	$(PY) -m rlhf.toy.train
