"""The folded front end computes what the model computes (both front-end kinds)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cdiqa.export.fold import BLOCK, fold_front_end  # noqa: E402
from cdiqa.model.network import CDIQA, ModelConfig  # noqa: E402
from cdiqa.tolerances import relative_error, tolerance  # noqa: E402


@pytest.mark.parametrize("frontend", ["fixed", "learned"])
def test_fold_is_exact_up_to_rounding(frontend: str) -> None:
    torch.manual_seed(0)
    model = CDIQA(ModelConfig(channels=(8, 8, 8, 8), stem_channels=8, frontend=frontend)).eval()
    folded = fold_front_end(model)
    assert isinstance(folded.encoder.front, torch.nn.Conv2d)
    assert folded.encoder.front.out_channels == BLOCK == folded.encoder.stem[0].in_channels
    assert model.encoder.stem[0].in_channels == 9  # the original is untouched
    ref, dist = torch.rand(2, 3, 70, 100), torch.rand(2, 3, 70, 100)
    with torch.inference_mode():
        for a, b in zip(folded(ref, dist), model(ref, dist)):
            assert relative_error(a.numpy(), b.numpy()) <= tolerance("torch").rtol
        assert not folded(ref, ref).sums.any()
