"""Per-domain calibration: label-free adaptation, INT8 (Q/DQ) and FP16 graphs, accuracy gates.

>>> from cdiqa.calibration import CalibConfig, calibrate      # doctest: +SKIP
>>> report = calibrate("bundle", CalibConfig(domain="medical"))
>>> report.gates["int8"].srcc_vs_fp32 > 0.99
True

Modules: ``domains`` (built-in samples, folders), ``screens`` (rendered screen content),
``readers`` (calibration feeds, severity ladders), ``methods`` (range methods, the cache),
``int8`` (Q/DQ from a cache), ``fp16`` (strongly typed FP16), ``adapt`` (label-free
fine-tuning), ``gate`` (accuracy gates), ``bundle`` (``calibrate``: all or nothing),
``evaluate`` (cross-domain benchmark). INT8/FP16 vs FP32 throughput is measured by
``iqa-export bench`` (``cdiqa.export.bench``).
Importing this package imports neither torch nor onnx.
"""

from cdiqa.calibration.bundle import MIN_IMAGES, CalibConfig, CalibrationReport, calibrate
from cdiqa.calibration.domains import BUILTIN, domain_samples
from cdiqa.calibration.methods import METHODS, CalibrationCache, collect_ranges

__all__ = ["BUILTIN", "METHODS", "MIN_IMAGES", "CalibConfig", "CalibrationCache",
           "CalibrationReport", "calibrate", "collect_ranges", "domain_samples"]
