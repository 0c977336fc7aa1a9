"""Helpers shared by the test modules; conftest.py keeps only the fixtures built on them.

apps: ASGI middleware that shows a test the inside of a running cache. cache: the cache
served in the test's event loop, its clock, repositories. database: scratch databases.
files: stores, downloads and stored rows. http: one GET and its Answer. process: mypypi2
as a real process. waiting: eventually(), for conditions instead of delays.
"""
