"""Optional dependencies fail with one line that names what to install."""

import pytest

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable, CdiqaError, describe


def test_missing_module_names_the_extra():
    with pytest.raises(BackendUnavailable, match="needs 'tensorrt'.*cdiqa\\[trt\\]"):
        _lazy.lazy_import("tensorrt.definitely_not_here", purpose="TensorRT backend")


def test_unknown_module_names_itself():
    with pytest.raises(BackendUnavailable, match="install 'no_such_pkg_xyz'"):
        _lazy.lazy_import("no_such_pkg_xyz")


def test_available_does_not_import():
    import sys

    assert _lazy.available("json")
    assert not _lazy.available("no_such_pkg_xyz")
    assert "no_such_pkg_xyz" not in sys.modules


def test_errors_are_one_hierarchy_and_template():
    assert issubclass(BackendUnavailable, CdiqaError)
    msg = describe("Dtype", "tensor", "ref", "int8", "float32", "cast it")
    assert msg == "Dtype for tensor 'ref': got int8, expected float32. cast it."


def test_question_hint_gets_no_extra_period():
    msg = describe("Domain", "bundle", "b", "'medicl'", "a known domain", "Did you mean 'medical'?")
    assert msg.endswith("Did you mean 'medical'?")
