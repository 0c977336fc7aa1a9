"""The benchmark harness: mypypi2 against proxpi, devpi-server and nginx, on loopback.

`python -m bench.run` (or `just bench`); bench/README.md says what is measured.
"""
