"""The network: shapes, exact zeros for identical images, agreement with the numpy masking."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cdiqa import masking as ref_masking  # noqa: E402
from cdiqa.model import masking as tm  # noqa: E402
from cdiqa.model.network import CDIQA, ModelConfig, load_model  # noqa: E402
from cdiqa.tolerances import relative_error, tolerance  # noqa: E402

TINY = ModelConfig(channels=(8, 8, 8, 8), stem_channels=8)


@pytest.fixture(scope="module", params=["fixed", "learned", "pyramid"])
def model(request) -> CDIQA:
    torch.manual_seed(0)
    cfg = ModelConfig.pyramid() if request.param == "pyramid" else ModelConfig(
        channels=(8, 8, 8, 8), stem_channels=8, frontend=request.param)
    return CDIQA(cfg).eval()


@pytest.fixture
def pair(natural_image, rng):
    ref = torch.from_numpy(natural_image.transpose(2, 0, 1).copy())[None]
    noise = torch.from_numpy(rng.normal(0, 0.05, ref.shape).astype(np.float32))
    return ref, (ref + noise).clamp(0, 1)


def test_codes_and_stats_have_the_documented_shapes(model, pair):
    ref, dist = pair
    codes = model.codes(ref)
    for s, c in enumerate(model.cfg.channels):
        h, w = ref.shape[2] // model.cfg.strides[s], ref.shape[3] // model.cfg.strides[s]
        for maps in codes:
            assert maps[s].shape == (1, c, h, w)
    stats = model(ref, dist)
    d = sum(model.cfg.channels)
    assert all(t.shape == (1, d) for t in stats)
    assert model.features(ref, dist).shape == (1, model.feature_dim) == (1, 2 * d)


def test_identical_images_give_exactly_zero_features(model, pair):
    ref, dist = pair
    with torch.no_grad():
        assert torch.count_nonzero(model.features(ref, ref.clone())) == 0
        assert torch.count_nonzero(model.features(ref, dist)) > 0


def test_torch_masking_op_matches_the_numpy_reference(rng):
    e = rng.normal(size=(2, 5, 9, 11)).astype(np.float32)
    a = rng.uniform(0, 3, size=(2, 5, 9, 11)).astype(np.float32)
    gamma = rng.uniform(1.2, 2.5, 5).astype(np.float32)
    sigma = rng.uniform(0.05, 1.0, 5).astype(np.float32)
    for k in (1, 3, 5):
        want = ref_masking.masking_stats(e, a, gamma, sigma, k, dtype=np.float64)
        got = tm.masking_stats(*(torch.from_numpy(x) for x in (e, a, gamma, sigma)), k)
        assert relative_error(got.numpy(), want) <= tolerance("torch", "fp32").rtol


def test_network_stats_match_the_numpy_reference_on_its_own_codes(model, pair):
    ref, dist = pair
    with torch.no_grad():
        cr, cd = model.codes(ref), model.codes(dist)
        stats = model.stats_from_codes(cr, cd, None, tuple(ref.shape[2:]))
        for s, m in enumerate(model.masking):
            e = (cd.degradation[s] - cr.degradation[s]).double().numpy()
            both = model.cfg.activities[s] == "both"
            a = m.activity(cr.content[s], cd.content[s] if both else None).double().numpy()
            want = ref_masking.masking_stats(e, a, m.gamma.double().numpy(),
                                             m.sigma.double().numpy(), m.window)
            ch = model.cfg.channels
            lo = sum(ch[:s])
            got = torch.stack([stats.sums[:, lo:lo + ch[s]], stats.sumsq[:, lo:lo + ch[s]]], 1)
            assert relative_error(got.numpy(), want) <= tolerance("torch", "fp32").rtol


def test_roi_of_the_whole_image_equals_no_roi(model, pair):
    ref, dist = pair
    h, w = ref.shape[2:]
    roi = torch.tensor([[0, 0, h, w]], dtype=torch.int32)
    with torch.no_grad():
        full, whole = model(ref, dist), model(ref, dist, roi)
    for a, b in zip(full, whole):
        assert torch.equal(a, b)


def test_features_from_stats_torch_equals_numpy(model, pair):
    with torch.no_grad():
        stats = model(*pair)
    got = tm.features_from_stats(*stats).double().numpy()
    want = ref_masking.features_from_stats(*(t.double().numpy() for t in stats),
                                           dtype=np.float64)
    assert relative_error(got, want) <= tolerance("torch", "fp32").rtol


def test_saved_weights_load_back_identically(model, pair, tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"config": model.cfg.to_dict(), "model": model.state_dict()}, path)
    again = load_model(path)
    with torch.no_grad():
        assert torch.equal(again.features(*pair), model.features(*pair))


class _Payload:
    """Unpickling this would run ``os.system`` (it writes a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_runs_code_is_refused_not_run(tmp_path):
    from cdiqa.errors import ConfigError

    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    torch.save({"config": {}, "model": _Payload(marker)}, path)
    with pytest.raises(ConfigError) as info:
        load_model(path)
    msg = str(info.value)
    assert msg.startswith(f"Content for checkpoint '{path}': got a pickle that calls ")
    assert ".system (code, not weights)" in msg and "never runs code" in msg
    assert "weights_only" not in msg and not marker.exists()


def test_cli_exits_1_on_a_checkpoint_that_runs_code(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    torch.save({"config": {}, "model": _Payload(marker)}, path)
    image = Path(__file__).parents[1] / "fixtures" / "natural.png"
    proc = subprocess.run([sys.executable, "-m", "cdiqa.cli", "score", str(image), str(image),
                           "--checkpoint", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr  # was 2: "internal error: this is a bug"
    assert f"error: Content for checkpoint '{path}'" in proc.stderr
    assert "weights_only" not in proc.stderr and not marker.exists()


@pytest.mark.parametrize("make, got", [
    (lambda p: p.write_bytes(b"not a checkpoint" * 4), "got a file that is not a weights-only"),
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "Format for checkpoint .*: got a file torch "
                                                    "cannot read"),  # a cut download
    (lambda p: torch.save(torch.zeros(2), p), "got Tensor, expected a dict with 'config'"),
])
def test_files_that_are_not_checkpoints_are_config_errors(tmp_path, make, got):
    from cdiqa.errors import ConfigError

    path = tmp_path / "m.pt"
    torch.save({"config": TINY.to_dict(), "model": {}}, path)
    make(path)
    with pytest.raises(ConfigError, match=got):
        load_model(path)


# ---- the pyramid (the default model's architecture) ----------------------------------------


def test_pyramid_codes_start_as_the_bands_and_mask_by_their_activity(pair):
    """At initialisation e = φ(D) - φ(R) and, with k = 1, γ = 2, the masked map is
    (φ_D - φ_R)² / (σ² + φ_R²), or / (σ² + φ_R² + φ_D²) for a band with both images'
    activity: GMSD's "1 - similarity" per channel, bounded by 2 however strong the
    distortion."""
    from cdiqa.model.network import PYRAMID_SIGMA2

    ref, dist = pair
    model = CDIQA(ModelConfig.pyramid()).eval()
    assert set(model.cfg.activities) == {"reference", "both"}
    with torch.no_grad():
        bands_r, bands_d = model.encoder(ref), model.encoder(dist)
        cr, cd = model.codes(ref), model.codes(dist)
        for s, (kind, stride, activity, *_) in enumerate(model.cfg.bands):
            assert bands_r[s].shape[2] == ref.shape[2] // stride
            assert torch.allclose(cr.degradation[s], bands_r[s], atol=1e-6)
            r, d = bands_r[s].double(), bands_d[s].double()
            act = r * r + d * d if activity == "both" else r * r
            n = (d - r) ** 2 / (PYRAMID_SIGMA2[kind] + act)
            m = model.masking[s]
            e = (cd.degradation[s] - cr.degradation[s]).double().numpy()
            a = m.activity(cr.content[s], cd.content[s] if activity == "both" else None)
            got = ref_masking.masking_map(e, a.double().numpy(), m.gamma.double().numpy(),
                                          m.sigma.double().numpy(), m.window)
            assert relative_error(got, n.numpy()) <= tolerance("torch", "fp32").rtol
            assert activity == "reference" or got.max() < 2.0


def test_pyramid_label_free_weights_come_from_the_bands():
    cfg = ModelConfig.pyramid()
    w = np.asarray(cfg.energy_weights())
    d = sum(cfg.channels)
    assert w.shape == (2 * d,) and np.all(w >= 0)
    mean, std = w[:d].reshape(-1, 2), w[d:].reshape(-1, 2)
    for s, (_, _, _, mw, sw) in enumerate(cfg.bands):
        assert np.all(mean[s] == mw / 2) and np.all(std[s] == sw / 2)
    assert ModelConfig().energy_weights() is None  # the trunk keeps the head's default


def test_pyramid_config_is_checked_and_round_trips():
    import json

    from cdiqa.errors import ConfigError
    from cdiqa.model.network import PYRAMID_V1

    cfg = ModelConfig.pyramid()
    back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg == ModelConfig.named("pyramid")
    assert cfg.strides == (2, 4, 4, 8, 8, 16, 2, 4, 8) and ModelConfig().strides == (4, 8, 16, 32)
    # a pyramid checkpoint from before ``bands``: its five bands, its one activity
    old = {k: v for k, v in cfg.to_dict().items() if k != "bands"}
    old.update(channels=[2] * 5, activity="both")
    v1 = ModelConfig.from_dict(old)
    assert v1.strides == tuple(b[1] for b in PYRAMID_V1) and set(v1.activities) == {"both"}
    assert CDIQA(v1).feature_dim == 20
    with pytest.raises(ConfigError, match="Channels for model config 'pyramid'"):
        ModelConfig(channels=(8, 8, 8, 8), frontend="pyramid")
    with pytest.raises(ConfigError, match="Band for model config 'pyramid'"):
        ModelConfig.pyramid(bands=[("luma", 3, "reference", 0.0, 1.0)])
    with pytest.raises(ConfigError, match="Front end for option 'frontend': got bogus"):
        ModelConfig.named("bogus")


def test_input_scale_moves_every_band_one_octave_finer(pair):
    import json

    from cdiqa.errors import ConfigError
    from cdiqa.model.network import with_input_scale

    base = CDIQA(ModelConfig.pyramid()).eval()
    up = with_input_scale(base, 2)
    assert up.cfg.strides == tuple(s // 2 for s in base.cfg.strides)
    assert ModelConfig.from_dict(json.loads(json.dumps(up.cfg.to_dict()))) == up.cfg
    old = {k: v for k, v in base.cfg.to_dict().items() if k != "input_scale"}
    assert ModelConfig.from_dict(old).input_scale == 1  # checkpoints from before the field
    ref, dist = pair
    with torch.no_grad():
        codes = up.codes(ref)
        assert codes.phi[0].shape[2:] == ref.shape[2:]  # luma /2 of the 2x image: full size
        assert torch.count_nonzero(up.features(ref, ref)) == 0  # identical images: v == 0
        # a distortion reads non-zero, and not as at scale 1
        v_up, v_base = up.features(ref, dist), base.features(ref, dist)
    assert torch.all(v_up[0] > 0) and not torch.allclose(v_up, v_base)
    with pytest.raises(ConfigError, match="Input scale for model config"):
        ModelConfig(input_scale=3)
