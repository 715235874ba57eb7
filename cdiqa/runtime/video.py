"""Videos: a distorted video scored against its reference, frame by frame (``cdiqa[video]``).

::

    REF  ─► FFmpeg decode ─┐  pair by index      StreamScorer: bounded queue (max_queue)
                           ├► (offset, every, ──► worker thread ─► Scorer.score_pairs
    DIST ─► FFmpeg decode ─┘   size check/scale)   (micro-batches of up to ``batch``)
         (caller's thread: decode, RGB arrays, float conversion)          │
                                                                          ▼
              VideoSummary ◄── pool (mean, harmonic mean, p5, min, worst) ◄── FrameResult ...

- Pairing: frames are paired by their decode index (presentation order): reference frame
  ``i`` with distorted frame ``i + offset`` (``offset < 0`` skips ``-offset`` reference
  frames). Timestamps are reported, never used for pairing.
- Counts: when one video ends before the other, ``ShapeError`` (both counts in the message);
  with ``shortest=True`` the overlap is scored and the unpaired tail reported. When both
  containers state their frame count, a mismatch is refused before any frame is decoded.
- Sizes: a distorted frame of another size than its reference is a ``ShapeError``, or with
  ``scale=True`` it is resized (FFmpeg's swscale, bicubic) to the reference's size.
- Memory: decoding runs in the caller's thread and inference in the ``StreamScorer`` worker,
  with at most ``max_queue`` pairs between them, so memory depends on the frame size and the
  queue, not on the video's length (plus 16 bytes per scored frame for the pooled figures).
- Scores are ``Scorer.score_pairs`` of the decoded frames as RGB arrays (8-bit ``rgb24``, or
  16-bit ``rgb48le`` for deeper sources): the runtime's own preprocessing, nothing else.

>>> from cdiqa.runtime import Scorer
>>> from cdiqa.runtime.video import score_frames
>>> with Scorer.load() as scorer:                                    # doctest: +SKIP
...     for r in score_frames(scorer, "ref.mp4", "dist.mp4"):
...         print(r.frame, r.time, r.score)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from array import array
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from cdiqa._lazy import lazy_import
from cdiqa.errors import ImageDecodeError, ShapeError, describe
from cdiqa.files import atomic_write
from cdiqa.runtime.stream import StreamScorer, check_option

#: worst frames listed in a summary
WORST = 5
#: the per-frame fields, in output order
FRAME_FIELDS = ("frame", "dist_frame", "time", "score")

Progress = Callable[[int, "int | None"], None]


class VideoError(ImageDecodeError):
    """A video that cannot be opened or decoded (FFmpeg's error is the cause)."""


@dataclass(frozen=True)
class VideoSource:
    """What FFmpeg opens: a file path, a URL, or a device with its ``format``.

    Attributes:
        url: a path or anything FFmpeg's ``avformat_open_input`` takes ("rtsp://...",
            "/dev/video0").
        format: the demuxer when FFmpeg cannot guess it ("v4l2" for a camera).
        options: demuxer options ({"video_size": "640x480", "framerate": "30"}).
    """

    url: str
    format: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, source: "VideoSource | str | os.PathLike") -> "VideoSource":
        """``source`` itself, or a path/URL as a source."""
        return source if isinstance(source, VideoSource) else cls(os.fspath(source))


@dataclass(frozen=True)
class VideoOptions:
    """How two videos are paired and scored.

    Attributes:
        offset: reference frame ``i`` is paired with distorted frame ``i + offset``; a
            negative offset skips ``-offset`` reference frames instead.
        every: score every ``every``-th pair (all frames are still decoded).
        scale: resize distorted frames of another size to the reference's size (else a
            size difference is a ``ShapeError``).
        shortest: score the overlap when the frame counts differ (else ``ShapeError``).
        batch: most pairs per inference call (on CPU 1 is fastest: docs/benchmarks.md).
        max_queue: most decoded pairs waiting for the scorer; None: ``2 * batch``, at least 2.

    Raises:
        ConfigError: a value out of range, naming the option.
    """

    offset: int = 0
    every: int = 1
    scale: bool = False
    shortest: bool = False
    batch: int = 1
    max_queue: int | None = None

    def __post_init__(self) -> None:
        fix = "Fix the video options"
        check_option("video", "offset", self.offset, integer=True, low=-math.inf, fix=fix)
        check_option("video", "every", self.every, integer=True, low=1, fix=fix)
        check_option("video", "batch", self.batch, integer=True, low=1, fix=fix)
        if self.max_queue is not None:
            check_option("video", "max_queue", self.max_queue, integer=True, low=1, fix=fix)

    @property
    def queue(self) -> int:
        """The queue bound in force."""
        return self.max_queue if self.max_queue is not None else max(2, 2 * self.batch)


@dataclass(frozen=True)
class FrameResult:
    """The score of one frame pair.

    Attributes:
        frame: the reference frame's index (0-based, decode order).
        dist_frame: the distorted frame's index (``frame + offset``).
        time: the reference frame's presentation time in seconds (None when unknown).
        score: quality in [0, 1], 1.0 for identical frames.
    """

    frame: int
    dist_frame: int
    time: float | None
    score: float

    def to_dict(self) -> dict:
        """``frame, dist_frame, time, score``."""
        return asdict(self)


@dataclass(frozen=True)
class VideoSummary:
    """Pooled scores of a video pair.

    Attributes:
        ref, dist: the sources.
        ref_frames, dist_frames: frames decoded from each.
        paired: frame pairs formed (after ``offset``); ``scored``: those scored (``every``).
        mean, harmonic_mean, p5, min: pooled over the scored frames (None if none);
            ``harmonic_mean`` is 0 when a frame scores 0; ``p5`` is the 5th percentile
            (linear interpolation).
        worst: the lowest-scoring frames, ``(frame, score)``, worst first.
        every, offset: the options that formed the pairs.
        unpaired: frames left without a partner (``shortest=True`` only).
    """

    ref: str
    dist: str
    ref_frames: int
    dist_frames: int
    paired: int
    scored: int
    mean: float | None
    harmonic_mean: float | None
    p5: float | None
    min: float | None
    worst: tuple[tuple[int, float], ...]
    every: int = 1
    offset: int = 0
    unpaired: int = 0

    def to_dict(self) -> dict:
        """JSON-ready: ``worst`` as a list of ``{"frame", "score"}``."""
        out = asdict(self)
        out["worst"] = [{"frame": f, "score": s} for f, s in self.worst]
        return out

    def to_text(self) -> str:
        """A few lines for people."""
        head = (f"{self.scored} of {self.paired} frame pairs scored"
                + (f" (every {self.every})" if self.every > 1 else "")
                + (f", offset {self.offset}" if self.offset else "")
                + f"; {self.ref_frames} reference, {self.dist_frames} distorted frames decoded"
                + (f", {self.unpaired} unpaired (--shortest)" if self.unpaired else ""))
        if self.mean is None:
            return head
        worst = ", ".join(f"{f} ({s:.4f})" for f, s in self.worst)
        return "\n".join([head, f"mean {self.mean:.6f}  harmonic mean {self.harmonic_mean:.6f}  "
                                f"p5 {self.p5:.6f}  min {self.min:.6f}",
                          f"worst frames: {worst}"])


def pool(frames: Sequence[int], scores: Sequence[float], worst: int = WORST) -> dict:
    """``mean, harmonic_mean, p5, min, worst`` of per-frame ``scores`` (all None if empty).

    >>> pool([0, 1, 2], [1.0, 0.5, 0.8], worst=2)["worst"]
    ((1, 0.5), (2, 0.8))
    """
    s = np.asarray(scores, np.float64)
    if s.size == 0:
        return {"mean": None, "harmonic_mean": None, "p5": None, "min": None, "worst": ()}
    order = np.argsort(s, kind="stable")[:worst]
    harmonic = 0.0 if np.any(s <= 0) else float(s.size / np.sum(1.0 / s))
    return {"mean": float(s.mean()), "harmonic_mean": harmonic,
            "p5": float(np.percentile(s, 5)), "min": float(s.min()),
            "worst": tuple((int(frames[i]), float(s[i])) for i in order)}


# ---- decoding --------------------------------------------------------------------------------


class Video:
    """One opened video stream (the first of its container), decoded frame by frame.

    >>> with Video("clip.mp4") as v:                                  # doctest: +SKIP
    ...     for rgb in v.arrays(): ...                               # (H, W, 3) uint8

    Raises:
        VideoError: the source cannot be opened, has no video stream, or fails to decode.
    """

    def __init__(self, source: VideoSource | str | os.PathLike) -> None:
        self.source = VideoSource.of(source)
        av = lazy_import("av", purpose="Scoring videos")
        self._errors = (av.error.FFmpegError,)
        try:
            self._container = av.open(self.source.url, format=self.source.format,
                                      options=dict(self.source.options))
        except FileNotFoundError:
            raise VideoError(describe("Video", "file", self.source.url, "no such file",
                                      "a video FFmpeg can read", "Check the path")) from None
        except self._errors as exc:
            raise VideoError(describe("Video", "file", self.source.url, _reason(exc),
                                      "a video FFmpeg can read",
                                      "Check that the file is complete and is a video")) from exc
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(describe("Video", "file", self.source.url, "no video stream",
                                      "a video stream", "Pass a video, not an audio file"))
        self.stream = self._container.streams.video[0]
        self.stream.thread_type = "AUTO"  # FFmpeg's frame/slice threads
        #: frames decoded so far
        self.decoded = 0

    @property
    def name(self) -> str:
        return self.source.url

    @property
    def frame_count(self) -> int | None:
        """Frames the container states (None when it does not: MKV, streams, devices)."""
        return int(self.stream.frames) or None

    def estimated_frames(self) -> int | None:
        """``frame_count``, else duration x frame rate (an estimate; None for live sources)."""
        if self.frame_count:
            return self.frame_count
        rate, duration = self.stream.average_rate, self._container.duration
        if not rate or not duration:
            return None
        return int(round(duration / 1_000_000 * float(rate)))

    def frames(self) -> Iterator:
        """The decoded ``av.VideoFrame``s, in presentation order."""
        try:
            for frame in self._container.decode(self.stream):
                self.decoded += 1
                yield frame
        except self._errors as exc:
            raise VideoError(describe("Decoding", "video", self.name,
                                      f"{_reason(exc)} after {self.decoded} frames",
                                      "a stream that decodes to its end",
                                      "Check that the file is complete")) from exc

    def arrays(self) -> Iterator[np.ndarray]:
        """The decoded frames as RGB arrays (H, W, 3): uint8, or uint16 for > 8-bit sources."""
        for frame in self.frames():
            yield rgb(frame)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rgb(frame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """An ``av.VideoFrame`` as an RGB array (H, W, 3), resized to ``width x height`` if given.

    8-bit sources give uint8 (``rgb24``), deeper ones uint16 (``rgb48le``): no precision is
    lost before ``cdiqa.images`` converts to float32.
    """
    deep = max((c.bits for c in frame.format.components), default=8) > 8
    kwargs = {} if width is None else {"width": width, "height": height,
                                       "interpolation": "BICUBIC"}
    return frame.to_ndarray(format="rgb48le" if deep else "rgb24", **kwargs)


def frames(source: VideoSource | str | os.PathLike) -> Iterator[np.ndarray]:
    """RGB arrays of every frame of ``source`` (a file, URL or device; see ``VideoSource``).

    >>> cam = VideoSource("/dev/video0", format="v4l2")               # doctest: +SKIP
    >>> next(frames(cam)).shape                                      # doctest: +SKIP
    (480, 640, 3)
    """
    with Video(source) as video:
        yield from video.arrays()


def _reason(exc: BaseException) -> str:
    """FFmpeg's words for an error, without PyAV's errno prefix and the repeated path."""
    return getattr(exc, "strerror", None) or str(exc)


# ---- pairing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedFrames:
    """Which frames ``VideoPair.pairs`` paired: reference ``frame`` (its ``time`` in
    seconds, None when unknown) and distorted ``dist_frame``."""

    frame: int
    dist_frame: int
    time: float | None


class VideoPair:
    """A reference and a distorted video, paired frame by frame (see the module's rules).

    ``pairs()`` yields ``(PairedFrames, ref_rgb, dist_rgb)``; afterwards ``ref.decoded``,
    ``dist.decoded``, ``paired`` and ``unpaired`` hold the counts. A pair of videos is read
    once: ``pairs()`` or ``score()``, one call.

    Raises:
        VideoError: a source that cannot be opened or decoded.
        ShapeError: frame counts or sizes that differ (unless ``shortest``/``scale``).
    """

    def __init__(self, ref: VideoSource | str | os.PathLike,
                 dist: VideoSource | str | os.PathLike,
                 options: VideoOptions | None = None) -> None:
        self.options = options or VideoOptions()
        self.ref = Video(ref)
        try:
            self.dist = Video(dist)
        except BaseException:
            self.ref.close()
            raise
        self.paired = self.unpaired = 0
        try:
            self._check_stated_counts()
        except BaseException:
            self.close()
            raise

    def expected_scored(self) -> int | None:
        """Pairs that will be scored, from the reference's stated or estimated length."""
        n = self.ref.estimated_frames()
        if n is None:
            return None
        off = self.options.offset
        pairs = n - max(0, -off)
        if self.dist.frame_count:
            pairs = min(pairs, self.dist.frame_count - max(0, off))
        return max(0, -(-pairs // self.options.every))

    def pairs(self) -> Iterator[tuple[PairedFrames, np.ndarray, np.ndarray]]:
        """The pairs to score, every ``options.every``-th: ``(PairedFrames, ref, dist)``
        with RGB arrays (``rgb``); raises at the end when the counts differ."""
        opt = self.options
        ref_it, dist_it = self.ref.frames(), self.dist.frames()
        for _ in range(max(0, -opt.offset)):
            if next(ref_it, None) is None:
                break
        for _ in range(max(0, opt.offset)):
            if next(dist_it, None) is None:
                break
        first = max(0, -opt.offset)
        while True:
            r = next(ref_it, None)
            d = next(dist_it, None) if r is not None else None
            if r is None or d is None:
                break
            i = first + self.paired
            self.paired += 1
            if (self.paired - 1) % opt.every:
                continue
            yield PairedFrames(i, i + opt.offset, _time(r)), rgb(r), self._dist_rgb(d, r, i)
        rest = self._drain(ref_it if r is not None else dist_it, skip_first=r is not None)
        self._finish(rest)

    def _dist_rgb(self, d, r, i: int) -> np.ndarray:
        if (d.width, d.height) == (r.width, r.height):
            return rgb(d)
        if self.options.scale:
            return rgb(d, r.width, r.height)
        j = i + self.options.offset
        raise ShapeError(describe("Size", "video", self.dist.name,
                                  f"{d.width}x{d.height} (frame {j})",
                                  f"{r.width}x{r.height} like frame {i} of '{self.ref.name}'",
                                  "Pass --scale (Python: scale=True) to resize the distorted "
                                  "frames to the reference's size"))

    @staticmethod
    def _drain(it: Iterator, skip_first: bool) -> int:
        """Frames left in the longer video (decoded, not converted), counting the one that
        was already drawn when the other video ended."""
        return int(skip_first) + sum(1 for _ in it)

    def _finish(self, rest: int) -> None:
        if rest == 0:
            return
        if self.options.shortest:
            self.unpaired = rest
            return
        raise ShapeError(self._count_message(self.ref.decoded, self.dist.decoded,
                                             f"The last {rest} have no partner"))

    def _count_message(self, n_ref: int, n_dist: int, why: str) -> str:
        """Frame counts that do not pair up, each side after its ``offset`` skip."""
        off = self.options.offset
        sides = [(self.ref, n_ref, max(0, -off)), (self.dist, n_dist, max(0, off))]
        (long, n_long, k_long), (short, n_short, k_short) = sorted(
            sides, key=lambda side: side[1] - side[2], reverse=True)

        def after(k: int) -> str:
            return f" after skipping {k} (offset {off})" if k else ""

        return describe("Frame count", "video", long.name, f"{n_long - k_long} frames"
                        + after(k_long), f"{n_short - k_short} like '{short.name}'"
                        + after(k_short), f"{why}: pass --shortest (Python: shortest=True) to "
                        "score the overlap, or --offset N to shift one side")

    def _check_stated_counts(self) -> None:
        """Refuse before decoding when both containers state counts that cannot pair up."""
        a, b = self.ref.frame_count, self.dist.frame_count
        off = self.options.offset
        if self.options.shortest or not a or not b or a - max(0, -off) == b - max(0, off):
            return
        raise ShapeError(self._count_message(a, b, "Both containers state these counts"))

    def score(self, scorer, *, out: str | os.PathLike | None = None,
              progress: Progress | None = None, worst: int = WORST) -> VideoSummary:
        """Score every pair: per-frame rows to ``out`` (``.csv`` or ``.jsonl``, written as
        they come and renamed into place at the end, so a failed run leaves no file), pooled
        summary returned. Keeps 16 bytes per scored frame, never a frame."""
        from cdiqa.runtime.batch import output_format

        fmt = output_format(out) if out is not None else None
        frames_, scores = array("q"), array("d")

        def kept(rows: Iterable[FrameResult]) -> Iterator[FrameResult]:
            for r in rows:
                frames_.append(r.frame)
                scores.append(r.score)
                yield r

        results = kept(_scored(scorer, self, progress))
        if out is None:
            deque(results, maxlen=0)
        else:
            atomic_write(out, lambda f: write_frames(f, results, fmt))
        opt = self.options
        return VideoSummary(ref=self.ref.name, dist=self.dist.name,
                            ref_frames=self.ref.decoded, dist_frames=self.dist.decoded,
                            paired=self.paired, scored=len(scores), every=opt.every,
                            offset=opt.offset, unpaired=self.unpaired,
                            **pool(frames_, scores, worst))

    def close(self) -> None:
        self.ref.close()
        self.dist.close()

    def __enter__(self) -> "VideoPair":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _time(frame) -> float | None:
    t = frame.time
    return None if t is None else float(t)


# ---- scoring ---------------------------------------------------------------------------------


def _scored(scorer, pair: VideoPair, progress: Progress | None) -> Iterator[FrameResult]:
    """Score ``pair.pairs()`` through a ``StreamScorer``: decoding here, inference in its
    worker, at most ``options.queue`` pairs in between."""
    opt = pair.options
    total = pair.expected_scored()
    waiting: deque[PairedFrames] = deque()

    def items() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for info, r, d in pair.pairs():
            waiting.append(info)
            yield r, d

    with StreamScorer(scorer, max_batch=opt.batch, max_queue=opt.queue) as stream:
        for done, score in enumerate(stream.map(items()), 1):
            info = waiting.popleft()
            if progress is not None:
                progress(done, max(total, done) if total is not None else None)
            yield FrameResult(info.frame, info.dist_frame, info.time, score)


def score_frames(scorer, ref: VideoSource | str | os.PathLike,
                 dist: VideoSource | str | os.PathLike, options: VideoOptions | None = None,
                 *, progress: Progress | None = None) -> Iterator[FrameResult]:
    """Per-frame scores of ``dist`` against ``ref``, as they come (``Scorer``: any runtime
    scorer with ``score_pairs``).

    ``progress(done, total)`` after each frame (``total`` None when the length is unknown).
    A count mismatch raises after the last pair (or before the first, when both containers
    state their counts).
    """
    with VideoPair(ref, dist, options) as pair:
        yield from _scored(scorer, pair, progress)


def score_video(scorer, ref: VideoSource | str | os.PathLike,
                dist: VideoSource | str | os.PathLike, options: VideoOptions | None = None,
                *, out: str | os.PathLike | None = None, progress: Progress | None = None,
                worst: int = WORST) -> VideoSummary:
    """Score a video pair: per-frame rows to ``out`` (``.csv`` or ``.jsonl``), pooled summary
    returned (``VideoPair.score``).

    Raises:
        VideoError, ShapeError, ImageError: see ``VideoPair``; ``ConfigError`` for ``out``.
    """
    with VideoPair(ref, dist, options) as pair:
        return pair.score(scorer, out=out, progress=progress, worst=worst)


def write_frames(f, results: Iterable[FrameResult], fmt: str) -> None:
    """Write ``results`` to the binary file ``f`` as CSV (``FRAME_FIELDS`` header) or JSON
    lines, one row per frame, as they come."""
    text = io.TextIOWrapper(f, encoding="utf-8", newline="")
    writer = csv.writer(text, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(FRAME_FIELDS)
    for r in results:
        if writer is None:
            text.write(json.dumps(r.to_dict()) + "\n")
        else:
            writer.writerow([r.frame, r.dist_frame, "" if r.time is None else repr(r.time),
                             repr(r.score)])
    text.flush()
    text.detach()


# ---- writing test clips ------------------------------------------------------------------------


def moving_pattern(width: int, height: int, count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``count`` uint8 RGB frames of a textured scene panning and a disc moving across it:
    smooth gradients, edges and fine texture, so codecs at lower quality lose detail (for
    tests and benchmarks; no media is downloaded)."""
    rng = np.random.default_rng(seed)
    pad = 2 * max(width, height)
    y, x = np.mgrid[0:height + pad, 0:width + pad].astype(np.float32)
    texture = rng.normal(0, 0.08, (height + pad, width + pad, 1)).astype(np.float32)
    scene = np.stack([0.5 + 0.4 * np.sin(x / 37.0) * np.cos(y / 23.0),
                      (x + y) / (width + height + 2 * pad),
                      0.5 + 0.4 * np.sin((x * y) / 900.0)], axis=-1) + texture
    yy, xx = np.mgrid[0:height, 0:width]
    for t in range(count):
        dx, dy = (3 * t) % pad, (2 * t) % pad
        frame = scene[dy:dy + height, dx:dx + width].copy()
        cx = (width / 2) * (1 + 0.6 * math.sin(t / 9))
        cy = (height / 2) * (1 + 0.5 * math.cos(t / 7))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (min(width, height) / 6) ** 2
        frame[disc] = (0.9, 0.2, 0.1)
        yield (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_video(path: str | os.PathLike, frames_: Iterable[np.ndarray], *, fps: int = 25,
                codec: str = "libx264", pix_fmt: str = "yuv420p",
                options: Mapping[str, str] | None = None) -> Path:
    """Encode uint8 RGB frames (H, W, 3) to ``path`` with FFmpeg (through PyAV).

    >>> write_video("ref.mkv", moving_pattern(640, 360, 250), codec="ffv1",
    ...             pix_fmt="yuv444p")                               # doctest: +SKIP
    >>> write_video("q30.mp4", frames("ref.mkv"), options={"crf": "30"})  # doctest: +SKIP
    """
    av = lazy_import("av", purpose="Writing videos")
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = None
        for a in frames_:
            if stream is None:
                stream = out.add_stream(codec, rate=fps, options=dict(options or {}))
                stream.width, stream.height, stream.pix_fmt = a.shape[1], a.shape[0], pix_fmt
            for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return path


__all__ = ["FRAME_FIELDS", "FrameResult", "PairedFrames", "Video", "VideoError", "VideoOptions",
           "VideoPair", "VideoSource", "VideoSummary", "frames", "moving_pattern", "pool", "rgb",
           "score_frames", "score_video", "write_frames", "write_video"]
