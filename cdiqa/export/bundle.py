"""Write a bundle directory: both ONNX forms, the maps graph, the checkpoint, domain profiles,
the manifest.

The bundle is built in a temporary directory beside ``out`` and renamed into place only when
complete and verified; an existing bundle at ``out`` is replaced only then. A crash leaves the
old bundle (or nothing) at ``out``, never a half-written one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from cdiqa import _lazy
from cdiqa._progress import DONE, Progress, stepper
from cdiqa.errors import ConfigError, describe
from cdiqa.export.staging import replace_dir, staged
from cdiqa.manifest import (DEFAULT_DOMAIN, FILE_CHECKPOINT, FILE_NAMES, FILE_ONNX,
                            FILE_ONNX_MAPS, FILE_ONNX_PLUGIN, MANIFEST_FILE, PROFILES_DIR,
                            SCHEMA_VERSION, Manifest, Preprocessing, ScoreSpec, TilingSpec,
                            file_entry, load_manifest, save_manifest, sha256_file, tensor_specs)
from cdiqa.masking import MIN_SIZE, STRIDES

#: ONNX opset of the exported graphs
OPSET = 18
#: the steps of an export with their shares of its time, so that a progress bar's ETA holds
#: from the first step (default model, 2-core CPU at load 4-6: portable graph 17 s, plugin
#: graph 13 s, maps graph 5 s, every other step under 0.2 s)
EXPORT_STEPS = {"load model": 1, "checkpoint": 1, "portable graph": 10, "plugin graph": 8,
                "maps graph": 3, "profiles and manifest": 1, "verify": 1}


@dataclass(frozen=True)
class ExportConfig:
    """Options of ``export_bundle``.

    Attributes:
        opset: ONNX opset of both graphs (>= 18).
        default_domain: the profile the runtime uses when none is named.
        halo: tile halo in pixels recorded for the runtime (multiple of 32).
    """

    opset: int = OPSET
    default_domain: str = DEFAULT_DOMAIN
    halo: int = 128

    def __post_init__(self) -> None:
        align = max(STRIDES)
        if self.halo < 0 or self.halo % align:
            raise ConfigError(describe("Halo", "export option", "halo", self.halo,
                                       f"a multiple of {align} >= 0", "Use e.g. --halo 128"))


def export_bundle(out: str | os.PathLike, model=None, profiles: Mapping | None = None,
                  config: ExportConfig | None = None, progress: Progress | None = None
                  ) -> Manifest:
    """Export ``model`` and its domain heads as a bundle at ``out``; returns its manifest.

    Args:
        out: the bundle directory (created, or an existing bundle replaced when complete).
        model: a ``CDIQA``, a checkpoint path, or None for the default model.
        profiles: domain -> head (a ``cdiqa.heads.Head``, its dict, or a JSON path); None:
            the default head as domain ``config.default_domain``.
        config: export options.
        progress: ``progress(stage, done, total)`` as each of ``EXPORT_STEPS`` starts, and
            once at the end (``cdiqa._progress``).

    Raises:
        ConfigError: an output path that is not a bundle, a missing default model, heads that
            do not fit the model, or a default domain without a profile.
    """
    from cdiqa.model.scoring import DEFAULT_HEAD, resolve_model
    from cdiqa.model.network import CDIQA

    config = config or ExportConfig()
    step = stepper(progress, EXPORT_STEPS)
    out = Path(out)
    check_target(out, MANIFEST_FILE, "bundle")
    step("load model")
    model = (model if isinstance(model, CDIQA) else resolve_model(model)).eval()
    heads = _heads(profiles if profiles is not None else {config.default_domain: DEFAULT_HEAD},
                   model.feature_dim)
    if config.default_domain not in heads:
        raise ConfigError(describe("Default domain", "export", "default_domain",
                                   repr(config.default_domain), f"one of {sorted(heads)}",
                                   "Add a profile for it or pick another default"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged(out) as tmp:  # removed on any failure; stale ones of dead runs first
        _write(tmp, model, heads, config, step)
        step("verify")
        load_manifest(tmp, verify=True)  # what the runtime will read back, checked before use
        replace_dir(tmp, out)
    step(DONE)
    return load_manifest(out, verify=False)


def _write(root: Path, model, heads: dict[str, dict], config: ExportConfig,
           step=lambda name: None) -> Manifest:
    """All files into ``root``, the manifest last; ``step(name)`` as each step starts."""
    import json

    from cdiqa.export.check import check_plugin_nodes
    from cdiqa.export.graph import onnx_from_torch
    from cdiqa.export.maps import maps_onnx_from_torch
    from cdiqa.export.plugin import plugin_spec
    from cdiqa.model.network import write_checkpoint

    onnx = _lazy.onnx()
    step("checkpoint")
    write_checkpoint(root / FILE_NAMES[FILE_CHECKPOINT], model.cfg.to_dict(), model.state_dict())
    plugin = plugin_spec(model.cfg.window, len(model.cfg.channels))
    for key, form in ((FILE_ONNX, "portable"), (FILE_ONNX_PLUGIN, "plugin")):
        step(f"{form} graph")
        proto = onnx_from_torch(model, form, opset=config.opset)
        if form == "plugin":
            check_plugin_nodes(proto, plugin)
        onnx.save(proto, root / FILE_NAMES[key])
    step("maps graph")
    onnx.save(maps_onnx_from_torch(model, opset=config.opset), root / FILE_NAMES[FILE_ONNX_MAPS])
    step("profiles and manifest")
    (root / PROFILES_DIR).mkdir()
    for domain, head in heads.items():
        (root / PROFILES_DIR / f"{domain}.json").write_text(json.dumps(head), encoding="utf-8")
    inputs, outputs = tensor_specs(sum(model.cfg.channels))
    ckpt_sha = sha256_file(root / FILE_NAMES[FILE_CHECKPOINT])
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        model_id=f"cdiqa-{ckpt_sha[:12]}",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model_config=model.cfg.to_dict(),
        feature_dim=model.feature_dim,
        opset=config.opset,
        precision="fp32",
        files={k: file_entry(root, FILE_NAMES[k])
               for k in (FILE_ONNX, FILE_ONNX_PLUGIN, FILE_ONNX_MAPS, FILE_CHECKPOINT)},
        inputs=inputs, outputs=outputs,
        preprocessing=Preprocessing(min_size=MIN_SIZE, conversions=image_conversions()),
        score=ScoreSpec(),
        domains={d: file_entry(root, f"{PROFILES_DIR}/{d}.json") for d in heads},
        default_domain=config.default_domain,
        # tiles aligned to 32 px partition every scale of both architectures (strides | 32)
        tiling=TilingSpec(alignment=max(STRIDES), halo=config.halo,
                          strides=tuple(model.cfg.strides)),
        plugin=plugin,
        versions=tool_versions(),
    )
    save_manifest(manifest, root)
    return manifest


def _heads(profiles: Mapping, feature_dim: int) -> dict[str, dict]:
    """domain -> head dict, each validated by ``cdiqa.heads`` and sized for the model."""
    from cdiqa.heads import Head, load_head, read_head

    out = {}
    for domain, head in profiles.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", str(domain)):
            raise ConfigError(describe("Name", "domain", domain, repr(domain),
                                       "lowercase letters, digits, '_' or '-'",
                                       "Rename the domain"))
        if isinstance(head, (str, os.PathLike)):
            head = read_head(head)
        elif not isinstance(head, Head):
            head = load_head(dict(head))
        if head.dim != feature_dim:
            raise ConfigError(describe("Head size", "domain profile", domain, head.dim,
                                       f"{feature_dim} (the model's feature size)",
                                       "Fit the head on this model's features"))
        out[str(domain)] = head.to_dict()
    if not out:
        raise ConfigError(describe("Profiles", "export", "profiles", "none", "at least one",
                                   "Pass a head for the default domain"))
    return out


def image_conversions() -> dict[str, str]:
    """The input conversions table of ``cdiqa.images`` (its docstring), as {input: becomes}."""
    import cdiqa.images

    rows, inside = {}, 0
    for line in (cdiqa.images.__doc__ or "").splitlines():
        if line.startswith("====="):
            inside += 1
            continue
        if inside == 2 and line.strip():
            key, _, value = line.partition("  ")
            rows[key.strip()] = value.strip()
    return rows


def tool_versions() -> dict[str, str]:
    """Versions of what made the bundle."""
    from importlib.metadata import PackageNotFoundError, version

    from cdiqa import __version__

    out = {"cdiqa": __version__}
    for name in ("torch", "onnx", "onnxscript"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def check_target(out: Path, marker: str, kind: str) -> None:
    """Refuse to replace anything but nothing, an empty folder or an earlier output of the
    same kind (a folder holding ``marker``): a wrong ``--out`` never deletes user files.

    Raises:
        ConfigError: ``out`` is a file or a non-empty folder without ``marker``.
    """
    if not out.exists():
        return
    if out.is_dir() and (not any(out.iterdir()) or (out / marker).is_file()):
        return
    raise ConfigError(describe("Output", kind, out, f"an existing file or a folder that is not "
                               f"a {kind}", f"a new path, an empty folder or an earlier {kind}",
                               "Choose another --out"))

