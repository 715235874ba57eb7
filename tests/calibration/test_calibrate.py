"""``calibrate`` end to end on the tiny bundle: files, manifest, runtime, gates, atomicity."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cdiqa.calibration import CalibConfig, calibrate
from cdiqa.errors import CalibrationError, ConfigError, ManifestError
from cdiqa.manifest import load_manifest

from .conftest import FAST, tree

pytest.importorskip("onnxruntime")


def _leftovers(bundle: Path) -> list[str]:
    return [p.name for p in bundle.parent.iterdir() if p.name.startswith(f".{bundle.name}.")]


def test_calibrated_bundle_layout(calibrated):
    bundle, report = calibrated
    m = load_manifest(bundle, verify=True)
    dm = m.domain_models["underwater"]
    assert dm.adapted and set(dm.files) == {"fp32", "checkpoint", "int8", "fp16"}
    assert dm.files["int8"].path == "domains/underwater/model.int8.onnx"
    assert m.calibration["underwater"].path == "calibration/underwater.cache"
    assert "underwater" in m.domains
    assert set(dm.gates) == {"int8", "fp16"} and set(report.gates) == {"int8", "fp16"}
    for g in dm.gates.values():
        assert g.pairs > 0 and g.accepted and -1 <= g.srcc_vs_fp32 <= 1
    assert report.references > 0 and report.held_out > 0
    assert any(n.startswith("domain head: ") for n in report.notes)  # the choices are reported
    assert any(n.startswith("input scale ") for n in report.notes)
    assert not _leftovers(bundle)


def test_runtime_selects_the_domain_graphs(calibrated):
    from cdiqa.runtime import Scorer

    bundle, _ = calibrated
    rng = np.random.default_rng(0)
    ref = rng.random((96, 96, 3)).astype(np.float32)
    dist = np.clip(ref + 0.05 * rng.standard_normal(ref.shape), 0, 1).astype(np.float32)
    for precision in ("fp32", "int8", "fp16"):
        with Scorer.load(bundle, domain="underwater", precision=precision) as s:
            assert s.score(ref, ref) == 1.0  # identical images, every precision
            assert 0 <= s.score(ref, dist) < 1
    natural = Scorer.load(bundle)  # default domain: the bundle's own graph
    under = natural.with_domain("underwater")  # adapted: its own session and graph
    assert under.session is not natural.session
    assert natural.with_domain("medical").session is natural.session
    with pytest.raises(Exception, match="Precision for domain 'natural': got 'int8'"):
        Scorer.load(bundle, domain="natural", precision="int8")


def _blind(graph: Path) -> None:
    """Rewrite ``graph`` so that it reports no degradation for any pair: sums, sumsq -> 0."""
    import onnx
    from onnx import helper, numpy_helper

    from cdiqa.manifest import OUTPUT_SUMS, OUTPUT_SUMSQ

    model = onnx.load(str(graph))
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "blind_zero"))
    for name in (OUTPUT_SUMS, OUTPUT_SUMSQ):
        for node in g.node:
            node.output[:] = [f"{o}_seen" if o == name else o for o in node.output]
            node.input[:] = [f"{i}_seen" if i == name else i for i in node.input]
        g.node.append(helper.make_node("Mul", [f"{name}_seen", "blind_zero"], [name]))
    onnx.save(model, str(graph))


def test_failed_gate_leaves_the_bundle_unchanged(bundle, monkeypatch):
    # The INT8 graph is made blind to every distortion, so its gate fails by construction on
    # every CPU (real INT8 noise may or may not change a ranking, depending on the kernels).
    import cdiqa.calibration.bundle as cb

    real = cb._reduced

    def blind_reduced(graph, folder, *args):
        real(graph, folder, *args)
        _blind(folder / cb.DOMAIN_FILE_NAMES["int8"])

    monkeypatch.setattr(cb, "_reduced", blind_reduced)
    before = tree(bundle)
    config = CalibConfig(domain="screen", adapt=False, precisions=("int8",),
                         **{k: v for k, v in FAST.items() if k != "plugin"})
    with pytest.raises(CalibrationError, match=r"Accuracy gate for domain 'screen' \(int8\).*"
                                               r"left unchanged.*--accept-drop"):
        calibrate(bundle, config)
    assert tree(bundle) == before and not _leftovers(bundle)


@pytest.mark.parametrize("exc", [RuntimeError("injected"), KeyboardInterrupt()])
def test_interrupted_calibration_leaves_the_bundle_unchanged(bundle, monkeypatch, exc):
    import cdiqa.calibration.bundle as cb

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(cb, "_reduced", boom)
    before = tree(bundle)
    with pytest.raises(type(exc)):
        calibrate(bundle, CalibConfig(domain="neutron", adapt=False, **FAST))
    assert tree(bundle) == before and not _leftovers(bundle)


def test_a_link_out_of_the_bundle_is_refused_and_nothing_is_left(bundle, tmp_path):
    outside = tmp_path / "big"
    outside.mkdir()
    (outside / "data.bin").write_bytes(b"x" * 1000)
    (bundle / "extra").symlink_to(outside)
    before = tree(bundle)
    with pytest.raises(ManifestError, match=r"Link for bundle entry '.*extra': got a link to "
                                            r"'.*big', expected a relative link"):
        calibrate(bundle, CalibConfig(domain="neutron", adapt=False, **FAST))
    assert tree(bundle) == before and not _leftovers(bundle)


def test_cli_link_loop_exits_1_and_stale_staging_is_removed(bundle):
    from cdiqa.export.staging import staging_dir

    host = staging_dir(bundle, "probe").name.split(".")[3]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for path in bundle.parent.glob(f".{bundle.name}.*"):
        path.rmdir()
    stale = bundle.parent / f".{bundle.name}.calib.{host}.{dead}.abc123"  # a killed run's
    shutil.copytree(bundle, stale)
    (bundle / "loop").symlink_to("loop")
    proc = subprocess.run([sys.executable, "-m", "cdiqa.cli", "calibrate", str(bundle),
                           "--domain", "medical", "--no-adapt"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert f"Link for bundle entry '{bundle / 'loop'}': got a link loop" in proc.stderr
    assert not _leftovers(bundle)


def test_rebuild_from_cache_needs_no_images(calibrated, tmp_path, monkeypatch):
    import cdiqa.calibration.domains as cd

    bundle = tmp_path / "b"
    shutil.copytree(calibrated[0], bundle)
    before = load_manifest(bundle).domain_models["underwater"]
    monkeypatch.setattr(cd, "domain_samples", lambda *a: pytest.fail("read images"))
    report = calibrate(bundle, CalibConfig(domain="underwater", from_cache=True))
    after = load_manifest(bundle, verify=True).domain_models["underwater"]
    assert after.files["int8"] == before.files["int8"]  # byte-identical rebuild
    assert after.gates["int8"] == before.gates["int8"] and not report.notes


def test_from_cache_without_a_cache_is_an_error(bundle):
    with pytest.raises(CalibrationError, match="Calibration cache for domain 'medical': got "
                                               "none in the bundle"):
        calibrate(bundle, CalibConfig(domain="medical", from_cache=True))
    with pytest.raises(ConfigError, match="--from-cache with --images"):
        CalibConfig(domain="medical", from_cache=True, images="x")


def test_not_writable_is_reported(bundle, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == bundle.parent
                        else real(p, mode, **k))
    with pytest.raises(CalibrationError, match=r"Permission for bundle folder '.*': got not "
                                               r"writable.*Copy the bundle somewhere writable"):
        calibrate(bundle, CalibConfig(domain="medical", **FAST))


def test_read_only_file_system_is_reported(bundle):
    """Root passes os.access everywhere: a read-only bind mount in a private mount namespace
    (``unshare -m``) is the honest test of the probe."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare not installed")
    parent = bundle.parent
    script = (f"mount --bind {parent} {parent} && mount -o remount,bind,ro {parent} && "
              f"{sys.executable} -m cdiqa.cli calibrate {bundle} --domain medical --steps 1")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    if "mount:" in proc.stderr or "unshare:" in proc.stderr:
        pytest.skip(f"no private read-only mount here: {proc.stderr.strip()[:120]}")
    assert proc.returncode == 1, proc.stderr
    assert "Permission for bundle folder" in proc.stderr and "not writable" in proc.stderr


def test_cli_errors_exit_1_with_the_message(bundle, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "cdiqa.cli", "calibrate", str(bundle),
                               *args], capture_output=True, text=True)

    proc = run("--domain", "underwter")
    assert proc.returncode == 1 and "Did you mean 'underwater'?" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run("--domain", "medical", "--images", str(empty))
    assert proc.returncode == 1 and "got no image file" in proc.stderr
    proc = run("--domain", "medical", "--method", "kl")
    assert proc.returncode == 1 and "Method for option '--method'" in proc.stderr


def test_given_pairs_and_few_shot_labels(bundle, tmp_path):
    """--pairs feed adaptation, --labels make the profile a few-shot head (no image is
    scored by a person here: the scores are synthetic, only the code path is tested)."""
    import csv

    from cdiqa.heads import read_head
    from cdiqa.images import save_image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        ref = rng.random((72, 80, 3)).astype(np.float32)
        dist = np.clip(ref + 0.03 * (i + 1) * rng.standard_normal(ref.shape), 0, 1)
        save_image(tmp_path / f"r{i}.png", ref)
        save_image(tmp_path / f"d{i}.png", dist.astype(np.float32))
        rows.append({"ref_path": f"r{i}.png", "dist_path": f"d{i}.png", "score": 5 - 0.6 * i})
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["ref_path", "dist_path", "score"])
        w.writeheader()
        w.writerows(rows)
    report = calibrate(bundle, CalibConfig(domain="neutron", pairs=str(tmp_path / "pairs.csv"),
                                           labels=str(tmp_path / "pairs.csv"),
                                           precisions=("fp16",), accept_drop=True, **FAST))
    m = load_manifest(bundle, verify=True)
    assert read_head(m.domain_path("neutron")).kind == "few_shot"
    assert m.domain_models["neutron"].adapted and set(report.gates) == {"fp16"}
    assert "neutron" not in m.calibration  # no INT8 asked: no cache
