# `make demo` and `make test` each set up .venv first (the pinned requirements), so two commands suffice on a fresh
# machine with Python 3.11, 3.12 or 3.13: the first of python3.11, python3.12, python3.13, python3 that runs one of
# those is taken (`make demo PYTHON=/path/to/python` to choose).
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	$$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint bench vela crosscheck openset newclasses audit board-package board-check clean

# The page tests drive a real headless browser: Debian's chromium and its driver, installed here when missing (as root,
# with apt-get; elsewhere install them first, or those tests are skipped with the reason).
BROWSER := $(VENV)/browser
$(BROWSER): $(VENV)/installed
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "make: the page tests need Debian's chromium and chromium-driver (apt-get install as root)"; fi; }
	touch $@

$(VENV)/installed: requirements.txt requirements-edge.txt requirements-vela.txt requirements-dev.txt
	@test -n "$(PYTHON)" || { echo "make: needs Python 3.11, 3.12 or 3.13 (none found; set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The whole pipeline on the bundled synthetic dataset_sample/ with the default settings (one to three minutes of training).
# A model scored on 30 test images can miss the INT8 accuracy budget by one image: quantize then exits 1, the demo
# says so and carries on. DEMO_ARGS passes overrides to training, e.g. make demo DEMO_ARGS="train.epochs=5".
demo: $(VENV)/installed
	$(PY) train_model.py $(DEMO_ARGS)
	$(PY) evaluate_model.py --model models/sem_cnn.keras --out models/eval_keras
	$(PY) export_onnx.py
	$(PY) evaluate_model.py --model models/sem_cnn.onnx --out models/eval_onnx
	$(PY) quantize_onnx.py || echo "demo: INT8 is over the accuracy budget on this small demo set (see models/sem_cnn.int8.report.md); carrying on"
	$(PY) evaluate_model.py --model models/sem_cnn.int8.onnx --out models/eval_int8
	$(PY) export_tflite.py || echo "demo: INT8 TFLite is over the accuracy budget on this small demo set (see models/sem_cnn.int8.tflite.report.md); carrying on"
	$(PY) evaluate_model.py --model models/sem_cnn.int8.tflite --out models/eval_tflite
	$(PY) infer_onnx.py --model models/sem_cnn.int8.onnx dataset_sample/test --output models/predictions.csv --quiet
	@echo "demo done. Written: models/sem_cnn.keras (+ .history.json .config.yaml .curves.png), models/sem_cnn.onnx,"
	@echo "  models/sem_cnn.int8.onnx (+ .report.md .report.json), models/sem_cnn.int8.tflite (+ .report.md .report.json),"
	@echo "  models/eval_{keras,onnx,int8,tflite}/, models/predictions.csv"

# The i.MX 93: the INT8 TFLite model compiled by vela for its Ethos-U65 NPU, with operator placement, SRAM and
# estimated latency (vela comes with the development set-up, requirements-vela.txt; make demo first makes the model).
vela: $(VENV)/installed
	@test -f models/sem_cnn.keras || $(MAKE) demo
	$(PY) export_tflite.py tflite.vela=true

# Speed of the Keras, FP32 and INT8 models of the last training run (make demo first makes them).
bench: $(VENV)/installed
	@test -f models/sem_cnn.int8.onnx || $(MAKE) demo
	$(PY) benchmarks/bench_models.py $(BENCH_ARGS)

# The evaluation protocol (in-distribution + leave-one-source-out) on the real images beside the project.
CROSSCHECK_DATA ?= ../shared/data/sem-multi
crosscheck: $(VENV)/installed
	$(PY) crosscheck.py data.root=$(CROSSCHECK_DATA) $(CROSSCHECK_ARGS)

# The open-set protocol: leave one class out of training, measure how the review bin flags it (docs/review.md).
openset: $(VENV)/installed
	$(PY) crosscheck.py data.root=$(CROSSCHECK_DATA) crosscheck.leave_out=classes crosscheck.out=models/openset $(CROSSCHECK_ARGS)

# The new-classes protocol: leave classes out of training, teach them with adapt_model.py (docs/new-fab.md).
newclasses: $(VENV)/installed
	$(PY) crosscheck.py data.root=$(CROSSCHECK_DATA) crosscheck.leave_out=new_classes crosscheck.out=models/newclasses $(CROSSCHECK_ARGS)

# Images whose label the model disputes (out-of-fold predictions; five trainings) on the same real images.
audit: $(VENV)/installed
	$(PY) audit_labels.py --data $(CROSSCHECK_DATA) $(AUDIT_ARGS)

# The board's one file: models/semdefect_board-VERSION-py3-none-any.whl, the board runtime with the exact pins of
# requirements-edge.txt (README, "On the board").
board-package: $(VENV)/installed
	$(PY) tools/board_package.py

# That file installed into an emulated aarch64 Debian (qemu, Cortex-A53) must classify like x86 (a few minutes; root and
# Debian's apt: it installs qemu-user-static and mmdebstrap if missing; cache in models/board-check/).
board-check: board-package
	$(PY) tools/board_check.py

# Every test (a few minutes: the slow tier trains models and runs the stages as subprocesses).
test: $(BROWSER)
	$(PY) -m pytest -q

# The fast tier: everything but the tests marked slow (well under a minute).
test-fast: $(BROWSER)
	$(PY) -m pytest -q -m "not slow"

# Style and types: ruff on everything, mypy on the package (strict on the board runtime).
lint: $(VENV)/installed
	$(PY) -m ruff check .
	$(PY) -m mypy

clean:
	rm -rf models
