"""The build's one addition to pyproject.toml: the replicator's optional C extraction.

``replicator/_speedups.c`` is optional: without a C compiler the build skips it and
``replicator/columns.py`` reads the images in Python, with the same results (the tests run both paths).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("replicator._speedups", ["replicator/_speedups.c"], optional=True,
                             extra_compile_args=["-O2"])])
