# The README's two commands:  `make demo` (the main job)  and  `make test`.
# Both create .venv on first use (scripts/setup.sh: CPU torch 2.13.0 + pinned deps, about a minute here).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sfv-installed
DEMO := runs/demo

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

# Until the toy world lands, the demo builds a tiny random SVD and samples it with the multi-step teacher
# sampler (25 steps, CFG) and SF-V's one-step sampler, printing both timings.
demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(PY) tools/make_tiny_svd.py --out $(DEMO)/tiny-svd --frames 8 --example-image $(DEMO)/example.png
	$(VENV)/bin/sfv sample --model $(DEMO)/tiny-svd --image $(DEMO)/example.png --out $(DEMO)/svd-25-steps-cfg.mp4 \
		--height 64 --width 64 --steps 25 --max-guidance-scale 3
	$(VENV)/bin/sfv sample --model $(DEMO)/tiny-svd --image $(DEMO)/example.png --out $(DEMO)/one-step.mp4 \
		--height 64 --width 64
	@echo "demo: videos in $(DEMO)/ (random tiny weights: the point is the pipeline and the timings)"

clean:
	rm -rf $(VENV) runs .pytest_cache
