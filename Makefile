# The two commands of the README: `make serve` and `make test`.
.PHONY: install serve test bench

install: .venv/.installed

.venv/.installed: pyproject.toml scripts/install.sh
	scripts/install.sh

serve: install
	.venv/bin/avatars serve

test: install
	scripts/test-deps.sh
	.venv/bin/python -m pytest -q

bench: install
	.venv/bin/python bench/e2e.py --json bench/e2e.json
