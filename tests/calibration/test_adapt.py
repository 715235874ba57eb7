"""Label-free adaptation: what it trains, its batches' groups, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cdiqa.calibration import CalibConfig  # noqa: E402
from cdiqa.calibration.adapt import ADAPT_GROUP, adapt, adapt_weights  # noqa: E402
from cdiqa.errors import ConfigError  # noqa: E402
from cdiqa.export.testing import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def references():
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 1, 96, dtype=np.float32)[None, :, None] * np.ones((96, 1, 3))
    return [np.clip(smooth + 0.2 * rng.random((96, 96, 3)), 0, 1).astype(np.float32)
            for _ in range(2)]


def _changed(before, after, prefix: str) -> bool:
    a, b = before.state_dict(), after.state_dict()
    return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


@pytest.mark.parametrize("encoder", [True, False])
def test_adapt_trains_the_encoder_only_when_asked(references, encoder):
    model = tiny_model()
    out = adapt(model, references, ["GBLUR", "AWGN"], steps=2, batch_size=3, crop=64,
                encoder=encoder)
    assert _changed(model, out.model, "encoder.") is encoder
    assert _changed(model, out.model, "degradation_heads.")
    assert not _changed(model, tiny_model(), "")  # the input model is left as it was


def test_adapt_turns_the_consistency_term_on(references):
    out = adapt(tiny_model(), references, ["AWGN"], steps=1, batch_size=3, crop=64)
    assert adapt_weights().consistency > 0
    assert out.losses["consistency"] > 0  # 3 noisy crops per group never agree exactly


def test_group_that_does_not_divide_the_batch_is_an_error(references):
    with pytest.raises(ConfigError, match="group"):
        adapt(tiny_model(), references, ["AWGN"], steps=1, batch_size=4, crop=64)


def test_calib_config_names_the_batch_size_rule():
    with pytest.raises(ConfigError, match=f"multiple of {ADAPT_GROUP}"):
        CalibConfig(domain="medical", batch_size=4)
    CalibConfig(domain="medical", batch_size=4, adapt=False)  # no batches without adaptation
