"""Hypothesis-generated arguments for core.edvr.Restore, through a real VapourSynth core.

Every call must either succeed (and then render a finite frame of the right size) or raise a
``vs.Error`` that starts with ``Restore: `` and names the offending parameter. The only other
exceptions allowed are the ``TypeError`` / ``ValueError`` / ``OverflowError`` that VapourSynth's
own Python binding raises while converting a value to the registered type (``int`` for
``scenechange`` and ``compile``, ``float`` for ``tile`` and ``tile_overlap``: a fraction reaches the
plugin and is refused by name), before the plugin is called at all; the test checks
that such an exception comes from ``vapoursynth.pyx`` and not from vsedvr.

The same property also runs in a child process, so that a crash (a signal, e.g. SIGSEGV) shows up
as a negative return code instead of taking pytest down with it.

Counts of what was tried and what was raised are printed (``pytest -s``) for the robustness report.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import vapoursynth as vs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsedvr.filter.options import NAMES as PARAMETERS
from vsedvr.filter.windows import PADDINGS
from vsedvr.zoo import MODELS

TESTS = Path(__file__).resolve().parent
W, H, LENGTH = 16, 12, 3
IN_PROCESS_EXAMPLES = 150
CHILD_EXAMPLES = 30
#: VapourSynth core messages about an argument's shape name it without quotes.
CORE_MESSAGE = re.compile(r"^Restore: (?:argument (\w+) |Function does not take argument\(s\) named (\w+))")
#: Binding-level conversion errors (raised before the plugin runs) come from here.
BINDING_FILE = "vapoursynth.pyx"


# ----------------------------------------------------------------------------- inputs on disk

def build_inputs(folder: Path) -> dict[str, str]:
    """Checkpoint-like files that are not what Restore wants (and one that is), by label."""
    import torch
    import torchvision

    from vsedvr.nets import EDVR

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    def keep(label: str, path: Path) -> None:
        files[label] = str(path)

    torch.manual_seed(0)
    net = EDVR(num_feat=8, num_frame=5, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1)
    state = net.state_dict()
    torch.save({"params": state}, folder / "tiny.pth")
    keep("tiny", folder / "tiny.pth")
    # another network entirely: a torchvision resnet18 (random init, nothing downloaded)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), folder / "resnet18.pth")
    keep("resnet18", folder / "resnet18.pth")
    raw = (folder / "tiny.pth").read_bytes()
    (folder / "truncated.pth").write_bytes(raw[:len(raw) // 2])
    keep("truncated", folder / "truncated.pth")
    (folder / "empty.pth").write_bytes(b"")
    keep("empty", folder / "empty.pth")
    (folder / "text.pth").write_text("this is not a checkpoint\n")
    keep("text", folder / "text.pth")
    (folder / "random.pth").write_bytes(np.random.default_rng(0).bytes(5000))
    keep("random bytes", folder / "random.pth")
    with zipfile.ZipFile(folder / "zip.pth", "w") as z:  # a zip, like torch's format, but not torch's
        z.writestr("archive/data.pkl", b"not a pickle")
    keep("foreign zip", folder / "zip.pth")
    torch.save([1, 2, 3], folder / "list.pth")
    keep("a list", folder / "list.pth")
    torch.save({"params": {"conv_first.weight": 3}}, folder / "notensor.pth")
    keep("non-tensor entry", folder / "notensor.pth")
    misshaped = dict(state)
    misshaped["conv_last.weight"] = torch.zeros(3, 7, 3, 3)
    torch.save({"params": misshaped}, folder / "misshaped.pth")
    keep("mis-shaped EDVR", folder / "misshaped.pth")
    partial = {k: v for k, v in state.items() if not k.startswith("conv_l2_1.")}
    torch.save({"params": partial}, folder / "partial.pth")
    keep("EDVR missing keys", folder / "partial.pth")
    (folder / "a_folder.pth").mkdir(exist_ok=True)
    keep("directory", folder / "a_folder.pth")
    keep("missing", folder / "does_not_exist.pth")
    keep("inside a file", folder / "tiny.pth" / "x.pth")
    keep("unknown user", "~no_such_user_vsedvr/x.pth")
    keep("name too long", "m" * 5000)
    keep("device file", "/dev/null")
    return files


def dead_url() -> str:
    """A base URL where nobody listens: zoo names fail fast instead of reaching the internet."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


# ----------------------------------------------------------------------------- strategies

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-8, max_value=64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=4),
    st.lists(st.text(max_size=4), min_size=1, max_size=3),
    st.lists(st.floats(allow_nan=True), min_size=1, max_size=3),
    st.sampled_from(["clip", "frame", "function", "object", "dict"]),  # placeholders, see realise()
)

TILE_SIZES = st.integers(min_value=-8, max_value=80) | st.sampled_from([4, 8, 12, 16, 2**31, 2**62, -(2**63)])


def valid_strategies(files: dict[str, str]) -> dict[str, st.SearchStrategy]:
    """Values Restore must accept on this machine (CPU only: no "cuda", no fp16/bf16)."""
    import torch

    cuda = torch.cuda.is_available()
    multiple4 = st.integers(min_value=1, max_value=24).map(lambda v: 4 * v)
    return {
        "model": st.just(files["tiny"]),
        "device": st.sampled_from(["auto", "cpu", "cuda", "cuda:0"] if cuda else ["auto", "cpu"]),
        "padding": st.sampled_from(PADDINGS),
        "scenechange": st.sampled_from([0, 1, True, False]),
        "tile": st.one_of(st.lists(multiple4, min_size=1, max_size=2), multiple4, st.just(2**40)),
        "tile_overlap": st.one_of(multiple4, st.just(0)),
        "precision": st.sampled_from(["auto", "fp32"]),
        "compile": st.sampled_from([0, False]),  # compile=True is tested once, in test_filter (a minute)
    }


def any_strategies(files: dict[str, str]) -> dict[str, st.SearchStrategy]:
    """Any value at all, biased towards the plausible mistakes for each parameter."""
    return {
        "model": st.one_of(st.sampled_from(sorted(files.values())), st.sampled_from(sorted(MODELS)),
                           st.text(max_size=20), ANY_VALUE),
        "device": st.one_of(st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:-1", "cuda:",
                                             "cuda:99999999999999999999", "gpu", "CPU", " cpu", "cpu\x00",
                                             "cuda:\u0663", "mps", "cuda:0:0", ""]),
                            st.text(max_size=10), ANY_VALUE),
        "padding": st.one_of(st.sampled_from([*PADDINGS, "", "REPLICATE", "mirror", "reflection_circle "]),
                             st.text(max_size=10), ANY_VALUE),
        "scenechange": st.one_of(st.integers(min_value=-3, max_value=3), st.booleans(), ANY_VALUE),
        "tile": st.one_of(st.lists(TILE_SIZES, min_size=0, max_size=4), TILE_SIZES, ANY_VALUE),
        "tile_overlap": st.one_of(st.integers(min_value=-8, max_value=40), st.sampled_from([2**62, -(2**63)]),
                                  ANY_VALUE),
        "precision": st.one_of(st.sampled_from(["auto", "fp32", "fp16", "bf16", "fp8", "FP32", "", "half"]),
                               st.text(max_size=6), ANY_VALUE),
        "compile": st.one_of(st.integers(min_value=-3, max_value=3), ANY_VALUE).filter(_not_one),
    }


def _not_one(value: Any) -> bool:
    """Anything VapourSynth could pass as compile=1: that would compile the network (a minute a call)."""
    values = value if isinstance(value, list) else [value]
    return not any(isinstance(v, (int, float)) and v == 1 for v in values)


def call_strategy(files: dict[str, str]) -> st.SearchStrategy[tuple[str, str | None, dict[str, Any]]]:
    """(mode, the parameter made bad or None, kwargs) for one Restore call.

    valid: every parameter given is valid, so the call must succeed. one bad: all valid but one, which
    gets any value, so an error must name that one. chaos: a random subset, each with any value.
    """
    good, bad = valid_strategies(files), any_strategies(files)
    valid = st.fixed_dictionaries({"model": good["model"]},
                                  optional={k: v for k, v in good.items() if k != "model"})
    # chaos: the model is the tiny EDVR half the time, so that the checks after loading it are reached
    chaos = st.fixed_dictionaries({}, optional={**bad, "model": good["model"] | bad["model"]})

    def one_bad(name: str) -> st.SearchStrategy:
        return st.tuples(valid, bad[name]).map(lambda t: ("one bad", name, {**t[0], name: t[1]}))

    return st.one_of(valid.map(lambda kw: ("valid", None, kw)),
                     st.sampled_from(PARAMETERS).flatmap(one_bad),
                     chaos.map(lambda kw: ("chaos", None, kw)))


# ----------------------------------------------------------------------------- the property

class Tally:
    """What the fuzzing saw: outcomes and the kinds of errors."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.parameters_given: Counter[str] = Counter()

    def as_dict(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes), "kinds": dict(self.kinds.most_common()),
                "parameters_given": dict(self.parameters_given)}


def realise(kwargs: dict[str, Any], clip: vs.VideoNode) -> dict[str, Any]:
    """Replace the placeholder names of odd Python objects by the objects."""
    odd = {"clip": clip, "frame": clip.get_frame(0), "function": lambda: 1, "object": object(), "dict": {"a": 1}}
    return {k: odd[v] if isinstance(v, str) and v in odd else v for k, v in kwargs.items()}


def error_kind(message: str) -> str:
    """A short label for a message: the parameter and the first words after it."""
    m = re.match(r'^Restore: "(\w+)"[: ]*(.*)', message, re.S)
    if m:
        words = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]|\([^)]*\)|/\S*|-?\b\d+\b", "…", m.group(2)).split()
        return f'"{m.group(1)}": ' + " ".join(words[:6])
    m = CORE_MESSAGE.match(message)
    if m:
        return "VapourSynth core: " + re.sub(r"argument \w+|named \w+", "argument X", message[9:])[:60]
    return message[:60]


def named_parameter(message: str) -> str | None:
    """The parameter a Restore error is about: vsedvr quotes it first, VapourSynth's core says 'argument X'."""
    m = re.match(r'^Restore: "(\w+)"', message) or CORE_MESSAGE.match(message)
    return next((g for g in m.groups() if g), None) if m else None


def check_call(clip: vs.VideoNode, mode: str, bad: str | None, kwargs: dict[str, Any], tally: Tally) -> None:
    """The property: success with a sane frame, or an error that names the right parameter.

    mode "valid": must succeed. "one bad": an error must name ``bad``. "chaos": an error must name
    a parameter that was given, or "model" (the default model cannot be fetched offline).
    """
    tally.outcomes[f"mode {mode}"] += 1
    tally.parameters_given.update(list(kwargs))
    try:
        out = vs.core.edvr.Restore(clip, **kwargs)
    except vs.Error as e:
        message = str(e)
        assert mode != "valid", f"valid arguments {kwargs!r} refused: {message}"
        assert message.startswith("Restore: "), message
        assert "Traceback" not in message, message  # an unexpected exception inside create()
        named = named_parameter(message)
        assert named is not None, f"no parameter named in: {message}"
        if mode == "one bad":
            assert named == bad, (bad, kwargs, message)
        else:
            assert named in kwargs or named == "model", (named, sorted(kwargs), message)
        tally.outcomes["vs.Error (core)" if CORE_MESSAGE.match(message) else "vs.Error (vsedvr)"] += 1
        tally.kinds[error_kind(message)] += 1
        return
    except (TypeError, ValueError, OverflowError) as e:
        assert mode != "valid", f"valid arguments {kwargs!r} refused: {e!r}"
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = tb.tb_frame.f_code.co_filename if tb is not None else "?"
        assert where.endswith(BINDING_FILE), f"{type(e).__name__} from {where}: {e}"
        tally.outcomes["binding conversion error"] += 1
        tally.kinds[f"binding: {type(e).__name__}"] += 1
        return
    frame = out.get_frame(LENGTH // 2)
    planes = np.stack([np.asarray(frame[p]) for p in range(3)])
    assert planes.shape == (3, 4 * H, 4 * W), planes.shape
    assert np.isfinite(planes).all()
    tally.outcomes["accepted and rendered"] += 1


def fuzz(files: dict[str, str], clip: vs.VideoNode, tally: Tally, max_examples: int) -> None:
    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(call_strategy(files))
    def run(call: tuple[str, str | None, dict[str, Any]]) -> None:
        mode, bad, kwargs = call
        check_call(clip, mode, bad, realise(kwargs, clip), tally)

    run()


def source_clip() -> vs.VideoNode:
    sys.path.insert(0, str(TESTS))
    import clips

    return clips.moving_pattern(W, H, LENGTH)


# ----------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_inputs(tmp_path_factory.mktemp("fuzz-inputs"))


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Zoo names resolve to an empty cache and a dead mirror (no internet, no user cache)."""
    monkeypatch.setenv("VSEDVR_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VSEDVR_BASE_URL", dead_url())


def test_each_bad_input_file_is_a_model_error(files: dict[str, str], offline: None) -> None:
    """Every file in the set, once, whatever hypothesis draws: all but the tiny EDVR are refused."""
    clip = source_clip()
    for label, path in files.items():
        if label == "tiny":
            continue
        with pytest.raises(vs.Error) as err:
            vs.core.edvr.Restore(clip, model=path)
        text = str(err.value)
        assert text.startswith('Restore: "model"') and "Traceback" not in text, (label, text)
    assert vs.core.edvr.Restore(clip, model=files["tiny"]).get_frame(0).width == 4 * W


@pytest.mark.parametrize("name", ["Model", "tiles", "overlap", "clip2", "Tile"])
def test_unknown_argument_names_are_named(files: dict[str, str], name: str) -> None:
    """VapourSynth's core refuses names Restore does not register, before the plugin runs."""
    with pytest.raises(vs.Error) as err:
        vs.core.edvr.Restore(source_clip(), model=files["tiny"], **{name: 1})
    assert str(err.value).startswith("Restore: ") and name in str(err.value), str(err.value)
    assert named_parameter(str(err.value)) == name


@pytest.mark.slow(reason=f"{IN_PROCESS_EXAMPLES} examples; the child-process test keeps the same property "
                         f"({CHILD_EXAMPLES} examples) in make test")
def test_fuzzed_arguments_in_process(files: dict[str, str], offline: None) -> None:
    tally = Tally()
    fuzz(files, source_clip(), tally, IN_PROCESS_EXAMPLES)
    print("\nfuzz (in process):", json.dumps(tally.as_dict(), indent=1, ensure_ascii=False))
    assert sum(tally.outcomes.values()) >= IN_PROCESS_EXAMPLES
    assert tally.outcomes["accepted and rendered"] > 0 and tally.outcomes["vs.Error (vsedvr)"] > 0


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
import test_fuzz_arguments as t
files = json.loads(sys.argv[1])
tally = t.Tally()
t.fuzz(files, t.source_clip(), tally, {examples})
print("TALLY " + json.dumps(tally.as_dict()), flush=True)
"""


def test_fuzzed_arguments_in_a_child_process_do_not_crash(files: dict[str, str], tmp_path: Path) -> None:
    """The same property in a subprocess: a segfault or abort would be a negative return code."""
    env = dict(os.environ, VSEDVR_HOME=str(tmp_path / "cache"), VSEDVR_BASE_URL=dead_url())
    code = CHILD.format(tests=str(TESTS), examples=CHILD_EXAMPLES)
    done = subprocess.run([sys.executable, "-c", code, json.dumps(files)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode >= 0, f"child killed by signal {-done.returncode}: {done.stderr[-3000:]}"
    assert done.returncode == 0, done.stderr[-5000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("TALLY ")][-1]
    tally = json.loads(line[len("TALLY "):])
    print("\nfuzz (child process):", json.dumps(tally, indent=1, ensure_ascii=False))
    assert sum(tally["outcomes"].values()) >= CHILD_EXAMPLES
