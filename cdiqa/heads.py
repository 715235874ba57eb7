r"""Quality heads: the numpy maps from feature vectors v to one quality score (METHOD.md 8).

Applied by the torch-free runtime, so this module imports numpy only. Fitting lives in
``cdiqa.model.fit_heads``.

Every head shares one structure, which makes the score's range and its best value structural
rather than fitted::

    x = t(v / s)               s > 0 per feature (scale of the fitting pairs),
                               t = log1p or identity: x >= 0 and x = 0 exactly when v = 0
    g = severity(x) >= 0       g(0) = 0 exactly, by construction of each kind (below)
    q = exp(-g)                quality in (0, 1], higher is better, q = 1.0 exactly when v = 0

Kinds (``kind`` in the JSON):

=============  ======================================================  ======================
kind           severity g(x)                                           fitted on
=============  ======================================================  ======================
label_free     pca:      max(0, w . x) / tau                           unlabeled pairs
               energy:   sqrt(w . x²) / tau   (w >= 0 per feature)     (pca, energy,
               whitened: ||x W|| / tau        (W: D x m whitening)     whitened), a ladder's
               linear:   max(w . x, f |w| . x) / tau              known order (linear)
                         (w of either sign, floor 0 <= f < 1)
few_shot       energy: beta_0 sqrt(w' . x²) (w': label-free w,       k labelled pairs
                       re-weighted per block); ridge: max(0, beta . (x P))
supervised     max(0, a . h),  h = tanh(x W + b) - tanh(b)              opinion scores
=============  ======================================================  ======================

``tau`` of the label-free head is the median severity of its fitting pairs over ln 2, so the
median fitting pair scores 0.5. Few-shot and supervised heads regress ``-ln((mos - lo) /
(hi - lo))`` (clipped), so their score estimates the opinion score rescaled to [0, 1]. All
heads are strictly decreasing in their severity, and g is a continuous function of v.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from cdiqa.errors import ConfigError, ManifestError, ShapeError, describe
from cdiqa.masking import features_from_stats

HEAD_VERSION = 1
Transform = Literal["log1p", "identity"]
TRANSFORMS = ("log1p", "identity")
LABEL_FREE_METHODS = ("pca", "energy", "whitened", "linear")


def _array(d: dict, key: str, ndim: int) -> np.ndarray:
    if key not in d:
        raise ManifestError(f"Field for head '{key}': got nothing, expected an array. "
                            "Write the head with Head.to_dict()/write_head.")
    a = np.asarray(d[key], np.float64)
    if a.ndim != ndim or not np.all(np.isfinite(a)):
        raise ManifestError(describe("Array", "head field", key, f"shape {a.shape}",
                                     f"{ndim}-d finite values", "Refit the head"))
    return a


@dataclass(frozen=True, eq=False)
class Head:
    """Shared part of every head: the feature scaling ``x = t(v / s)`` and ``q = exp(-g)``."""

    scale: np.ndarray
    transform: Transform = "log1p"
    kind: ClassVar[str] = "head"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", np.asarray(self.scale, np.float64))
        if self.transform not in TRANSFORMS:
            raise ConfigError(describe("Transform", "head", self.kind, self.transform,
                                       f"one of {TRANSFORMS}", "Refit the head"))
        if self.scale.ndim != 1 or not np.all(self.scale > 0):
            raise ConfigError(describe("Scale", "head", self.kind, "a value <= 0 or not 1-d",
                                       "positive per-feature scales", "Refit the head"))

    @property
    def dim(self) -> int:
        """Length of the feature vectors v this head takes."""
        return int(self.scale.shape[0])

    def features(self, v: np.ndarray) -> np.ndarray:
        """x = t(v / s) (B, D), float64; 0 exactly where v is 0."""
        v = np.asarray(v, np.float64)
        if v.ndim == 1:
            v = v[None]
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ShapeError(describe("Shape", "features", "v", v.shape, f"(B, {self.dim})",
                                      "Use the head fitted for this model's feature size"))
        if not np.all(np.isfinite(v)):
            raise ShapeError(describe("Values", "features", "v", "NaN or inf", "finite values",
                                      "Check the images and the model"))
        z = np.maximum(v, 0.0) / self.scale
        return np.log1p(z) if self.transform == "log1p" else z

    def severity(self, v: np.ndarray) -> np.ndarray:
        """g (B,) >= 0, exactly 0 for v = 0."""
        return self._severity(self.features(v))

    def score(self, v: np.ndarray) -> np.ndarray:
        """Quality q = exp(-g) (B,) in [0, 1], higher is better, 1.0 for identical images.

        >>> head = LabelFreeHead(scale=np.ones(4), weights=np.full(4, 0.5))
        >>> head.score(np.zeros((1, 4))).tolist()
        [1.0]
        >>> bool(head.score(np.full((1, 4), 0.1))[0] < 1.0)
        True
        """
        return np.exp(-self.severity(v))

    def _severity(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def to_dict(self) -> dict:
        """JSON-friendly form that ``load_head`` reads back."""
        out = {"kind": self.kind, "version": HEAD_VERSION, "transform": self.transform,
               "scale": self.scale.tolist()}
        out.update({k: (v.tolist() if isinstance(v, np.ndarray) else v)
                    for k, v in self._params().items()})
        return out

    def _params(self) -> dict:
        return {}


@dataclass(frozen=True, eq=False)
class LabelFreeHead(Head):
    """Severity from a dimensionality reduction fitted on unlabeled pairs.

    ``method``: "pca" (first principal component, sign fixed so distorted pairs project
    positive), "energy" (weighted RMS of x, weights >= 0), "whitened" (norm of x after a
    D x m whitening) or "linear" (weights of either sign fitted to a degradation ladder's
    known order: ``fit_heads.fit_signed``). ``floor`` (linear only): the severity is at least
    ``floor`` times the unsigned sum |w| . x, so a distorted pair whose errors fall where
    the weights are negative still scores below 1.0 (x >= 0: only identical images reach it).
    """

    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    method: Literal["pca", "energy", "whitened", "linear"] = "pca"
    tau: float = 1.0
    floor: float = 0.0
    kind: ClassVar[str] = "label_free"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "weights", np.asarray(self.weights, np.float64))
        if self.method not in LABEL_FREE_METHODS:
            raise ConfigError(describe("Method", "head", self.kind, self.method,
                                       f"one of {LABEL_FREE_METHODS}", "Refit the head"))
        if not self.tau > 0:
            raise ConfigError(describe("tau", "head", self.kind, self.tau, "> 0", "Refit the head"))
        if not 0 <= self.floor < 1 or (self.floor and self.method != "linear"):
            raise ConfigError(describe("Floor", "head", self.kind, self.floor,
                                       "0 <= floor < 1, and 0 unless the method is 'linear'",
                                       "Refit the head"))
        want = {"pca": (self.dim,), "energy": (self.dim,), "whitened": (self.dim, None),
                "linear": (self.dim,)}
        want = want[self.method]
        got = self.weights.shape
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
            raise ConfigError(describe("Weights", "head", self.kind, got, want, "Refit the head"))
        if self.method == "energy" and not np.all(self.weights >= 0):
            raise ConfigError(describe("Weights", "head", self.kind, "a negative weight",
                                       "weights >= 0", "Refit the head"))

    def _severity(self, x: np.ndarray) -> np.ndarray:
        if self.method == "pca":
            g = np.maximum(x @ self.weights, 0.0)
        elif self.method == "linear":
            g = np.maximum(x @ self.weights, self.floor * (x @ np.abs(self.weights)))
        elif self.method == "energy":
            g = np.sqrt((x * x) @ self.weights)
        else:
            p = x @ self.weights
            g = np.sqrt(np.sum(p * p, axis=1))
        return g / self.tau

    def _params(self) -> dict:
        out = {"method": self.method, "weights": self.weights, "tau": float(self.tau)}
        return out | ({"floor": float(self.floor)} if self.method == "linear" else {})


@dataclass(frozen=True, eq=False)
class FewShotHead(Head):
    """Few-shot severity, in one of two forms (``form``):

    - "energy" (what ``fit_few_shot`` fits): g = beta_0 sqrt(w . x²), the label-free energy
      with its weights w >= 0 re-weighted per block by the labelled pairs' ranking;
    - "ridge": g = max(0, beta . (x P)), a ridge regression on reduced features x P.
    """

    projection: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mos_range: tuple[float, float] = (1.0, 5.0)
    form: Literal["ridge", "energy"] = "ridge"
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    kind: ClassVar[str] = "few_shot"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("projection", "coef", "weights"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), np.float64))
        if self.form == "energy":
            ok = (self.weights.shape == (self.dim,) and np.all(self.weights >= 0)
                  and self.coef.shape == (1,) and self.coef[0] > 0)
            if not ok:
                raise ConfigError(describe("Weights", "head", self.kind, self.weights.shape,
                                           f"({self.dim},) weights >= 0 and one coef > 0",
                                           "Refit the head"))
            return
        if self.form != "ridge":
            raise ConfigError(describe("Form", "head", self.kind, self.form,
                                       "'energy' or 'ridge'", "Refit the head"))
        m = self.coef.shape[0] if self.coef.ndim == 1 else -1
        if self.projection.shape != (self.dim, m):
            raise ConfigError(describe("Projection", "head", self.kind, self.projection.shape,
                                       (self.dim, m), "Refit the head"))

    def _severity(self, x: np.ndarray) -> np.ndarray:
        if self.form == "energy":
            return self.coef[0] * np.sqrt((x * x) @ self.weights)
        return np.maximum((x @ self.projection) @ self.coef, 0.0)

    def _params(self) -> dict:
        if self.form == "energy":
            return {"form": "energy", "weights": self.weights, "coef": self.coef,
                    "mos_range": list(self.mos_range)}
        return {"projection": self.projection, "coef": self.coef,
                "mos_range": list(self.mos_range)}


@dataclass(frozen=True, eq=False)
class SupervisedHead(Head):
    """Small MLP: g = max(0, a . h), h = tanh(x W + b) - tanh(b) (h = 0 exactly at x = 0)."""

    w1: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    b1: np.ndarray = field(default_factory=lambda: np.zeros(0))
    w2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mos_range: tuple[float, float] = (1.0, 5.0)
    kind: ClassVar[str] = "supervised"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("w1", "b1", "w2"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), np.float64))
        hidden = self.b1.shape[0] if self.b1.ndim == 1 else -1
        if self.w1.shape != (self.dim, hidden) or self.w2.shape != (hidden,):
            raise ConfigError(describe("MLP shapes", "head", self.kind,
                                       (self.w1.shape, self.b1.shape, self.w2.shape),
                                       f"(({self.dim}, H), (H,), (H,))", "Refit the head"))

    def _severity(self, x: np.ndarray) -> np.ndarray:
        h = np.tanh(x @ self.w1 + self.b1) - np.tanh(self.b1)
        return np.maximum(h @ self.w2, 0.0)

    def _params(self) -> dict:
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "mos_range": list(self.mos_range)}


#: kind -> (class, {field: ndim}) for ``load_head``
_KINDS: dict[str, tuple[type[Head], dict[str, int]]] = {
    "label_free": (LabelFreeHead, {}),
    "few_shot": (FewShotHead, {"coef": 1}),
    "supervised": (SupervisedHead, {"w1": 2, "b1": 1, "w2": 1}),
}


def score_from_stats(head: Head, sums, sumsq, counts) -> np.ndarray:
    """Quality (B,) straight from a graph's outputs: v = ``features_from_stats`` (float32, as
    the runtime computes it), then ``head.score(v)``. The one chain that the Triton models and
    the export check apply; the runtime's ``Scorer`` runs the same two steps with tiles
    combined in between.

    >>> head = LabelFreeHead(scale=np.ones(4), weights=np.full(4, 0.5))
    >>> score_from_stats(head, np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2))).tolist()
    [1.0]
    """
    return head.score(features_from_stats(sums, sumsq, counts))


def load_head(d: dict) -> Head:
    """Rebuild a head from its ``to_dict()`` form.

    Raises:
        ManifestError: unknown kind or version, or missing/invalid arrays.
    """
    kind = d.get("kind")
    if kind not in _KINDS:
        near = difflib.get_close_matches(str(kind), list(_KINDS), n=1)
        hint = f"Did you mean '{near[0]}'?" if near else "Refit the head"
        raise ManifestError(describe("Kind", "head", kind, kind, f"one of {list(_KINDS)}", hint))
    if d.get("version") != HEAD_VERSION:
        raise ManifestError(describe("Version", "head", kind, d.get("version"), HEAD_VERSION,
                                     "Refit the head with this version of cdiqa"))
    cls, arrays = _KINDS[kind]
    kw = {"scale": _array(d, "scale", 1), "transform": d.get("transform", "log1p")}
    kw.update({k: _array(d, k, n) for k, n in arrays.items()})
    if kind == "label_free":
        method = d.get("method", "pca")
        kw.update(method=method, tau=float(d.get("tau", 1.0)), floor=float(d.get("floor", 0.0)),
                  weights=_array(d, "weights", 2 if method == "whitened" else 1))
    else:
        kw["mos_range"] = tuple(float(x) for x in d.get("mos_range", (1.0, 5.0)))
    if kind == "few_shot":
        kw["form"] = d.get("form", "ridge")
        kw.update({"weights": _array(d, "weights", 1)} if kw["form"] == "energy"
                  else {"projection": _array(d, "projection", 2)})
    try:
        return cls(**kw)
    except ConfigError as exc:
        raise ManifestError(str(exc)) from None


def read_head(path: str | os.PathLike) -> Head:
    """Load a head JSON file (``ManifestError`` naming the file if it is not one)."""
    from cdiqa.files import read_bounded
    from cdiqa.manifest import MAX_JSON_BYTES

    try:  # bounded: a FIFO or a /dev/zero link is refused, not read forever
        d = json.loads(read_bounded(path, MAX_JSON_BYTES))
    except (OSError, ValueError, RecursionError) as exc:
        raise ManifestError(f"Head file '{path}' cannot be read: {exc}. "
                            "Pass a JSON written by `iqa-export fit-head`.") from None
    if not isinstance(d, dict):
        raise ManifestError(describe("Content", "head file", path, type(d).__name__,
                                     "a JSON object", "Pass a JSON written by `iqa-export fit-head`"))
    return load_head(d)


def write_head(head: Head, path: str | os.PathLike) -> None:
    """Write ``head.to_dict()`` as JSON, atomically."""
    from cdiqa.files import atomic_write

    text = json.dumps(head.to_dict(), separators=(",", ":")).encode()
    atomic_write(path, lambda f: f.write(text))
