"""Synthetic training and evaluation clips for ``edvr_demo`` (tools/train_demo_model.py), made
offline, and the metrics they are judged by.

Self-contained (numpy, torch, Pillow; scikit-image / scikit-learn only for the pictures, or a
file of them: :func:`save_pictures`), so that the trainer and ``make demo`` (tools/demo.py) import
it from their folder and bench/demo_quality.py and bench/precision_error.py load it by its path.

A clip is a *scene* (an HR canvas of one content family, optionally with a second, independently
moving object layer over it) seen through a moving camera: every frame is an affine warp of the
canvas (sub-pixel pan in any direction + per-frame shake, optional zoom and rotation), the object
layer has a motion of its own, so it uncovers and occludes the background. The centre frame is
the canvas itself (identity warp), the others are resampled with bicubic ``grid_sample``. LR
frames are the antialiased bicubic x1/4 of a crop with a margin, clamped and rounded to 8 bits
(the REDS degradation, see :func:`downscale`); no noise, no blur beyond that.

Content families (``TRAIN_FAMILIES``; never used for evaluation):

* ``photo``: the scikit-image pictures in ``TRAIN_IMAGES`` (rescaled x0.5..1, colour-jittered);
* ``shapes``: flat- or gradient-filled polygons, ellipses, rectangles and strokes with hard
  edges (aliased or 2x-supersampled) over smooth colour gradients;
* ``gratings``: sums of sine / square / triangle gratings, any angle, 0.01..0.45 cycles per HR px;
* ``text``: random strings in Pillow's bundled font (``ImageFont.load_default(size)``), 7..44 px;
* ``noise``: 1/f^beta noise textures (beta 1.2..2.8), colour-mixed, sometimes thresholded.

Held-out families (``HELD_OUT_FAMILIES``; evaluation only, no picture or generator of them is
ever used in training):

* ``photos``: whole pictures never trained on: skimage chelsea, coffee, rocket and
  scikit-learn's china and flower;
* ``scans``: skimage page and text (scanned / photographed print; training has rendered text);
* ``drawings``: skimage checkerboard, horse, shepp_logan phantom, logo (over white);
* ``flat+stripes``: saturated flat-coloured shapes over smooth colour gradients with patches of
  fine diagonal stripes (the scene of issue 15: shapes and stripes are combined, and stripes
  used as fills, only here);
* ``zoneplate``: circular chirps (cos(k r^2): every angle and a sweep of frequencies in one
  picture; training has straight gratings only).

Everything is drawn from a ``numpy.random.Generator``: the same seed gives the same clips.
"""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SCALE = 4
NUM_FRAMES = 5
CENTER = NUM_FRAMES // 2
MARGIN = 16      # HR px around a frame before downscaling (multiple of SCALE)
EVAL_SEED = 20240601  # held-out clips (bench/demo_quality.py, the trainer's evaluation)

#: skimage.data pictures used for training (motorcycle_left/right = stereo_motorcycle()).
TRAIN_IMAGES = (
    "astronaut", "motorcycle_left", "motorcycle_right", "immunohistochemistry", "hubble_deep_field",
    "retina", "camera", "brick", "grass", "gravel", "moon", "coins", "cell",
)
#: Held-out pictures by family (``sklearn:`` = sklearn.datasets.load_sample_images()).
HELD_OUT_PICTURES: dict[str, tuple[str, ...]] = {
    "photos": ("chelsea", "coffee", "rocket", "sklearn:china", "sklearn:flower"),
    "scans": ("page", "text"),
    "drawings": ("checkerboard", "horse", "shepp_logan_phantom", "logo"),
}
#: Pictures of the integer-pan clips (bench/precision_error.py) and of the make demo clip.
HELD_OUT_IMAGES = ("chelsea", "coffee", "rocket")
#: In the scikit-image wheel but used for neither training nor evaluation.
EXCLUDED_IMAGES = {
    "cat": "the same picture as chelsea (held out)",
    "clock": "motion-blurred on purpose",
    "colorwheel": "synthetic, smooth",
    "binary_blobs": "procedural, not a picture",
    "microaneurysms": "102x102, too small",
    "lfw_subset": "25x25 faces, too small",
}
TRAIN_FAMILIES = ("photo", "shapes", "gratings", "text", "noise")
HELD_OUT_FAMILIES = ("photos", "scans", "drawings", "flat+stripes", "zoneplate")
#: Training mix: probability of each family for a clip's background.
TRAIN_WEIGHTS = {"photo": 0.36, "shapes": 0.2, "gratings": 0.14, "text": 0.15, "noise": 0.15}


# ---------------------------------------------------------------------------- pictures


def _skimage_array(name: str) -> np.ndarray:
    import skimage.data

    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_images

        data = load_sample_images()
        wanted = name.split(":", 1)[1] + ".jpg"
        for fname, img in zip(data.filenames, data.images):
            if fname.endswith(wanted):
                return img
        raise KeyError(name)
    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    if name == "shepp_logan_phantom":
        return (skimage.data.shepp_logan_phantom() * 255).round().astype(np.uint8)
    if name == "logo":  # RGBA: over white
        rgba = skimage.data.logo().astype(np.float32) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
        return (rgb * 255).round().astype(np.uint8)
    if name == "checkerboard":  # 200x200, 8x8 squares: tiled 2x2 (still a checkerboard)
        return np.tile(skimage.data.checkerboard(), (2, 2))
    return getattr(skimage.data, name)()


#: name -> uint8 (H, W, 3) array, when the pictures come from a file (:func:`use_pictures`).
_PICTURES: dict[str, np.ndarray] | None = None


def all_pictures() -> tuple[str, ...]:
    """Every picture the data uses: the training ones, then the held-out ones."""
    return TRAIN_IMAGES + tuple(p for pics in HELD_OUT_PICTURES.values() for p in pics)


def _picture_array(name: str) -> np.ndarray:
    """A bundled picture as uint8 RGB (H, W, 3) (grey: three equal channels)."""
    if _PICTURES is not None:
        if name not in _PICTURES:
            raise KeyError(f"picture {name} is not in the pictures file")
        return _PICTURES[name]
    arr = _skimage_array(name)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        raise ValueError(f"picture {name}: unexpected dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


@functools.lru_cache(maxsize=None)
def load_image(name: str) -> Tensor:
    """A bundled picture as float32 RGB (3, H, W) in [0, 1] (grey: three equal channels).

    skimage.data pictures come from inside the scikit-image wheel (hash-checked by scikit-image),
    ``sklearn:china`` / ``sklearn:flower`` from inside the scikit-learn wheel: nothing is
    downloaded. After :func:`use_pictures`, they come from that file instead.
    """
    arr = _picture_array(name)
    return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def save_pictures(path: str | os.PathLike[str]) -> list[str]:
    """Write every picture (:func:`all_pictures`) into one ``.npz`` file, so that the data can be
    made where scikit-image and scikit-learn are not installed (:func:`use_pictures`)."""
    names = list(all_pictures())
    arrays = {f"picture_{i}": _picture_array(n) for i, n in enumerate(names)}
    np.savez_compressed(path, names=np.array(names), **arrays)
    return names


def use_pictures(path: str | os.PathLike[str] | None) -> None:
    """Take the pictures from a file written by :func:`save_pictures` (None: from the wheels)."""
    global _PICTURES
    if path is None:
        _PICTURES = None
    else:
        with np.load(path, allow_pickle=False) as f:
            _PICTURES = {str(n): f[f"picture_{i}"] for i, n in enumerate(f["names"])}
    load_image.cache_clear()


# ---------------------------------------------------------------------------- degradation


def downscale(hr: Tensor) -> Tensor:
    """x1/4 the way REDS LR frames are made: antialiased bicubic, clamped, rounded to 8 bits.

    :param hr: (..., 3, H, W) in [0, 1], H and W multiples of 4.
    """
    lead = hr.shape[:-3]
    flat = hr.reshape(-1, *hr.shape[-3:])
    h, w = flat.shape[-2:]
    lr = F.interpolate(flat, size=(h // SCALE, w // SCALE), mode="bicubic", antialias=True,
                       align_corners=False)
    lr = lr.clamp_(0.0, 1.0).mul_(255.0).round_().div_(255.0)
    return lr.reshape(*lead, *lr.shape[-3:])


# ---------------------------------------------------------------------------- colours and fills


def _colour(rng: np.random.Generator, saturated: bool = False) -> np.ndarray:
    if saturated:
        h = rng.random()
        s, v = rng.uniform(0.7, 1.0), rng.uniform(0.55, 1.0)
    else:
        h, s, v = rng.random(), rng.uniform(0.0, 1.0), rng.uniform(0.05, 1.0)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y, x


def gradient(rng: np.random.Generator, h: int, w: int, saturated: bool = False) -> np.ndarray:
    """A smooth colour gradient (3, h, w): linear between 2-3 colours, or radial."""
    y, x = _coords(h, w)
    if rng.random() < 0.7:
        a = rng.uniform(0, 2 * math.pi)
        u = (x * math.cos(a) + y * math.sin(a))
    else:
        cy, cx = rng.uniform(-0.5, 1.5) * h, rng.uniform(-0.5, 1.5) * w
        u = np.hypot(y - cy, x - cx)
    u = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    u = u ** rng.uniform(0.6, 1.6)
    cols = [_colour(rng, saturated) for _ in range(int(rng.integers(2, 4)))]
    stops = np.linspace(0, 1, len(cols))
    out = np.stack([np.interp(u, stops, [c[ch] for c in cols]) for ch in range(3)])
    return out.astype(np.float32)


def _wave(phase: np.ndarray, kind: str) -> np.ndarray:
    """Periodic profile in [0, 1] of phase (cycles)."""
    frac = phase - np.floor(phase)
    if kind == "sine":
        return 0.5 + 0.5 * np.cos(2 * math.pi * phase)
    if kind == "triangle":
        return 1.0 - 2.0 * np.abs(frac - 0.5)
    return (frac < 0.5).astype(np.float32)  # square: hard edges, as drawn (aliased)


def gratings(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """1-3 straight gratings (sine/square/triangle), random angles, 0.01..0.45 cycles/px."""
    y, x = _coords(h, w)
    out = gradient(rng, h, w) if rng.random() < 0.3 else np.zeros((3, h, w), np.float32)
    weight = 0.0 if out.any() else None
    n = int(rng.integers(1, 4))
    for _ in range(n):
        f = math.exp(rng.uniform(math.log(0.01), math.log(0.45)))
        a = rng.uniform(0, math.pi)
        kind = str(rng.choice(["sine", "square", "triangle"], p=[0.45, 0.35, 0.2]))
        g = _wave(f * (x * math.cos(a) + y * math.sin(a)) + rng.random(), kind)
        c0, c1 = _colour(rng), _colour(rng)
        layer = c0[:, None, None] * (1 - g) + c1[:, None, None] * g
        if weight is None:
            out, weight = layer, 1.0
        else:
            alpha = rng.uniform(0.3, 0.7)
            out = out * (1 - alpha) + layer * alpha
    return out.astype(np.float32)


def noise_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """1/f^beta noise (beta 1.2..2.8) in colour; 20 % thresholded into hard-edged blobs."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    beta = rng.uniform(1.2, 2.8)
    k = int(rng.integers(1, 4))
    fields = []
    for _ in range(k):
        spec = (rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))) / f ** (beta / 2)
        spec[0, 0] = 0
        field = np.real(np.fft.ifft2(spec))
        field = (field - field.mean()) / (field.std() + 1e-8)
        fields.append(field)
    fields = np.stack(fields)
    if rng.random() < 0.2:
        fields = (fields > rng.uniform(-0.5, 0.5)).astype(np.float32) * 2 - 1
    mix = rng.normal(0, 1, (3, k)).astype(np.float32)
    mix /= np.abs(mix).sum(1, keepdims=True) + 1e-6
    out = np.tensordot(mix, fields, axes=1) * rng.uniform(0.08, 0.3) + _colour(rng)[:, None, None]
    return np.clip(out, 0, 1).astype(np.float32)


def _draw_shapes(rng: np.random.Generator, h: int, w: int, n: int, fill: Callable[[], np.ndarray],
                 out: np.ndarray, supersample: int, stripes: bool = False) -> np.ndarray:
    """Draw n random shapes (mask by PIL, optionally supersampled) over *out* with *fill*."""
    from PIL import Image, ImageDraw

    s = supersample
    for _ in range(n):
        mask = Image.new("L", (w * s, h * s), 0)
        d = ImageDraw.Draw(mask)
        kind = rng.choice(["poly", "ellipse", "rect", "stroke"], p=[0.35, 0.3, 0.2, 0.15])
        cx, cy = rng.uniform(0, w) * s, rng.uniform(0, h) * s
        r = rng.uniform(0.06, 0.45) * min(h, w) * s
        if kind == "poly":
            k = int(rng.integers(3, 9))
            ang = np.sort(rng.uniform(0, 2 * math.pi, k))
            rad = r * rng.uniform(0.4, 1.0, k)
            d.polygon([(cx + a * math.cos(t), cy + a * math.sin(t)) for a, t in zip(rad, ang)], fill=255)
        elif kind == "ellipse":
            ry = r * rng.uniform(0.3, 1.0)
            d.ellipse([cx - r, cy - ry, cx + r, cy + ry], fill=255)
            if rng.random() < 0.5:  # rotate it
                mask = mask.rotate(float(rng.uniform(0, 180)), resample=Image.NEAREST, center=(cx, cy))
        elif kind == "rect":
            ry = r * rng.uniform(0.2, 1.0)
            d.rectangle([cx - r, cy - ry, cx + r, cy + ry], fill=255)
            if rng.random() < 0.6:
                mask = mask.rotate(float(rng.uniform(0, 90)), resample=Image.NEAREST, center=(cx, cy))
        else:
            pts = [(cx, cy)] + [(rng.uniform(0, w) * s, rng.uniform(0, h) * s) for _ in range(int(rng.integers(1, 4)))]
            d.line(pts, fill=255, width=max(1, int(rng.uniform(1, 8) * s)))
        m = np.asarray(mask, np.float32) / 255.0
        if s > 1:
            m = m.reshape(h, s, w, s).mean((1, 3))
        f = fill()
        out = out * (1 - m) + f * m
    return out


def shapes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Flat- or gradient-filled hard-edged shapes over a gradient (aliased or 2x supersampled)."""
    out = gradient(rng, h, w) if rng.random() < 0.8 else np.broadcast_to(
        _colour(rng)[:, None, None], (3, h, w)).copy()

    def fill() -> np.ndarray:
        if rng.random() < 0.75:
            return np.broadcast_to(_colour(rng, saturated=rng.random() < 0.5)[:, None, None], (3, h, w))
        return gradient(rng, h, w)

    return _draw_shapes(rng, h, w, int(rng.integers(3, 16)), fill, out,
                        supersample=1 if rng.random() < 0.5 else 2).astype(np.float32)


_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;!?()-+=/%&@#  "


def text(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Lines of random characters in Pillow's bundled font, 7..44 px, over a flat/gradient ground."""
    from PIL import Image, ImageDraw, ImageFont

    bg = gradient(rng, h, w) if rng.random() < 0.4 else np.broadcast_to(
        _colour(rng)[:, None, None], (3, h, w)).copy()
    out = bg.copy()
    size = int(round(math.exp(rng.uniform(math.log(7), math.log(44)))))
    font = ImageFont.load_default(size=size)
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    y = rng.uniform(-size, size)
    while y < h:
        line = "".join(rng.choice(list(_CHARS), int(rng.integers(4, 40))))
        d.text((float(rng.uniform(-w / 2, w / 4)), float(y)), line, fill=255, font=font)
        y += size * rng.uniform(1.0, 1.8)
    m = np.asarray(mask, np.float32) / 255.0
    ink = _colour(rng)
    if np.abs(ink - bg.mean((1, 2))).max() < 0.3:  # make it readable
        ink = 1.0 - bg.mean((1, 2))
    return (out * (1 - m) + ink[:, None, None] * m).astype(np.float32)


# ---------------------------------------------------------------------------- held-out generators


def flat_stripes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Held out: saturated flat shapes over smooth gradients, with patches of fine diagonal stripes."""
    out = gradient(rng, h, w, saturated=True)
    y, x = _coords(h, w)

    def stripes() -> np.ndarray:
        period = rng.uniform(2.5, 9.0)
        a = math.radians(rng.choice([1, -1]) * rng.uniform(25, 65))
        g = _wave((x * math.cos(a) + y * math.sin(a)) / period, str(rng.choice(["square", "sine"])))
        c0, c1 = _colour(rng, True), _colour(rng, True)
        return c0[:, None, None] * (1 - g) + c1[:, None, None] * g

    def fill() -> np.ndarray:
        if rng.random() < 0.3:
            return stripes()
        return np.broadcast_to(_colour(rng, saturated=True)[:, None, None], (3, h, w))

    return _draw_shapes(rng, h, w, int(rng.integers(4, 11)), fill, out,
                        supersample=int(rng.choice([1, 2]))).astype(np.float32)


def zoneplate(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Held out: a circular chirp cos(pi k r^2), local frequency up to ~0.3 cycles/px in view."""
    y, x = _coords(h, w)
    cy, cx = rng.uniform(-0.3, 1.3) * h, rng.uniform(-0.3, 1.3) * w
    r2 = (y - cy) ** 2 + (x - cx) ** 2
    rmax = math.sqrt(float(r2.max()))
    k = rng.uniform(0.15, 0.3) / rmax          # local frequency k*r cycles/px
    g = 0.5 + 0.5 * np.cos(math.pi * k * r2 + rng.uniform(0, 2 * math.pi))
    c0, c1 = _colour(rng), _colour(rng)
    return (c0[:, None, None] * (1 - g) + c1[:, None, None] * g).astype(np.float32)


PROCEDURAL: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "shapes": shapes, "gratings": gratings, "text": text, "noise": noise_texture,
    "flat+stripes": flat_stripes, "zoneplate": zoneplate,
}


# ---------------------------------------------------------------------------- canvases


def _busy_crop(pic: Tensor, rng: np.random.Generator, h: int, w: int, tries: int = 5,
               min_std: float = 0.04) -> Tensor:
    """An (h, w) crop of *pic* at a random place: the first of up to ``tries`` places whose
    standard deviation reaches ``min_std``, else the one with the most (avoids flat sky)."""
    _, ih, iw = pic.shape
    best = None
    for _ in range(tries):
        y0, x0 = int(rng.integers(0, ih - h + 1)), int(rng.integers(0, iw - w + 1))
        crop = pic[:, y0:y0 + h, x0:x0 + w]
        if best is None or float(crop.std()) > float(best.std()):
            best = crop
        if float(crop.std()) >= min_std:
            break
    assert best is not None
    return best


def _augment_picture(pic: Tensor, rng: np.random.Generator, h: int, w: int) -> Tensor | None:
    """A random (h, w) crop of a training picture, rescaled x0.5..1 and colour-jittered."""
    _, ih, iw = pic.shape
    s = rng.uniform(0.5, 1.0)
    s = max(s, h / ih, w / iw)
    if s > 1.0:
        return None
    ch, cw = int(math.ceil(h / s)) + 1, int(math.ceil(w / s)) + 1
    if ch > ih or cw > iw:
        return None
    crop = _busy_crop(pic, rng, ch, cw)
    if s < 0.999:
        crop = F.interpolate(crop[None], scale_factor=s, mode="bicubic", antialias=True,
                             align_corners=False)[0]
    crop = crop[:, :h, :w]
    if crop.shape[-2:] != (h, w):
        return None
    crop = crop[torch.from_numpy(rng.permutation(3))]
    if rng.random() < 0.5:  # saturation / contrast / gamma jitter
        grey = crop.mean(0, keepdim=True)
        crop = grey + (crop - grey) * rng.uniform(0.5, 1.5)
        crop = (crop - 0.5) * rng.uniform(0.8, 1.2) + 0.5 + rng.uniform(-0.08, 0.08)
        crop = crop.clamp(0, 1) ** rng.uniform(0.8, 1.25)
    return crop.clamp(0, 1).contiguous()


def _orient(x: Tensor, code: int) -> Tensor:
    """One of the 8 flips / transposes."""
    if code & 1:
        x = x.flip(-1)
    if code & 2:
        x = x.flip(-2)
    if code & 4:
        x = x.transpose(-1, -2)
    return x


def mix_colours(canvas: Tensor, rng: np.random.Generator) -> Tensor:
    """Each output channel a random signed mix of the three: out_c = sum_k w_ck x_k + b_c with
    sum_k |w_ck| = 1 and b_c = sum of the negative weights' magnitudes, so [0, 1] maps into [0, 1].

    Detail that the content has in brightness becomes detail in colour (hue against hue at
    equal brightness, as in saturated graphics). Meant against the network restoring brightness
    only; in a 3500-step run at 50 % it did not change that (docs/demo-model.md), so the
    shipped run does not use it.
    """
    wts = rng.standard_normal((3, 3)).astype(np.float32)
    wts /= np.abs(wts).sum(1, keepdims=True) + 1e-6
    bias = np.clip(-wts, 0, None).sum(1)
    out = torch.einsum("ck,khw->chw", torch.from_numpy(wts), canvas) + torch.from_numpy(bias)[:, None, None]
    return out.clamp(0, 1).contiguous()


#: Luma weights (BT.601) used to keep colour-detail canvases at equal brightness.
LUMA = (0.299, 0.587, 0.114)


def colour_detail(canvas: Tensor, rng: np.random.Generator) -> Tensor:
    """Detail that is colour alone: the canvas's brightness pattern carried by a chroma direction.

    ``out = c0 + d * (L - mean L) * k`` where L is the canvas's luma, d a random direction of
    zero luma (so out has a flat brightness) and c0 a mid colour; k makes the most of [0, 1].
    With probability 1/2, a fraction of the original canvas is mixed back (some brightness
    detail, not matching the colour detail's contrast).
    """
    luma = torch.tensor(LUMA)
    lum = torch.einsum("c,chw->hw", luma, canvas)
    lc = lum - lum.mean()
    v = rng.standard_normal(3).astype(np.float32)
    v -= float(np.dot(v, LUMA)) / float(np.dot(LUMA, LUMA)) * np.asarray(LUMA, np.float32)
    v /= np.abs(v).max() + 1e-6
    c0 = torch.from_numpy(rng.uniform(0.35, 0.65, 3).astype(np.float32))
    span = float(lc.abs().max()) + 1e-6
    room = float(min(c0.min(), 1 - c0.max()))
    k = rng.uniform(0.6, 1.0) * room / span
    out = c0[:, None, None] + torch.from_numpy(v)[:, None, None] * lc[None] * k
    if rng.random() < 0.5:
        a = rng.uniform(0.1, 0.4)
        out = out * (1 - a) + canvas * a
    return out.clamp(0, 1).contiguous()


def train_canvas(family: str, rng: np.random.Generator, h: int, w: int,
                 colour_mix: float = 0.0, colour_detail_share: float = 0.0) -> Tensor:
    """An (3, h, w) training canvas of *family* (one of TRAIN_FAMILIES), augmented; with
    probability ``colour_mix`` its channels are remixed (:func:`mix_colours`), with probability
    ``colour_detail_share`` its detail is turned into colour detail (:func:`colour_detail`)."""
    canvas = _train_canvas(family, rng, h, w)
    if colour_mix and rng.random() < colour_mix:
        canvas = mix_colours(canvas, rng)
    if colour_detail_share and rng.random() < colour_detail_share:
        canvas = colour_detail(canvas, rng)
    return canvas


def _train_canvas(family: str, rng: np.random.Generator, h: int, w: int) -> Tensor:
    if family == "photo":
        for _ in range(10):
            pic = load_image(TRAIN_IMAGES[int(rng.integers(len(TRAIN_IMAGES)))])
            code = int(rng.integers(8))
            hh, ww = (w, h) if code & 4 else (h, w)
            crop = _augment_picture(pic, rng, hh, ww)
            if crop is not None:
                return _orient(crop, code).contiguous()
        family = "shapes"
    code = int(rng.integers(8))
    hh, ww = (w, h) if code & 4 else (h, w)
    arr = PROCEDURAL[family](rng, hh, ww)
    return _orient(torch.from_numpy(np.ascontiguousarray(arr)), code).clamp(0, 1).contiguous()


def heldout_canvas(family: str, rng: np.random.Generator, h: int, w: int,
                   picture: str | None = None) -> Tensor | None:
    """An (3, h, w) evaluation canvas: a crop of a held-out picture or a held-out generator.

    Returns None when the picture is too small for (h, w).
    """
    if family in HELD_OUT_PICTURES:
        assert picture is not None
        pic = load_image(picture)
        _, ih, iw = pic.shape
        if h > ih or w > iw:
            return None
        return _busy_crop(pic, rng, h, w).contiguous()
    return torch.from_numpy(np.ascontiguousarray(PROCEDURAL[family](rng, h, w)))


# ---------------------------------------------------------------------------- motion


def draw_motion(rng: np.random.Generator, max_speed: float, complex_motion: bool = True) -> dict[str, Any]:
    """Camera motion of one clip: velocity (HR px/frame, any direction), shake, zoom, rotation."""
    speed = max_speed * rng.random() ** 1.3
    a = rng.uniform(0, 2 * math.pi)
    m: dict[str, Any] = {
        "v": (speed * math.sin(a), speed * math.cos(a)),
        "shake": rng.normal(0, 0.6, (NUM_FRAMES, 2)) * (rng.random() < 0.5),
        "zoom": 0.0, "rot": 0.0,
    }
    if complex_motion and rng.random() < 0.3:
        m["zoom"] = rng.uniform(-0.025, 0.025)      # log-scale per frame
    if complex_motion and rng.random() < 0.3:
        m["rot"] = math.radians(rng.uniform(-1.5, 1.5))  # per frame
    m["shake"][CENTER] = 0.0
    return m


def _affines(m: dict[str, Any], out_hw: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """(T, 2, 3) maps from output pixel offsets (from the frame centre) to canvas offsets."""
    mats = []
    for t in range(NUM_FRAMES):
        d = t - CENTER
        s = math.exp(m["zoom"] * d * scale)
        r = m["rot"] * d * scale
        c, si = math.cos(r) * s, math.sin(r) * s
        ty = (m["v"][0] * d + m["shake"][t][0]) * scale
        tx = (m["v"][1] * d + m["shake"][t][1]) * scale
        mats.append([[c, -si, ty], [si, c, tx]])   # (y, x) order
    return np.asarray(mats, np.float64)


def _reach(mats: np.ndarray, out_hw: tuple[int, int]) -> float:
    """How far (px) beyond the output frame the warps sample."""
    h, w = out_hw
    corners = np.array([[-h / 2, -w / 2], [-h / 2, w / 2], [h / 2, -w / 2], [h / 2, w / 2]])
    reach = 0.0
    for mat in mats:
        src = corners @ mat[:, :2].T + mat[:, 2]
        reach = max(reach, float(np.max(np.abs(src) - np.abs(corners))))
    return reach


def _warp(canvas: Tensor, mats: np.ndarray, out_hw: tuple[int, int]) -> Tensor:
    """(T, C, h, w): each frame samples the canvas around its centre through mats (bicubic)."""
    c, ch, cw = canvas.shape
    h, w = out_hw
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    frames = []
    for mat in mats:
        sy = mat[0, 0] * gy + mat[0, 1] * gx + mat[0, 2] + (ch - 1) / 2
        sx = mat[1, 0] * gy + mat[1, 1] * gx + mat[1, 2] + (cw - 1) / 2
        if np.allclose(mat, [[1, 0, 0], [0, 1, 0]]):   # identity: exact pixels
            y0, x0 = int(round(float(sy[0, 0]))), int(round(float(sx[0, 0])))
            frames.append(canvas[:, y0:y0 + h, x0:x0 + w])
            continue
        grid = torch.stack([(sx + 0.5) / cw * 2 - 1, (sy + 0.5) / ch * 2 - 1], -1).float()
        frames.append(F.grid_sample(canvas[None], grid[None], mode="bicubic", padding_mode="border",
                                    align_corners=False)[0])
    return torch.stack(frames).clamp_(0, 1)


def _object_mask(rng: np.random.Generator, h: int, w: int) -> Tensor:
    """A soft-edged (1, h, w) object mask near the canvas centre: ellipse or polygon."""
    from PIL import Image, ImageDraw

    s = 2
    mask = Image.new("L", (w * s, h * s), 0)
    d = ImageDraw.Draw(mask)
    cy, cx = h * s / 2 + rng.uniform(-0.2, 0.2) * h * s, w * s / 2 + rng.uniform(-0.2, 0.2) * w * s
    r = rng.uniform(0.12, 0.3) * min(h, w) * s
    if rng.random() < 0.5:
        ry = r * rng.uniform(0.4, 1.0)
        d.ellipse([cx - r, cy - ry, cx + r, cy + ry], fill=255)
    else:
        k = int(rng.integers(3, 8))
        ang = np.sort(rng.uniform(0, 2 * math.pi, k))
        rad = r * rng.uniform(0.5, 1.0, k)
        d.polygon([(cx + a * math.cos(t), cy + a * math.sin(t)) for a, t in zip(rad, ang)], fill=255)
    m = np.asarray(mask, np.float32).reshape(h, s, w, s).mean((1, 3)) / 255.0
    return torch.from_numpy(m)[None]


def make_clip(canvas_fn: Callable[[int, int], Tensor | None], rng: np.random.Generator,
              hr_size: tuple[int, int], *, max_speed: float, complex_motion: bool = True,
              object_fn: Callable[[int, int], Tensor | None] | None = None,
              object_prob: float = 0.0) -> tuple[Tensor, Tensor] | None:
    """A 5-frame clip: (lr (5, 3, h, w), hr (5, 3, 4h, 4w)), or None if no canvas fits.

    ``canvas_fn(h, w)`` makes the background canvas; with probability ``object_prob`` an object
    (``object_fn`` texture under a soft mask) moves over it with its own velocity.
    """
    hh, hw = hr_size
    if hh % SCALE or hw % SCALE:
        raise ValueError(f"HR size {hr_size} is not a multiple of {SCALE}")
    out_hw = (hh + 2 * MARGIN, hw + 2 * MARGIN)
    motion = draw_motion(rng, max_speed, complex_motion)
    canvas, mats = None, None
    for scale in (1.0, 0.6, 0.3, 0.0):
        mats = _affines(motion, out_hw, scale)
        room = int(math.ceil(_reach(mats, out_hw))) + 3
        canvas = canvas_fn(out_hw[0] + 2 * room, out_hw[1] + 2 * room)
        if canvas is not None:
            break
    if canvas is None:
        return None
    big = _warp(canvas, mats, out_hw)
    if object_fn is not None and rng.random() < object_prob:
        # The object has a path of its own (no zoom / rotation), shaken with the camera.
        omotion = draw_motion(rng, max_speed * 1.5, complex_motion=False)
        omotion["shake"] = motion["shake"]
        omats = _affines(omotion, out_hw)
        room = int(math.ceil(_reach(omats, out_hw))) + 3
        size = (out_hw[0] + 2 * room, out_hw[1] + 2 * room)
        tex = object_fn(*size)
        if tex is not None:
            layer = torch.cat([tex, _object_mask(rng, *size)])
            warped = _warp(layer, omats, out_hw)
            alpha = warped[:, 3:]
            big = big * (1 - alpha) + warped[:, :3] * alpha
    m = MARGIN // SCALE
    lr = downscale(big)[..., m: m + hh // SCALE, m: m + hw // SCALE]
    hr = big[..., MARGIN: MARGIN + hh, MARGIN: MARGIN + hw]
    return lr.contiguous(), hr.contiguous()


def training_clip(rng: np.random.Generator, hr_patch: int, max_speed: float,
                  object_prob: float = 0.35,
                  weights: dict[str, float] | None = None,
                  colour_mix: float = 0.0, colour_detail_share: float = 0.0) -> tuple[Tensor, Tensor]:
    """One training clip of a random training family (moving object over it at object_prob).

    ``weights`` is the family mix (default ``TRAIN_WEIGHTS``); ``colour_mix`` the share of
    canvases whose channels are remixed.
    """
    weights = weights or TRAIN_WEIGHTS
    names = list(weights)
    p = np.asarray([weights[n] for n in names])
    family = names[int(rng.choice(len(names), p=p / p.sum()))]
    ofamily = names[int(rng.choice(len(names), p=p / p.sum()))]
    clip = make_clip(lambda h, w: train_canvas(family, rng, h, w, colour_mix, colour_detail_share), rng,
                     (hr_patch, hr_patch), max_speed=max_speed,
                     object_fn=lambda h, w: train_canvas(ofamily, rng, h, w, colour_mix, colour_detail_share),
                     object_prob=object_prob)
    assert clip is not None  # training canvases always fit
    return clip


def family_clips(families: Sequence[str] = HELD_OUT_FAMILIES, clips_per_family: int = 6,
                 lr_size: tuple[int, int] = (24, 40), seed: int = EVAL_SEED,
                  max_speed: float = 8.0) -> list[tuple[str, Tensor, Tensor]]:
    """Evaluation clips [(family, lr (5, 3, h, w), hr centre (3, 4h, 4w))], held-out content only.

    Picture families cycle through their pictures; each clip has its own motion (same motion
    model as training, objects over the background in a third of the clips, the object made of
    the same held-out family).
    """
    out = []
    hr_size = (lr_size[0] * SCALE, lr_size[1] * SCALE)
    for fi, family in enumerate(families):
        rng = np.random.default_rng([seed, fi])
        pictures = HELD_OUT_PICTURES.get(family, (None,))
        for i in range(clips_per_family):
            pic = pictures[i % len(pictures)]
            fn = functools.partial(heldout_canvas, family, rng, picture=pic)
            clip = make_clip(lambda h, w: fn(h, w), rng, hr_size, max_speed=max_speed,
                             object_fn=lambda h, w: fn(h, w), object_prob=1 / 3)
            if clip is None:
                raise ValueError(f"held-out picture {pic} is too small for LR {lr_size}")
            out.append((family, clip[0], clip[1][CENTER]))
    return out


# ---------------------------------------------------------------------------- integer pans (bench/precision_error.py)

OLD_MAX_SPEED = 6   # HR px per frame, per axis (integer)
OLD_JITTER = 1      # HR px per frame, per axis (integer)


def motion_path(rng: np.random.Generator, num_frames: int, max_speed: int = OLD_MAX_SPEED,
                jitter: int = OLD_JITTER) -> tuple[np.ndarray, np.ndarray]:
    """Integer HR offsets (dy, dx) of each frame's crop window: constant velocity + jitter, min 0."""
    vy, vx = rng.integers(-max_speed, max_speed + 1, size=2)
    jit = rng.integers(-jitter, jitter + 1, size=(num_frames, 2))
    t = np.arange(num_frames)
    dy = t * vy + jit[:, 0]
    dx = t * vx + jit[:, 1]
    return dy - dy.min(), dx - dx.min()


def synth_clip(image: Tensor, rng: np.random.Generator, hr_size: tuple[int, int], num_frames: int,
               *, max_speed: int = OLD_MAX_SPEED, jitter: int = OLD_JITTER,
               min_std: float = 0.0, tries: int = 1) -> tuple[Tensor, Tensor]:
    """A moving-crop clip from one picture (the first demo model's motion model: integer pans).

    :returns: (lr (T, 3, h, w), hr (T, 3, 4h, 4w)); frame t of hr is the picture's crop at
        (y0 + dy[t], x0 + dx[t]) and lr is its antialiased bicubic x1/4.
    """
    hh, hw = hr_size
    if hh % SCALE or hw % SCALE:
        raise ValueError(f"HR size {hr_size} is not a multiple of {SCALE}")
    _, ih, iw = image.shape
    dy, dx = motion_path(rng, num_frames, max_speed, jitter)
    need_h, need_w = hh + 2 * MARGIN + int(dy.max()), hw + 2 * MARGIN + int(dx.max())
    if need_h > ih or need_w > iw:
        raise ValueError(f"picture {ih}x{iw} too small for a {hh}x{hw} clip with this motion")
    for attempt in range(tries):
        y0 = int(rng.integers(0, ih - need_h + 1))
        x0 = int(rng.integers(0, iw - need_w + 1))
        centre = image[:, y0 + dy[num_frames // 2] + MARGIN: y0 + dy[num_frames // 2] + MARGIN + hh,
                       x0 + dx[num_frames // 2] + MARGIN: x0 + dx[num_frames // 2] + MARGIN + hw]
        if attempt == tries - 1 or float(centre.std()) >= min_std:
            break
    big = torch.stack([
        image[:, y0 + dy[t]: y0 + dy[t] + hh + 2 * MARGIN, x0 + dx[t]: x0 + dx[t] + hw + 2 * MARGIN]
        for t in range(num_frames)
    ])
    m = MARGIN // SCALE
    lr = downscale(big)[..., m: m + hh // SCALE, m: m + hw // SCALE]
    hr = big[..., MARGIN: MARGIN + hh, MARGIN: MARGIN + hw]
    return lr.contiguous(), hr.contiguous()


def heldout_clips(images: Sequence[str] = HELD_OUT_IMAGES, clips_per_image: int = 4,
                  lr_size: tuple[int, int] = (32, 48), seed: int = EVAL_SEED,
                  max_speed: int = OLD_MAX_SPEED) -> list[tuple[str, Tensor, Tensor]]:
    """The old measure: [(picture, lr (5, 3, h, w), hr centre (3, 4h, 4w))], integer pans over
    chelsea / coffee / rocket (what the first demo model was judged by)."""
    rng = np.random.default_rng(seed)
    out = []
    for name in images:
        image = load_image(name)
        for _ in range(clips_per_image):
            lr, hr = synth_clip(image, rng, (lr_size[0] * SCALE, lr_size[1] * SCALE), NUM_FRAMES,
                                max_speed=max_speed, min_std=0.03, tries=5)
            out.append((name, lr, hr[CENTER]))
    return out


# ---------------------------------------------------------------------------- the clip of make demo, metrics


def demo_clip(image: str = "coffee", length: int = 24, lr_size: tuple[int, int] = (64, 96),
              velocity: tuple[int, int] = (1, 3)) -> tuple[Tensor, Tensor]:
    """The clip of ``make demo``: a steady pan over a held-out picture, no jitter.

    ``velocity`` is in HR px per frame (rows, columns): (1, 3) moves the LR content by 1/4 and
    3/4 px per frame. The window starts at the picture's centre region.

    :returns: (lr (L, 3, h, w), hr (L, 3, 4h, 4w)), float32 in [0, 1].
    """
    pic = load_image(image)
    hh, hw = lr_size[0] * SCALE, lr_size[1] * SCALE
    dy = np.arange(length) * velocity[0]
    dx = np.arange(length) * velocity[1]
    dy, dx = dy - dy.min(), dx - dx.min()
    _, ih, iw = pic.shape
    need_h, need_w = hh + 2 * MARGIN + int(dy.max()), hw + 2 * MARGIN + int(dx.max())
    if need_h > ih or need_w > iw:
        raise ValueError(f"{image} ({ih}x{iw}) is too small for this demo clip")
    y0, x0 = (ih - need_h) // 2, (iw - need_w) // 2
    big = torch.stack([
        pic[:, y0 + dy[t]: y0 + dy[t] + hh + 2 * MARGIN, x0 + dx[t]: x0 + dx[t] + hw + 2 * MARGIN]
        for t in range(length)
    ])
    m = MARGIN // SCALE
    lr = downscale(big)[..., m: m + lr_size[0], m: m + lr_size[1]]
    return lr.contiguous(), big[..., MARGIN: MARGIN + hh, MARGIN: MARGIN + hw].contiguous()


# ---------------------------------------------------------------------------- metrics


def to_uint8(x: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8 bits (how mmedit/BasicSR write images before metrics)."""
    return x.clamp(0.0, 1.0).mul(255.0).round()


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR (dB) over all RGB values, after rounding both to 8 bits (mmedit REDS4 convention)."""
    mse = float((to_uint8(a) - to_uint8(b)).double().pow(2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def bicubic_up(lr: Tensor) -> Tensor:
    """Plain bicubic x4 (``F.interpolate``, align_corners=False, a=-0.75) of (..., 3, h, w)."""
    flat = lr.reshape(-1, *lr.shape[-3:])
    up = F.interpolate(flat, scale_factor=SCALE, mode="bicubic", align_corners=False)
    return up.reshape(*lr.shape[:-2], *up.shape[-2:])


@functools.lru_cache(maxsize=4)
def _gauss_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim(a: Tensor, b: Tensor) -> float:
    """SSIM (Wang et al. 2004) as mmedit/BasicSR compute it: 8-bit rounded RGB, 11x11 Gaussian
    (sigma 1.5), 'valid' window positions only, mean over the channels."""
    x = to_uint8(a).double().reshape(-1, 1, *a.shape[-2:])
    y = to_uint8(b).double().reshape(-1, 1, *b.shape[-2:])
    win = _gauss_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = F.conv2d(x, win), F.conv2d(y, win)
    sxx = F.conv2d(x * x, win) - mx * mx
    syy = F.conv2d(y * y, win) - my * my
    sxy = F.conv2d(x * y, win) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(m.mean())


KINDS = ("restored", "bicubic", "copies")


@torch.no_grad()
def evaluate(net: torch.nn.Module, clips: Sequence[tuple[str, Tensor, Tensor]]) -> dict[str, Any]:
    """PSNR and SSIM of the centre frame: EDVR on the 5-frame window ("restored", what
    ``edvr.Restore`` computes for a frame inside a clip), bicubic x4 of the LR centre frame, and
    EDVR fed 5 copies of the centre frame ("copies": no temporal information).

    :returns: {"restored", "bicubic", "copies": overall mean PSNR; "<kind>_ssim": mean SSIM;
        "per_group": {group: {same keys}}, "clips": n}; groups are the clips' first element
        (a held-out family or picture).
    """
    rows: dict[str, dict[str, list[float]]] = {}
    for name, lr, hr in clips:
        x = lr.unsqueeze(0)
        copies = lr[CENTER].expand(NUM_FRAMES, *lr.shape[1:]).unsqueeze(0)
        r = rows.setdefault(name, {k: [] for k in KINDS + tuple(k + "_ssim" for k in KINDS)})
        outs = {"restored": net(x)[0], "bicubic": bicubic_up(lr[CENTER]), "copies": net(copies)[0]}
        for kind, out in outs.items():
            r[kind].append(psnr(out, hr))
            r[kind + "_ssim"].append(ssim(out, hr))
    keys = list(next(iter(rows.values())))
    result: dict[str, Any] = {k: float(np.mean([v for r in rows.values() for v in r[k]])) for k in keys}
    result["per_group"] = {n: {k: float(np.mean(r[k])) for k in keys} for n, r in rows.items()}
    result["clips"] = len(clips)
    return result


@torch.no_grad()
def grating_kept(net: torch.nn.Module, colour: bool = True, period: float = 12.0) -> tuple[float, float]:
    """How much of a 45-degree sine grating's amplitude (period 12 HR px = 3 LR px) the network
    keeps, against bicubic: (restored, bicubic), 1 = all. ``colour``: red against green (detail
    in colour alone, as tests/test_demo_model.py measures), else grey."""
    (h, w), crop = (96, 160), 32
    y, x = np.mgrid[0:h + 2 * MARGIN, 0:w + 2 * MARGIN].astype(np.float32)
    phase = 2 * math.pi * (x + y) / math.sqrt(2) / period
    g = 0.5 + 0.35 * np.cos(phase)
    planes = [g, 1 - g, np.full_like(g, 0.5)] if colour else [g, g, g]
    m = MARGIN // SCALE
    lr = downscale(torch.from_numpy(np.stack(planes)))[..., m: m + h // SCALE, m: m + w // SCALE]
    restored = net(lr.expand(NUM_FRAMES, -1, -1, -1)[None].contiguous())[0]
    inner = phase[MARGIN + crop: MARGIN + h - crop, MARGIN + crop: MARGIN + w - crop]
    cos, sin = torch.from_numpy(np.cos(inner)).double(), torch.from_numpy(np.sin(inner)).double()

    def kept(out: Tensor) -> float:
        red = out[0, crop:-crop, crop:-crop].double()
        return math.hypot(2 * float((red * cos).mean()), 2 * float((red * sin).mean())) / 0.35

    return kept(restored), kept(bicubic_up(lr))
