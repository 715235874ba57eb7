"""cdiqa.runtime.video and `iqa-export score-video`, on clips these tests encode with PyAV.

A lossless reference (FFV1) and H.264 versions at three qualities (CRF 20, 35, 50) of a moving
textured scene, 128x96: the per-frame scores are ``Scorer.score`` of the same decoded frames,
and the pooled score falls with the quality.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("av", reason="PyAV is not installed (cdiqa[video])")

from cdiqa.errors import BackendUnavailable, ConfigError, ShapeError  # noqa: E402
from cdiqa.runtime import Scorer  # noqa: E402
from cdiqa.runtime.video import (VideoError, VideoOptions, VideoPair, frames,  # noqa: E402
                                 moving_pattern, pool, score_frames, score_video, write_video)
from cdiqa.tolerances import tolerance  # noqa: E402

W, H, N = 128, 96, 16
CRFS = (20, 35, 50)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    """ref.mkv (FFV1, no stated frame count) and q20/q35/q50.mp4 (H.264, stated counts)."""
    d = tmp_path_factory.mktemp("clips")
    ref = write_video(d / "ref.mkv", moving_pattern(W, H, N), codec="ffv1", pix_fmt="yuv444p")
    out = {"dir": d, "ref": ref}
    for crf in CRFS:
        out[crf] = write_video(d / f"q{crf}.mp4", frames(ref), options={"crf": str(crf)})
    return out


@pytest.fixture(scope="module")
def scorer():
    with Scorer.load() as s:
        yield s


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdiqa.cli", "score-video", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("batch", [1, 4])
def test_per_frame_scores_are_scorer_score_of_the_decoded_frames(clips, scorer, batch):
    results = list(score_frames(scorer, clips["ref"], clips[35], VideoOptions(batch=batch)))
    refs, dists = list(frames(clips["ref"])), list(frames(clips[35]))
    assert [r.frame for r in results] == list(range(N)) == [r.dist_frame for r in results]
    atol = tolerance("served_score").atol  # the same graph, other batch shapes
    for r, a, b in zip(results, refs, dists):
        assert abs(r.score - scorer.score(a, b)) <= atol
    assert results[1].time == pytest.approx(1 / 25)


def test_pooled_score_falls_with_the_encoding_quality(clips, scorer):
    summaries = [score_video(scorer, clips["ref"], clips[crf]) for crf in CRFS]
    means = [s.mean for s in summaries]
    assert means[0] > means[1] > means[2], means
    assert [s.harmonic_mean < s.mean for s in summaries] == [True] * 3
    for s in summaries:
        assert s.scored == s.paired == s.ref_frames == s.dist_frames == N
        assert s.min <= s.p5 <= s.mean and s.min == s.worst[0][1]
        assert len(s.worst) == 5 and [w[1] for w in s.worst] == sorted(w[1] for w in s.worst)


def test_identical_video_scores_one(clips, scorer):
    s = score_video(scorer, clips[35], clips[35])
    assert s.min == s.mean == 1.0


def test_offset_pairs_shifted_frames(clips, scorer, tmp_path):
    """DIST starts 3 frames into REF: offset -3 pairs them exactly (lossless: all 1.0)."""
    late = write_video(tmp_path / "late.mkv", list(moving_pattern(W, H, N))[3:], codec="ffv1",
                       pix_fmt="yuv444p")  # the reference's own frames, 3 to 15
    s = score_video(scorer, clips["ref"], late, VideoOptions(offset=-3))
    assert (s.paired, s.min, s.worst[0][0] >= 3) == (N - 3, 1.0, True)
    with pytest.raises(ShapeError, match="Frame count"):
        score_video(scorer, clips["ref"], late)  # unshifted: 16 vs 13 frames


def test_every_scores_every_nth_pair(clips, scorer):
    results = list(score_frames(scorer, clips["ref"], clips[20], VideoOptions(every=5)))
    assert [r.frame for r in results] == [0, 5, 10, 15]


def test_frame_count_mismatch_is_an_error_naming_both_counts(clips, scorer, tmp_path):
    short_mkv = write_video(tmp_path / "short.mkv", list(frames(clips["ref"]))[:10],
                            codec="ffv1", pix_fmt="yuv444p")
    short_mp4 = write_video(tmp_path / "short.mp4", list(frames(clips["ref"]))[:10])
    # found while decoding (MKV states no count): after the last pair
    with pytest.raises(ShapeError, match=r"got 16 frames, expected 10 .*--shortest"):
        score_video(scorer, clips["ref"], short_mkv)
    # both MP4s state their counts: refused before decoding
    with pytest.raises(ShapeError, match=r"got 16 frames, expected 10 .*state"):
        VideoPair(clips[20], short_mp4)
    s = score_video(scorer, clips["ref"], short_mkv, VideoOptions(shortest=True))
    assert (s.paired, s.unpaired, s.ref_frames) == (10, 6, N)


def test_frame_size_mismatch_is_an_error_unless_scaled(clips, scorer, tmp_path):
    big = write_video(tmp_path / "big.mp4", moving_pattern(160, 120, N))
    with pytest.raises(ShapeError, match=r"got 160x120 \(frame 0\), expected 128x96 .*--scale"):
        score_video(scorer, clips["ref"], big)
    s = score_video(scorer, clips["ref"], big, VideoOptions(scale=True))
    assert s.scored == N and 0 < s.mean < 1


def test_a_corrupt_or_missing_file_is_a_video_error(clips, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video\xff" * 500)
    half = tmp_path / "half.mp4"
    half.write_bytes(clips[20].read_bytes()[: clips[20].stat().st_size // 2])
    for bad in (junk, half):
        with pytest.raises(VideoError, match=f"Video for file '{bad}'"):
            VideoPair(clips["ref"], bad)
    with pytest.raises(VideoError, match="no such file"):
        VideoPair(tmp_path / "missing.mp4", clips["ref"])


def test_options_are_checked():
    with pytest.raises(ConfigError, match="'every'"):
        VideoOptions(every=0)
    with pytest.raises(ConfigError, match="'batch'"):
        VideoOptions(batch=0)
    assert VideoOptions(batch=4).queue == 8 and VideoOptions().queue == 2


def test_pool():
    p = pool([0, 1, 2, 3], [1.0, 0.5, 0.25, 0.5], worst=2)
    assert p["mean"] == pytest.approx(0.5625) and p["min"] == 0.25
    assert p["harmonic_mean"] == pytest.approx(4 / (1 + 2 + 4 + 2))
    assert p["p5"] == pytest.approx(np.percentile([1.0, 0.5, 0.25, 0.5], 5))
    assert p["worst"] == ((2, 0.25), (1, 0.5))
    assert pool([0], [0.0])["harmonic_mean"] == 0.0 and pool([], [])["mean"] is None


def test_missing_pyav_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(BackendUnavailable, match=r"cdiqa\[video\]"):
        VideoPair(tmp_path / "a.mp4", tmp_path / "b.mp4")


# ---- the command ------------------------------------------------------------------------------


def test_cli_writes_per_frame_rows_and_prints_the_summary(clips, tmp_path):
    out = _cli(clips["ref"], clips[35], "--out", tmp_path / "frames.csv", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["scored"] == N and set(summary) >= {"mean", "harmonic_mean", "p5", "min",
                                                       "worst"}
    rows = (tmp_path / "frames.csv").read_text().splitlines()
    assert rows[0] == "frame,dist_frame,time,score" and len(rows) == N + 1
    scores = [float(r.split(",")[3]) for r in rows[1:]]
    assert min(scores) == pytest.approx(summary["min"])
    assert "frames/s" in out.stderr  # the progress bar's rate

    out = _cli(clips["ref"], clips[35], "--out", tmp_path / "frames.jsonl", "--every", "4")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 4, 8, 12]
    assert "mean" in out.stdout and "worst frames:" in out.stdout


def test_cli_errors_exit_1_with_one_line(clips, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"garbage" * 100)
    short = write_video(tmp_path / "short.mkv", list(frames(clips["ref"]))[:5], codec="ffv1",
                        pix_fmt="yuv444p")
    big = write_video(tmp_path / "big.mp4", moving_pattern(160, 120, 4))
    for args, words in [((clips["ref"], junk), "Video for file"),
                        ((clips["ref"], short, "--out", tmp_path / "x.csv"), "Frame count"),
                        ((clips["ref"], big), "--scale"),
                        ((clips["ref"], clips[20], "--out", tmp_path / "x.txt"), "Suffix")]:
        out = _cli(*args)
        assert out.returncode == 1, (args, out.stderr)
        assert words in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.csv").exists()  # a failed run leaves no per-frame file


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_video_length(tmp_path):
    """score-video on 60 s vs 10 s (10 fps): peak RSS within 10 % (frames are never kept)."""
    peaks = {}
    for seconds in (10, 60):
        ref = write_video(tmp_path / f"ref{seconds}.mp4", moving_pattern(W, H, 10 * seconds),
                          fps=10, options={"crf": "10"})
        dist = write_video(tmp_path / f"dist{seconds}.mp4", frames(ref), fps=10,
                           options={"crf": "40"})
        code = ("import sys\nfrom cdiqa.cli import main\nfrom cdiqa.runtime.bench import "
                "peak_rss_mb\nsys.argv = ['iqa-export', 'score-video', "
                f"{str(ref)!r}, {str(dist)!r}]\ntry:\n    main()\nexcept SystemExit as e:\n"
                "    assert not e.code\nprint(peak_rss_mb())")  # VmHWM: not this process's
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr
        peaks[seconds] = float(out.stdout.split()[-1])
    assert peaks[60] <= 1.10 * peaks[10], peaks
