"""Synthetic screen content drawn with Pillow: application windows and charts (seeded).

Screen content (remote desktops, screenshots, slides) is flat colour, thin lines and text:
statistics unlike a photograph's. scikit-image ships two text images (``page``, ``text``); these
renderings add UI and chart layouts so that the "screen" domain has enough references. The
same seed always draws the same image.
"""

from __future__ import annotations

import numpy as np

#: flat UI palette (background, panel, accent, text), light and dark themes
_THEMES = (((246, 246, 248), (226, 229, 235), (40, 110, 220), (30, 30, 35)),
           ((32, 34, 40), (48, 52, 60), (90, 170, 250), (225, 228, 232)),
           ((255, 255, 255), (238, 242, 236), (30, 140, 80), (20, 20, 20)))
_WORDS = ("File", "Edit", "View", "Open", "Save", "Settings", "Export", "Quality", "Report",
          "Domain", "Image", "Score", "Batch", "Model", "Cancel", "Apply", "Help", "Window",
          "Profile", "Calibrate", "Run", "Status", "Ready", "Queue", "Device", "Threads")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(_WORDS[i] for i in rng.integers(len(_WORDS), size=n))


def render_ui(seed: int, size: tuple[int, int] = (256, 320)) -> np.ndarray:
    """An application window: title bar, menu, sidebar list, buttons, text and a table.

    Returns float32 RGB (H, W, 3) in [0, 1].
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w = size
    bg, panel, accent, ink = _THEMES[seed % len(_THEMES)]
    im = Image.new("RGB", (w, h), bg)
    dr = ImageDraw.Draw(im)
    dr.rectangle([0, 0, w, 22], fill=accent)
    dr.text((8, 4), _words(rng, 2), fill=(255, 255, 255), font=_font(13))
    x = 8
    for _ in range(4):
        word = _words(rng, 1)
        dr.text((x, 28), word, fill=ink, font=_font(11))
        x += 12 + 7 * len(word)
    side = int(rng.integers(70, 100))
    dr.rectangle([0, 46, side, h], fill=panel)
    for i in range(int(rng.integers(5, 10))):
        y = 54 + 18 * i
        if i == int(rng.integers(0, 5)):
            dr.rectangle([2, y - 2, side - 2, y + 14], fill=accent)
        dr.text((8, y), _words(rng, 1), fill=ink, font=_font(11))
    y = 54
    for _ in range(int(rng.integers(3, 6))):
        dr.text((side + 10, y), _words(rng, int(rng.integers(3, 6))), fill=ink, font=_font(12))
        y += 18
    cols, top = int(rng.integers(3, 5)), y + 8
    cw = (w - side - 20) // cols
    for r in range(int(rng.integers(3, 6))):
        for c in range(cols):
            x0, y0 = side + 10 + c * cw, top + r * 18
            dr.rectangle([x0, y0, x0 + cw, y0 + 18], outline=panel,
                         fill=panel if r == 0 else bg)
            text = _words(rng, 1) if r == 0 else f"{rng.random() * 100:.1f}"
            dr.text((x0 + 4, y0 + 3), text, fill=ink, font=_font(11))
    for i in range(2):
        x0 = w - 80 * (i + 1)
        dr.rounded_rectangle([x0, h - 34, x0 + 70, h - 10], radius=5,
                             fill=accent if i == 0 else panel)
        dr.text((x0 + 10, h - 29), _words(rng, 1), fill=(255, 255, 255) if i == 0 else ink,
                font=_font(12))
    return np.asarray(im, np.float32) / 255


def render_chart(seed: int, size: tuple[int, int] = (256, 320)) -> np.ndarray:
    """A bar or line chart with axes, grid, tick labels, a title and a legend.

    Returns float32 RGB (H, W, 3) in [0, 1].
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w = size
    im = Image.new("RGB", (w, h), (255, 255, 255))
    dr = ImageDraw.Draw(im)
    left, right, top, bottom = 40, w - 12, 30, h - 30
    dr.text((left, 8), _words(rng, 3), fill=(20, 20, 20), font=_font(13))
    for i in range(6):
        y = bottom - i * (bottom - top) // 5
        dr.line([left, y, right, y], fill=(225, 225, 225))
        dr.text((6, y - 6), f"{i * 20}", fill=(60, 60, 60), font=_font(10))
    dr.line([left, top, left, bottom], fill=(0, 0, 0), width=2)
    dr.line([left, bottom, right, bottom], fill=(0, 0, 0), width=2)
    colours = [tuple(int(c) for c in rng.integers(0, 200, 3)) for _ in range(3)]
    n = int(rng.integers(5, 10))
    step = (right - left) / n
    if seed % 2 == 0:
        for i in range(n):
            for s, col in enumerate(colours[:2]):
                v = 0.05 + 0.9 * rng.random()
                x0 = left + i * step + 4 + s * (step - 8) / 2
                dr.rectangle([x0, bottom - v * (bottom - top), x0 + (step - 8) / 2 - 2,
                              bottom - 1], fill=col)
    else:
        for col in colours:
            ys = np.clip(np.cumsum(rng.normal(0, 0.15, n)) + 0.5, 0.02, 0.98)
            pts = [(left + (i + 0.5) * step, bottom - y * (bottom - top)) for i, y in
                   enumerate(ys)]
            dr.line(pts, fill=col, width=2)
            for x, y in pts:
                dr.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
    for i in range(n):
        dr.text((left + i * step + step / 2 - 6, bottom + 6), f"{i + 1}", fill=(60, 60, 60),
                font=_font(10))
    for s, col in enumerate(colours[:2]):
        dr.rectangle([right - 70, top + 4 + 14 * s, right - 60, top + 14 + 14 * s], fill=col)
        dr.text((right - 56, top + 2 + 14 * s), _words(rng, 1), fill=(40, 40, 40),
                font=_font(10))
    return np.asarray(im, np.float32) / 255
