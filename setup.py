"""Shim so Beam's `--setup_file ./setup.py` can ship the package to remote workers; metadata is in setup.cfg."""
from setuptools import setup

setup()
