"""A dependency-free PNG plot of training curves (PIL only; matplotlib is not a MuOmni dependency).

One panel per logged series that varies over steps: the training loss and every `eval_*` value
(loss, perplexity, CER, R@1, accuracy, ...), each against the global step.
"""

import math

from PIL import Image, ImageDraw

PANEL_WIDTH, PANEL_HEIGHT, MARGIN = 420, 260, 48
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]
SKIPPED_KEYS = {"epoch", "step", "total_flos", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}


def collect_series(log_history: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """{name: [(step, value), ...]} for the numeric entries of `Trainer.state.log_history`."""
    series: dict[str, list[tuple[float, float]]] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if key in SKIPPED_KEYS or key.startswith("train_") or not isinstance(value, (int, float)):
                continue
            if key not in ("loss",) and not key.startswith("eval_"):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            series.setdefault(key, []).append((float(step), float(value)))
    return series


def _draw_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], name: str, points, colour) -> None:
    x0, y0 = origin
    left, top = x0 + MARGIN, y0 + 24
    right, bottom = x0 + PANEL_WIDTH - 12, y0 + PANEL_HEIGHT - 28
    draw.rectangle([left, top, right, bottom], outline=(120, 120, 120))
    draw.text((x0 + 8, y0 + 4), name, fill=(0, 0, 0))
    steps = [p[0] for p in points]
    values = [p[1] for p in points]
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    first, last = min(steps), max(steps)
    span = (last - first) or 1.0

    def xy(step, value):
        return (
            left + (step - first) / span * (right - left),
            bottom - (value - low) / (high - low) * (bottom - top),
        )

    draw.text((x0 + 2, top - 4), f"{high:.3g}", fill=(80, 80, 80))
    draw.text((x0 + 2, bottom - 8), f"{low:.3g}", fill=(80, 80, 80))
    draw.text((left, bottom + 6), f"step {first:g}", fill=(80, 80, 80))
    draw.text((right - 70, bottom + 6), f"step {last:g}", fill=(80, 80, 80))
    coords = [xy(s, v) for s, v in points]
    if len(coords) == 1:
        cx, cy = coords[0]
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
    else:
        draw.line(coords, fill=colour, width=2)


def plot_training_curves(log_history: list[dict], path: str) -> str | None:
    """Write the curves of `log_history` to `path` (PNG); returns the path, or None if nothing was logged."""
    series = collect_series(log_history)
    if not series:
        return None
    names = sorted(series, key=lambda n: (n != "loss", n))
    columns = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / columns)
    image = Image.new("RGB", (columns * PANEL_WIDTH, rows * PANEL_HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    for index, name in enumerate(names):
        origin = ((index % columns) * PANEL_WIDTH, (index // columns) * PANEL_HEIGHT)
        _draw_panel(draw, origin, name, series[name], COLOURS[index % len(COLOURS)])
    image.save(path, format="PNG")
    return path


__all__ = ["collect_series", "plot_training_curves"]
