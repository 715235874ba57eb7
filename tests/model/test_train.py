"""Label-free training: reproducibility, resume, checkpoints, batches and options."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from cdiqa.cli import app  # noqa: E402
from cdiqa.errors import ConfigError  # noqa: E402
from cdiqa.images import save_image  # noqa: E402
from cdiqa.model.data import (EVAL_IMAGES, HEAD_IMAGES, TRAIN_IMAGES, PairSampler,  # noqa: E402
                              step_seed)
from cdiqa.model.network import ModelConfig, load_model  # noqa: E402
from cdiqa.model.train import TrainConfig, learning_rate, train  # noqa: E402

TINY = ModelConfig(channels=(8, 8, 8, 8), stem_channels=8)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("refs")
    img = data.astronaut().astype(np.float32) / 255
    save_image(folder / "a.png", img[:96, :96])
    save_image(folder / "b.png", img[200:296, 250:346])
    return folder


def _cfg(refs, **kw) -> TrainConfig:
    base = dict(steps=3, batch_size=2, crop=64, model=TINY, refs=str(refs), builtin=False,
                checkpoint_every=2, warmup=1)
    return TrainConfig(**{**base, **kw})


def _weights(path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_identical_weights_and_another_seed_does_not(refs, tmp_path):
    train(_cfg(refs), tmp_path / "a.pt")
    train(_cfg(refs), tmp_path / "b.pt")
    train(_cfg(refs, seed=1), tmp_path / "c.pt")
    assert _same(_weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt"))
    assert not _same(_weights(tmp_path / "a.pt"), _weights(tmp_path / "c.pt"))


def test_resumed_run_equals_uninterrupted_run(refs, tmp_path):
    train(_cfg(refs, steps=4), tmp_path / "full.pt")
    train(_cfg(refs, steps=2), tmp_path / "half.pt")
    train(_cfg(refs, steps=4), tmp_path / "resumed.pt", resume=tmp_path / "half.pt")
    assert torch.load(tmp_path / "resumed.pt", weights_only=True)["step"] == 4
    assert _same(_weights(tmp_path / "full.pt"), _weights(tmp_path / "resumed.pt"))


def test_resume_with_other_options_is_refused(refs, tmp_path):
    train(_cfg(refs, steps=1), tmp_path / "a.pt")
    with pytest.raises(ConfigError, match="lr"):
        train(_cfg(refs, steps=2, lr=0.5), tmp_path / "b.pt", resume=tmp_path / "a.pt")


def test_checkpoint_loads_as_a_model_and_leaves_no_temp_files(refs, tmp_path):
    out = tmp_path / "ck" / "model.pt"
    result = train(_cfg(refs, steps=2), out, progress=lambda s, n, logs: None)
    assert result.checkpoint == out and result.steps == 2
    assert set(result.losses) >= {"content", "factual", "counterfactual", "collapse",
                                  "ranking", "total"}
    assert all(np.isfinite(v) for v in result.losses.values())
    model = load_model(out)
    assert model.cfg == TINY
    assert [p.name for p in out.parent.iterdir()] == ["model.pt"]


def test_progress_reports_every_step(refs, tmp_path):
    seen = []
    train(_cfg(refs, steps=3), tmp_path / "m.pt", progress=lambda s, n, logs: seen.append((s, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0)
    lrs = [learning_rate(cfg, s) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] >= 0.05


def test_batches_are_a_function_of_the_seed_and_groups_share_a_distortion(refs):
    from cdiqa.model.data import load_reference_folder

    images = list(load_reference_folder(refs).values())
    sampler = PairSampler(images, ["GBLUR", "AWGN", "Mean_Shift"], 64, 4, group=2)
    a, b = sampler.batch(step_seed(0, 5)), sampler.batch(step_seed(0, 5))
    c = sampler.batch(step_seed(0, 6))
    assert np.array_equal(a.stronger, b.stronger) and not np.array_equal(a.ref, c.ref)
    assert a.ref.shape == (4, 3, 64, 64) and a.ref.dtype == np.float32
    assert a.kinds[0] == a.kinds[1] and a.levels[0] == a.levels[1]
    for lo, hi, ok in zip(a.milder, a.stronger, a.valid):
        assert ok == (not np.array_equal(lo, hi))


def test_evaluation_images_are_never_training_or_head_images():
    assert not set(EVAL_IMAGES) & set(TRAIN_IMAGES)
    assert not set(EVAL_IMAGES) & set(HEAD_IMAGES)


def test_bad_options_raise_config_errors(refs):
    with pytest.raises(ConfigError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match="--refs"):
        TrainConfig(builtin=False)
    with pytest.raises(ConfigError, match="group"):
        PairSampler([np.zeros((64, 64, 3), np.float32)], ["GBLUR"], 64, 3, group=2)
    assert replace(_cfg(refs), steps=5).steps == 5


def test_cli_train_writes_a_checkpoint(refs, tmp_path):
    out = tmp_path / "m.pt"
    res = CliRunner().invoke(app, ["train", "--out", str(out), "--steps", "1", "--refs",
                                   str(refs), "--no-builtin"])
    assert res.exit_code == 0, res.output
    assert "1 steps" in res.stdout
    assert "train: loss" in res.stderr and "1/1" in res.stderr  # the bar, drawn at the end
    assert load_model(out).cfg == ModelConfig.pyramid()  # the default model's architecture
