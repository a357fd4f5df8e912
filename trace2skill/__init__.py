"""trace2skill: distil agent trajectories into versioned, provenance-tracked Agent Skills.

Importing the package does nothing but define names; the pipeline lives in `pipeline`.
"""

from .version import __version__

__all__ = ["__version__", "distill", "load_config"]


def __getattr__(name: str):
    if name == "distill":
        from .pipeline import distill

        return distill
    if name == "load_config":
        from .config import load_config

        return load_config
    raise AttributeError(name)
