"""mypypi2: a pull-through cache for Python package indexes."""
