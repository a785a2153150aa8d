# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_CPU := torch==2.13.0

.PHONY: setup demo test bench clean

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

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) scripts/bench_decode.py

clean:
	rm -rf $(VENV) demo build *.egg-info
