"""tfod: from a folder of labelled images to a trained, evaluated, quantized object detector."""

from tfod.version import __version__

__all__ = ["__version__"]
