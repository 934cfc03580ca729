"""Images the lab posts: labelled sample grids and the loss curve (Pillow only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

_BG = (24, 25, 28)
_FG = (230, 230, 230)
_GRID = (70, 72, 78)
_LINE = (88, 166, 255)
_TRACE = (160, 160, 160)


def _font(size: int = 14) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _fit(text: str, width: int, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont) -> str:
    """`text` shortened with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def sample_grid(
    cells: Sequence[Sequence[Image.Image | None]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    cell: int = 256,
    label_width: int = 220,
    header: int = 28,
) -> Image.Image:
    """A grid: rows = prompts, columns = epochs (or LoRA weights), labelled.

    Cells are scaled to fit ``cell`` × ``cell`` keeping their aspect; a missing cell
    (``None``) stays blank.
    """
    if len(cells) != len(row_labels) or any(len(r) != len(col_labels) for r in cells):
        raise ValueError("cells must be len(row_labels) × len(col_labels)")
    width = label_width + cell * len(col_labels)
    height = header + cell * len(row_labels)
    grid = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(grid)
    font = _font()
    for c, label in enumerate(col_labels):
        x = label_width + c * cell
        draw.text((x + 6, 6), _fit(label, cell - 12, draw, font), fill=_FG, font=font)
    for r, label in enumerate(row_labels):
        y = header + r * cell
        _wrap_label(draw, label, (6, y + 6), label_width - 12, cell - 12, font)
        for c, image in enumerate(cells[r]):
            if image is None:
                continue
            # Fit the cell both ways: small samples (a tiny model's) are enlarged too.
            thumb = ImageOps.contain(image.convert("RGB"), (cell, cell), Image.Resampling.LANCZOS)
            x = label_width + c * cell + (cell - thumb.width) // 2
            grid.paste(thumb, (x, y + (cell - thumb.height) // 2))
    return grid


def _wrap_label(
    draw: ImageDraw.ImageDraw,
    text: str,
    origin: tuple[int, int],
    width: int,
    height: int,
    font: ImageFont.ImageFont,
) -> None:
    x, y = origin
    line_height = 18
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    max_lines = max(1, height // line_height)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _fit(lines[-1] + " …", width, draw, font)
    for i, line in enumerate(lines):
        draw.text((x, y + i * line_height), _fit(line, width, draw, font), fill=_FG, font=font)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (the curve people read, not the noise)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_curve(
    losses: Sequence[float],
    *,
    epoch_steps: Sequence[int] = (),
    size: tuple[int, int] = (800, 400),
    title: str = "training loss",
) -> Image.Image:
    """Per-step loss (grey) with its moving average (blue); epoch ends as vertical lines."""
    width, height = size
    left, right, top, bottom = 60, 20, 36, 36
    image = Image.new("RGB", size, _BG)
    draw = ImageDraw.Draw(image)
    font = _font()
    draw.text((left, 10), title, fill=_FG, font=font)
    finite = [v for v in losses if math.isfinite(v)]
    if not finite:
        draw.text((left, height // 2), "no loss recorded", fill=_FG, font=font)
        return image
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(losses)

    def point(i: int, v: float) -> tuple[float, float]:
        x = left + (plot_w * i / max(1, n - 1))
        y = top + plot_h * (1 - (v - lo) / (hi - lo))
        return x, y

    draw.rectangle((left, top, left + plot_w, top + plot_h), outline=_GRID)
    for step in epoch_steps:
        if 0 < step < n:
            x = point(step, lo)[0]
            draw.line((x, top, x, top + plot_h), fill=_GRID)
    for v, label in ((hi, f"{hi:.4f}"), (lo, f"{lo:.4f}")):
        draw.text((4, point(0, v)[1] - 7), label, fill=_FG, font=font)
    draw.text((left, height - 24), f"step 1 … {n}", fill=_FG, font=font)
    series = [(i, v) for i, v in enumerate(losses) if math.isfinite(v)]
    if len(series) > 1:
        draw.line([point(i, v) for i, v in series], fill=_TRACE, width=1)
        smooth = moving_average([v for _, v in series], max(1, len(series) // 20))
        draw.line(
            [point(i, s) for (i, _), s in zip(series, smooth, strict=True)], fill=_LINE, width=2
        )
    return image


# Discord's upload limit for a server without boosts (the grids the bot posts must fit).
DISCORD_UPLOAD_LIMIT = 8 * 1024 * 1024


def encode_for_upload(
    image: Image.Image, *, max_bytes: int = DISCORD_UPLOAD_LIMIT, fmt: str = "WEBP"
) -> bytes:
    """``image`` as WebP or JPEG no larger than ``max_bytes``: the quality steps down
    first, then the image shrinks, so labels stay sharp as long as possible."""
    if fmt.upper() not in ("WEBP", "JPEG"):
        raise ValueError(f"fmt must be WEBP or JPEG, got {fmt!r}")
    import io

    current = image.convert("RGB")
    while True:
        for quality in (90, 80, 70, 60, 50):
            buffer = io.BytesIO()
            current.save(buffer, format=fmt.upper(), quality=quality)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        if min(current.size) <= 64:
            raise ValueError(f"cannot encode the image under {max_bytes} bytes")
        current = current.resize(
            (current.width * 3 // 4, current.height * 3 // 4), Image.Resampling.LANCZOS
        )
