"""torch -> ONNX bundles (portable and TensorRT-plugin forms) and their checks.

Importing this package imports neither torch nor onnx; the functions do when called.

>>> from cdiqa.export import export_bundle, check_bundle     # doctest: +SKIP
>>> export_bundle("bundle", "model.pt", {"natural": "head.json"})
>>> check_bundle("bundle").ok
True
"""

from cdiqa.export.bundle import ExportConfig, export_bundle
from cdiqa.export.check import CheckItem, CheckReport, check_bundle
from cdiqa.export.graph import FORMS, onnx_from_torch

__all__ = ["FORMS", "CheckItem", "CheckReport", "ExportConfig", "check_bundle",
           "export_bundle", "onnx_from_torch"]
