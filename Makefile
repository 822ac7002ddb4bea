# make run   : create .venv, install, train the CPU char-level GPT on Tiny Shakespeare, print a sample
# make test  : create .venv, install with test extras, run the test suite
# make bench : (installs the bench extra: matplotlib) every CPU benchmark in bench/ (throughput, data preparation, BPE training, sampling, serving,
#              the laptop chat recipe, HellaSwag, time to loss, bf16 vs fp32)
#
# TORCH_SPEC pins torch (a CPU build installs from a local wheel here; an unpinned torch pulls a multi-GB
# CUDA build). For your own CUDA build: make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/shakespeare_char_cpu_modern.yaml
ARGS ?=
CKPT ?= out/shakespeare_char_cpu_modern/checkpoints/last.ckpt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) main.py fit --config $(CONFIG) $(ARGS)
	$(PY) main.py generate --ckpt_path $(CKPT) --max_new_tokens 500

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) bench/train_throughput.py
	$(PY) bench/prepare_data.py
	$(PY) bench/bpe_train.py
	$(PY) bench/generate.py
	$(PY) bench/serve.py
	$(PY) bench/chat_recipe.py
	$(PY) bench/hellaswag_eval.py
	$(PY) bench/bad_input_memory.py
	$(PY) bench/time_to_loss.py
	$(PY) bench/time_to_loss.py --as-shipped --cases char_adamw,char_tuned,char_modern --plot docs/time_to_loss.png
	$(PY) bench/cpu_precision.py

clean:
	rm -rf $(VENV) out lightning_logs
