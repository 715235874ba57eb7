"""Reference images of imaging domains: built-in samples, or a user's folder.

=============  =============================================================================
domain         built-in references (group = source image; real pairs)
=============  =============================================================================
natural        scikit-image photographs: astronaut, chelsea, coffee, rocket, motorcycle_left,
               camera, coins, clock
underwater     cdiqa/assets/domains/underwater/ref (11 FUnIE-GAN scenes, MIT licence);
               real pairs (ref, raw): the enhanced scene vs the photograph as taken
medical        pydicom-data's NEMA WG04 images (CT 693, MR2, US1, CR RG1, RG3: the lossless
               ``*_UNCR``), scikit-image retina, cell, microaneurysms, Shepp-Logan phantom;
               real pairs (``*_UNCR``, ``*_UNCI``): lossless vs lossy-compressed
screen         scikit-image page and text, plus application windows and charts drawn with
               Pillow (``cdiqa.calibration.screens``, 4 of each)
neutron        transmission images: CR RG1 and RG3, CT 693 and a CT abdomen (pydicom-data), a
               CT head (pydicom's test files), the Shepp-Logan phantom (gray; degradations:
               Poisson-Gaussian noise, white spots, blur)
=============  =============================================================================

Images larger than ``MAX_SIDE`` are reduced (area average) and cut into non-overlapping
``TILE`` x ``TILE`` tiles; tiles of one source share its group, and held-out splits are made
by group, so no held-out reference shares a source image with a calibration reference.
DICOM files are mapped to [0, 1] with the reference's 0.5 / 99.5 percentiles (MONOCHROME1
inverted); the lossy copy of a pair uses its reference's mapping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from cdiqa.errors import CalibrationError, describe
from cdiqa.images import IMAGE_SUFFIXES, as_image, load_image

#: largest side kept before tiling (area reduction above it)
MAX_SIDE = 512
#: side of the reference tiles
TILE = 256
#: most tiles taken from one source image
MAX_TILES = 4
#: image files read from a folder
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "domains"
NEMA = ("693", "MR2", "US1", "RG1", "RG3")


@dataclass(frozen=True)
class Reference:
    """One reference image of a domain: float32 RGB (H, W, 3); ``group`` is its source."""

    name: str
    group: str
    image: np.ndarray


@dataclass(frozen=True)
class RealPair:
    """A real (reference, degraded) pair of a domain, e.g. lossless vs lossy DICOM."""

    name: str
    group: str
    ref: np.ndarray
    dist: np.ndarray


@dataclass(frozen=True)
class DomainSamples:
    """References (and real pairs, if any) of one domain, with where they came from."""

    domain: str
    references: tuple[Reference, ...]
    real_pairs: tuple[RealPair, ...] = ()
    source: str = ""

    @property
    def groups(self) -> list[str]:
        """Source images, in order of first appearance."""
        return list(dict.fromkeys(r.group for r in self.references))


# ---- image preparation ----------------------------------------------------------------------


def reduce(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Area-average ``image`` by an integer factor so its longer side is <= ``max_side``."""
    f = int(np.ceil(max(image.shape[:2]) / max_side))
    if f <= 1:
        return image
    h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    x = image[:h, :w].reshape(h // f, f, w // f, f, -1).mean(axis=(1, 3))
    return x.astype(np.float32)


def tiles(image: np.ndarray, size: int = TILE, limit: int = MAX_TILES) -> list[np.ndarray]:
    """Up to ``limit`` non-overlapping tiles (the most textured first); the image itself when
    it is smaller than a tile."""
    h, w = image.shape[:2]
    if min(h, w) < size:
        return [image]
    ny, nx = h // size, w // size
    y0, x0 = (h - ny * size) // 2, (w - nx * size) // 2
    out = [image[y0 + i * size: y0 + (i + 1) * size, x0 + j * size: x0 + (j + 1) * size]
           for i in range(ny) for j in range(nx)]
    out.sort(key=lambda t: -float(t.std()))
    return [np.ascontiguousarray(t) for t in out[:limit]]


def references_from(images: dict[str, np.ndarray], domain: str) -> list[Reference]:
    """Reduce and tile each named image into ``Reference`` objects grouped by source."""
    out = []
    for name, image in images.items():
        for i, t in enumerate(tiles(reduce(image))):
            out.append(Reference(f"{name}#{i}", name, t))
    return out


# ---- folders --------------------------------------------------------------------------------


def folder_images(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every image file directly in ``folder`` (sorted), as float32 RGB.

    Raises:
        CalibrationError: the folder is missing, holds no image file, or a file is unreadable
            (named in the message).
    """
    from cdiqa.errors import ImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(describe("Images", "folder", folder, "no such folder",
                                        "a folder of reference images", "Check --images"))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(describe("Images", "folder", folder, "no image file",
                                        f"files ending in {', '.join(IMAGE_SUFFIXES)}",
                                        "Point --images at a folder of the domain's references"))
    out = {}
    for p in files:
        try:
            out[p.stem] = load_image(p)
        except ImageError as exc:
            raise CalibrationError(f"Image file '{p}' in --images cannot be used: {exc}") \
                from None
    return out


def samples_from_folder(domain: str, folder: str | os.PathLike) -> DomainSamples:
    """The references of ``domain`` read from a folder."""
    refs = references_from(folder_images(folder), domain)
    return DomainSamples(domain, tuple(refs), (), f"folder {folder}")


# ---- built-in sources -----------------------------------------------------------------------


def _skimage(*names: str) -> dict[str, np.ndarray]:
    from cdiqa import _lazy

    data = _lazy.lazy_import("skimage.data", purpose="Built-in domain samples")
    out = {}
    for name in names:
        if name == "motorcycle_left":
            array = data.stereo_motorcycle()[0]
        elif name == "shepp_logan_phantom":
            array = np.clip(data.shepp_logan_phantom(), 0, 1).astype(np.float32)
        else:
            array = getattr(data, name)()
        out[name] = as_image(array, name)
    return out


def nema_folder() -> Path:
    """pydicom-data's file folder, found without network access (``data_store/data``)."""
    import importlib.util

    spec = importlib.util.find_spec("data_store")
    if spec is None or spec.origin is None:
        raise CalibrationError("Built-in samples for domain 'medical'/'neutron': got no "
                               "pydicom-data package, expected its NEMA WG04 images. Install "
                               "'cdiqa[train]' (pydicom, pydicom-data) or pass --images.")
    return Path(spec.origin).parent / "data"


def _dicom_pixels(path: Path) -> tuple[np.ndarray, bool]:
    from cdiqa import _lazy

    pydicom = _lazy.lazy_import("pydicom", purpose="DICOM domain samples")
    ds = pydicom.dcmread(path)
    a = np.asarray(ds.pixel_array, np.float64)
    if a.ndim == 3 and a.shape[-1] != 3:
        a = a[a.shape[0] // 2]
    return a, ds.get("PhotometricInterpretation") == "MONOCHROME1"


def _windowed(arrays: list[np.ndarray], invert: bool, name: str) -> list[np.ndarray]:
    """``arrays`` mapped to [0, 1] with the first one's 0.5 / 99.5 percentiles."""
    lo, hi = np.percentile(arrays[0], [0.5, 99.5])
    out = []
    for a in arrays:
        x = np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1)
        out.append(as_image((1 - x if invert else x).astype(np.float32), name))
    return out


def _dicom_pair(stem: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference, lossy) of one NEMA pair, both mapped with the reference's window."""
    folder = nema_folder()
    ref, invert = _dicom_pixels(folder / f"{stem}_UNCR.dcm")
    dist, _ = _dicom_pixels(folder / f"{stem}_UNCI.dcm")
    ref_image, dist_image = _windowed([ref, dist], invert, stem)
    return ref_image, dist_image


def _ct_slices() -> dict[str, np.ndarray]:
    """Two more CT slices (lossless JPEG 2000): pydicom-data's abdomen (TCIA) and pydicom's
    own head test file."""
    from cdiqa import _lazy

    pydicom_dir = Path(_lazy.lazy_import("pydicom", purpose="DICOM domain samples").__file__)
    files = {"CT_abdomen": nema_folder() / "explicit_VR-UN.dcm",
             "CT_head": pydicom_dir.parent / "data" / "test_files" /
             "J2K_pixelrep_mismatch.dcm"}
    out = {}
    for name, path in files.items():
        if not path.is_file():
            raise CalibrationError(describe("Built-in samples", "file", path, "missing",
                                            f"the {name} slice of pydicom / pydicom-data",
                                            "Install 'cdiqa[train]' (pydicom 3, pydicom-data) "
                                            "or pass --images"))
        a, invert = _dicom_pixels(path)
        out[name] = _windowed([a], invert, name)[0]
    return out


def _nema(stems=NEMA) -> tuple[dict[str, np.ndarray], list[RealPair]]:
    refs, pairs = {}, []
    for stem in stems:
        ref, dist = _dicom_pair(stem)
        refs[stem] = ref
        pairs.append(RealPair(stem, stem, reduce(ref), reduce(dist)))
    return refs, pairs


def _underwater() -> DomainSamples:
    folder = ASSETS / "underwater"
    if not (folder / "ref").is_dir():
        raise CalibrationError(describe("Built-in samples", "domain", "underwater",
                                        f"no folder {folder / 'ref'}",
                                        "the samples shipped with cdiqa",
                                        "Reinstall cdiqa or pass --images"))
    refs = {p.stem: load_image(p) for p in sorted((folder / "ref").glob("*.jpg"))}
    pairs = tuple(RealPair(n, n, refs[n], load_image(folder / "raw" / f"{n}.jpg"))
                  for n in refs if (folder / "raw" / f"{n}.jpg").is_file())
    return DomainSamples("underwater", tuple(references_from(refs, "underwater")), pairs,
                         "FUnIE-GAN test scenes (cdiqa/assets/domains/underwater, MIT)")


def _natural() -> DomainSamples:
    images = _skimage("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "camera",
                      "coins", "clock")
    return DomainSamples("natural", tuple(references_from(images, "natural")), (),
                         "scikit-image photographs")


def _medical() -> DomainSamples:
    images, pairs = _nema()
    images.update(_skimage("retina", "cell", "microaneurysms", "shepp_logan_phantom"))
    return DomainSamples("medical", tuple(references_from(images, "medical")), tuple(pairs),
                         "pydicom-data NEMA WG04 (UNCR/UNCI) + scikit-image retina, cell, "
                         "microaneurysms, Shepp-Logan phantom")


def _screen() -> DomainSamples:
    from cdiqa.calibration.screens import render_chart, render_ui

    images = _skimage("page", "text")
    images.update({f"ui{i}": render_ui(i) for i in range(4)})
    images.update({f"chart{i}": render_chart(i) for i in range(4)})
    return DomainSamples("screen", tuple(references_from(images, "screen")), (),
                         "scikit-image page/text + Pillow-rendered windows and charts")


def _neutron() -> DomainSamples:
    images, _ = _nema(("RG1", "RG3", "693"))
    images.update(_ct_slices())
    images.update(_skimage("shepp_logan_phantom"))
    return DomainSamples("neutron", tuple(references_from(images, "neutron")), (),
                         "transmission images: pydicom-data CR RG1, RG3, CT 693, CT abdomen; "
                         "pydicom's CT head; Shepp-Logan phantom")


#: domain -> loader of its built-in samples
BUILTIN: dict[str, Callable[[], DomainSamples]] = {
    "natural": _natural,
    "underwater": _underwater,
    "medical": _medical,
    "screen": _screen,
    "neutron": _neutron,
}


def check_domain(domain: str) -> str:
    """``domain`` if it has degradations (``degradations_for``); else a ``CalibrationError``
    that lists the known domains and the nearest name."""
    import difflib

    from cdiqa.model.distortions import DOMAIN_DEGRADATIONS

    if domain not in DOMAIN_DEGRADATIONS:
        near = difflib.get_close_matches(str(domain), list(DOMAIN_DEGRADATIONS), n=1)
        hint = f"Did you mean '{near[0]}'?" if near else "Pick one of the known domains"
        raise CalibrationError(describe("Domain", "option", "--domain", repr(domain),
                                        f"one of {sorted(DOMAIN_DEGRADATIONS)}", hint))
    return domain


def domain_samples(domain: str, images: str | os.PathLike | None = None) -> DomainSamples:
    """The references of ``domain``: from ``images`` (a folder) or the built-in samples."""
    check_domain(domain)
    if images is not None:
        return samples_from_folder(domain, images)
    return _builtin(domain)


@lru_cache(maxsize=None)
def _builtin(domain: str) -> DomainSamples:
    return BUILTIN[domain]()  # decoding the DICOM files takes seconds: once per process
