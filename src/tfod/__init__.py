"""tfod: from a folder of labelled images to a trained, evaluated, quantized object detector.

As a library (docs/python.md)::

    import tfod

    tfod.demo_data("data/demo")
    result = tfod.train("tfod.yaml", time="10m")
    tfod.export(result.run.path)
    detections = tfod.load(result.run.path).detect(image)
"""

import sys
import types

from tfod.api import (
    convert,
    demo_data,
    evaluate,
    export,
    init,
    load,
    predict,
    qat,
    train,
    verify,
)
from tfod.errors import TfodError
from tfod.version import __version__

__all__ = [
    "TfodError",
    "__version__",
    "convert",
    "demo_data",
    "evaluate",
    "export",
    "init",
    "load",
    "predict",
    "qat",
    "train",
    "verify",
]


class _Package(types.ModuleType):
    """`tfod.train`, `tfod.evaluate`, `tfod.export` and `tfod.predict` are both functions and
    subpackages. Importing a subpackage would rebind the package's attribute to it; the function
    stays (the subpackage is still imported by its dotted name, from sys.modules)."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and callable(getattr(self, name, None)):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
