# Two entry points, each safe to re-run on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pip resolves this to the local CPU wheel where one is offered (find-links) and to the
# usual PyPI build elsewhere; override with e.g. TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.clipdepth-installed

.PHONY: install browser demo demo-tr2m demo-baselines test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/clipdepth demo --out outputs/demo

# TR2M and its global-factor ablation on synthetic scenes with the GT-oracle relative depth.
demo-tr2m: install
	$(VENV)/bin/clipdepth demo --config demo_tr2m --out outputs/demo-tr2m

# The CLIP baselines (learned prompts, DepthCLIP) beside PureCLIP-Depth, one random-weight CLIP.
demo-baselines: install
	$(VENV)/bin/clipdepth demo --config demo_baselines --out outputs/demo-baselines

# The web demo's browser test needs Debian's chromium; installed where the machine allows (root
# with apt), else that one test skips with its reason.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the browser test will skip"; }

test: install browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) outputs .pytest_cache
