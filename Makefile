# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_CPU := torch==2.13.0
# The Triton server of the serving tests: a Python environment of its own, as a server has (see serve-deps).
SERVE_VENV ?= .venv-triton
PYTRITON := nvidia-pytriton==0.7.0

# NVIDIA ModelOpt, the reference the INT8 export is compared with (tests/test_modelopt_compare.py skips without it):
# an environment of its own, as nvidia-modelopt[onnx] pulls onnxruntime-gpu, cupy and an older onnx. Not part of
# `make test`'s required path.
MODELOPT_VENV ?= .venv-modelopt
MODELOPT := nvidia-modelopt[onnx]==0.47.0

.PHONY: setup demo test bench clean serve-deps modelopt-deps

setup: $(VENV)/.installed

# A torch already installed for $(PYTHON) (say a CUDA build) is kept: the venv then sees the system packages.
$(VENV)/.installed: setup.cfg pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "using the installed torch: $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_CPU)
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

demo: setup
	$(VENV)/bin/srpose demo

# The serving tests (tests/test_triton_server.py) skip, saying why, when serve-deps cannot be installed.
test: setup
	@$(MAKE) --no-print-directory serve-deps || echo "make serve-deps failed: the Triton server tests will skip"
	$(PY) -m pytest -q

# tritonclient in .venv (the `triton` extra), and the server: the tritonserver binary with the python backend from
# the nvidia-pytriton wheel (--no-deps: its numpy<2 pin concerns PyTriton's own Python API, which is not used) in a
# venv holding what the python-backend models of `srpose triton` need, pinned to .venv's versions so the server
# decodes, crops and runs graphs with the evaluator's very libraries.
serve-deps: $(SERVE_VENV)/.installed

$(SERVE_VENV)/.installed: $(VENV)/.installed srpose/serve/environment.py
	$(PY) -m pip install -q -e ".[test,triton]"
	rm -rf $(SERVE_VENV)
	$(PYTHON) -m venv $(SERVE_VENV)
	$(PY) -m srpose.serve.environment --pin > $(SERVE_VENV)/requirements.txt
	$(SERVE_VENV)/bin/python -m pip install -q -r $(SERVE_VENV)/requirements.txt
	$(SERVE_VENV)/bin/python -m pip install -q --no-deps $(PYTRITON)
	@touch $@

modelopt-deps: $(MODELOPT_VENV)/.installed

$(MODELOPT_VENV)/.installed:
	rm -rf $(MODELOPT_VENV)
	$(PYTHON) -m venv $(MODELOPT_VENV)
	$(MODELOPT_VENV)/bin/python -m pip install -q --upgrade pip
	$(MODELOPT_VENV)/bin/python -m pip install -q "$(MODELOPT)"
	@touch $@

bench: setup
	$(PY) scripts/bench_decode.py

clean:
	rm -rf $(VENV) $(SERVE_VENV) $(MODELOPT_VENV) demo runs build *.egg-info
