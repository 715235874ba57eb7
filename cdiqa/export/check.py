"""``iqa-export check``: is a bundle intact, well-formed, and does its ONNX agree with torch?

=================  ==========================================================================
check              passes when
=================  ==========================================================================
files              manifest valid, every listed file present with its sha256
graph:<form>       onnx.checker + strict shape inference pass; inputs/outputs as the manifest
plugin nodes       one plugin node per masking scale, named and attributed for TensorRT
graph:maps         (bundles with model.maps.onnx) checker + shape inference, one output per
                   scale, and its maps sum to the scoring graph's ``sums`` (tolerance("onnx"))
masking modules    each masking subgraph, run by ONNX Runtime on random and natural pairs,
                   within tolerance("onnx") of cdiqa.masking (float64) on the same e and a
parity (torch)     ONNX Runtime vs the bundle's checkpoint in torch, same pairs: scores of
                   every domain within tolerance("onnx_score")
self-consistency   without torch: identical pairs give v = 0 and score 1.0; a batch equals
                   its pairs run one by one; roi halves add up to the whole
=================  ==========================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from cdiqa import _lazy
from cdiqa.errors import CdiqaError, ParityError, ShapeError, describe
from cdiqa.manifest import (FILE_CHECKPOINT, FILE_ONNX, FILE_ONNX_MAPS, FILE_ONNX_PLUGIN,
                            INPUT_DIST, INPUT_REF, INPUT_ROI, Manifest, PluginSpec,
                            load_manifest)
from cdiqa.heads import score_from_stats
from cdiqa.tolerances import relative_error, tolerance

#: (height, width, batch) of the parity pairs: square, non-multiples of 32, batches > 1
PARITY_CASES = ((64, 64, 1), (96, 128, 3), (100, 70, 2), (160, 224, 1))


@dataclass(frozen=True)
class CheckItem:
    """One line of the report."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class CheckReport:
    """Everything ``check_bundle`` looked at; ``ok`` when every item passed."""

    bundle: str
    mode: str
    items: tuple[CheckItem, ...]

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(i.ok for i in self.items)

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"bundle": self.bundle, "mode": self.mode, "ok": self.ok,
                "items": [i.__dict__ for i in self.items]}

    def table(self):
        """A rich ``Table`` of the items."""
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"{self.bundle} ({self.mode})")
        for col in ("check", "result", "detail"):
            table.add_column(col)
        for i in self.items:  # escaped: rich would eat "[export]" of "install 'cdiqa[export]'"
            table.add_row(i.name, "[green]ok[/]" if i.ok else "[red]FAIL[/]", escape(i.detail))
        return table


def check_bundle(bundle: str | os.PathLike, *, parity: bool = True) -> CheckReport:
    """Check a bundle; never raises for what it finds (it reports it).

    Args:
        bundle: the bundle directory.
        parity: compare ONNX Runtime with torch when torch is installed (else, or when False,
            run the self-consistency checks).
    """
    items: list[CheckItem] = []
    try:
        manifest = load_manifest(bundle, verify=True)
    except CdiqaError as exc:
        return CheckReport(str(bundle), "files", (CheckItem("files", False, str(exc)),))
    items.append(CheckItem("files", True, f"{len(manifest.entries())} files, sha256 match"))
    for key, form in ((FILE_ONNX, "portable"), (FILE_ONNX_PLUGIN, "plugin")):
        items.append(_attempt(f"graph:{form}", lambda k=key: _graph(manifest, k)))
    items.append(_attempt("plugin nodes", lambda: check_plugin_nodes(
        _lazy.onnx().load(str(manifest.path(FILE_ONNX_PLUGIN))), manifest.plugin)))
    if FILE_ONNX_MAPS in manifest.files:  # bundles exported before quality maps lack it
        items.append(_attempt("graph:maps", lambda: _maps_graph(manifest)))
    items.append(_attempt("masking modules", lambda: _masking_check(manifest)))
    use_torch = parity and _lazy.available("torch")
    checks = _parity_checks(manifest) if use_torch else _self_checks(manifest)
    items += [_attempt(name, fn) for name, fn in checks]
    return CheckReport(str(bundle), "torch parity" if use_torch else "self-consistency",
                       tuple(items))


def _attempt(name: str, fn: Callable[[], str]) -> CheckItem:
    try:
        return CheckItem(name, True, fn() or "ok")
    except Exception as exc:  # a report of what failed, whatever raised it (onnx's checker too)
        text = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
        return CheckItem(name, False, text if isinstance(exc, CdiqaError)
                         else f"{type(exc).__name__}: {text}")


def _graph(manifest: Manifest, key: str) -> str:
    from cdiqa.export.graph import check_graph

    onnx = _lazy.onnx()
    proto = onnx.load(str(manifest.path(key)))
    check_graph(proto)
    got = {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
           for v in list(proto.graph.input) + list(proto.graph.output)}
    want = {t.name: t.dtype for t in manifest.inputs + manifest.outputs}
    if got != want:
        raise ShapeError(describe("Tensors", "graph", manifest.files[key].path, got, want,
                                  "Re-export the bundle"))
    return f"opset {manifest.opset}, {len(proto.graph.node)} nodes, checker + shape inference ok"


def _maps_graph(manifest: Manifest) -> str:
    """The maps graph is well-formed and is what the scoring graph pools."""
    from cdiqa.export.graph import check_graph
    from cdiqa.export.maps import map_names
    from cdiqa.runtime.maps import MapsGraph
    from cdiqa.runtime.preprocess import full_roi

    ort = _lazy.onnxruntime()
    proto = _lazy.onnx().load(str(manifest.path(FILE_ONNX_MAPS)))
    check_graph(proto)
    want = list(map_names(len(manifest.tiling.strides)))
    got = [o.name for o in proto.graph.output]
    if got != want:
        raise ShapeError(describe("Outputs", "graph", manifest.files[FILE_ONNX_MAPS].path, got,
                                  want, "Re-export the bundle"))
    scoring = ort.InferenceSession(str(manifest.path(FILE_ONNX)),
                                   providers=["CPUExecutionProvider"])
    graph, worst = MapsGraph(manifest), 0.0
    for _, ref, dist in parity_pairs():
        inputs = {INPUT_REF: ref, INPUT_DIST: dist, INPUT_ROI: full_roi(ref.shape[0],
                                                                          *ref.shape[2:])}
        maps = graph.run(inputs)
        sums = np.concatenate([n.sum(axis=(2, 3), dtype=np.float64) for n in maps], axis=1)
        worst = max(worst, relative_error(sums, scoring.run(["sums"], inputs)[0]))
    limit = tolerance("onnx").rtol
    if worst > limit:
        raise ParityError(describe("Map sums", "graph", manifest.files[FILE_ONNX_MAPS].path,
                                  f"relative error {worst:.2e} against the scoring graph's sums",
                                  f"<= {limit:g}", "Re-export the bundle"))
    return f"{len(want)} maps, sums within {worst:.1e} of the scoring graph's"


def check_plugin_nodes(proto, plugin: PluginSpec) -> str:
    """Raise ``ShapeError`` unless ``proto`` has ``plugin.count`` plugin nodes, each with the
    op_type, domain and attributes the TensorRT ONNX parser maps to the plugin."""
    nodes = [n for n in proto.graph.node if n.op_type == plugin.name]
    if len(nodes) != plugin.count:
        raise ShapeError(describe("Plugin nodes", "graph", plugin.name, len(nodes),
                                  f"{plugin.count} (one per masking scale)",
                                  "Export the plugin form with cdiqa.export"))
    want = {"plugin_namespace": plugin.namespace, "plugin_version": plugin.version,
            **plugin.attributes}
    onnx = _lazy.onnx()
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        inputs = len(plugin.inputs)
        if n.domain != plugin.onnx_domain or attrs != want or len(n.input) != inputs:
            raise ShapeError(describe("Plugin node", "graph", n.name,
                                      f"domain {n.domain!r}, {len(n.input)} inputs, {attrs}",
                                      f"domain {plugin.onnx_domain!r}, {inputs} inputs, {want}",
                                      "Re-export the plugin form"))
    return f"{len(nodes)} x {plugin.onnx_domain}::{plugin.name} ({want})"


# ---- the masking modules inside the graph, against the numpy reference ----


@dataclass(frozen=True)
class MaskingProbe:
    """Where one scale's masking subgraph of the portable graph reads its inputs.

    Pattern (dynamo export of ``cdiqa.model.masking.masking_stats``)::

        e ─► Abs ─► Pow(·, gamma) ─► Div ─► ...ReduceSum      gamma, sigma^gamma: initializers
        a ─► AveragePool(k) ─► Add(sigma^gamma, ·) ─┘

    where ``Pow(x, gamma)`` may be ``Exp(Log(x) * gamma)`` (``cdiqa.export.rewrite``).
    """

    e: str
    a: str
    gamma: np.ndarray
    sigma_pow_gamma: np.ndarray
    k: int


def masking_probes(proto) -> list[MaskingProbe]:
    """One probe per masking subgraph of a portable graph, in graph order (the exporter
    keeps the model's scale order: ``stats_from_codes`` visits the scales in turn)."""
    onnx = _lazy.onnx()
    produced = {o: n for n in proto.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    probes = []
    for pool in (n for n in proto.graph.node if n.op_type == "AveragePool"):
        attrs = {x.name: onnx.helper.get_attribute_value(x) for x in pool.attribute}
        if any(st != 1 for st in attrs.get("strides", [1])):
            continue  # the pyramid encoder's 2x2 down-sampling, not a masking P_k
        add = _only(consumers.get(pool.output[0], []), "Add")
        div = _only(consumers.get(add.output[0], []), "Div")
        absolute, gamma = _power_of(produced, produced[div.input[0]], inits)
        sg = next(inits[i] for i in add.input if i in inits)
        probes.append(MaskingProbe(absolute.input[0], pool.input[0], gamma.reshape(-1),
                                   sg.reshape(-1), int(attrs["kernel_shape"][0])))
    return probes


def _power_of(produced: dict, node, inits: dict):
    """(the Abs node, gamma) of ``Pow(Abs(e), gamma)`` or ``Exp(Log(Abs(e)) * gamma)``."""
    if node.op_type == "Exp":
        mul = produced[node.input[0]]
        log_in = next((i for i in mul.input if i not in inits), "")
        gamma = next((inits[i] for i in mul.input if i in inits), None)
        source = produced.get(log_in)
        base = produced.get(source.input[0]) if source is not None and \
            source.op_type == "Log" else None
    else:
        base = produced.get(node.input[0]) if node.op_type == "Pow" else None
        gamma = inits.get(node.input[1]) if node.op_type == "Pow" else None
    if base is None or base.op_type != "Abs" or gamma is None:
        raise ShapeError(describe("Masking pattern", "graph", node.name, node.op_type,
                                  "Pow(Abs(e), gamma) or Exp(Log(Abs(e)) * gamma)",
                                  "Re-export the bundle"))
    return base, gamma


def _only(nodes: list, op_type: str):
    if len(nodes) != 1 or nodes[0].op_type != op_type:
        raise ShapeError(describe("Masking pattern", "graph", op_type,
                                  [n.op_type for n in nodes], f"one {op_type}",
                                  "Re-export the bundle"))
    return nodes[0]


def masking_parity(manifest: Manifest, pairs: Iterable[tuple[str, np.ndarray, np.ndarray]]
                   ) -> float:
    """Worst relative error of the graph's (sums, sumsq) against ``cdiqa.masking`` in float64
    applied to the graph's own masking inputs e and a (read as extra outputs).

    Comparing the module on identical inputs isolates it from the encoder: end to end, e is a
    difference of two nearly equal codes, so rounding in the convolutions is amplified there.
    """
    from cdiqa.masking import masking_stats
    from cdiqa.runtime.preprocess import full_roi

    onnx, ort = _lazy.onnx(), _lazy.onnxruntime()
    proto = onnx.load(str(manifest.path(FILE_ONNX)))
    probes = masking_probes(proto)
    for name in sorted({p.e for p in probes} | {p.a for p in probes}):
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in proto.graph.output]
    worst = 0.0
    for label, ref, dist in pairs:
        roi = full_roi(ref.shape[0], *ref.shape[2:])
        out = dict(zip(names, session.run(names, {INPUT_REF: ref, INPUT_DIST: dist,
                                                  INPUT_ROI: roi})))
        # graph order is the model's scale order, the order the outputs are concatenated in
        # (not map size: the pyramid lists a /2 band after coarser ones)
        ref_stats = np.concatenate([
            masking_stats(out[p.e], out[p.a], p.gamma,
                          p.sigma_pow_gamma.astype(np.float64) ** (1 / p.gamma.astype(np.float64)),
                          p.k) for p in probes], axis=2)
        for i, key in enumerate(("sums", "sumsq")):
            err = relative_error(out[key], ref_stats[:, i])
            worst = max(worst, err)
            if err > tolerance("onnx", "fp32").rtol:
                raise ParityError(describe("Relative error", "masking output", f"{key} ({label})",
                                          f"{err:.3g}", f"<= {tolerance('onnx', 'fp32').rtol:g}",
                                          "Re-export the bundle"))
    return worst


def _masking_check(manifest: Manifest) -> str:
    pairs = list(parity_pairs())
    worst = masking_parity(manifest, pairs)
    return (f"{len(pairs)} batches, worst relative error {worst:.2e} <= "
            f"{tolerance('onnx', 'fp32').rtol:g} vs cdiqa.masking (float64)")


# ---- parity against torch ----


def _parity_checks(manifest: Manifest) -> list[tuple[str, Callable[[], str]]]:
    from cdiqa.model.network import load_model
    from cdiqa.runtime import Scorer

    model = load_model(manifest.path(FILE_CHECKPOINT))
    scorer = Scorer.load(manifest.root, backend="onnxruntime", verify=False)
    return [("parity:scores", lambda: score_parity(model, scorer, list(parity_pairs())))]


def parity_pairs(seed: int = 0) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    """(label, ref, dist) NCHW float32 batches: random, and natural images if scikit-image is
    installed, at every size of ``PARITY_CASES``."""
    rng = np.random.default_rng(seed)
    natural = _natural_image()
    for h, w, b in PARITY_CASES:
        ref = rng.random((b, 3, h, w), np.float32)
        dist = np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1).astype(np.float32)
        yield f"random {b}x{h}x{w}", ref, dist
        if natural is not None:
            crop = natural[:h, :w].transpose(2, 0, 1)[None]
            ref = np.repeat(crop, b, 0)
            levels = np.linspace(0.02, 0.1, b)[:, None, None, None]
            dist = np.clip(ref + levels * rng.standard_normal(ref.shape), 0, 1)
            yield f"natural {b}x{h}x{w}", ref, dist.astype(np.float32)


def _natural_image() -> np.ndarray | None:
    if not _lazy.available("skimage"):
        return None
    from skimage import data

    return data.astronaut().astype(np.float32) / 255


def torch_stats(model, ref: np.ndarray, dist: np.ndarray, roi: np.ndarray):
    """(sums, sumsq, counts) of the torch model, as numpy."""
    torch = _lazy.torch()
    with torch.inference_mode():
        out = model(torch.from_numpy(ref), torch.from_numpy(dist), torch.from_numpy(roi))
    return tuple(t.numpy() for t in out)


def score_parity(model, scorer, pairs) -> str:
    """Scores of every domain: ONNX Runtime vs torch within tolerance("onnx_score").

    Also reports (without a gate) the end-to-end relative difference of the stats.
    """
    from cdiqa.runtime.preprocess import full_roi

    tol, worst, stats_diff = tolerance("onnx_score", "fp32").atol, 0.0, 0.0
    domains = sorted(scorer.manifest.domains)
    heads = {d: scorer.with_domain(d).head for d in domains}
    for label, ref, dist in pairs:
        roi = full_roi(ref.shape[0], *ref.shape[2:])
        ours = scorer.stats({INPUT_REF: ref, INPUT_DIST: dist, INPUT_ROI: roi})
        theirs = torch_stats(model, ref, dist, roi)
        stats_diff = max([stats_diff] + [relative_error(a, b) for a, b in zip(ours, theirs)])
        for d, head in heads.items():
            err = float(np.max(np.abs(score_from_stats(head, *ours)
                                      - score_from_stats(head, *theirs))))
            worst = max(worst, err)
            if err > tol:
                raise ParityError(describe("Score error", "domain", f"{d} ({label})",
                                          f"{err:.3g}", f"<= {tol:g}", "Re-export the bundle"))
    return (f"{len(pairs)} batches x {len(domains)} domain(s): worst |score difference| "
            f"{worst:.2e} <= {tol:g} (stats end to end: {stats_diff:.1e} relative)")


# ---- without torch ----


def _self_checks(manifest: Manifest) -> list[tuple[str, Callable[[], str]]]:
    from cdiqa.runtime import Scorer

    scorer = Scorer.load(manifest.root, backend="onnxruntime", verify=False)
    return [("identical pairs", lambda: _identical(scorer)),
            ("batch = one by one", lambda: _batch_invariance(scorer)),
            ("roi halves add up", lambda: _roi_additivity(scorer))]


def _identical(scorer) -> str:
    rng = np.random.default_rng(1)
    img = rng.random((80, 112, 3), np.float32)
    v = scorer.features_of_pairs([(img, img)])
    s = scorer.score_pairs([(img, img)])
    if np.any(v != 0) or s[0] != 1.0:
        raise ParityError(describe("Identical pair", "bundle", scorer.manifest.model_id,
                                  f"max |v| {np.abs(v).max():.3g}, score {s[0]!r}",
                                  "v = 0 and score 1.0", "Re-export the bundle"))
    return "v = 0 exactly, score 1.0"


def _batch_invariance(scorer) -> str:
    from cdiqa.runtime.preprocess import feed

    rng = np.random.default_rng(2)
    refs = [rng.random((96, 96, 3), np.float32) for _ in range(3)]
    dists = [np.clip(r + rng.normal(0, 0.05, r.shape), 0, 1).astype(np.float32) for r in refs]
    together = scorer.stats(feed(refs, dists))
    alone = [scorer.stats(feed([r], [d])) for r, d in zip(refs, dists)]
    err = max(relative_error(together[k], np.concatenate([a[k] for a in alone]))
              for k in range(3))
    tol = tolerance("onnx", "fp32").rtol
    if err > tol:
        raise ParityError(describe("Batch vs single", "bundle", scorer.manifest.model_id,
                                  f"{err:.3g}", f"<= {tol:g}", "Re-export the bundle"))
    return f"relative difference {err:.2e}"


def _roi_additivity(scorer) -> str:
    from cdiqa.runtime.preprocess import feed

    rng = np.random.default_rng(3)
    ref = rng.random((96, 128, 3), np.float32)
    dist = np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1).astype(np.float32)
    whole = scorer.stats(feed([ref], [dist]))
    rois = np.array([[0, 0, 96, 64], [0, 64, 96, 128]], np.int32)
    halves = scorer.stats(feed([ref, ref], [dist, dist], rois))
    err = max(relative_error(h.sum(0, keepdims=True), w) for h, w in zip(halves, whole))
    tol = tolerance("onnx", "fp32").rtol
    if err > tol:
        raise ParityError(describe("roi halves vs whole", "bundle", scorer.manifest.model_id,
                                  f"{err:.3g}", f"<= {tol:g}", "Re-export the bundle"))
    return f"relative difference {err:.2e}"
