"""Every fix an error message suggests works when pasted: the code between backticks is run on the
clip that was refused, and Restore then accepts the result and renders it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import vapoursynth as vs

core = vs.core
W, H = 16, 12


def refusal(clip: vs.VideoNode, **kwargs: object) -> str:
    with pytest.raises(vs.Error) as err:
        core.edvr.Restore(clip, **kwargs)
    return str(err.value)


def pasted_fixes(message: str) -> list[str]:
    """The `clip = ...` statements a message suggests, in order."""
    fixes = re.findall(r"`(clip = [^`]+)`", message)
    assert fixes, f"no pasteable fix in: {message}"
    return fixes


def paste(fix: str, clip: vs.VideoNode) -> vs.VideoNode:
    scope = {"clip": clip, "core": core, "vs": vs}
    exec(fix, scope)  # noqa: S102 - the code is the message's suggestion, which is what is tested
    return scope["clip"]


def restores(clip: vs.VideoNode, model: Path) -> None:
    out = core.edvr.Restore(clip, model=str(model))
    frame = out.get_frame(out.num_frames - 1)
    assert (frame.width, frame.height) == (4 * clip.width, 4 * clip.height)


def blank(fmt: int, width: int = W, height: int = H) -> vs.VideoNode:
    return core.std.BlankClip(width=width, height=height, format=fmt, length=2, color=None)


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV420P10, vs.GRAY8, vs.RGB24, vs.RGB48, vs.RGB30])
def test_constant_format_fix_works(fmt: int, tiny_checkpoint: Path) -> None:
    clip = blank(fmt)
    message = refusal(clip)
    assert core.get_video_format(fmt).name in message
    fixes = pasted_fixes(message)
    if core.get_video_format(fmt).color_family == vs.RGB:
        assert "matrix" in message and "matrix_in" not in fixes[0]  # zimg refuses a YUV matrix for RGB input
        assert len(fixes) == 1
    else:  # to RGBS, Restore, back to YUV for output (tested through vspipe below)
        assert len(fixes) == 3 and "edvr.Restore" in fixes[1] and "matrix_s=" in fixes[2], fixes
    restores(paste(fixes[0], clip), tiny_checkpoint)


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.RGBS, vs.RGB24])
def test_variable_size_fix_works(fmt: int, tiny_checkpoint: Path) -> None:
    clip = core.std.Splice([blank(fmt), blank(fmt, 2 * W, 2 * H)], mismatch=True)
    message = refusal(clip)
    assert "variable size" in message
    fix = pasted_fixes(message)[0]  # the way to RGBS (YUV: then Restore, and back)
    assert "width=" in fix and "height=" in fix
    fixed = paste(fix, clip)
    assert (fixed.width, fixed.height) == (W, H)  # the first frame's size
    restores(fixed, tiny_checkpoint)


@pytest.mark.parametrize(("formats", "which"), [((vs.YUV420P8, vs.YUV444P8), 0), ((vs.RGB24, vs.RGB48), 1)])
def test_variable_format_fix_for_its_frames_works(formats: tuple[int, int], which: int, tiny_checkpoint: Path) -> None:
    clip = core.std.Splice([blank(f) for f in formats], mismatch=True)
    assert clip.format is None or clip.format.id == 0
    fixes = pasted_fixes(refusal(clip))
    assert len(fixes) == 2  # one for YUV frames, one for RGB frames
    restores(paste(fixes[which], clip), tiny_checkpoint)


@pytest.mark.parametrize("typed", ["edvr-demo", "edvr_dmeo", "EDVR_demo", "edvrdemo"])
def test_misspelt_model_gets_did_you_mean(typed: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VSEDVR_HOME", str(tmp_path))  # offline: the suggestion is the bundled model
    clip = blank(vs.RGBS)
    message = refusal(clip, model=typed)
    suggested = re.search(r'Did you mean "([^"]+)"', message)
    assert suggested, message
    assert suggested.group(1) == "edvr_demo"
    out = core.edvr.Restore(clip, model=suggested.group(1))
    assert out.get_frame(0).width == 4 * W


def test_a_path_gets_no_did_you_mean(tmp_path: Path) -> None:
    message = refusal(blank(vs.RGBS), model=str(tmp_path / "edvrm.pth"))
    assert "does not exist" in message and "Did you mean" not in message


# ----------------------------------------------------------------------------- wrong types (issue 26)

@pytest.mark.parametrize(("name", "value"), [("tile", 64.5), ("tile", [64, 48.5]), ("tile_overlap", 16.5),
                                             ("tile", float("nan")), ("tile_overlap", 1e300)])
def test_fractional_pixel_counts_are_named(name: str, value: object, tiny_checkpoint: Path) -> None:
    """tile and tile_overlap are registered as floats, so a fraction reaches the plugin's check
    (registered as int, VapourSynth's binding truncated 64.5 to 64 without a word)."""
    message = refusal(blank(vs.RGBS), model=str(tiny_checkpoint), **{name: value})
    assert message.startswith(f'Restore: "{name}" takes whole numbers of input pixels'), message
    assert "//" in message  # how to get a whole number


def test_whole_floats_are_pixel_counts(tiny_checkpoint: Path) -> None:
    """tile=clip.width / 2 is a float; a whole one is accepted as before."""
    clip = blank(vs.RGBS, 32, 24)
    whole = core.edvr.Restore(clip, model=str(tiny_checkpoint), tile=[clip.width / 2, clip.height / 2],
                              tile_overlap=8.0)
    plain = core.edvr.Restore(clip, model=str(tiny_checkpoint), tile=[16, 12], tile_overlap=8)
    assert bytes(whole.get_frame(1)[0]) == bytes(plain.get_frame(1)[0])


@pytest.mark.parametrize(("name", "value"), [("tile", "big"), ("tile", 64.5), ("tile", [64, "48"]),
                                             ("tile_overlap", "16"), ("scenechange", "yes"), ("compile", 0.5),
                                             ("device", 0), ("precision", 16)])
def test_restore_function_names_wrong_types(name: str, value: object, tiny_checkpoint: Path) -> None:
    """vsedvr.restore(), the typed function, checks types before VapourSynth's binding converts them."""
    import vsedvr

    with pytest.raises(vs.Error) as err:
        vsedvr.restore(blank(vs.RGBS), tiny_checkpoint, **{name: value})  # type: ignore[arg-type]
    assert str(err.value).startswith(f'Restore: "{name}" must be '), str(err.value)
    assert repr(value) in str(err.value)


def test_what_the_binding_refuses_before_the_plugin(tiny_checkpoint: Path) -> None:
    """Documented limit (docs/usage.md, "Wrong types"): a string for a number parameter of
    core.edvr.Restore fails in VapourSynth's binding, with Python's message and no parameter name.
    If this starts failing, the binding names it now: update the docs."""
    with pytest.raises(ValueError, match="could not convert string to float: 'big'"):
        core.edvr.Restore(blank(vs.RGBS), model=str(tiny_checkpoint), tile="big")
    with pytest.raises(ValueError, match="invalid literal for int"):
        core.edvr.Restore(blank(vs.RGBS), model=str(tiny_checkpoint), scenechange="yes")


def test_yuv_fix_pasted_into_a_script_renders_through_vspipe_y4m(tmp_path: Path, tiny_checkpoint: Path, vspipe: str,
                                                                 vs_env: dict[str, str]) -> None:
    """The lines a YUV refusal suggests, pasted into a script (Restore added if they leave it out),
    render through `vspipe -c y4m` as README's commands do."""
    fixes = pasted_fixes(refusal(blank(vs.YUV420P8)))
    restore = f"clip = core.edvr.Restore(clip, model=r'{tiny_checkpoint}')"
    lines = [restore if "edvr.Restore" in fix else fix for fix in fixes]
    if restore not in lines:
        lines.insert(1, restore)
    script = tmp_path / "pasted.vpy"
    script.write_text("import vapoursynth as vs\ncore = vs.core\n"
                      f"clip = core.std.BlankClip(width={W}, height={H}, format=vs.YUV420P8, length=2)\n"
                      + "\n".join(lines) + "\nclip.set_output()\n")
    done = subprocess.run([vspipe, "-c", "y4m", str(script), str(tmp_path / "out.y4m")], env=vs_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.y4m").read_bytes().startswith(b"YUV4MPEG2 C420p10 W64 H48")  # 10-bit 4:2:0, 4x
