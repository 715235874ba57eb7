"""The development set: whole photographs at 512 x 384, shaped like KADID-10k's references.

Every reference is centre-cropped to 4:3 and resized with Lanczos to 512 x 384, as KADID-10k
did with its 81 photographs. Sources are free images: scikit-image's bundled photographs and
photographs from three Debian packages (mate-backgrounds' nature/ folder, lomiri-wallpapers-20.04
and ukui-wallpapers). ``fetch`` downloads the packages with ``apt-get download``, unpacks them
with ``dpkg -x``, writes the resized PNGs into a cache folder with ``sources.json`` (origin,
package version, licence file) and copies each package's copyright file beside them. Nothing
is downloaded at test time or by any other command.

Two disjoint splits of the references:

=========  ================================================================================
split      use
=========  ================================================================================
tune       fit heads (label-free, few-shot labels, supervised) and tune design choices
test       report: nothing is fitted or chosen on these (12 photographs: a face, sky, night,
           foliage, flowers, water, a flat wall of wood, macro and busy grass)
=========  ================================================================================

Reserved for independent evaluation and never used here: scikit-learn's, matplotlib's and
SciPy's sample photographs, and Debian's lomiri-wallpapers-16.04. ukui-wallpapers holds
rendered illustrations, not photographs: two of them (large flat areas and smooth gradients)
are in the tune split only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cdiqa.errors import ConfigError, describe

#: KADID-10k's reference size (width, height)
SIZE = (512, 384)
SPLITS = ("tune", "test")
SOURCES_FILE = "sources.json"
_MATE = "usr/share/backgrounds/mate/nature/"
_BG = "usr/share/backgrounds/"


@dataclass(frozen=True)
class Source:
    """One reference: ``origin`` is ``skimage:<name>`` or ``deb:<package>:<path in package>``."""

    name: str
    origin: str
    split: str
    content: str


SOURCES = (
    Source("astronaut", "skimage:astronaut", "test", "face, flag, studio"),
    Source("coffee", "skimage:coffee", "test", "cup on a table, flat areas"),
    Source("kleiber", f"deb:lomiri-wallpapers-20.04:{_BG}Kleiber_by_Lukas_Baubkus.jpg", "test",
           "bird on a tree trunk, bokeh"),
    Source("infinite_sea", f"deb:lomiri-wallpapers-20.04:{_BG}Infinite-Sea_by_Aury88.jpg", "test",
           "night sky over the sea"),
    Source("storm", f"deb:mate-backgrounds:{_MATE}Storm.jpg", "test", "clouded sky, road"),
    Source("dune", f"deb:mate-backgrounds:{_MATE}Dune.jpg", "test", "grass, sea, sky"),
    Source("green_meadow", f"deb:mate-backgrounds:{_MATE}GreenMeadow.jpg", "test", "busy grass"),
    Source("lady_bird", f"deb:mate-backgrounds:{_MATE}LadyBird.jpg", "test", "insect, flowers"),
    Source("rain_drops", f"deb:mate-backgrounds:{_MATE}RainDrops.jpg", "test", "leaves, drops"),
    Source("wood", f"deb:mate-backgrounds:{_MATE}Wood.jpg", "test", "flat wooden surface"),
    Source("yellow_flower", f"deb:mate-backgrounds:{_MATE}YellowFlower.jpg", "test",
           "flower, dark background"),
    Source("aqua", f"deb:mate-backgrounds:{_MATE}Aqua.jpg", "test", "water drop, flat grey"),
    Source("rocket", "skimage:rocket", "tune", "rocket, building, sky"),
    Source("motorcycle", "skimage:motorcycle_left", "tune", "motorcycle, indoor clutter"),
    Source("blinds", f"deb:mate-backgrounds:{_MATE}Blinds.jpg", "tune", "leaf stripes"),
    Source("fresh_flower", f"deb:mate-backgrounds:{_MATE}FreshFlower.jpg", "tune", "petals"),
    Source("garden", f"deb:mate-backgrounds:{_MATE}Garden.jpg", "tune", "flower, bokeh"),
    Source("two_wings", f"deb:mate-backgrounds:{_MATE}TwoWings.jpg", "tune", "seeds, blur"),
    Source("city", f"deb:ukui-wallpapers:{_BG}city.png", "tune", "illustration, flat"),
    Source("ribbon", f"deb:ukui-wallpapers:{_BG}2004default.jpg", "tune",
           "illustration, gradients"),
)

Progress = Callable[[str, int, int], None]


def default_cache() -> Path:
    """``$CDIQA_DEVSET``, else ``~/.cache/cdiqa/devset``."""
    env = os.environ.get("CDIQA_DEVSET")
    return Path(env) if env else Path.home() / ".cache" / "cdiqa" / "devset"


def crop_resize(image: np.ndarray, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Centre crop to the aspect of ``size`` (w, h), then Lanczos resize: float32 RGB [0, 1]."""
    from PIL import Image

    h, w = image.shape[:2]
    tw, th = size
    if w * th > h * tw:  # too wide: keep the full height
        cw, ch = int(round(h * tw / th)), h
    else:
        cw, ch = w, int(round(w * th / tw))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    crop = np.asarray(image[y0:y0 + ch, x0:x0 + cw], np.float32)
    u8 = Image.fromarray(np.round(np.clip(crop, 0, 1) * 255).astype(np.uint8))
    out = u8.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(out, np.float32) / 255


def _packages() -> list[str]:
    return sorted({s.origin.split(":")[1] for s in SOURCES if s.origin.startswith("deb:")})


def _download(packages: list[str], work: Path) -> dict[str, str]:
    """``apt-get download`` + ``dpkg -x`` each package into ``work/<pkg>``; pkg -> version."""
    for tool in ("apt-get", "dpkg", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise ConfigError(f"Tool for fetching the development set '{tool}': got none on "
                              "PATH, expected Debian's apt and dpkg. Run the fetch on a Debian "
                              "or Ubuntu machine and copy the cache folder.")
    _run(["apt-get", "download", *packages], work, "the .deb files",
         "Run 'apt-get update' first")
    versions = {}
    for deb in sorted(work.glob("*.deb")):
        pkg = deb.name.split("_")[0]
        versions[pkg] = deb.name.split("_")[1]
        _run(["dpkg", "-x", deb.name, pkg], work, "the unpacked package",
             "Delete the cache folder and fetch again")
    return versions


def _run(cmd: list[str], work: Path, expected: str, fix: str) -> None:
    """Run ``cmd`` in ``work``; a failure is a ConfigError naming the command and its stderr."""
    try:
        subprocess.run(cmd, cwd=work, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise ConfigError(f"Command '{' '.join(cmd[:3])}': got '{exc.stderr.strip()[-300:]}', "
                          f"expected {expected}. {fix}.") from None


def _load(source: Source, work: Path) -> np.ndarray:
    from cdiqa.images import as_image, load_image

    parts = source.origin.split(":")
    if parts[0] == "skimage":
        from skimage import data

        img = data.stereo_motorcycle()[0] if parts[1] == "motorcycle_left" else getattr(
            data, parts[1])()
        return as_image(img, source.name)
    return load_image(work / parts[1] / parts[2])


def fetch(cache: str | os.PathLike | None = None, progress: Progress | None = None) -> Path:
    """Download, crop and resize every reference into ``cache``; returns the cache folder."""
    from cdiqa.files import atomic_write
    from cdiqa.images import save_image

    cache = Path(cache) if cache is not None else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cdiqa-devset-") as tmp:
        work = Path(tmp)
        versions = _download(_packages(), work)
        (cache / "licences").mkdir(exist_ok=True)
        for pkg in versions:
            shutil.copyfile(work / pkg / "usr/share/doc" / pkg / "copyright",
                            cache / "licences" / f"{pkg}.copyright")
        records = []
        for i, s in enumerate(SOURCES):
            path = cache / f"{s.name}.png"
            save_image(path, crop_resize(_load(s, work)))  # atomic: temp file + rename
            pkg = s.origin.split(":")[1]
            records.append({**asdict(s), "file": path.name, "sha256": _sha256(path),
                            "version": versions.get(pkg, _skimage_version()),
                            "licence": (f"licences/{pkg}.copyright" if pkg in versions
                                        else "scikit-image (BSD-3-Clause; see its data/README)")})
            if progress is not None:
                progress("references", i + 1, len(SOURCES))
    atomic_write(cache / SOURCES_FILE, lambda f: f.write(json.dumps(records, indent=1).encode()))
    return cache


def _skimage_version() -> str:
    import skimage

    return f"scikit-image {skimage.__version__}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_split(split: str, cache: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """name -> reference (float32 RGB 384 x 512) of one split, from a fetched cache.

    ``cache`` may also be any folder with a ``sources.json`` of the same form (name, split,
    file), which is how tests give a small set.
    """
    from cdiqa.images import load_image

    if split not in SPLITS:
        raise ConfigError(describe("Split", "development set", "split", split,
                                   f"one of {SPLITS}", "Pick 'tune' or 'test'"))
    cache = Path(cache) if cache is not None else default_cache()
    index = cache / SOURCES_FILE
    if not index.is_file():
        raise ConfigError(f"Development set in '{cache}': got no {SOURCES_FILE}, expected the "
                          "fetched references. Run 'iqa-export fetch-devset' once (Debian "
                          "apt-get/dpkg), or pass --refs with a fetched folder.")
    records = json.loads(index.read_text())
    refs = {r["name"]: load_image(cache / r["file"]) for r in records if r["split"] == split}
    if not refs:
        raise ConfigError(describe("References", "development set", str(cache),
                                   f"none in split '{split}'", "at least one",
                                   "Fetch the set again"))
    return refs
