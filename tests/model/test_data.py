"""The KADID marginals ship in the package; no package code reads a path beside the repository."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import cdiqa
from cdiqa.errors import ConfigError
from cdiqa.model.data import MARGINALS, dev_kinds, read_marginals

PACKAGE = Path(cdiqa.__file__).resolve().parent
#: a string literal that is a path into ``shared`` or ``../shared``
SHARED_PATH = re.compile(r"^(\.\./)*shared(/.*)?$")


def test_packaged_marginals_hold_13_types_at_5_levels():
    assert Path(str(MARGINALS)).resolve().is_relative_to(PACKAGE)
    marg = read_marginals()
    kinds = dev_kinds()
    assert len(kinds) == 13 and len(marg) == 13 * 5
    assert {lv for _, lv in marg} == {1, 2, 3, 4, 5}
    assert all(1 <= v <= 5 for v in marg.values())


def test_a_missing_marginals_file_is_named_with_the_fix(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(ConfigError, match=r"KADID marginals '.*nope\.csv': got nothing there.*"
                                          r"pass no path to use the packaged copy"):
        read_marginals(missing)


def test_a_bad_marginals_row_is_named_with_the_fix(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("type_name,level,mos_mean\nGBLUR,one,4.6\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"got a bad row .*expected type_name, level, mos_mean"):
        read_marginals(bad)


def test_no_package_module_names_a_shared_folder():
    found = []
    for py in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and SHARED_PATH.match(node.value):
                found.append(f"{py.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, "package code reads outside the installed package: " + "; ".join(found)
