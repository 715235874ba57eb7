"""Each training loss does what it says (cdiqa.model.losses)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cdiqa.model import losses as L  # noqa: E402
from cdiqa.model.network import Codes  # noqa: E402

SHAPES = ((2, 4, 8, 8), (2, 6, 4, 4))  # two scales


def _concat(c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The decoder of an exactly separating model: φ = [c; d]."""
    return torch.cat([c, d], dim=1)


def _codes(content: list[torch.Tensor], degradation: list[torch.Tensor]) -> Codes:
    """Codes of a model that separates exactly: φ is the stack of its two codes."""
    return Codes([_concat(c, d) for c, d in zip(content, degradation)], content, degradation)


@pytest.fixture
def maps():
    g = torch.Generator().manual_seed(0)
    rand = lambda: [torch.randn(s, generator=g) for s in SHAPES]  # noqa: E731
    return {"c_ref": rand(), "c_other": rand(), "d_ref": rand(), "d_dist": rand()}


DECODERS = [_concat] * len(SHAPES)


def test_counterfactual_loss_is_zero_for_an_exactly_separating_model(maps):
    ref = _codes(maps["c_ref"], maps["d_ref"])
    dist = _codes(maps["c_ref"], maps["d_dist"])  # same content, other degradation
    assert L.counterfactual_loss(DECODERS, ref, dist) == 0
    assert L.factual_loss(DECODERS, ref, dist) == 0


def test_counterfactual_loss_is_positive_when_content_carries_the_distortion(maps):
    ref = _codes(maps["c_ref"], maps["d_ref"])
    dist = _codes(maps["c_other"], maps["d_dist"])  # the distortion leaked into c
    assert L.counterfactual_loss(DECODERS, ref, dist) > 0
    assert L.factual_loss(DECODERS, ref, dist) == 0  # factual alone cannot see it


def test_factual_loss_is_positive_for_a_decoder_that_drops_the_degradation(maps):
    ref = _codes(maps["c_ref"], maps["d_ref"])
    drop = [lambda c, d: torch.cat([c, torch.zeros_like(d)], 1)] * len(SHAPES)
    assert L.factual_loss(drop, ref) > 0


def test_content_loss_is_zero_for_identical_content_and_detaches_the_reference(maps):
    c_ref = [c.clone().requires_grad_() for c in maps["c_ref"]]
    c_dist = [c.clone().requires_grad_() for c in maps["c_ref"]]
    ref, dist = _codes(c_ref, maps["d_ref"]), _codes(c_dist, maps["d_dist"])
    assert L.content_loss(ref, dist) == 0
    moved = _codes([c + 0.1 for c in c_dist], maps["d_dist"])
    loss = L.content_loss(ref, moved)
    assert loss > 0
    loss.backward()
    assert all(c.grad is None for c in c_ref)
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in c_dist)


def test_collapse_guard_is_positive_for_a_constant_degradation_code(maps):
    const = [torch.ones(s) for s in SHAPES]
    ref = Codes(_codes(maps["c_ref"], maps["d_ref"]).phi, maps["c_ref"], const)
    dist = Codes(_codes(maps["c_ref"], maps["d_dist"]).phi, maps["c_ref"],
                 [c.clone() for c in const])
    assert L.collapse_loss(ref, dist) > 0


def test_collapse_guard_is_zero_when_d_moves_with_phi(maps):
    ref = _codes(maps["c_ref"], maps["d_ref"])
    dist = _codes(maps["c_ref"], maps["d_dist"])
    # d is a part of φ that holds all of φ's change, so it moves relatively more than φ
    assert L.collapse_loss(ref, dist) == 0


def test_ranking_loss_zero_when_ordered_with_margin_positive_when_reversed():
    milder, stronger = torch.tensor([0.0, 1.0]), torch.tensor([0.5, 1.2])
    assert L.ranking_loss(milder, stronger, margin=0.1) == 0
    assert L.ranking_loss(stronger, milder, margin=0.1) > 0
    # within the margin still costs
    assert L.ranking_loss(milder, milder + 0.05, margin=0.1) > 0


def test_ranking_loss_ignores_pairs_marked_invalid():
    milder, stronger = torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.0])
    assert L.ranking_loss(milder, stronger, 0.1, torch.tensor([True, False])) == 0
    assert L.ranking_loss(milder, stronger, 0.1, torch.tensor([True, True])) > 0


def test_severity_grows_with_every_feature_and_ignores_a_common_scale():
    v = torch.rand(3, 10) + 0.1
    s = L.severity_from_features(v)
    assert torch.all(L.severity_from_features(v * 2) > s)
    # margins are ratios: doubling everything shifts all severities by the same amount
    shift = L.severity_from_features(v * 1e3) - L.severity_from_features(v * 5e2)
    assert torch.allclose(shift, shift[0].expand(3), atol=1e-3)
