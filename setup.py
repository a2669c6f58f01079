"""Build shim for tools that still look for ``setup.py``.

Everything (metadata, dependencies, console scripts) is declared in ``pyproject.toml``;
setuptools reads it from there. ``pip install -e .`` works with or without this file.
"""

from setuptools import setup

setup()
