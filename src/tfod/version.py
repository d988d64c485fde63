"""tfod's version, as installed."""

from importlib import metadata

try:
    __version__ = metadata.version("tfod")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
