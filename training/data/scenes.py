"""Procedural image scenes with captions and closed-answer questions, for the built-in dataset.

A scene is 1-4 shapes (`SHAPES`) in `COLOURS`, `SIZES` and distinct `POSITIONS` (a plus-shaped
grid: left, right, top, bottom, center) on a varied background (solid, gradient or blotchy), drawn
224x224 RGB with PIL at 2x and downsampled (anti-aliased edges), with per-object colour jitter,
rotation, position jitter, pixel noise and JPEG compression, so no two images are pixel-identical.

Everything a question asks is in the scene's metadata (`Scene`), so answers are exact, and the
answers of each question type are balanced by construction:
    colour    "what colour is the star?"              -> one of 10 colours  (~10% majority)
    count     "how many circles are there?"           -> zero..four          (~20%: the scene is built
                                                         around a focus shape repeated 1-4 times)
    shape     "what shape is the red object?"         -> one of 8 shapes    (~12.5%)
    exist     "is there a blue square?"               -> yes / no            (50%: half hard negatives)
    position  "where is the green triangle?"          -> left/right/top/bottom/center (~20%)
    size      "is the yellow heart small or large?"   -> small / large       (50%)
A question is asked only where its referent is unique (`colour` needs the shape to occur once, ...).
Question wordings vary (colour / color, several templates per type).
"""

import io
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 224
_SUPERSAMPLE = 2

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (40, 85, 215),
    "yellow": (240, 215, 35),
    "purple": (135, 55, 185),
    "orange": (245, 135, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "pink": (245, 130, 185),
    "brown": (125, 75, 35),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "heart")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
QUESTION_TYPES = ("colour", "count", "shape", "exist", "position", "size")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

_CELL_OFFSET = 68
_CELLS = {
    "left": (112 - _CELL_OFFSET, 112),
    "right": (112 + _CELL_OFFSET, 112),
    "top": (112, 112 - _CELL_OFFSET),
    "bottom": (112, 112 + _CELL_OFFSET),
    "center": (112, 112),
}
_RADIUS = {"small": (12, 17), "large": (24, 29)}  # circumradius in pixels of the 224 image
_POSITION_JITTER = 5
_COLOUR_JITTER = 18
# rotations that keep a shape recognisable as itself (a square turned 45 degrees is a diamond)
_MAX_ROTATION = {
    "circle": 0, "square": 12, "triangle": 20, "star": 36, "diamond": 12, "hexagon": 30, "cross": 20, "heart": 20,
}
_MIN_CONTRAST = 95.0  # Euclidean RGB distance between every object colour and the background

_QUESTION_TEMPLATES = {
    "colour": ("what colour is the {shape}?", "what color is the {shape}?", "what is the colour of the {shape}?",
               "which color is the {shape}?"),
    "count": ("how many {shapes} are there?", "how many {shapes} can you see?",
              "how many {shapes} are in the picture?", "count the {shapes}."),
    "shape": ("what shape is the {colour} object?", "which shape is {colour}?",
              "what is the shape of the {colour} object?"),
    "exist": ("is there {a} {colour} {shape}?", "do you see {a} {colour} {shape}?",
              "is there {a} {colour} {shape} in the image?"),
    "position": ("where is the {colour} {shape}?", "in which part of the image is the {colour} {shape}?",
                 "where is the {colour} {shape} located?"),
    "size": ("is the {colour} {shape} small or large?", "what size is the {colour} {shape}?",
             "is the {colour} {shape} large or small?"),
}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    position: str
    rgb: tuple[int, int, int]  # the jittered colour actually drawn
    center: tuple[int, int]  # pixel centre in the 224x224 image
    radius: int
    rotation: float  # degrees


@dataclass(frozen=True)
class Scene:
    """A drawable scene: its objects, the shape the counting question is about (`focus`, repeated 1-4
    times) and the rendering parameters (background, noise, JPEG quality)."""

    objects: tuple[SceneObject, ...]
    focus: str
    background: tuple  # ("solid", rgb) | ("gradient", rgb, rgb, angle) | ("blotchy", rgb, rgb, seed)
    noise_std: float
    jpeg_quality: int

    @property
    def caption(self) -> str:
        return scene_caption(self)

    @property
    def signature(self) -> str:
        """Scene content for split assignment: the caption (objects by count, size, colour, shape)."""
        return self.caption


def plural(shape: str) -> str:
    return shape + "es" if shape.endswith(("s", "x")) else shape + "s"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene: a focus shape repeated 1-4 times (uniform), up to 4 objects in all."""
    copies = int(rng.integers(1, 5))
    total = int(rng.integers(copies, 5))
    focus = SHAPES[rng.integers(len(SHAPES))]
    others = [s for s in SHAPES if s != focus]
    shapes = [focus] * copies + [others[i] for i in rng.integers(len(others), size=total - copies)]
    shapes = [shapes[i] for i in rng.permutation(total)]
    cells = [POSITIONS[i] for i in rng.permutation(len(POSITIONS))[:total]]
    colour_names = list(COLOURS)
    objects = []
    for shape, cell in zip(shapes, cells):
        colour = colour_names[rng.integers(len(colour_names))]
        size = SIZES[rng.integers(len(SIZES))]
        jittered = np.array(COLOURS[colour]) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, 3)
        rgb = tuple(int(c) for c in np.clip(jittered, 0, 255))
        cx, cy = _CELLS[cell]
        jitter = rng.integers(-_POSITION_JITTER, _POSITION_JITTER + 1, 2)
        low, high = _RADIUS[size]
        max_rotation = _MAX_ROTATION[shape]
        objects.append(
            SceneObject(
                shape=shape, colour=colour, size=size, position=cell, rgb=rgb,
                center=(int(cx + jitter[0]), int(cy + jitter[1])), radius=int(rng.integers(low, high + 1)),
                rotation=float(rng.uniform(-max_rotation, max_rotation)),
            )
        )
    return Scene(
        objects=tuple(objects), focus=focus, background=_sample_background(rng, [o.rgb for o in objects]),
        noise_std=float(rng.uniform(0.0, 6.0)), jpeg_quality=int(rng.integers(80, 96)),
    )


def _sample_background(rng: np.random.Generator, object_rgbs: list[tuple[int, int, int]]) -> tuple:
    def muted() -> tuple[int, int, int]:
        hue, saturation, value = rng.uniform(0, 1), rng.uniform(0, 0.35), rng.uniform(0.25, 0.9)
        return _hsv_to_rgb(hue, saturation, value)

    def far_enough(rgb) -> bool:
        return all(math.dist(rgb, o) >= _MIN_CONTRAST for o in object_rgbs)

    kind = ("solid", "gradient", "blotchy")[rng.integers(3)]
    for _ in range(200):
        first, second = muted(), muted()
        if far_enough(first) and (kind == "solid" or far_enough(second)):
            break
    else:  # mid grey is far from every palette colour
        first = second = (128, 128, 128)
    if kind == "solid":
        return ("solid", first)
    if kind == "gradient":
        return ("gradient", first, second, float(rng.uniform(0, 360)))
    return ("blotchy", first, second, int(rng.integers(2**31)))


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _background_array(background: tuple, size: int) -> np.ndarray:
    kind = background[0]
    if kind == "solid":
        return np.broadcast_to(np.array(background[1], dtype=np.float32), (size, size, 3)).copy()
    first, second = np.array(background[1], dtype=np.float32), np.array(background[2], dtype=np.float32)
    if kind == "gradient":
        angle = math.radians(background[3])
        ys, xs = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
        mix = np.clip(xs * math.cos(angle) + ys * math.sin(angle) + 0.5, 0, 1)[..., None]  # (size, size, 1)
    else:  # blotchy: a smooth random field, bilinearly upsampled from a 5x5 grid
        grid = np.random.default_rng(background[3]).uniform(0, 1, (5, 5)).astype(np.float32)
        mix = np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC))
        mix = np.clip(mix, 0, 1)[..., None]
    return first * (1 - mix) + second * mix


def _outline(obj: SceneObject, scale: int) -> list[tuple[float, float]] | None:
    """Polygon points of a shape (None for the circle), centred and rotated, at `scale` x resolution."""
    cx, cy, r = obj.center[0] * scale, obj.center[1] * scale, obj.radius * scale
    theta = math.radians(obj.rotation)

    def polar(radii, angles):
        return [(cx + rr * math.cos(a + theta), cy + rr * math.sin(a + theta)) for rr, a in zip(radii, angles)]

    if obj.shape == "circle":
        return None
    if obj.shape == "square":
        return polar([r] * 4, [math.pi / 4 + k * math.pi / 2 for k in range(4)])
    if obj.shape == "diamond":  # a rhombus, narrower than tall, so it is not a turned square
        points = [(0, -r), (0.62 * r, 0), (0, r), (-0.62 * r, 0)]
    elif obj.shape == "triangle":
        return polar([r] * 3, [-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)])
    elif obj.shape == "star":
        radii = [r if k % 2 == 0 else 0.45 * r for k in range(10)]  # outer and inner points alternate
        return polar(radii, [-math.pi / 2 + k * math.pi / 5 for k in range(10)])
    elif obj.shape == "hexagon":
        return polar([r] * 6, [k * math.pi / 3 for k in range(6)])
    elif obj.shape == "cross":
        w = 0.34 * r
        points = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w),
                  (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
    elif obj.shape == "heart":
        ts = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        xs = 16 * np.sin(ts) ** 3
        ys = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts)) - 2.5  # centred
        points = list(zip(xs * r / 17, ys * r / 17))
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; known: {SHAPES}")
    cos, sin = math.cos(theta), math.sin(theta)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def draw_scene(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Render `scene` as a 224x224 RGB PIL image (before JPEG compression); `rng` draws the pixel noise."""
    background = np.clip(_background_array(scene.background, IMAGE_SIZE), 0, 255).astype(np.uint8)
    size = IMAGE_SIZE * _SUPERSAMPLE
    canvas = Image.fromarray(background, mode="RGB").resize((size, size), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        outline = _outline(obj, _SUPERSAMPLE)
        if outline is None:
            cx, cy, r = (v * _SUPERSAMPLE for v in (*obj.center, obj.radius))
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=obj.rgb)
        else:
            draw.polygon(outline, fill=obj.rgb)
    image = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)  # 2x2 averaging: anti-aliased edges
    if scene.noise_std > 0:
        noise = rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32) * np.float32(scene.noise_std)
        pixels = np.asarray(image, dtype=np.float32) + noise
        image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), mode="RGB")
    return image


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def render_scene(scene: Scene, rng: np.random.Generator) -> bytes:
    """The scene's JPEG bytes (what the `image` column stores)."""
    return encode_jpeg(draw_scene(scene, rng), scene.jpeg_quality)


def scene_caption(scene: Scene) -> str:
    """'two small red circles, a large blue square and a green star': groups of (colour, shape) by
    count, with the size when every member of a group has the same size."""
    groups: dict[tuple[str, str], list[SceneObject]] = {}
    for obj in scene.objects:
        groups.setdefault((obj.colour, obj.shape), []).append(obj)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0][1], item[0][0]))
    phrases = []
    for (colour, shape), members in ordered:
        sizes = {m.size for m in members}
        words = ([sizes.pop()] if len(sizes) == 1 else []) + [colour, shape if len(members) == 1 else plural(shape)]
        count = _article(words[0]) if len(members) == 1 else NUMBER_WORDS[len(members)]
        phrases.append(" ".join([count, *words]))
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def scene_questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """One (question, answer, question_type) per type that the scene supports, in `QUESTION_TYPES` order."""
    shape_counts = Counter(o.shape for o in scene.objects)
    colour_counts = Counter(o.colour for o in scene.objects)
    pair_counts = Counter((o.colour, o.shape) for o in scene.objects)
    present_pairs = set(pair_counts)

    def pick(items):
        return items[rng.integers(len(items))]

    def ask(kind, **fields):
        return pick(_QUESTION_TEMPLATES[kind]).format(**fields)

    qa = []
    unique_shape = [o for o in scene.objects if shape_counts[o.shape] == 1]
    if unique_shape:
        obj = pick(unique_shape)
        qa.append((ask("colour", shape=obj.shape), obj.colour, "colour"))

    absent_shapes = [s for s in SHAPES if s not in shape_counts]
    if absent_shapes and rng.uniform() < 0.2:
        shape, count = pick(absent_shapes), 0
    else:
        shape, count = scene.focus, shape_counts[scene.focus]
    qa.append((ask("count", shapes=plural(shape)), NUMBER_WORDS[count], "count"))

    unique_colour = [o for o in scene.objects if colour_counts[o.colour] == 1]
    if unique_colour:
        obj = pick(unique_colour)
        qa.append((ask("shape", colour=obj.colour), obj.shape, "shape"))

    if rng.uniform() < 0.5:
        colour, shape = pick(sorted(present_pairs))
        answer = "yes"
    else:
        present_colours, present_shapes = sorted(colour_counts), sorted(shape_counts)
        while True:  # half hard negatives: a present colour or a present shape, in a pair that is absent
            draw_kind = rng.integers(3)
            colour = pick(present_colours) if draw_kind == 0 else pick(list(COLOURS))
            shape = pick(present_shapes) if draw_kind == 1 else pick(SHAPES)
            if (colour, shape) not in present_pairs:
                break
        answer = "no"
    qa.append((ask("exist", a=_article(colour), colour=colour, shape=shape), answer, "exist"))

    unique_pair = [o for o in scene.objects if pair_counts[(o.colour, o.shape)] == 1]
    if unique_pair:
        obj = pick(unique_pair)
        qa.append((ask("position", colour=obj.colour, shape=obj.shape), obj.position, "position"))
        obj = pick(unique_pair)
        qa.append((ask("size", colour=obj.colour, shape=obj.shape), obj.size, "size"))
    return qa


def scene_description(scene: Scene, rng: np.random.Generator) -> str:
    """A few plain sentences about the scene, for the text corpus ('There is a red circle on the left. ...')."""
    sentences = [f"The picture shows {scene_caption(scene)}."]
    for obj in scene.objects:
        where = "in the center" if obj.position == "center" else (
            f"on the {obj.position}" if obj.position in ("left", "right") else f"at the {obj.position}"
        )
        template = ("The {size} {colour} {shape} is {where}.", "There is a {size} {colour} {shape} {where}.",
                    "{where_cap} there is a {colour} {shape}.")[rng.integers(3)]
        sentences.append(template.format(size=obj.size, colour=obj.colour, shape=obj.shape, where=where,
                                         where_cap=where[0].upper() + where[1:]))
    return " ".join(sentences)
