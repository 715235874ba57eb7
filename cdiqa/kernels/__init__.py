"""CUDA kernels of cdiqa: the fused masking op, its contract, its PTX build and a loader.

Import-light on purpose: importing this package imports neither cuda-python nor PyYAML.

- ``masking/masking.cu`` (+ ``masking.cuh``): the kernels and the host launcher that the
  TensorRT plugin calls; ``masking/README.md`` documents maths, layout and limits.
- ``masking/spec.yaml``: the machine-readable contract, read with :func:`load_spec`.
- :mod:`cdiqa.kernels.ptx`: nvcc / NVRTC build to PTX and cubin, cached on disk.
- :mod:`cdiqa.kernels.loader`: runs the kernels through the CUDA driver API (cuda-python).
"""

from __future__ import annotations

from pathlib import Path

from cdiqa.errors import BackendUnavailable, ManifestError

#: Folder of the masking op: kernels, header, spec and README.
MASKING_DIR = Path(__file__).resolve().parent / "masking"
#: The CUDA source compiled to PTX.
MASKING_SOURCE = MASKING_DIR / "masking.cu"
#: Its header (launch constants, host API); NVRTC gets it as an in-memory header.
MASKING_HEADER = MASKING_DIR / "masking.cuh"
#: The machine-readable contract of the op.
MASKING_SPEC = MASKING_DIR / "spec.yaml"

_REQUIRED_KEYS = ("op", "namespace", "version", "inputs", "outputs", "attributes",
                  "entry_points", "launch")


def load_spec(path: Path | str | None = None) -> dict:
    """The masking op's contract (``masking/spec.yaml``) as a dict.

    Args:
        path: another spec file to read; ``None`` reads the packaged one.

    Raises:
        BackendUnavailable: PyYAML is not installed.
        ManifestError: the file is missing or lacks a required top-level key.

    >>> spec = load_spec()
    >>> spec["op"], spec["namespace"], spec["version"]
    ('CdiqaMasking', 'cdiqa', '1')
    """
    try:
        import yaml
    except ImportError:
        raise BackendUnavailable("Reading the kernel spec needs 'pyyaml'; install 'pyyaml' "
                                 "(part of cdiqa's export and trt extras).") from None
    path = Path(path) if path is not None else MASKING_SPEC
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"Kernel spec for file '{path}': got {exc.strerror}, expected a "
                            "readable YAML file. Reinstall cdiqa or pass an existing path.") from None
    missing = [k for k in _REQUIRED_KEYS if not isinstance(spec, dict) or k not in spec]
    if missing:
        raise ManifestError(f"Kernel spec for file '{path}': got no key(s) {missing}, expected "
                            f"all of {list(_REQUIRED_KEYS)}. Restore the packaged spec.yaml.")
    return spec


__all__ = ["MASKING_DIR", "MASKING_HEADER", "MASKING_SOURCE", "MASKING_SPEC", "load_spec"]
