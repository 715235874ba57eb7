"""The `cdiqa` GStreamer element (cdiqa.gst), in pipelines built from videotestsrc.

One branch is degraded through ``jpegenc quality=10 ! jpegdec`` and one is identical to the
reference: each frame posts one message whose scores are the runtime's on the same frames
(captured with appsinks), the identical branch scores 1.0, and the reference leaves the
element unchanged. Skipped, with the reason, only where GStreamer's Python bindings are
missing; CI (CI=true) installs them (.ci/run), so there a missing binding fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import cdiqa.gst  # noqa: E402

_REASON = cdiqa.gst.unavailable_reason()
if _REASON is not None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI installs GStreamer (.ci/run), but: {_REASON}", pytrace=False)
    pytest.skip(_REASON, allow_module_level=True)

from gi.repository import Gst, GstVideo  # noqa: E402

from cdiqa.gst.element import frame_array  # noqa: E402
from cdiqa.runtime import Scorer  # noqa: E402
from cdiqa.tolerances import tolerance  # noqa: E402

FRAMES = 6
SOURCE = (f"videotestsrc num-buffers={FRAMES} pattern=ball ! "
          "video/x-raw,format=RGB,width=128,height=96,framerate=25/1")


@pytest.fixture(scope="module", autouse=True)
def registered():
    cdiqa.gst.register()


def _run(description: str, sinks=()) -> tuple[list[Gst.Structure], dict, Gst.Message | None]:
    """Play a pipeline to its end: the cdiqa messages, every appsink's (pts, frame), and the
    error message (None when it reached EOS)."""
    pipeline = Gst.parse_launch(description)
    captured = {name: [] for name in sinks}

    def on_sample(sink, name):
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer()
        info = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
        captured[name].append((buf.pts, frame_array(buf, info)))
        return Gst.FlowReturn.OK

    for name in sinks:
        sink = pipeline.get_by_name(name)
        sink.set_property("emit-signals", True)
        sink.connect("new-sample", on_sample, name)
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    messages, error = [], None
    try:
        while True:
            msg = bus.timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.ELEMENT
                                         | Gst.MessageType.EOS | Gst.MessageType.ERROR)
            assert msg is not None, "the pipeline stalled"
            if msg.type == Gst.MessageType.ERROR:
                error = msg
                break
            if msg.type == Gst.MessageType.EOS:
                break
            if msg.get_structure().get_name() == "cdiqa":
                messages.append(msg.get_structure().copy())
    finally:
        pipeline.set_state(Gst.State.NULL)
    return messages, captured, error


def _scores(structure: Gst.Structure) -> dict[str, float]:
    per_pad = structure.get_value("scores")
    return {per_pad.nth_field_name(i): per_pad.get_value(per_pad.nth_field_name(i))
            for i in range(per_pad.n_fields())}


def test_one_message_per_frame_with_the_runtimes_scores():
    description = (
        f"{SOURCE} ! tee name=t "
        "t. ! queue ! q.sink_0 "
        "t. ! queue ! jpegenc quality=10 ! jpegdec ! videoconvert ! video/x-raw,format=RGB ! "
        "tee name=d d. ! queue ! appsink name=degraded sync=false "
        "d. ! queue ! videoconvert ! video/x-raw,format=BGRx ! q.sink_1 "
        "t. ! queue ! q.sink_2 "
        "t. ! queue ! appsink name=source sync=false "
        "cdiqa name=q ! appsink name=passed sync=false")
    messages, frames, error = _run(description, ("degraded", "source", "passed"))
    assert error is None, error.parse_error()
    assert len(messages) == FRAMES
    assert [m.get_value("frame") for m in messages] == list(range(FRAMES))
    # the reference passes through unchanged, and each message carries its pts
    assert [p for p, _ in frames["passed"]] == [p for p, _ in frames["source"]]
    assert [m.get_value("pts") for m in messages] == [p for p, _ in frames["source"]]
    for (_, a), (_, b) in zip(frames["passed"], frames["source"]):
        np.testing.assert_array_equal(a, b)
    atol = tolerance("served_score").atol
    with Scorer.load() as scorer:
        for m, (_, ref), (_, dist) in zip(messages, frames["source"], frames["degraded"]):
            scores = _scores(m)
            assert set(scores) == {"sink_1", "sink_2"}
            assert scores["sink_2"] == 1.0  # the identical branch
            assert abs(scores["sink_1"] - scorer.score(ref, dist)) <= atol
            assert scores["sink_1"] < 0.95  # JPEG quality 10 shows


def test_properties_reach_the_scorer():
    description = (f"{SOURCE} ! tee name=t t. ! queue ! q.sink_0 t. ! queue ! q.sink_1 "
                   "cdiqa name=q domain=no-such-domain ! fakesink")
    messages, _, error = _run(description)
    assert error is not None and not messages
    assert "no-such-domain" in error.parse_error()[0].message


def test_a_size_mismatch_is_an_element_error_naming_the_pad():
    description = (f"{SOURCE} ! tee name=t t. ! queue ! q.sink_0 "
                   "t. ! queue ! videoscale ! video/x-raw,width=96,height=72 ! q.sink_1 "
                   "cdiqa name=q ! fakesink")
    messages, _, error = _run(description)
    assert error is not None and not messages
    text = error.parse_error()[0].message
    assert "sink_1" in text and "96x72" in text


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="gst-launch-1.0 not found "
                    "(Debian: gstreamer1.0-tools)")
def test_gst_launch_finds_the_element_on_gst_plugin_path(tmp_path):
    """The docs' route: ``eval "$(python -m cdiqa.gst)"`` then gst-launch-1.0 (the system
    Python that GStreamer embeds imports cdiqa through CDIQA_GST_SITE)."""
    exports = subprocess.run([sys.executable, "-m", "cdiqa.gst"], capture_output=True,
                             text=True, check=True).stdout
    env = dict(os.environ, **dict(re.findall(r"^export (\w+)=(.*)$", exports, re.M)))
    env["GST_REGISTRY"] = str(tmp_path / "registry.bin")  # a fresh one for this test
    pipeline = (f"{SOURCE} ! tee name=t t. ! queue ! q.sink_0 "
                "t. ! queue ! jpegenc quality=10 ! jpegdec ! videoconvert ! q.sink_1 "
                "t. ! queue ! q.sink_2 cdiqa name=q ! fakesink")
    out = subprocess.run(["gst-launch-1.0", "-m", *pipeline.split()], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [x for x in out.stdout.splitlines() if 'from element "q" (element): cdiqa' in x]
    assert len(lines) == FRAMES, out.stdout + out.stderr
    assert all(r"sink_2\=\(double\)1\;" in x for x in lines)
