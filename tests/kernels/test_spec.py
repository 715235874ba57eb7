"""spec.yaml agrees with the CUDA source, the PTX, the loader and the numpy reference."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest

from cdiqa import masking, tolerances
from cdiqa.errors import ManifestError
from cdiqa.kernels import MASKING_HEADER, MASKING_SOURCE, load_spec, loader, ptx


@pytest.fixture(scope="module")
def spec() -> dict:
    return load_spec()


def _defines() -> dict[str, int]:
    text = MASKING_HEADER.read_text()
    out = {}
    for name, value in re.findall(r"#define (CDIQA_MASKING_\w+) (.+)", text):
        value = value.strip()
        m = re.fullmatch(r"\(1 << (\d+)\)", value)
        out[name] = 1 << int(m.group(1)) if m else int(value.removesuffix("LL"))
    return out


def _kernel_params(source: str) -> dict[str, list[str]]:
    """extern "C" __global__ kernels and their parameter names, from the source."""
    found = {}
    for m in re.finditer(r'extern "C" __global__ void[^\n]*\n?\s*(\w+)\(([^)]*)\)', source):
        params = [p.strip().split()[-1].lstrip("*") for p in m.group(2).split(",")]
        found[m.group(1)] = params
    return found


def test_identity(spec):
    assert (spec["op"], spec["namespace"], spec["version"]) == ("CdiqaMasking", "cdiqa", "1")
    assert spec["reference"] == "cdiqa.masking.masking_stats"
    assert spec["source"] == MASKING_SOURCE.name and spec["header"] == MASKING_HEADER.name


def test_inputs_and_attribute_follow_the_reference_signature(spec):
    params = list(inspect.signature(masking.masking_stats).parameters)
    names = [i["name"] for i in spec["inputs"]] + [a["name"] for a in spec["attributes"]]
    assert names == params[:5] == ["e", "a", "gamma", "sigma", "k"]
    k = spec["attributes"][0]
    assert k["type"] == "int" and k["required"] is True and "odd" in k["constraint"]


def test_shapes_and_dtypes(spec):
    by_name = {i["name"]: i for i in spec["inputs"]}
    assert by_name["e"]["shape"] == by_name["a"]["shape"] == ["B", "C", "H", "W"]
    assert by_name["gamma"]["shape"] == by_name["sigma"]["shape"] == ["C"]
    assert by_name["gamma"]["dtypes"] == by_name["sigma"]["dtypes"] == ["float32"]
    assert by_name["e"]["dtypes"] == by_name["a"]["dtypes"] == spec["supported_dtypes"]
    assert spec["supported_dtypes"] == list(loader.ENTRY_POINTS)
    (out,) = spec["outputs"]
    assert (out["name"], out["shape"], out["dtypes"]) == ("stats", ["B", 2, "C"], ["float32"])
    assert spec["dims"]["H"]["max"] == spec["dims"]["W"]["max"] == loader.MAX_SIDE


def test_tolerances_exist(spec):
    for dtype, (impl, precision) in spec["tolerances"].items():
        assert dtype in spec["supported_dtypes"]
        assert tolerances.tolerance(impl, precision).rtol > 0


def test_entry_points_match_source_and_loader(spec):
    eps = spec["entry_points"]
    assert {eps["float32"], eps["float16"]} == set(loader.ENTRY_POINTS.values())
    assert eps["reduce"] == loader.REDUCE_ENTRY
    assert _kernel_params(MASKING_SOURCE.read_text()) == spec["kernel_params"]
    assert set(spec["kernel_params"]) == {eps["float32"], eps["float16"], eps["reduce"]}


def test_entry_points_match_the_ptx(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("CDIQA_CACHE", str(tmp_path))
    try:
        build = ptx.ptx_from_cuda("sm_90", cubin=False)
    except Exception as exc:  # only an absent compiler may skip this
        if ptx.find_nvcc() is None and ptx.nvrtc_version() is None:
            pytest.skip(f"no CUDA compiler: {exc}")
        raise
    eps = spec["entry_points"]
    assert build.entry_names == [eps["float32"], eps["float16"], eps["reduce"]]


def test_launch_constants_agree(spec):
    d = _defines()
    launch = spec["launch"]
    assert launch["threads"] == d["CDIQA_MASKING_THREADS"] == loader.THREADS
    assert launch["tile"] == [d["CDIQA_MASKING_TILE_H"], d["CDIQA_MASKING_TILE_W"]] == \
        [loader.TILE_H, loader.TILE_W]
    assert launch["chunk_radius"] == d["CDIQA_MASKING_CHUNK_RADIUS"]
    assert launch["reduce_planes_per_block"] == d["CDIQA_MASKING_REDUCE_PLANES"] == \
        loader.REDUCE_PLANES
    assert d["CDIQA_MASKING_MAX_SIDE"] == loader.MAX_SIDE
    assert d["CDIQA_MASKING_MAX_PLANES"] == loader.MAX_PLANES == spec["dims"]["B*C"]["max"]
    assert d["CDIQA_MASKING_MAX_TILES"] == loader.MAX_TILES == spec["dims"]["tiles"]["max"]
    assert launch["planes_for_one_block"] == d["CDIQA_MASKING_PLANES_FOR_ONE_BLOCK"] == \
        loader.PLANES_FOR_ONE_BLOCK
    assert launch["target_blocks"] == d["CDIQA_MASKING_TARGET_BLOCKS"] == loader.TARGET_BLOCKS
    assert launch["dynamic_shared_bytes"] == 0


def test_workspace_formula(spec):
    assert spec["launch"]["workspace_bytes"] == "0 if segments == 1 else B*C*segments*2*4"
    assert loader.workspace_size(8, 128, 96, 128) == 0  # 1024 planes: one block each
    assert loader.workspace_size(1, 32, 480, 270) == 32 * 68 * 2 * 4  # 135 tiles, 2 a block
    assert loader.workspace_size(2, 3, 1, 1) == 0


def test_host_api_is_declared(spec):
    header = MASKING_HEADER.read_text()
    api = spec["host_api"]
    for key in ("launcher", "workspace_size", "tiles_per_block"):
        assert f"{api[key]}(" in header
    for name, value in api["dtype_enum"].items():
        tag = {"float32": "F32", "float16": "F16"}[name]
        assert f"CDIQA_MASKING_{tag} = {value}" in header


def test_load_spec_errors(tmp_path):
    with pytest.raises(ManifestError, match="Kernel spec for file"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("op: X\n")
    with pytest.raises(ManifestError, match="got no key"):
        load_spec(bad)


def test_kernels_package_is_import_light():
    code = ("import sys, cdiqa.kernels, cdiqa.kernels.ptx, cdiqa.kernels.loader\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('cuda', 'yaml', 'torch')]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)
