"""conduwuit: a Matrix homeserver built on Trio structured concurrency."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("conduwuit")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0"

__all__ = ["__version__"]
