"""Registry, checkpoint reading, architecture inference and strict loading.

Checkpoints are written here in the exact official layouts (key names, nesting, torch
serialisation format) from the template in ``data/edvr_keys.tsv``. Real-sized files use
stride-0 tensors (one stored element, right shapes), so they stay tiny on disk.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch

from vsedvr.zoo import (
    MODELS,
    ModelError,
    ModelSpec,
    fetch,
    infer_arch,
    load_model,
    read_state_dict,
)
from vsedvr.zoo.checkpoint import convert_mmedit_key
from vsedvr.zoo.registry import MMEDIT_BASE_URL, hash_prefix_from_filename

TEMPLATE = Path(__file__).parent / "data" / "edvr_keys.tsv"


def _arch(c: int, t: int, r: int, *, tsa: bool = True, predeblur: bool = False, hr_in: bool = False,
          dg: int = 8, e: int = 5) -> dict[str, Any]:
    return {
        "num_in_ch": 3, "num_out_ch": 3, "num_feat": c, "num_frame": t, "deformable_groups": dg,
        "num_extract_block": e, "num_reconstruct_block": r, "center_frame_idx": t // 2,
        "hr_in": hr_in, "with_predeblur": predeblur, "with_tsa": tsa,
    }


# name: (arch, tensor count, parameter count) -- counts from the official key lists
VARIANTS: dict[str, tuple[dict[str, Any], int, int]] = {
    "edvrm": (_arch(64, 5, 10), 144, 3_300_131),
    "edvrm_wotsa": (_arch(64, 5, 10, tsa=False), 120, 2_996_259),
    "edvrl": (_arch(128, 5, 40), 264, 20_633_827),
    "edvrl_wotsa": (_arch(128, 5, 40, tsa=False), 240, 19_419_875),
    "vimeo7": (_arch(128, 7, 40), 264, 20_699_363),
    "srblur": (_arch(128, 5, 40, predeblur=True), 302, 23_306_851),
    "deblur": (_arch(128, 5, 40, predeblur=True, hr_in=True), 306, 23_602_019),
}
MMEDIT_VARIANTS = ["edvrm", "edvrm_wotsa", "edvrl", "edvrl_wotsa", "vimeo7"]

TINY = _arch(8, 3, 2, dg=2, e=1)
TINY_WOTSA = _arch(8, 3, 1, tsa=False, dg=2, e=2)


def layout(arch: dict[str, Any]) -> list[tuple[str | None, str, tuple[int, ...]]]:
    """(mmedit key or None, BasicSR key, shape) for every tensor, in state-dict order."""
    c, t = arch["num_feat"], arch["num_frame"]
    sym = {"C": c, "2C": 2 * c, "4C": 4 * c, "TC": t * c, "O": 27 * arch["deformable_groups"],
           "I": arch["num_in_ch"], "Y": arch["num_out_ch"]}
    active = {"all": True, "plain": not arch["with_predeblur"], "predeblur": arch["with_predeblur"],
              "hr_in": arch["hr_in"], "tsa": arch["with_tsa"], "notsa": not arch["with_tsa"]}
    counts = {"e": arch["num_extract_block"], "r": arch["num_reconstruct_block"], "p": 5}
    rows = []
    for line in TEMPLATE.read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("when\t"):
            continue
        when, mm, bs, shape = line.split("\t")
        if active[when]:
            rows.append((None if mm == "-" else mm, bs, tuple(sym[s] if s in sym else int(s)
                                                             for s in shape.split(","))))
    out: list[tuple[str | None, str, tuple[int, ...]]] = []
    i = 0
    while i < len(rows):  # consecutive rows with the same {var} repeat as one block
        var = re.search(r"\{(\w)\}", rows[i][1])
        group = [rows[i]]
        if var:
            while i + len(group) < len(rows) and "{%s}" % var.group(1) in rows[i + len(group)][1]:
                group.append(rows[i + len(group)])
        for n in range(counts[var.group(1)] if var else 1):
            for mm, bs, shape in group:
                fmt = {var.group(1): n} if var else {}
                for suffix, shp in (("weight", shape), ("bias", shape[:1])):
                    out.append((None if mm is None else f"generator.{mm.format(**fmt)}.{suffix}",
                                f"{bs.format(**fmt)}.{suffix}", shp))
        i += len(group)
    return out


def shaped_state_dict(arch: dict[str, Any], *, mmedit: bool = False) -> OrderedDict[str, torch.Tensor]:
    """Real-layout state dict of stride-0 tensors (nothing allocated but one element)."""
    base = torch.zeros(())
    return OrderedDict((mm if mmedit else bs, base.expand(shape)) for mm, bs, shape in layout(arch))


def save_mmedit(sd_basicsr: dict[str, torch.Tensor], arch: dict[str, Any], path: Path) -> None:
    """Save like mmediting's publish_model: legacy format, meta + generator.* state_dict."""
    to_mm = {bs: mm for mm, bs, _ in layout(arch)}
    sd = OrderedDict((to_mm[k], v) for k, v in sd_basicsr.items())
    # like nn.Module.state_dict(): per-module versions in an attribute of the OrderedDict
    modules = {k.rsplit(".", 1)[0] for k in sd}
    metadata = OrderedDict([("", {"version": 1})] + [(m, {"version": 1}) for m in sorted(modules)])
    sd._metadata = metadata  # type: ignore[attr-defined]
    meta = {"mmedit_version": "0.16.1", "mmcv_version": "1.6.2", "iter": 600000, "epoch": 1,
            "config": "model = dict(type='EDVR', generator=dict(type='EDVRNet'))"}
    torch.save({"meta": meta, "state_dict": sd}, path, _use_new_zipfile_serialization=False)


def save_basicsr(sd: dict[str, torch.Tensor], path: Path, key: str = "params") -> None:
    torch.save({key: OrderedDict(sd)}, path)


def random_net_state(arch: dict[str, Any], seed: int) -> OrderedDict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict((bs, torch.randn(shape, generator=gen) * 0.1) for _, bs, shape in layout(arch))


# ---------------------------------------------------------------- the layout fixture itself


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_template_counts_match_official_lists(variant: str) -> None:
    arch, tensors, params = VARIANTS[variant]
    rows = layout(arch)
    assert len(rows) == tensors
    assert sum(math.prod(s) for _, _, s in rows) == params
    assert len({bs for _, bs, _ in rows}) == tensors


@pytest.mark.parametrize("variant", MMEDIT_VARIANTS)
def test_mmedit_keymap_rule(variant: str) -> None:
    for mm, bs, _ in layout(VARIANTS[variant][0]):
        assert mm is not None and convert_mmedit_key(mm) == bs


# ---------------------------------------------------------------- registry


def test_registry_entries() -> None:
    expected_sha = {
        "edvrm_wotsa": "0570e567", "edvrm": "e29b71b5", "edvrl_wotsa": "d895a769", "edvrl": "4509865f",
        "basicsr_edvrm": "32075921", "basicsr_edvrm_wotsa": "1edf645c", "basicsr_edvrl": "9f5f5039",
        "basicsr_edvrl_vimeo": "162b54e4", "basicsr_edvrl_srblur": "983d7b8e",
        "basicsr_edvrl_deblur": "ca46bd8c", "basicsr_edvrl_deblurcomp": "0e988e5c",
    }
    assert set(MODELS) == set(expected_sha) | {"edvr_demo"}
    for name, spec in MODELS.items():
        if name == "edvr_demo":  # the project's own bundled model, retrained at will
            assert spec.bundled and spec.url is None and spec.layout == "mmedit"
            assert spec.sha256 == hash_prefix_from_filename(spec.filename)
            assert spec.task == "sr" and spec.scale == 4 and spec.padding == "reflection_circle"
            assert spec.reds4_psnr is None and "NOT comparable" in spec.description
            continue
        assert spec.name == name and spec.sha256 == expected_sha[name]
        assert not spec.bundled
        if spec.layout == "mmedit":
            assert spec.url == f"{MMEDIT_BASE_URL}restorers/edvr/{spec.filename}"
            assert spec.reds4_psnr is not None and spec.reds4_ssim is not None
        else:
            assert spec.url is None and "drive.google.com" in spec.source
        blur_input = "srblur" in name or "deblur" in name
        assert spec.padding == ("replicate" if blur_input else "reflection_circle")
        assert spec.task == ("deblur" if "deblur" in name else "sr")
        assert spec.scale == (1 if spec.task == "deblur" else 4)
        assert spec.center == spec.num_frames // 2
    assert MODELS["basicsr_edvrl_vimeo"].num_frames == 7 and MODELS["basicsr_edvrl_vimeo"].center == 3


def test_registry_arch_matches_official_layouts() -> None:
    pairs = {"edvrm": "edvrm", "edvrm_wotsa": "edvrm_wotsa", "edvrl": "edvrl", "edvrl_wotsa": "edvrl_wotsa",
             "basicsr_edvrm": "edvrm", "basicsr_edvrm_wotsa": "edvrm_wotsa", "basicsr_edvrl": "edvrl",
             "basicsr_edvrl_vimeo": "vimeo7", "basicsr_edvrl_srblur": "srblur",
             "basicsr_edvrl_deblur": "deblur", "basicsr_edvrl_deblurcomp": "deblur"}
    for name, variant in pairs.items():
        assert MODELS[name].arch_kwargs() == VARIANTS[variant][0]
        assert infer_arch(shaped_state_dict(MODELS[name].arch_kwargs())) == dict(MODELS[name].arch)


def test_hash_rule_and_spec_validation() -> None:
    # torch.hub: the first "-<hex>." match; "-4_" does not match
    assert hash_prefix_from_filename("edvrl_c128b40_8x8_lr2e-4_600k_reds4_20220104-4509865f.pth") == "4509865f"
    assert hash_prefix_from_filename("model.pth") is None
    with pytest.raises(ValueError, match="SHA-256"):
        ModelSpec(name="x", task="sr", scale=4, num_frames=5, arch=TINY | {"num_frame": 5}, filename="x.pth")
    with pytest.raises(ValueError, match="task"):
        ModelSpec(name="x", task="denoise", scale=4, num_frames=3, arch=TINY, filename="x-0123abcd.pth")
    spec = ModelSpec(name="x", task="sr", scale=4, num_frames=3, arch=TINY, filename="x-0123abcd.pth")
    with pytest.raises(TypeError):
        spec.arch["num_feat"] = 1  # type: ignore[index]
    hash(spec)


# ---------------------------------------------------------------- reading + inference


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_infer_arch_official_layouts(variant: str, tmp_path: Path) -> None:
    arch = VARIANTS[variant][0]
    sd = shaped_state_dict(arch)
    path = tmp_path / "basicsr.pth"
    save_basicsr(sd, path)
    got = read_state_dict(path)
    assert list(got) == list(sd)
    assert infer_arch(got) == arch
    if variant in MMEDIT_VARIANTS:
        path = tmp_path / "mmedit.pth"
        save_mmedit(sd, arch, path)
        got = read_state_dict(path)
        assert list(got) == list(sd)
        assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in sd.items()}
        assert infer_arch(got) == arch


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_net_has_exact_official_keys(variant: str) -> None:
    """The network built from the inferred arch has exactly the official keys and shapes."""
    from vsedvr.nets import EDVR

    arch = VARIANTS[variant][0]
    with torch.device("meta"):
        net = EDVR(**infer_arch(shaped_state_dict(arch)))
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == [(bs, s) for _, bs, s in layout(arch)]


def test_load_real_sized_mmedit_file(tmp_path: Path) -> None:
    arch = VARIANTS["edvrm"][0]
    path = tmp_path / "edvrm_x4_8x4_600k_reds_20210625-e29b71b5.pth"
    save_mmedit(shaped_state_dict(arch), arch, path)
    net = load_model(path)
    assert (net.scale, net.num_frames, net.center) == (4, 5, 2)
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())


def test_bare_module_prefixed_and_params_ema(tmp_path: Path) -> None:
    sd = random_net_state(TINY, 0)
    ema = OrderedDict((k, v + 1) for k, v in sd.items())
    bare = tmp_path / "bare.pth"
    torch.save(OrderedDict(("module." + k, v) for k, v in sd.items()), bare)
    assert all(torch.equal(a, b) for a, b in zip(read_state_dict(bare).values(), sd.values()))
    assert list(read_state_dict(bare)) == list(sd)

    both = tmp_path / "both.pth"
    torch.save({"params": sd, "params_ema": ema}, both)
    assert torch.equal(read_state_dict(both)["conv_last.bias"], sd["conv_last.bias"])  # BasicSR default
    assert torch.equal(read_state_dict(both, param_key="params_ema")["conv_last.bias"], ema["conv_last.bias"])
    only_ema = tmp_path / "ema.pth"
    save_basicsr(ema, only_ema, key="params_ema")
    assert torch.equal(read_state_dict(only_ema)["conv_last.bias"], ema["conv_last.bias"])


@pytest.mark.parametrize("arch", [TINY, TINY_WOTSA], ids=["tsa", "wotsa"])
def test_both_layouts_give_identical_outputs(arch: dict[str, Any], tmp_path: Path) -> None:
    sd = random_net_state(arch, 1)
    p_mm, p_bs = tmp_path / "mm.pth", tmp_path / "bs.pth"
    save_mmedit(sd, arch, p_mm)
    save_basicsr(sd, p_bs)
    net_mm, net_bs = load_model(p_mm), load_model(str(p_bs))
    for k, v in sd.items():
        assert torch.equal(net_mm.state_dict()[k], v)
    x = torch.rand(1, arch["num_frame"], 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        a, b = net_mm(x), net_bs(x)
    assert a.shape == (1, 3, 32, 32)
    assert torch.equal(a, b)


# ---------------------------------------------------------------- errors


def _expect(path: Path, *fragments: str) -> ModelError:
    with pytest.raises(ModelError) as info:
        load_model(path)
    for f in fragments:
        assert f in str(info.value), str(info.value)
    return info.value


def test_strict_missing_key(tmp_path: Path) -> None:
    sd = random_net_state(TINY, 3)
    del sd["conv_hr.bias"]
    save_basicsr(sd, tmp_path / "m.pth")
    _expect(tmp_path / "m.pth", "missing keys", "conv_hr.bias", str(tmp_path / "m.pth"))


def test_strict_unexpected_key(tmp_path: Path) -> None:
    sd = random_net_state(TINY, 3)
    sd["extra_head.weight"] = torch.zeros(3)
    save_basicsr(sd, tmp_path / "u.pth")
    _expect(tmp_path / "u.pth", "unexpected keys", "extra_head.weight")


def test_strict_mis_shaped_key(tmp_path: Path) -> None:
    sd = random_net_state(TINY, 3)
    sd["reconstruction.1.conv2.weight"] = torch.zeros(8, 8, 1, 1)
    save_basicsr(sd, tmp_path / "s.pth")
    _expect(tmp_path / "s.pth", "mis-shaped", "reconstruction.1.conv2.weight", "(8, 8, 1, 1)", "(8, 8, 3, 3)")


def test_many_missing_keys_are_summarised(tmp_path: Path) -> None:
    sd = random_net_state(TINY, 3)
    removed = [k for k in sd if k.startswith("fusion.spatial")]
    for k in removed:
        del sd[k]
    save_basicsr(sd, tmp_path / "f.pth")
    _expect(tmp_path / "f.pth", "missing keys", "fusion.spatial_attn1.weight", f"({len(removed)} in all)")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint\n")
    err = _expect(junk, str(junk), "not a readable PyTorch checkpoint", "EDVR", "starts with b'this'")
    assert "mmediting" in str(err)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    _expect(empty, str(empty), "not a readable PyTorch checkpoint")


def test_not_edvr(tmp_path: Path) -> None:
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"generator.conv1.weight": torch.zeros(4, 3, 3, 3)}}, other)
    _expect(other, str(other), "does not look like an EDVR network", "conv_first.weight")
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    _expect(tensor, str(tensor), "not a dict")
    nested = tmp_path / "nested.pth"
    torch.save({"params": {"conv_first.weight": torch.zeros(1), "cfg": {"a": 1}}}, nested)
    _expect(nested, "not a state dict", "cfg")


def test_unknown_name_or_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="edvrm_wotsa.*basicsr_edvrl_deblurcomp") as info:
        load_model("edvr_xl")
    assert "'edvr_xl'" in str(info.value)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.pth")
    with pytest.raises(ModelError, match="is not a file"):
        load_model(tmp_path)


def test_zoo_name_file_with_wrong_architecture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose hash matches but whose tensors are not the spec's architecture."""
    import hashlib

    monkeypatch.setenv("VSEDVR_HOME", str(tmp_path))
    src = tmp_path / "src.pth"
    save_basicsr(random_net_state(TINY, 4), src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()[:8]
    spec = ModelSpec(name="wrong", task="sr", scale=4, num_frames=3, arch=TINY | {"num_feat": 16},
                     filename=f"wrong-{sha}.pth")
    src.rename(tmp_path / spec.filename)
    with pytest.raises(ModelError, match="differs from model 'wrong'.*num_feat"):
        load_model(spec)


def test_zoo_spec_hand_placed_file_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    monkeypatch.setenv("VSEDVR_HOME", str(tmp_path))
    src = tmp_path / "src.pth"
    save_mmedit(random_net_state(TINY, 7), TINY, src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()[:8]
    spec = ModelSpec(name="tiny", task="sr", scale=4, num_frames=3, arch=TINY, filename=f"tiny-{sha}.pth",
                     layout="mmedit", source="made by the test")
    with pytest.raises(ModelError, match="made by the test"):
        load_model(spec)
    src.rename(tmp_path / spec.filename)
    net = load_model(spec, progress=False)
    assert (net.scale, net.num_frames, net.center) == (4, 3, 1)


def test_basicsr_zoo_file_missing_says_where_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSEDVR_HOME", str(tmp_path))
    with pytest.raises(ModelError) as info:
        load_model("basicsr_edvrl_deblur")
    msg = str(info.value)
    assert str(tmp_path / "EDVR_L_deblur_REDS_official-ca46bd8c.pth") in msg
    assert "drive.google.com" in msg and "download_pretrained_models.py" in msg
    assert not list(tmp_path.iterdir())  # nothing created


def test_bundled_spec_missing_file(tmp_path: Path) -> None:
    spec = ModelSpec(name="demo", task="sr", scale=4, num_frames=3, arch=TINY,
                     filename="vsedvr_demo_does_not_exist-0123abcd.pth", bundled=True)
    with pytest.raises(ModelError, match="vsedvr"):
        fetch(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_to_cuda(tmp_path: Path) -> None:
    path = tmp_path / "bs.pth"
    save_basicsr(random_net_state(TINY, 5), path)
    net = load_model(path, device="cuda")
    assert all(p.device.type == "cuda" for p in net.state_dict().values())
    x = torch.rand(1, 3, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        torch.testing.assert_close(net(x.cuda()).cpu(), load_model(path)(x), rtol=1e-4, atol=1e-4)
