# Developer tasks. `just --list` shows them.

venv := ".venv"

# Create the virtualenv with the service and its test tools.
install:
    python3 -m venv {{venv}} && {{venv}}/bin/pip install -q -e '.[test]'

# Run the cache (embedded PostgreSQL + local disk unless config.toml says otherwise).
serve *args: install
    {{venv}}/bin/mypypi2 serve {{args}}

# Run the whole test suite.
test *args: install
    {{venv}}/bin/pytest {{args}}

# Apply database migrations.
migrate: install
    {{venv}}/bin/mypypi2 migrate

# Lint and type-check.
lint: install
    {{venv}}/bin/ruff check mypypi2 tests
    {{venv}}/bin/ruff format --check mypypi2 tests
    {{venv}}/bin/mypy

# Regenerate config.example.toml from the defaults.
example-config: install
    {{venv}}/bin/python -m mypypi2.example_config

# Benchmark against proxpi, devpi-server and nginx on loopback (bench/README.md).
bench *args:
    python3 -m venv {{venv}} && {{venv}}/bin/pip install -q -e '.[bench]'
    {{venv}}/bin/python -m bench.run {{args}}
