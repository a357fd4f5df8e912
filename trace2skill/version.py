"""The tool's version, in a module of its own so any module can read it without importing the
package's `__init__` (which reaches the pipeline). Keep it equal to pyproject.toml's."""

__version__ = "0.1.0"
