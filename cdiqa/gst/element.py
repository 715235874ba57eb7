"""The ``cdiqa`` GStreamer element: a ``GstBase.Aggregator`` in Python (see ``cdiqa.gst``).

Per output frame: one buffer is taken from every sink pad that has one, the frames are turned
into RGB arrays (packed RGB/BGR/GRAY8, any stride), the distorted ones are scored against the
reference in one ``Scorer.score_pairs`` call (after ``preprocess.image_from`` and
``images.check_pair``, the runtime's own conversion and checks), an element message is posted::

    cdiqa, frame=(guint64)12, pts=(guint64)400000000,
           scores=(structure)"scores, sink_1=(double)0.83, sink_2=(double)1.0;"

and the reference's buffer is pushed on ``src`` as it came. Frames are paired by arrival
order on each pad (one buffer of each per output frame), as ``iqa-export score-video`` pairs by
index. A pad that has reached EOS is left out of the scores; the element ends with the
reference. A frame the scorer refuses (sizes that differ, smaller than 64 px) is an element
error naming the pad.

Importing this module needs GStreamer's Python bindings (``cdiqa.gst.unavailable_reason``).
"""

from __future__ import annotations

import re

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")

import numpy as np  # noqa: E402
from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

from cdiqa.errors import CdiqaError  # noqa: E402
from cdiqa.images import check_pair  # noqa: E402
from cdiqa.runtime.preprocess import image_from  # noqa: E402
from cdiqa.runtime.tiling import DEFAULT_TILE  # noqa: E402

if not Gst.is_initialized():
    Gst.init(None)

#: element name (gst-launch-1.0 ... ! cdiqa ! ...)
NAME = "cdiqa"
#: bus message structure name
MESSAGE = "cdiqa"
#: raw formats taken, with (bytes per pixel, the byte offsets of R, G, B; one for gray)
FORMATS = {"RGB": (3, (0, 1, 2)), "BGR": (3, (2, 1, 0)),
           "RGBx": (4, (0, 1, 2)), "RGBA": (4, (0, 1, 2)),
           "BGRx": (4, (2, 1, 0)), "BGRA": (4, (2, 1, 0)),
           "xRGB": (4, (1, 2, 3)), "ARGB": (4, (1, 2, 3)),
           "xBGR": (4, (3, 2, 1)), "ABGR": (4, (3, 2, 1)), "GRAY8": (1, (0,))}
CAPS = Gst.Caps.from_string(f"video/x-raw, format=(string){{ {', '.join(FORMATS)} }}")


def frame_array(buffer: Gst.Buffer, info: GstVideo.VideoInfo) -> np.ndarray:
    """The frame in ``buffer`` as a new uint8 array (H, W, 3), or (H, W) for GRAY8."""
    bpp, channels = FORMATS[info.finfo.name]
    h, w, stride, offset = info.height, info.width, info.stride[0], info.offset[0]
    with buffer.map(Gst.MapFlags.READ) as mapped:
        raw = np.frombuffer(mapped.data, np.uint8, count=stride * (h - 1) + w * bpp,
                            offset=offset)
        rows = np.lib.stride_tricks.as_strided(raw, (h, w, bpp), (stride, bpp, 1))
        out = rows[..., channels] if bpp > 1 else rows[..., 0]
        return np.array(out, copy=True)  # owns its pixels before the buffer is unmapped


class CdiqaElement(GstBase.Aggregator):
    """Scores ``sink_1..`` against ``sink_0`` frame by frame; passes ``sink_0`` through."""

    __gstmetadata__ = ("cdiqa image quality", "Filter/Analyzer/Video",
                       "Full-reference quality of sink_1.. against sink_0 (the reference) per "
                       "frame, with the cdiqa runtime; sink_0's buffers pass through; one "
                       "'cdiqa' element message per frame", "cdiqa")
    __gsttemplates__ = (
        Gst.PadTemplate.new_with_gtype("sink_%u", Gst.PadDirection.SINK,
                                       Gst.PadPresence.REQUEST, CAPS,
                                       GstBase.AggregatorPad.__gtype__),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, CAPS),
    )
    __gproperties__ = {
        "bundle": (str, "bundle", "Bundle directory (empty: the bundled default model)", "",
                   GObject.ParamFlags.READWRITE),
        "domain": (str, "domain", "Domain profile (empty: the bundle's default)", "",
                   GObject.ParamFlags.READWRITE),
        "precision": (str, "precision", "fp32, or a calibrated domain's int8/fp16", "fp32",
                      GObject.ParamFlags.READWRITE),
        "tile": (int, "tile", "Score frames larger than this in tiles (0: never)", 0,
                 GLib.MAXINT, DEFAULT_TILE, GObject.ParamFlags.READWRITE),
        "threads": (int, "threads", "CPU threads per inference (0: all cores)", 0,
                    GLib.MAXINT, 0, GObject.ParamFlags.READWRITE),
    }

    def __init__(self) -> None:
        super().__init__()
        self._props = {"bundle": "", "domain": "", "precision": "fp32", "tile": DEFAULT_TILE,
                       "threads": 0}
        self._scorer = None
        self._frame = 0
        self._infos: dict = {}  # pad name -> (caps, VideoInfo)
        self._segment = None

    # ---- properties ----

    def do_get_property(self, prop):
        return self._props[prop.name]

    def do_set_property(self, prop, value) -> None:
        self._props[prop.name] = value

    # ---- life cycle ----

    def do_start(self) -> bool:
        from cdiqa.runtime.batch import ScorerConfig

        p = self._props
        config = ScorerConfig(bundle=p["bundle"] or None, domain=p["domain"] or None,
                              precision=p["precision"], tile=p["tile"] or None,
                              threads=p["threads"] or None)
        try:
            self._scorer = config.open()
        except CdiqaError as exc:
            self._error(Gst.LibraryError.quark(), Gst.LibraryError.SETTINGS, str(exc))
            return False
        self._frame, self._infos, self._segment = 0, {}, None
        return True

    def do_stop(self) -> bool:
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None
        return True

    # ---- data ----

    def do_aggregate(self, timeout: bool) -> Gst.FlowReturn:
        pads = sorted(self.sinkpads, key=_pad_number)
        if not pads:
            return Gst.FlowReturn.EOS
        buffers = [p.pop_buffer() if p.has_buffer() else None for p in pads]
        ref_pad, ref = pads[0], buffers[0]
        if ref is None:
            return Gst.FlowReturn.EOS if ref_pad.is_eos() else Gst.FlowReturn.OK
        scored = [(p, b) for p, b in zip(pads[1:], buffers[1:]) if b is not None]
        try:
            reference = image_from(frame_array(ref, self._info(ref_pad)), ref_pad.get_name())
            pairs = []
            for pad, buf in scored:  # the runtime's conversion and checks, named by pad
                frame = image_from(frame_array(buf, self._info(pad)), pad.get_name())
                check_pair(reference, frame, ref_pad.get_name(), pad.get_name())
                pairs.append((reference, frame))
            scores = self._scorer.score_pairs(pairs) if pairs else []
        except CdiqaError as exc:
            self._error(Gst.StreamError.quark(), Gst.StreamError.FAILED,
                        f"Frame {self._frame}: {exc}")
            return Gst.FlowReturn.ERROR
        except Exception as exc:  # a bug: stop the pipeline with it rather than hang
            self._error(Gst.CoreError.quark(), Gst.CoreError.FAILED,
                        f"Frame {self._frame}: internal error in cdiqa: {exc!r}")
            return Gst.FlowReturn.ERROR
        self._post(ref, {p.get_name(): float(s) for (p, _), s in zip(scored, scores)})
        self._frame += 1
        self._forward_format(ref_pad)
        return self.finish_buffer(ref)

    def _info(self, pad) -> GstVideo.VideoInfo:
        caps = pad.get_current_caps()
        cached = self._infos.get(pad.get_name())
        if cached is None or not cached[0].is_equal(caps):
            cached = (caps, GstVideo.VideoInfo.new_from_caps(caps))
            self._infos[pad.get_name()] = cached
        return cached[1]

    def _forward_format(self, ref_pad) -> None:
        """The source pad carries the reference's caps and segment."""
        caps = ref_pad.get_current_caps()
        current = self.srcpad.get_current_caps()
        if current is None or not current.is_equal(caps):
            self.set_src_caps(caps)
        event = ref_pad.get_sticky_event(Gst.EventType.SEGMENT, 0)
        segment = event.parse_segment() if event is not None else None
        if segment is not None and (self._segment is None or not segment.is_equal(self._segment)):
            self._segment = segment
            self.update_segment(segment)

    def _post(self, ref: Gst.Buffer, scores: dict[str, float]) -> None:
        s = Gst.Structure.new_empty(MESSAGE)
        s.set_value("frame", GObject.Value(GObject.TYPE_UINT64, self._frame))
        s.set_value("pts", GObject.Value(GObject.TYPE_UINT64, ref.pts))
        per_pad = Gst.Structure.new_empty("scores")
        for name, score in scores.items():
            per_pad.set_value(name, GObject.Value(GObject.TYPE_DOUBLE, score))
        s.set_value("scores", per_pad)
        self.post_message(Gst.Message.new_element(self, s))

    def _error(self, domain: int, code, text: str) -> None:
        error = GLib.Error.new_literal(domain, text, int(code))
        self.post_message(Gst.Message.new_error(self, error, text))


def _pad_number(pad) -> int:
    """``sink_3`` -> 3: the lowest number is the reference, whatever the linking order."""
    found = re.search(r"(\d+)$", pad.get_name())
    return int(found.group(1)) if found else 0


def factory() -> tuple:
    """``__gstelementfactory__`` for the Python plugin loader: (name, rank, type)."""
    return NAME, Gst.Rank.NONE, CdiqaElement


def register() -> bool:
    """Register ``cdiqa`` in this process (once)."""
    if Gst.ElementFactory.find(NAME) is not None:
        return True
    return Gst.Element.register(None, NAME, Gst.Rank.NONE, CdiqaElement)


GObject.type_register(CdiqaElement)
