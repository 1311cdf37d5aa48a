# The README's two commands:  `make demo` (the main job)  and  `make test`.
# Both create .venv on first use (scripts/setup.sh: CPU torch 2.13.0 + pinned deps, about a minute here).
VENV ?= .venv
# The tests and the demo start many Python processes (accelerate launches, CLI and tool runs). Each one compiles
# the torch/diffusers modules it imports unless their bytecode is cached, about 7 s per start here; so let Python
# write its cache even where the environment turns that off (setup installs with --no-compile: only the modules
# actually imported get compiled, once).
unexport PYTHONDONTWRITEBYTECODE
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sfv-installed
BROWSER := $(VENV)/.sfv-browser
DEMO := runs/demo

.PHONY: setup test demo gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

# The page test (tests/test_serve_browser.py) drives Debian's chromium + chromium-driver; scripts/setup-browser.sh
# installs them with apt once per venv (nothing when both are on PATH; one line and a skipped test without root).
$(BROWSER): scripts/setup-browser.sh | $(STAMP)
	bash scripts/setup-browser.sh $(VENV)
	touch $@

test: $(STAMP) $(BROWSER)
	$(PY) -m pytest -q

# The toy-world demo (world v2): distil the committed toy teacher (models/toy-svd-v2) into a one-step student with
# the SF-V trainer, then score teacher 25/4/1 steps, the student and the committed SF-V and reconstruction-only
# students (the SF-V one also with the committed fast decoder) on held-out conditionings -> runs/demo/report.md
demo: $(STAMP)
	$(PY) -m sfv.toy.demo --out $(DEMO)

# The GPU figures (CUDA only, never in the tests): full-size SVD speed with the stock and the fast decoder, and the
# memory of an FSDP training step -> runs/gpu-check/gpu-check.json and docs/benchmarks.md's GPU section.
# `python tools/gpu_check.py --dry-run` runs the same steps on the CPU at tiny size.
gpu-check: $(STAMP)
	$(PY) tools/gpu_check.py

clean:
	rm -rf $(VENV) runs .pytest_cache
