"""``calibrate``: create or update a domain profile of a bundle, all or nothing.

::

    bundle ──copy──► .bundle.calib.<host>.<pid>.XXXX/ (beside it, same file system)
                       1 references of the domain, split by source image: calibration | held out
                       2 adapt (label-free) ──► domains/<d>/model.pt, model.onnx, model.plugin.onnx
                       3 head: chosen (domain_head) or few-shot (--labels) ──► profiles/<d>.json
                       4 ranges on the domain's pairs ──► calibration/<d>.cache
                       5 cache ──► domains/<d>/model.int8.onnx (Q/DQ);  model.fp16.onnx
                       6 manifest; gates on the held-out pairs through the runtime; manifest
                       7 verify every hash, then swap: bundle ──► .old, staging ──► bundle
    any error or interrupt before 7: the staging folder is removed, the bundle is untouched

A failed accuracy gate raises ``CalibrationError`` (the bundle is left as it was) unless
``accept_drop``. The base of every adaptation is the bundle's own checkpoint (``model.pt``),
so recalibrating a domain does not compound earlier adaptations.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from itertools import zip_longest
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np

from cdiqa.calibration.adapt import ADAPT_LR
from cdiqa.calibration.domains import DomainSamples, Reference, check_domain, domain_samples
from cdiqa.calibration.gate import MAX_DROP, check_gates, run_gates
from cdiqa.calibration.int8 import QUANTIZERS
from cdiqa.calibration.methods import DEFAULT_METHOD, METHODS
from cdiqa.errors import CalibrationError, ConfigError, describe
from cdiqa.export.staging import copy_bundle, replace_dir, staged, staging_dir
from cdiqa.manifest import (CALIBRATION_DIR, DOMAIN_FILE_NAMES, DOMAINS_DIR, FILE_CHECKPOINT,
                            FILE_ONNX, PROFILES_DIR, DomainModels, GateResult, Manifest,
                            file_entry, load_manifest, save_manifest)

#: fewest source images a domain needs: 3 to adapt and calibrate on, 1 held out for the gate
MIN_IMAGES = 4
#: most references whose ladders fit the label-free head (features cost time)
HEAD_REFERENCES = 8
#: most ladder pairs the head is fitted on (natural has 25 degradations x 5 levels per image)
HEAD_PAIRS = 400
REDUCED = ("int8", "fp16")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CalibConfig:
    """Options of ``calibrate``; ``None`` means the default.

    Attributes:
        domain: a known domain (``degradations_for``): natural, underwater, medical, screen,
            neutron.
        images: folder of the domain's reference images; None: the built-in samples.
        pairs: CSV (ref_path, dist_path) of real pairs of the domain, used by adaptation.
        labels: CSV (ref_path, dist_path, score): fit a few-shot head on these labels.
        method: INT8 range choice: "percentile" (default), "minmax", "entropy".
        quantizer: "onnxruntime" (static Q/DQ) or "modelopt" (NVIDIA ModelOpt, if installed).
        adapt: fine-tune the model on the domain (False: calibrate the bundle's graph as is).
        encoder: also fine-tune the encoder (default; see ``cdiqa.calibration.adapt``).
        steps, batch_size, crop, lr, seed: adaptation settings.
        feeds, feed_size: INT8 calibration pairs and their crop size.
        holdout: fraction of source images held out for the gates.
        max_drop: largest accepted SRCC drop of a reduced precision.
        accept_drop: keep the models even when a gate fails (recorded in the manifest).
        precisions: reduced precisions to build.
        plugin: also export the adapted graph's TensorRT-plugin form.
        mos_range: (worst, best) of the ``labels`` scores.
        threads: CPU threads for ONNX Runtime and torch (None: all).
        from_cache: rebuild the INT8 model from the bundle's calibration cache, no images.
    """

    domain: str
    images: str | None = None
    pairs: str | None = None
    labels: str | None = None
    method: str = DEFAULT_METHOD
    quantizer: Literal["onnxruntime", "modelopt"] = "onnxruntime"
    adapt: bool = True
    encoder: bool = True
    steps: int = 300
    batch_size: int = 6
    crop: int = 96
    lr: float = ADAPT_LR
    seed: int = 0
    feeds: int = 24
    feed_size: int = 128
    holdout: float = 0.25
    max_drop: float = MAX_DROP
    accept_drop: bool = False
    precisions: tuple[str, ...] = REDUCED
    plugin: bool = True
    mos_range: tuple[float, float] = (1.0, 5.0)
    threads: int | None = None
    from_cache: bool = False

    def __post_init__(self) -> None:
        check_domain(self.domain)
        if self.method not in METHODS:
            from cdiqa.calibration.methods import method_named

            method_named(self.method)
        _choice("quantizer", self.quantizer, QUANTIZERS)
        for p in self.precisions:
            _choice("precision", p, REDUCED)
        if int(self.steps) < 0 or int(self.feeds) < 1 or int(self.batch_size) < 1:
            raise ConfigError(describe("Value", "calibration option", "steps/feeds/batch_size",
                                       (self.steps, self.feeds, self.batch_size),
                                       "steps >= 0, feeds >= 1, batch_size >= 1",
                                       "Pass positive counts"))
        from cdiqa.calibration.adapt import ADAPT_GROUP

        if self.adapt and int(self.batch_size) % ADAPT_GROUP:
            raise ConfigError(describe("Value", "calibration option", "batch_size",
                                       self.batch_size, f"a multiple of {ADAPT_GROUP}",
                                       f"Adaptation batches hold groups of {ADAPT_GROUP} crops "
                                       "sharing one degradation; use e.g. 6"))
        if not 0 < self.holdout < 1:
            raise ConfigError(describe("Value", "calibration option", "holdout", self.holdout,
                                       "a fraction in (0, 1)", "Use e.g. 0.25"))
        if self.from_cache and (self.images or self.pairs or self.labels):
            raise ConfigError("Options for calibrate: got --from-cache with --images/--pairs/"
                              "--labels, expected --from-cache alone. A rebuild from the cache "
                              "reads no image; drop one or the other.")


def _choice(what: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(describe(what.capitalize(), "calibration option", what, repr(value),
                                   f"one of {list(choices)}", "Pick one of them"))


@dataclass(frozen=True)
class CalibrationReport:
    """What ``calibrate`` did."""

    bundle: str
    domain: str
    adapted: bool
    method: str
    references: int
    held_out: int
    files: dict[str, str]
    gates: dict[str, GateResult]
    losses: dict = field(default_factory=dict)
    seconds: float = 0.0
    notes: tuple[str, ...] = ()


# ---- checks before any work -----------------------------------------------------------------


def check_writable(bundle: Path) -> None:
    """Raise ``CalibrationError`` unless a staging folder can be made beside ``bundle`` and
    ``bundle`` itself can be replaced.

    ``os.access`` answers for ordinary users; root passes it everywhere, so a real probe (a
    folder created and removed beside the bundle) catches read-only file systems too.
    """
    fix = "Copy the bundle somewhere writable, or fix the permissions"
    for path in (bundle.parent, bundle):
        if not os.access(path, os.W_OK):
            raise CalibrationError(describe("Permission", "bundle folder", path, "not writable",
                                            "write permission (the bundle is replaced "
                                            "atomically)", fix))
    try:
        os.rmdir(staging_dir(bundle, "probe"))
    except OSError as exc:
        raise CalibrationError(describe("Permission", "bundle folder", bundle.parent,
                                        f"not writable ({exc.strerror})",
                                        "write permission (the bundle is replaced atomically)",
                                        fix)) from None


def split(samples: DomainSamples, holdout: float, where: str
          ) -> tuple[list[Reference], list[Reference]]:
    """(calibration, held-out) references, split by source image (group).

    Raises:
        CalibrationError: fewer than ``MIN_IMAGES`` source images.
    """
    groups = samples.groups
    if len(groups) < MIN_IMAGES:
        raise CalibrationError(describe(
            "Images", "domain", f"{samples.domain}' from '{where}", f"{len(groups)} image(s)",
            f"at least {MIN_IMAGES} ({MIN_IMAGES - 1} to adapt and calibrate on, 1 held out "
            "for the accuracy gate)", "Add images to the folder"))
    n = max(1, int(round(holdout * len(groups))))
    step = len(groups) / n
    held = {groups[min(len(groups) - 1, int(step * i + step / 2))] for i in range(n)}
    cal = [r for r in samples.references if r.group not in held]
    out = [r for r in samples.references if r.group in held]
    return cal, out


# ---- the steps --------------------------------------------------------------------------------


def _load_pairs(path: str | None) -> list[tuple[np.ndarray, np.ndarray]]:
    if path is None:
        return []
    from cdiqa.model.scoring import load_pair, read_pairs_file

    return [load_pair(r, d) for r, d in read_pairs_file(path).paths()]


def _labels(path: str | None):
    if path is None:
        return None
    from cdiqa.model.scoring import read_pairs_file

    pf = read_pairs_file(path)
    return _load_pairs(path), pf.scores()


def _features(model, pairs) -> np.ndarray:
    from cdiqa.model.scoring import pair_features

    return pair_features(model, pairs)


def head_references(cal: list[Reference], kinds) -> list[Reference]:
    """The calibration references whose ladders fit the domain head, at most
    ``HEAD_REFERENCES`` and ``HEAD_PAIRS`` ladder pairs: one per source image in turn, so
    that the head's choice can hold out as many images as there are."""
    most = max(1, min(HEAD_REFERENCES, HEAD_PAIRS // (5 * len(kinds))))
    by_group: dict[str, list[Reference]] = {}
    for r in cal:
        by_group.setdefault(r.group, []).append(r)
    turns = zip_longest(*by_group.values())
    return [r for turn in turns for r in turn if r is not None][:most]


def head_ladder(refs: list[Reference], kinds, seed: int):
    """The ladder of ``refs`` that a domain head is fitted on (each name seeds its noise)."""
    from cdiqa.model.ladder import ladder

    return ladder([r.image for r in refs], kinds, names=[r.name for r in refs], seed=seed)


def _head_choice(model, lad, groups: np.ndarray, *, base, given=()):
    """``HeadChoice`` of ``cdiqa.calibration.domain_head`` on ``lad`` (``groups``: each row's
    source image)."""
    from cdiqa.calibration.domain_head import choose_head

    v_given = _features(model, list(given)) if given else None
    return choose_head(_features(model, lad.pairs()), lad.severity, groups, base=base,
                       layout=model.cfg.head_layout(), kinds=lad.kinds, v_unlabelled=v_given)


def domain_model_and_head(model, refs: list[Reference], kinds, *, base, seed: int, given=()):
    """(model, ``HeadChoice``, notes): the domain head chosen at every input scale
    (``INPUT_SCALES``), and the scale whose best candidate ranks unseen images best.

    The scale with the best candidate wins, the model's own on a tie. (It once had to win by
    ``MARGIN``; with the signed heads, scale 1 then came within it on screen content and
    was kept in 3 of 9 folds, 0.957 -> 0.913 cross-validated.) Measured on the cross-domain
    benchmark (docs/benchmarks.md): screen content scale 2 in every fold, neutron too.
    """
    from cdiqa.model.network import INPUT_SCALES, with_input_scale

    lad = head_ladder(refs, kinds, seed)  # one ladder for every scale
    groups = np.array([refs[i].group for i in lad.ref_index])
    own = model.cfg.input_scale
    tried = {}
    for scale in (own, *(s for s in INPUT_SCALES if s != own)):
        m = model if scale == own else with_input_scale(model, scale)
        tried[scale] = (m, _head_choice(m, lad, groups, base=base, given=given))
    best = lambda sc: tried[sc][1].best  # noqa: E731
    scale = max(tried, key=best)
    scale = scale if best(scale) > best(own) else own
    m, choice = tried[scale]
    scales = ", ".join(f"{sc}: {best(sc):.3f}" for sc in tried)
    notes = (choice.describe(), f"input scale {scale} (best cross-validated SRCC per input "
                                f"scale: {scales})")
    return m, choice, notes


def _fit_head(model, cal: list[Reference], kinds, given, labels, config: CalibConfig,
              base) -> tuple[object, object, tuple[str, ...]]:
    """(model, head, notes): few-shot on ``labels`` if given, else the chosen input scale
    and domain head."""
    from cdiqa.model import fit_heads as fit

    refs = head_references(cal, kinds)
    if labels is None:
        model, choice, notes = domain_model_and_head(model, refs, kinds, base=base,
                                                     seed=config.seed + 1, given=given)
        return model, choice.head, notes
    v = _features(model, head_ladder(refs, kinds, config.seed + 1).pairs() + list(given))
    lab_pairs, mos = labels
    v_lab = _features(model, lab_pairs)
    return model, fit.fit_few_shot(np.concatenate([v, v_lab]), v_lab, mos,
                                   mos_range=config.mos_range, **model.cfg.head_layout()), ()


def _export(model, folder: Path, plugin: bool) -> None:
    from cdiqa import _lazy
    from cdiqa.export.graph import onnx_from_torch
    from cdiqa.model.network import write_checkpoint

    onnx = _lazy.onnx()
    write_checkpoint(folder / DOMAIN_FILE_NAMES["checkpoint"], model.cfg.to_dict(),
                     model.state_dict())
    onnx.save(onnx_from_torch(model, "portable"), folder / DOMAIN_FILE_NAMES["fp32"])
    if plugin:
        onnx.save(onnx_from_torch(model, "plugin"), folder / DOMAIN_FILE_NAMES["fp32_plugin"])


def _reduced(graph: Path, folder: Path, cache, reader, config: CalibConfig) -> None:
    from cdiqa import _lazy
    from cdiqa.calibration.fp16 import fp16_from_fp32
    from cdiqa.calibration.int8 import qdq_from_cache, qdq_with_modelopt

    if "int8" in config.precisions:
        out = folder / DOMAIN_FILE_NAMES["int8"]
        if config.quantizer == "modelopt":
            qdq_with_modelopt(graph, reader, config.method, out)
        else:
            qdq_from_cache(graph, cache, out)
    if "fp16" in config.precisions:
        onnx = _lazy.onnx()
        onnx.save(fp16_from_fp32(onnx.load(str(graph))), folder / DOMAIN_FILE_NAMES["fp16"])


@contextlib.contextmanager
def _staging(bundle: Path) -> Iterator[Path]:
    """A copy of ``bundle`` beside it (``cdiqa.export.staging``), removed whatever happens."""
    with staged(bundle, "calib") as tmp:
        copy_bundle(bundle, tmp)
        yield tmp


def _with_domain(manifest: Manifest, root: Path, domain: str, models: DomainModels,
                 cache: bool) -> Manifest:
    domains = dict(manifest.domains)
    domains[domain] = file_entry(root, f"{PROFILES_DIR}/{domain}.json")
    calibration = dict(manifest.calibration)
    if cache:
        calibration[domain] = file_entry(root, f"{CALIBRATION_DIR}/{domain}.cache")
    else:
        calibration.pop(domain, None)
    dm = dict(manifest.domain_models)
    dm[domain] = models
    return replace(manifest, domains=domains, calibration=calibration, domain_models=dm)


def calibrate(bundle: str | os.PathLike, config: CalibConfig,
              progress: Progress | None = None) -> CalibrationReport:
    """Create or update the profile of ``config.domain`` in ``bundle`` (see the module doc).

    Raises:
        ManifestError: ``bundle`` is not a valid bundle.
        CalibrationError: bundle not writable, too few or unreadable images, a gate failed.
        ConfigError: incompatible options.
    """
    t0 = time.perf_counter()
    bundle = Path(bundle)
    manifest = load_manifest(bundle, verify=True)
    manifest.path(FILE_CHECKPOINT)  # the base of every adaptation: ManifestError if unlisted
    check_writable(bundle)
    if config.from_cache:
        return rebuild_from_cache(bundle, config, progress)
    report = (lambda stage, i, n: progress(stage, i, n)) if progress else (lambda *a: None)
    samples = domain_samples(config.domain, config.images)
    cal, held = split(samples, config.holdout, config.images or "built-in samples")
    given, labels = _load_pairs(config.pairs), _labels(config.labels)
    report("references", 1, 1)
    with _staging(bundle) as tmp:
        result = _calibrate_in(tmp, manifest, config, cal, held, given, labels, report)
        load_manifest(tmp, verify=True)
        check_gates(config.domain, result.gates)
        replace_dir(tmp, bundle)
    return replace(result, bundle=str(bundle), seconds=time.perf_counter() - t0)


def _calibrate_in(root: Path, manifest: Manifest, config: CalibConfig, cal, held, given,
                  labels, report) -> CalibrationReport:
    from cdiqa.calibration.adapt import adapt
    from cdiqa.calibration.methods import collect_ranges
    from cdiqa.calibration.readers import DomainReader
    from cdiqa.model.ladder import ladder
    from cdiqa.model.distortions import degradations_for
    from cdiqa.model.network import load_model

    if config.threads is not None:
        from cdiqa import _lazy

        _lazy.torch().set_num_threads(int(config.threads))
    domain, kinds = config.domain, degradations_for(config.domain)
    folder = root / DOMAINS_DIR / domain
    if folder.is_symlink():  # an in-bundle link (copy_bundle keeps those): replace, not follow
        folder.unlink()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base = load_model(root / manifest.files[FILE_CHECKPOINT].path)
    steps = config.steps if config.adapt else 0
    result = adapt(base, [r.image for r in cal], kinds, steps=steps,
                   batch_size=config.batch_size, crop=config.crop, lr=config.lr,
                   encoder=config.encoder, seed=config.seed, pairs=given,
                   progress=lambda s, i, n: report(s, i, n))
    report("head", 0, 1)
    model, head, notes = _fit_head(result.model, cal, kinds, given, labels, config,
                                   _bundle_head(root, manifest))
    report("head", 1, 1)
    files = {}
    if config.adapt or model.cfg.input_scale != base.cfg.input_scale:  # a graph of its own
        report("export", 0, 1)
        _export(model, folder, config.plugin)
        report("export", 1, 1)
        graph = folder / DOMAIN_FILE_NAMES["fp32"]
        files.update({k: f"{DOMAINS_DIR}/{domain}/{DOMAIN_FILE_NAMES[k]}"
                      for k in ("fp32", "checkpoint") + (("fp32_plugin",) if config.plugin
                                                        else ())})
    else:
        graph = root / manifest.files[FILE_ONNX].path
    from cdiqa.heads import write_head

    write_head(head, root / PROFILES_DIR / f"{domain}.json")
    reader = DomainReader(domain, [r.image for r in cal], kinds, count=config.feeds,
                          size=config.feed_size, seed=config.seed)
    cache = None
    if "int8" in config.precisions and config.quantizer == "onnxruntime":
        report("ranges", 0, 1)
        cache = collect_ranges(graph, reader, config.method, domain=domain)
        (root / CALIBRATION_DIR).mkdir(exist_ok=True)
        cache.save(root / CALIBRATION_DIR / f"{domain}.cache")
        report("ranges", 1, 1)
    report("reduced precision", 0, 1)
    _reduced(graph, folder, cache, reader, config)
    files.update({p: f"{DOMAINS_DIR}/{domain}/{DOMAIN_FILE_NAMES[p]}"
                  for p in config.precisions})
    report("reduced precision", 1, 1)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    models = DomainModels(files={k: file_entry(root, v) for k, v in files.items()},
                          adapted=bool(config.adapt), calibration_method=config.method,
                          created=created)
    updated = _with_domain(manifest, root, domain, models, cache is not None)
    save_manifest(updated, root)
    report("gate", 0, 1)
    held_ladder = ladder([r.image for r in held], kinds, names=[r.name for r in held],
                         seed=config.seed + 2)
    gates = run_gates(root, domain, config.precisions, held_ladder, max_drop=config.max_drop,
                      accept=config.accept_drop, threads=config.threads)
    save_manifest(replace(updated, domain_models={**updated.domain_models,
                                                  domain: replace(models, gates=gates)}), root)
    report("gate", 1, 1)
    return CalibrationReport("", domain, bool(config.adapt), config.method, len(cal), len(held),
                             files, gates, result.losses, notes=notes)


def _bundle_head(root: Path, manifest: Manifest):
    """The head of the bundle's default domain: the domain head's first candidate."""
    from cdiqa.heads import read_head

    return read_head(root / manifest.domains[manifest.default_domain].path)


def rebuild_from_cache(bundle: Path, config: CalibConfig, progress: Progress | None = None
                       ) -> CalibrationReport:
    """Rewrite the domain's INT8 model from ``calibration/<domain>.cache``: no image is read.

    The recorded INT8 gate is kept when the rebuilt file is byte-identical to the recorded
    one; otherwise it is dropped (run ``calibrate`` with images to gate the new model).
    """
    from cdiqa.calibration.int8 import qdq_from_cache
    from cdiqa.calibration.methods import CalibrationCache

    manifest = load_manifest(bundle, verify=True)
    domain = config.domain
    if domain not in manifest.calibration:
        raise CalibrationError(describe("Calibration cache", "domain", domain, "none in the "
                                        "bundle", f"{CALIBRATION_DIR}/{domain}.cache",
                                        "Calibrate the domain with images first"))
    cache = CalibrationCache.load(bundle / manifest.calibration[domain].path)
    with _staging(bundle) as tmp:
        graph = tmp / manifest.model_entry(domain, "fp32").path
        rel = f"{DOMAINS_DIR}/{domain}/{DOMAIN_FILE_NAMES['int8']}"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        qdq_from_cache(graph, cache, tmp / rel)
        entry = file_entry(tmp, rel)
        old = manifest.domain_models.get(domain)
        gates = dict(old.gates) if old else {}
        notes = ()
        if not old or old.files.get("int8") != entry:
            gates.pop("int8", None)
            notes = ("the rebuilt INT8 model differs from the recorded one: its gate was "
                     "dropped; recalibrate with images to gate it",)
        files = {**(old.files if old else {}), "int8": entry}
        models = DomainModels(files=files, adapted=bool(old and old.adapted),
                              calibration_method=cache.method, gates=gates,
                              created=old.created if old else "")
        save_manifest(_with_domain(manifest, tmp, domain, models, True), tmp)
        load_manifest(tmp, verify=True)
        replace_dir(tmp, bundle)
    if progress:
        progress("int8 from cache", 1, 1)
    return CalibrationReport(str(bundle), domain, bool(old and old.adapted), cache.method, 0, 0,
                             {"int8": rel}, gates, notes=notes)
