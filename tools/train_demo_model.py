"""Train the small EDVR that ships with vsedvr as ``edvr_demo`` (models/edvr_demo-<sha8>.pth).

The official EDVR checkpoints are downloaded on first use; this one is trained by the project
itself so that the demo and the tests have a model that genuinely restores, offline. It is a
*demo*: a small network (32 channels, 2 + 5 residual blocks, TSA) trained for 3500 steps on a
CPU on synthetic clips, not comparable to the official REDS models (docs/demo-model.md).

Data (tools/demo_model_data.py, nothing downloaded): moving scenes made of pictures inside the
scikit-image wheel and procedural content (hard-edged shapes over gradients, gratings, text in
Pillow's bundled font, 1/f noise), seen through a moving camera (sub-pixel pans in any direction
with shake, zoom, rotation) with an object moving over the background in a third of the clips;
LR frames are the REDS degradation (antialiased bicubic x1/4, 8-bit), no noise. Whole families
and whole pictures (``demo_model_data.HELD_OUT_FAMILIES``) are never used for training;
``bench/demo_quality.py`` measures on them.

Training: Charbonnier loss (eps 1e-3, i.e. sqrt(d^2 + 1e-6)), Adam (betas 0.9/0.99), linear
warm-up, cosine decay to 1e-6 over ``--steps``, gradient-norm clip 1.0, HR 64x64 / LR 16x16
patches, batch 8, 5 frames. Deformable convs use an equivalent ``grid_sample`` formulation
during training only (7x faster backward on CPU than ``torchvision.ops.deform_conv2d``; checked
against it at start-up); the saved weights are plain EDVR weights.

Stages: stage 1 trains from a random initialisation (``--steps``, ``--lr``, ...); stage 2
(``--stage2-steps``, 0 = none) fine-tunes its result with its own learning-rate curve, a loss
that can weight the colour-difference channels (``--stage2-chroma-weight``) and a share of
canvases whose detail is colour alone (``--stage2-colour-detail``). ``--init FILE`` skips stage 1
and starts stage 2 from FILE's weights (FILE stands for stage 1's result).

Elsewhere than this CPU (e.g. a GPU machine without scikit-image, no network): write the
pictures into one file here (``--save-pictures pictures.npz``), carry it along with the checkout
and run ``python3 tools/train_demo_model.py --device cuda --pictures pictures.npz`` there
(needs torch, torchvision, numpy, Pillow and vsedvr importable, e.g. ``PYTHONPATH=.``).

Defined by steps: the same ``--seed``, ``--steps`` and ``--threads`` give the same batches, the
same initialisation and the same learning-rate curve, whatever the machine's load; the wall time
is measured and recorded in the file's meta (``train_seconds``). ``--minutes`` is only an
emergency stop (recorded as ``stopped_by: time``; such a run is not the defined one).

The checkpoint uses mmediting's layout (``{'meta': {...}, 'state_dict': {'generator.<key>'}}``,
legacy non-zip serialisation) and is written as ``<out-dir>/edvr_demo-<first 8 hex of its
SHA-256>.pth``. Update ``vsedvr/zoo/registry.py`` when the name changes.

Usage::

    .venv/bin/python tools/train_demo_model.py          # the shipped model (3500 steps, about 45 minutes)
    .venv/bin/python tools/train_demo_model.py --steps 20 --out-dir /tmp/smoke   # smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import math
import os
import sys
import tempfile
import time
import types
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# With the CPU shared, OpenMP's default spin-waiting makes torch 3-10x slower; sleep instead.
# Only effective before torch starts its thread pool (i.e. when this module imports torch first).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

import demo_model_data  # noqa: E402  (tools/demo_model_data.py, this script's folder: data, metrics)

ROOT = Path(__file__).resolve().parent.parent

SCALE = 4
NUM_FRAMES = 5
CENTER = NUM_FRAMES // 2

#: Architecture of ``edvr_demo`` (``vsedvr.nets.EDVR`` keyword arguments).
ARCH: dict[str, Any] = {
    "num_in_ch": 3,
    "num_out_ch": 3,
    "num_feat": 32,
    "num_frame": NUM_FRAMES,
    "deformable_groups": 8,
    "num_extract_block": 2,
    "num_reconstruct_block": 5,
    "center_frame_idx": CENTER,
    "hr_in": False,
    "with_predeblur": False,
    "with_tsa": True,
}

MAX_SPEED = 8.0  # HR px per frame (any direction), upper end of the camera speed
EVAL_SEED = demo_model_data.EVAL_SEED
DEFAULT_STEPS = 3500

# The data (families, pictures, motion, degradation) and the metrics live in tools/demo_model_data.py.
TRAIN_IMAGES = demo_model_data.TRAIN_IMAGES
HELD_OUT_FAMILIES = demo_model_data.HELD_OUT_FAMILIES
MARGIN = demo_model_data.MARGIN
load_image = demo_model_data.load_image
family_clips = demo_model_data.family_clips
evaluate = demo_model_data.evaluate


def training_batch(rng: np.random.Generator, batch: int, hr_patch: int, max_speed: float = MAX_SPEED,
                   object_prob: float = 0.35, weights: dict[str, float] | None = None,
                   colour_mix: float = 0.0, colour_detail: float = 0.0) -> tuple[Tensor, Tensor]:
    """(lr (B, T, 3, p/4, p/4), hr centre frames (B, 3, p, p)) from the training families."""
    lrs, hrs = [], []
    for _ in range(batch):
        lr, hr = demo_model_data.training_clip(rng, hr_patch, max_speed, object_prob, weights, colour_mix,
                                         colour_detail)
        lrs.append(lr)
        hrs.append(hr[CENTER])
    return torch.stack(lrs).contiguous(), torch.stack(hrs).contiguous()


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a run: its steps (batch indices ``first .. first + steps - 1`` of the run),
    learning-rate curve, loss and data options."""

    name: str
    steps: int
    first: int
    lr: float
    warmup: int
    chroma_weight: float
    colour_mix: float
    colour_detail: float
    colour_first: int = 0


def stages(args: argparse.Namespace) -> list[Stage]:
    """Stage 1 (from a random init; skipped with ``--init``, whose file stands for its result),
    then stage 2 (fine-tuning; ``--stage2-steps 0``: none)."""
    out = []
    if args.init is None:
        out.append(Stage("stage 1", args.steps, 0, args.lr, args.warmup, args.chroma_weight,
                         args.colour_mix, args.colour_detail))
    if args.stage2_steps:
        out.append(Stage("stage 2", args.stage2_steps, args.steps, args.stage2_lr, args.stage2_warmup,
                         args.stage2_chroma_weight, args.colour_mix, args.stage2_colour_detail,
                         args.stage2_colour_first))
    return out


class TrainingBatches(torch.utils.data.Dataset):
    """Batch *i* of a stage is batch ``stage.first + i`` of the run, drawn from its own generator
    ``default_rng([seed, stage.first + i])``.

    Seeding by step makes the batches independent of who makes them and in what order, so a
    worker process can make them ahead (on the second core) and a run is the same with any
    number of workers.
    """

    def __init__(self, args: argparse.Namespace, weights: dict[str, float], stage: Stage) -> None:
        self.args, self.weights, self.stage = args, weights, stage

    def __len__(self) -> int:
        return self.stage.steps

    def __getitem__(self, step: int) -> tuple[Tensor, Tensor]:
        a, s = self.args, self.stage
        rng = np.random.default_rng([a.seed, s.first + step])
        colour_detail = 1.0 if step < s.colour_first else s.colour_detail
        x, y = training_batch(rng, a.batch, a.patch, a.max_speed, a.object_prob, self.weights,
                              s.colour_mix, colour_detail)
        if a.lr_noise:
            x = add_lr_noise(x, rng, a.lr_noise)
        return x, y


def _single_threaded_worker(_: int) -> None:
    torch.set_num_threads(1)


def parse_weights(text: str) -> dict[str, float]:
    """``photo=0.3,shapes=0.2,...`` -> the family mix (every training family, weights > 0)."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        out[name.strip()] = float(value)
    if set(out) != set(demo_model_data.TRAIN_FAMILIES) or min(out.values()) <= 0:
        raise argparse.ArgumentTypeError(
            f"--mix needs a weight > 0 for each of {', '.join(demo_model_data.TRAIN_FAMILIES)}")
    total = sum(out.values())
    return {k: v / total for k, v in out.items()}


# ---------------------------------------------------------------------------- network


def _dcn_grid_sample(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor,
                     groups: int) -> Tensor:
    """``torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)`` for a 3x3
    kernel, written with ``grid_sample`` (align_corners=True maps pixel p to 2p/(n-1)-1; zero
    padding drops out-of-image corners, as mmcv/torchvision do)."""
    n, c, h, w = x.shape
    taps = 9
    off = offset.reshape(n, groups, taps, 2, h, w)
    dt, dev = x.dtype, x.device
    ki = (torch.arange(3, dtype=dt, device=dev) - 1).repeat_interleave(3).view(1, 1, taps, 1, 1)
    kj = (torch.arange(3, dtype=dt, device=dev) - 1).repeat(3).view(1, 1, taps, 1, 1)
    ys = torch.arange(h, dtype=dt, device=dev).view(1, 1, 1, h, 1)
    xs = torch.arange(w, dtype=dt, device=dev).view(1, 1, 1, 1, w)
    gy = (ys + ki + off[:, :, :, 0]) * (2.0 / max(h - 1, 1)) - 1.0
    gx = (xs + kj + off[:, :, :, 1]) * (2.0 / max(w - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(n * groups, taps * h, w, 2)
    sampled = F.grid_sample(x.reshape(n * groups, c // groups, h, w), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=True)
    sampled = sampled.view(n, groups, c // groups, taps, h, w) * mask.reshape(n, groups, 1, taps, h, w)
    out = torch.matmul(weight.reshape(weight.shape[0], c * taps), sampled.reshape(n, c * taps, h * w))
    return out.view(n, -1, h, w) + bias.view(1, -1, 1, 1)


def _fast_dcn_forward(self: Any, x: Tensor, offset_feat: Tensor) -> Tensor:
    om = self.conv_offset(offset_feat)
    k = 2 * self.deformable_groups * 9
    return _dcn_grid_sample(x, om[:, :k], torch.sigmoid(om[:, k:]), self.weight, self.bias,
                            self.deformable_groups)


def use_grid_sample_dcn(net: torch.nn.Module) -> None:
    """Switch every DCNPack of *net* to the grid_sample formulation (training speed only)."""
    from vsedvr.nets.blocks import DCNPack

    for module in net.modules():
        if isinstance(module, DCNPack):
            module.forward = types.MethodType(_fast_dcn_forward, module)


@contextlib.contextmanager
def plain_torch_ops() -> Iterator[None]:
    """Inside: EDVR's thread-count-stable CPU helpers (vsedvr/nets/stable.py) are replaced by the
    plain PyTorch operations they equal within rounding (``stable_sigmoid`` writes with ``out=``,
    which autograd refuses; the plain ones are also faster). Training only."""
    from vsedvr.nets import edvr

    plain = {
        "stable_sigmoid": torch.sigmoid,
        "channel_dot": lambda a, b, dim: (a * b).sum(dim=dim),
        "upsample_bilinear": lambda x, factor: F.interpolate(x, scale_factor=factor, mode="bilinear",
                                                             align_corners=False),
    }
    saved = {name: getattr(edvr, name) for name in plain}
    try:
        for name, fn in plain.items():
            setattr(edvr, name, fn)
        yield
    finally:
        for name, fn in saved.items():
            setattr(edvr, name, fn)


def check_grid_sample_dcn() -> float:
    """Max |difference| between the grid_sample DCN and torchvision's on a random input."""
    from torchvision.ops import deform_conv2d

    g = torch.Generator().manual_seed(0)
    n, c, h, w, groups = 2, 16, 12, 20, 4
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    offset = torch.randn(n, 2 * groups * 9, h, w, generator=g, dtype=torch.float64) * 4
    mask = torch.rand(n, groups * 9, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(c, c, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(c, generator=g, dtype=torch.float64)
    ref = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    return float((ref - _dcn_grid_sample(x, offset, mask, weight, bias, groups)).abs().max())


# ---------------------------------------------------------------------------- checkpoint

_TO_MMEDIT_RENAMES = (
    ("conv_l2_1", "feat_l2_conv1"),
    ("conv_l2_2", "feat_l2_conv2"),
    ("conv_l3_1", "feat_l3_conv1"),
    ("conv_l3_2", "feat_l3_conv2"),
    ("pcd_align", "pcd_alignment"),
    ("upconv1", "upsample1.upsample_conv"),
    ("upconv2", "upsample2.upsample_conv"),
)
# Modules that are mmcv ConvModules in mmedit (their conv sits under ".conv").
_CONV_MODULES = (
    "feat_l2_conv1", "feat_l2_conv2", "feat_l3_conv1", "feat_l3_conv2",
    "pcd_alignment.offset_conv1.", "pcd_alignment.offset_conv2.", "pcd_alignment.offset_conv3.",
    "pcd_alignment.feat_conv.", "pcd_alignment.cas_offset_conv1", "pcd_alignment.cas_offset_conv2",
    "fusion.feat_fusion", "fusion.spatial_attn1", "fusion.spatial_attn2", "fusion.spatial_attn3",
    "fusion.spatial_attn4", "fusion.spatial_attn_l1", "fusion.spatial_attn_l2",
    "fusion.spatial_attn_l3", "fusion.spatial_attn_add1",
)


def basicsr_to_mmedit_key(key: str) -> str:
    """Inverse of ``vsedvr.zoo.checkpoint.convert_mmedit_key`` for EDVR without pre-deblur."""
    for old, new in _TO_MMEDIT_RENAMES:
        if key == old or key.startswith(old + "."):
            key = new + key[len(old):]
    module, _, param = key.rpartition(".")
    if any(module.startswith(m) if m.endswith(".") else module == m for m in _CONV_MODULES):
        module += ".conv"
    return f"generator.{module}.{param}"


def mmedit_state_dict(net: torch.nn.Module) -> OrderedDict[str, Tensor]:
    """The network's weights under mmediting's EDVRNet names, checked to convert back exactly."""
    from vsedvr.zoo.checkpoint import convert_mmedit_key

    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, tensor in net.state_dict().items():
        mm = basicsr_to_mmedit_key(key)
        if convert_mmedit_key(mm) != key:
            raise RuntimeError(f"key {key!r} -> {mm!r} does not convert back")
        out[mm] = tensor.detach().clone().contiguous()
    return out


def save_checkpoint(net: torch.nn.Module, meta: dict[str, Any], out_dir: Path) -> Path:
    """Write ``out_dir/edvr_demo-<sha8>.pth`` (mmedit layout, legacy non-zip format)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="edvr_demo.", suffix=".part", dir=out_dir)
    os.close(fd)
    try:
        torch.save({"meta": meta, "state_dict": mmedit_state_dict(net)}, tmp,
                   _use_new_zipfile_serialization=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the file ships inside the package
        torch.load(tmp, map_location="cpu", weights_only=True)  # what vsedvr's loader will do
        sha = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        dest = out_dir / f"edvr_demo-{sha[:8]}.pth"
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


# ---------------------------------------------------------------------------- training


def charbonnier(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


LOSSES = {"charbonnier": charbonnier, "mse": F.mse_loss}

#: Orthonormal opponent transform: brightness (R+G+B)/sqrt3 and two colour differences.
OPPONENT = torch.tensor([[1 / math.sqrt(3)] * 3,
                         [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
                         [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)]])


def opponent_loss(loss_fn: Any, chroma_weight: float) -> Any:
    """*loss_fn* on (brightness, R-G, R+G-2B) of output and target, the colour-difference
    channels weighted ``chroma_weight`` times the brightness one (normalised by the weights)."""
    w = torch.tensor([1.0, chroma_weight, chroma_weight])

    def loss(pred: Tensor, target: Tensor) -> Tensor:
        m = OPPONENT.to(pred)
        p, t = torch.einsum("kc,bchw->bkhw", m, pred), torch.einsum("kc,bchw->bkhw", m, target)
        per = torch.stack([loss_fn(p[:, k], t[:, k]) for k in range(3)])
        return (per * w.to(per)).sum() / w.sum()

    return loss
LOSS_TEXT = {"charbonnier": "charbonnier eps=1e-3 (sqrt(d^2+1e-6)), mean", "mse": "mean squared error"}


def lr_at(step: int, progress: float, base: float, warmup: int, final: float = 1e-6) -> float:
    cos = final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return cos * min(1.0, (step + 1) / warmup) if warmup else cos


def _loss_summary(losses: list[float], buckets: int = 20) -> dict[str, Any]:
    if not losses:
        return {}
    parts = np.array_split(np.asarray(losses), min(buckets, len(losses)))
    return {
        "bucket_means": [round(float(p.mean()), 6) for p in parts],
        "bucket_size": len(parts[0]),
        "first_50_mean": round(float(np.mean(losses[:50])), 6),
        "last_100_mean": round(float(np.mean(losses[-100:])), 6),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training length (the schedule follows it)")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="optional wall-clock stop for the training loop (0 = none; a run it stops "
                        "is not the step-defined run)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=64, help="HR patch size (LR = patch / 4)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-speed", type=float, default=MAX_SPEED, help="HR px per frame")
    p.add_argument("--object-prob", type=float, default=0.35,
                   help="share of training clips with an object moving over the background")
    p.add_argument("--lr-noise", type=float, default=0.0,
                   help="training only: Gaussian noise of sigma U(0, this) 8-bit levels on the LR "
                        "frames of half the clips (0 = none)")
    p.add_argument("--feat", type=int, default=ARCH["num_feat"])
    p.add_argument("--extract-blocks", type=int, default=ARCH["num_extract_block"])
    p.add_argument("--reconstruct-blocks", type=int, default=ARCH["num_reconstruct_block"])
    p.add_argument("--colour-mix", type=float, default=0.0,
                   help="share of training canvases whose RGB channels are remixed (demo_model_data.mix_colours)")
    p.add_argument("--colour-detail", type=float, default=0.0,
                   help="stage 1: share of training canvases whose detail is made colour alone at flat "
                        "brightness (demo_model_data.colour_detail)")
    p.add_argument("--chroma-weight", type=float, default=0.0,
                   help="stage 1: 0: the loss on R, G, B; else on brightness and two colour differences, "
                        "these weighted this many times")
    p.add_argument("--init", type=Path, default=None,
                   help="a checkpoint that stands for stage 1's result: stage 1 is skipped, stage 2 "
                        "starts from its weights")
    p.add_argument("--stage2-steps", type=int, default=0,
                   help="steps of stage 2, fine-tuning stage 1's result (0 = no stage 2)")
    p.add_argument("--stage2-lr", type=float, default=2e-4)
    p.add_argument("--stage2-warmup", type=int, default=20)
    p.add_argument("--stage2-chroma-weight", type=float, default=4.0,
                   help="stage 2's --chroma-weight")
    p.add_argument("--stage2-colour-detail", type=float, default=0.3,
                   help="stage 2's --colour-detail")
    p.add_argument("--stage2-colour-first", type=int, default=0,
                   help="stage 2's first N steps: every canvas's detail made colour alone")
    p.add_argument("--loss", choices=sorted(LOSSES), default="charbonnier")
    p.add_argument("--mix", type=parse_weights, default=None,
                   help="training family mix, e.g. photo=0.3,shapes=0.25,gratings=0.2,text=0.1,noise=0.15 "
                        "(default: demo_model_data.TRAIN_WEIGHTS)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes making batches ahead (the batches do not depend on it)")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (the result depends on it; 1 is the fastest on a shared CPU)")
    p.add_argument("--eval-clips", type=int, default=4, help="held-out clips per held-out family")
    p.add_argument("--eval-every", type=int, default=0, help="quick held-out check every N steps (0 = off)")
    p.add_argument("--device", default="cpu",
                   help="where the network trains (e.g. cuda); batches are made and the result is "
                        "evaluated on the CPU")
    p.add_argument("--pictures", type=Path, default=None,
                   help="take the pictures from this file (written by --save-pictures) instead of "
                        "scikit-image and scikit-learn")
    p.add_argument("--save-pictures", type=Path, default=None, metavar="FILE",
                   help="write every picture the data uses into FILE (.npz, about 11 MB) and exit")
    p.add_argument("--out-dir", type=Path, default=ROOT / "models")
    p.add_argument("--log-every", type=int, default=25)
    return p.parse_args(argv)


def add_lr_noise(lr: Tensor, rng: np.random.Generator, max_sigma: float) -> Tensor:
    """Half the clips get Gaussian noise of sigma U(0, max_sigma) 8-bit levels, re-rounded."""
    out = lr.clone()
    for i in range(out.shape[0]):
        if max_sigma > 0 and rng.random() < 0.5:
            sigma = rng.uniform(0, max_sigma) / 255.0
            noise = torch.from_numpy(rng.standard_normal(out[i].shape).astype(np.float32)) * sigma
            out[i] = (out[i] + noise).clamp_(0, 1).mul_(255).round_().div_(255)
    return out


def _quick_eval(net: torch.nn.Module, arch: dict[str, Any]) -> str:
    from vsedvr.nets import EDVR

    probe = EDVR(**arch)
    probe.load_state_dict(net.state_dict())
    probe.eval().requires_grad_(False)
    r = evaluate(probe, family_clips(clips_per_family=2, seed=EVAL_SEED + 1))
    worst = min(g["restored"] - g["bicubic"] for g in r["per_group"].values())
    kept, bicubic_kept = demo_model_data.grating_kept(probe)
    return (f"held-out (quick): vs bicubic {r['restored'] - r['bicubic']:+.3f} dB (worst family "
            f"{worst:+.3f}), vs copies {r['restored'] - r['copies']:+.3f} dB; colour grating kept "
            f"{kept:.3f} (bicubic {bicubic_kept:.3f})")


def _image_source(pictures: Path | None) -> str:
    if pictures is not None:
        sha = hashlib.sha256(pictures.read_bytes()).hexdigest()
        return f"{pictures.name} (sha256 {sha[:16]}), written by --save-pictures"
    import skimage

    return (f"skimage.data (scikit-image {skimage.__version__}) and "
            "sklearn.datasets.load_sample_images, files inside the wheels")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started_wall = time.monotonic()
    torch.set_num_threads(args.threads)
    if args.save_pictures is not None:
        names = demo_model_data.save_pictures(args.save_pictures)
        print(f"train_demo_model: wrote {len(names)} pictures to {args.save_pictures} "
              f"({args.save_pictures.stat().st_size / 1e6:.1f} MB)", flush=True)
        return 0
    demo_model_data.use_pictures(args.pictures)
    import torchvision

    from vsedvr.nets import EDVR

    device = torch.device(args.device)

    diff = check_grid_sample_dcn()
    if diff > 1e-9:
        raise SystemExit(f"grid_sample DCN differs from torchvision's by {diff}")
    for name in TRAIN_IMAGES:
        load_image(name)
    print(f"train_demo_model: families {', '.join(demo_model_data.TRAIN_FAMILIES)} ({len(TRAIN_IMAGES)} pictures); "
          f"held out: {', '.join(HELD_OUT_FAMILIES)}; grid_sample DCN check max diff {diff:.1e}", flush=True)

    arch = dict(ARCH, num_feat=args.feat, num_extract_block=args.extract_blocks,
                num_reconstruct_block=args.reconstruct_blocks)
    torch.manual_seed(args.seed)
    net = EDVR(**arch)
    init_sha = None
    if args.init is not None:
        from vsedvr import load_model

        net.load_state_dict(load_model(str(args.init), progress=False).state_dict())
        init_sha = hashlib.sha256(args.init.read_bytes()).hexdigest()
        print(f"train_demo_model: starting from {args.init} (sha256 {init_sha[:16]})", flush=True)
    net.to(device).train()
    use_grid_sample_dcn(net)
    params = sum(p.numel() for p in net.parameters())
    weights = args.mix or dict(demo_model_data.TRAIN_WEIGHTS)
    budget = args.minutes * 60.0
    losses: dict[str, list[float]] = {}
    stopped_by = "steps"
    step = 0
    t0 = time.monotonic()
    for stage in stages(args):
        opt = torch.optim.Adam(net.parameters(), lr=stage.lr, betas=(0.9, 0.99))
        loss_fn = LOSSES[args.loss]
        if stage.chroma_weight:
            loss_fn = opponent_loss(loss_fn, stage.chroma_weight)
        batches = iter(torch.utils.data.DataLoader(
            TrainingBatches(args, weights, stage), batch_size=None, shuffle=False,
            num_workers=args.workers, worker_init_fn=_single_threaded_worker if args.workers else None,
            prefetch_factor=4 if args.workers else None))
        done, log = 0, losses.setdefault(stage.name, [])
        with plain_torch_ops():
            try:
                while done < stage.steps:
                    if budget and time.monotonic() - t0 >= budget:
                        stopped_by = "time"
                        break
                    lr = lr_at(done, done / stage.steps, stage.lr, stage.warmup)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    x, y = (t.to(device, non_blocking=True) for t in next(batches))
                    loss = loss_fn(net(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                    log.append(loss.item())
                    done += 1
                    step += 1
                    if done % args.log_every == 0:
                        print(f"{stage.name}: step {done:5d}/{stage.steps}  loss "
                              f"{np.mean(log[-args.log_every:]):.5f}  lr {lr:.2e}  "
                              f"{time.monotonic() - t0:7.1f} s", flush=True)
                    if args.eval_every and done % args.eval_every == 0:
                        print(f"{stage.name}: step {done:5d}: {_quick_eval(net, arch)}", flush=True)
            except KeyboardInterrupt:
                stopped_by = "interrupted"
                print("train_demo_model: interrupted, saving what there is", flush=True)
        if stopped_by != "steps":
            break
    train_seconds = time.monotonic() - t0

    # Plain EDVR (torchvision deformable convs) with the trained weights, for evaluation and saving.
    final = EDVR(**arch)
    final.load_state_dict({k: v.cpu() for k, v in net.state_dict().items()})
    final.eval().requires_grad_(False)
    scores = evaluate(final, family_clips(clips_per_family=args.eval_clips, seed=EVAL_SEED))
    meta = {
        "vsedvr_model": "edvr_demo",
        "description": "small demo EDVR trained by vsedvr tools/train_demo_model.py on synthetic moving "
                       "scenes (bundled pictures and procedural content); not comparable to the "
                       "official models",
        "arch": arch,
        "params": params,
        "config": {
            "seed": args.seed, "steps": args.steps, "batch": args.batch, "hr_patch": args.patch,
            "lr_patch": args.patch // SCALE, "num_frames": NUM_FRAMES, "scale": SCALE,
            "loss": LOSS_TEXT[args.loss],
            "stages": [dataclasses.asdict(s) for s in stages(args)],
            "chroma_weight_means": "the loss on brightness (R+G+B)/sqrt3 and colour differences "
                                   "(R-G)/sqrt2, (R+G-2B)/sqrt6, these weighted this many times",
            "batches": "batch i (counted over the stages) drawn from numpy default_rng([seed, i])",
            "optimizer": "Adam betas=(0.9, 0.99), grad-norm clip 1.0, new for each stage",
            "lr": args.lr, "warmup_steps": args.warmup,
            "schedule": "linear warm-up, then cosine to 1e-6 over each stage's steps",
            "minutes_stop": args.minutes, "threads": args.threads,
            "families": {k: round(v, 4) for k, v in weights.items()},
            "colour_mix": f"{args.colour_mix:.0%} of the canvases: channels remixed (demo_model_data.mix_colours)",
            "colour_detail_means": "that share of the canvases: detail made colour alone "
                                   "(demo_model_data.colour_detail)",
            "init": None if args.init is None else {"file": args.init.name, "sha256": init_sha},
            "motion": f"camera: pan up to {args.max_speed} HR px/frame in any direction (speed "
                      "max*u^1.3), shake N(0, 0.6 px) in half the clips, zoom (30 %, up to 2.5 %/frame), "
                      f"rotation (30 %, up to 1.5 deg/frame); object over the background in "
                      f"{args.object_prob:.0%} of the clips, own pan up to 1.5x",
            "degradation": "torch.nn.functional.interpolate(mode='bicubic', antialias=True, "
                           f"align_corners=False) x1/4 on a frame with a {MARGIN} px margin, "
                           "clamped, rounded to 8 bits"
                           + (f"; training only: N(0, U(0, {args.lr_noise})/255) noise on half the clips"
                              if args.lr_noise else ""),
            "dcn_during_training": "grid_sample formulation (equivalent to torchvision deform_conv2d)",
        },
        "steps": step,
        "stopped_by": stopped_by,
        "train_seconds": round(train_seconds, 1),
        "image_source": _image_source(args.pictures),
        "train_images": list(TRAIN_IMAGES),
        "held_out": {"families": list(HELD_OUT_FAMILIES),
                     "pictures": {k: list(v) for k, v in demo_model_data.HELD_OUT_PICTURES.items()}},
        "excluded_images": dict(demo_model_data.EXCLUDED_IMAGES),
        "loss_curve": {name: _loss_summary(log) for name, log in losses.items()},
        "heldout": {"metric": "RGB PSNR / SSIM of 8-bit-rounded images, no border crop",
                    "lr_size": [24, 40], "seed": EVAL_SEED, **scores},
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-loadable
        "torchvision_version": str(torchvision.__version__),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path = save_checkpoint(final, meta, args.out_dir)
    print(f"train_demo_model: {step} steps in {train_seconds:.0f} s (stopped by {stopped_by}), "
          f"last-100 loss {[round(float(np.mean(v[-100:])), 6) for v in losses.values() if v]}", flush=True)
    for name, r in list(scores["per_group"].items()) + [("all", scores)]:
        print(f"train_demo_model: held-out {name:<13} restored {r['restored']:.2f} dB, bicubic "
              f"{r['bicubic']:.2f} ({r['restored'] - r['bicubic']:+.2f}), 5 copies {r['copies']:.2f} "
              f"({r['restored'] - r['copies']:+.3f})", flush=True)
    print(f"train_demo_model: wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in "
          f"{time.monotonic() - started_wall:.0f} s total", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
