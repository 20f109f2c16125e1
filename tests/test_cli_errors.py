"""Every subcommand with malformed input: exit 2 (usage) or 1 (runtime), one line naming the option and value.

Calls run in-process through ``fastconv.cli.main``: an exception that escapes it
(what a user sees as a traceback) fails the test.  A few run as real processes
too, to check the installed script.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fastconv.cli import main

BIG = "99999999999999999999"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "residual.json").write_text('{"type": "Residual"}')
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "notjson.json").write_text("{not json")
    (tmp_path / "unknown.json").write_text('[{"type": "Conv3d"}]')
    (tmp_path / "badargs.json").write_text('[{"type": "Conv2d", "in_channels": 1}]')
    (tmp_path / "broken.py").write_text("def f(:\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "ok.py").write_text("x = 1\n")
    (tmp_path / "keras.json").write_text(json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
    np.save(tmp_path / "one.npy", np.ones(3))
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    (tmp_path / "garbage.npz").write_text("garbage")
    return tmp_path


# (argv, exit code, text the one-line message must contain); {d} is the files folder.
CASES = [
    # solve
    ("solve --input " + BIG + " --output 1 --channels 1,2", 2, "--input must fit in int64"),
    ("solve --input 28 --output " + BIG + " --channels 1,2", 2, "--output must fit in int64"),
    ("solve --input 28 --output 7 --channels 1," + BIG, 2, "--channels"),
    ("solve --input 0 --output 7 --channels 1,2", 2, "--input must be positive"),
    ("solve --input 28x --output 7 --channels 1,2", 2, "--input must be a size"),
    ("solve --input 28 --output 7 --channels 1,x", 2, "--channels"),
    ("solve --input 28 --output 7 --channels 1,2 --kernel 5:2", 2, "--kernel range is reversed"),
    ("solve --input 28 --output 7 --channels 1,2 --kernel 0:3", 2, "--kernel must be at least 1"),
    ("solve --input 28 --output 7 --channels 1,2 --kernel 1:" + BIG, 2, "--kernel must fit in int64"),
    ("solve --input 28 --output 7 --channels 1,2 --stride a:b", 2, "--stride must be a range"),
    ("solve --input 28 --output 7 --channels 1,2 --top -1", 2, "--top must be non-negative, got -1"),
    ("solve --input 28 --output 7 --channels 1,2 --block conv,bogus", 2, "--block"),
    ("solve --input 64 --output 1 --channels 1,2,3,4,5 --padding 0:1000000", 2, "search space too large"),
    ("solve --input 28 --output 7 --channels 1,2 --objective speed", 2, "invalid choice: 'speed'"),
    # shape
    ("shape conv --input 224 --kernel 3 --stride 0", 2, "stride must be positive, got 0"),
    ("shape conv --input " + BIG + " --kernel 3", 2, "must fit in int64"),
    ("shape conv --input 224 --kernel x", 2, "expected an int or HxW, got 'x'"),
    ("shape conv --input 3 --kernel 5", 2, "larger than the padded input size 3"),
    ("shape pool --input 8 --kernel 2 --padding 2", 2, "padding should be at most half"),
    ("shape transpose --input 5 --kernel 3 --padding 9223372036854775807", 2, "overflows int64"),
    ("shape same --input 5 --kernel 3 --stride -2", 2, "stride must be positive"),
    ("shape conv --input 224x224x3 --kernel 3", 2, "pair"),
    ("shape conv --input 224 --kernel 3 --padding 1x2x3", 2, "padding"),
    # summary
    ("summary {d}/residual.json --input 1x8x8", 2, "Residual needs a 'body'"),
    ("summary {d}/deep.json --input 1x8x8", 2, "nested too deeply"),
    ("summary {d}/notjson.json --input 1x8x8", 2, "MODEL"),
    ("summary {d}/unknown.json --input 1x8x8", 2, "unknown layer type 'Conv3d'"),
    ("summary {d}/badargs.json --input 1x8x8", 2, "MODEL"),
    ("summary {d}/missing.json --input 1x8x8", 2, "No such file"),
    ("summary {d}/broken.py:f --input 1x8x8", 2, "cannot import"),
    ("summary {d}/raises.py:f --input 1x8x8", 2, "boom at import"),
    ("summary {d}/ok.py:nothing --input 1x8x8", 2, "nothing"),
    ("summary {d}/residual.json --input 1x8", 2, "input"),
    # bench
    ("bench --threads 0", 2, "--threads must be in [1, 1024], got 0"),
    ("bench --threads 100000", 2, "--threads must be in [1, 1024], got 100000"),
    ("bench --repeats 0", 2, "--repeats must be positive, got 0"),
    ("bench --repeats -3", 2, "--repeats must be positive, got -3"),
    ("bench --rounds 0", 2, "--rounds must be positive, got 0"),
    ("bench --threads two", 2, "invalid int value: 'two'"),
    ("bench --shapes nope --repeats 1", 2, "unknown shape"),
    # demo
    ("demo --batch-size 0", 2, "--batch-size must be positive, got 0"),
    ("demo --batch-size -5", 2, "--batch-size must be positive, got -5"),
    ("demo --epochs 0", 2, "--epochs must be positive, got 0"),
    ("demo --lr -1", 2, "--lr must be a positive number, got -1.0"),
    ("demo --lr nan", 2, "--lr must be a positive number, got nan"),
    ("demo --plot /nonexistent-folder/x.png", 2, "--plot: folder '/nonexistent-folder' does not exist"),
    # keras2torch
    ("keras2torch {d}/keras.json --weights {d}/one.npy", 2, "got one array"),
    ("keras2torch {d}/keras.json --weights {d}/corrupt.npz", 2, "--weights"),
    ("keras2torch {d}/keras.json --weights {d}/garbage.npz", 2, "--weights"),
    ("keras2torch {d}/keras.json --weights {d}/missing.npz", 2, "No such file"),
    ("keras2torch {d}/missing.json", 2, "No such file"),
    ("keras2torch {d}/notjson.json", 2, "notjson.json"),
    # top level
    ("", 2, "required: command"),
    ("frobnicate", 2, "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, code, text", CASES, ids=[c[0].replace("{d}/", "") or "<none>" for c in CASES])
def test_bad_input_is_one_line_and_an_exit_code(argv, code, text, files, capsys):
    args = argv.format(d=files).split()
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse's parser.error: usage
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == code, (rc, out, err)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert text in last, err
    assert "Traceback" not in err and last.startswith("fastconv"), err


@pytest.mark.parametrize(
    "argv, code",
    [
        (["shape", "conv", "--input", "224", "--kernel", "3", "--stride", "0"], 2),
        (["summary", "deep.json", "--input", "1x8x8"], 2),
        (["keras2torch", "keras.json", "--weights", "one.npy"], 2),
    ],
    ids=["stride0", "deep-json", "npy-weights"],
)
def test_installed_script_prints_no_traceback(argv, code, files):
    proc = subprocess.run(
        [sys.executable, "-m", "fastconv", *argv], capture_output=True, text=True, cwd=files, timeout=120
    )
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("fastconv")


def test_an_unforeseen_error_is_one_line_with_exit_1(monkeypatch, capsys):
    """The last line of defence: an error no option check caught still prints one line."""
    import fastconv.shapes

    def boom(*args, **kwargs):
        raise ZeroDivisionError("unforeseen")

    monkeypatch.setattr(fastconv.shapes, "conv_output_size", boom)
    assert main(["shape", "conv", "--input", "8", "--kernel", "3"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "fastconv shape: error: ZeroDivisionError: unforeseen"


def test_debug_variable_shows_the_traceback(monkeypatch):
    import fastconv.shapes

    monkeypatch.setenv("FASTCONV_DEBUG", "1")
    monkeypatch.setattr(fastconv.shapes, "conv_output_size", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["shape", "conv", "--input", "8", "--kernel", "3"])


def test_closed_pipe_is_quiet():
    """`fastconv solve ... | head -1`: the reader leaves early; no error line, no traceback."""
    import subprocess
    import sys

    cmd = f"{sys.executable} -m fastconv solve --input 224 --output 7 --channels 3,8,16 --top 3000 | head -1"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert r.stdout.count("\n") == 1, r.stdout
    assert r.stderr == "", r.stderr
