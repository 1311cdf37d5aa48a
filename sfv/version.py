"""sfv's version (pyproject.toml's), in a module of its own: recorded in sfv.json and bench reports without
importing the package root."""

__version__ = "0.1.0"
