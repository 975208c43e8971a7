"""Every command, given bad input, answers in one line that names the problem, with a
non-zero exit status, never a traceback."""

import pytest

from deepobfuscator.cli import main

CASES = [  # argv, what the one line must say
    (["train", "--config", "nosuch"], "config file not found: nosuch"),
    (["train", "--config", "cpu", "data.source=foo"], "data.source='foo' is not valid"),
    (["train", "--config", "cpu", "nokey=1"], "unknown config key 'nokey'"),
    (["train", "--config", "cpu", "data.source=celeba", "data.root=/nowhere"],
     "data folder not found: /nowhere"),
    (["config", "--config", "cpu", "model.split_block=abc"], "expected an integer"),
    # several tasks: an unknown attribute (at the data), a private one, overlapping classes
    (["train", "--config", "cpu", "data.synth_images=40", "data.task=[Smiling,Wings]"],
     "unknown attribute name(s) ['Wings']"),
    (["train", "--config", "cpu", "data.task=[Smiling,Male]"], "also listed in data.private"),
    (["train", "--config", "cpu", "data.synth_images=200",
      "data.task=[{name: h, classes: [Smiling, Mouth_Slightly_Open, other]}]"],
     "have more than one of ['Smiling', 'Mouth_Slightly_Open']"),
    (["audit", "/nonexistent-run"], "run folder not found"),
    (["choose-upload", "/nonexistent-run", "--positions", "4", "--out", "x"],
     "run folder not found"),
    (["sweep", "--grid", "nonsense"], "is not of the form key=v1,v2"),
    (["sweep", "--grid", "model.split_block="], "has an empty value"),
    (["demo", "--threads", "-1"], "threads=-1: use 0 (auto) or a positive count"),
    (["export", "/nonexistent-run", "--out", "x"], "run folder not found"),
    (["serve", "/nonexistent-export"], "export folder not found"),
    (["classify", "face.jpg", "--server", "http://127.0.0.1:9", "--model",
      "/nonexistent-export"], "export folder not found"),
    (["bench", "/nonexistent-export"], "export folder not found"),
    (["study", "/nonexistent-study.yaml", "--out", "x"], "study file not found"),
    (["results", "add", "/nonexistent-audit", "--arm", "default"], "no audit.json in"),
    (["results", "table", "--arms", "default"], "no records file results/records.jsonl"),
]


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_bad_input_is_one_line_and_a_nonzero_exit(argv, message, tmp_path, monkeypatch,
                                                   capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert message in err[0]
    assert not list(tmp_path.glob("runs/*"))  # no run folder made on the way to the error


def test_every_command_has_a_bad_input_case():
    from deepobfuscator.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {argv[0] for argv, _ in CASES}


@pytest.mark.parametrize("argv,message", [
    (["classify", "face.png", "--server", "http://127.0.0.1:9", "--model", "{export}",
      "--batch-size", "0"], "batch size 0"),
    (["bench", "{export}", "--runs", "0"], "time at least 1 run"),
    (["serve", "{export}", "--max-body-bytes", "-1"], "max_body_bytes=-1"),
    (["export", "{run}", "--out", "x", "--parity-images", "0"], "parity_images=0"),
], ids=["classify batch 0", "bench runs 0", "serve body -1", "export parity 0"])
def test_bad_numbers_are_one_line_too(argv, message, tiny_run, tiny_export, tmp_path,
                                      monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(export=tiny_export, run=tiny_run) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x").exists()  # no half-written export


def test_a_folder_it_may_not_write_is_one_line(tmp_path, monkeypatch, capsys):
    """Root may write anywhere, so the refusal is simulated where train would meet it."""
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro" / "run"))

    monkeypatch.setattr("deepobfuscator.training.train", refuse)
    assert main(["train", "--out", str(tmp_path / "ro" / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: permission denied: {tmp_path / 'ro' / 'run'}; choose a folder you "
                   "can write to (or fix its permissions)"]


def test_overrides_may_follow_a_flag(capsys):
    """`train --config F seed=1 --quiet x=2` is a natural way to type it: every key=value
    word is an override, in the order given (the last of a key wins)."""
    assert main(["config", "--config", "cpu", "seed=3", "--baseline", "threads=1",
                 "seed=4"]) == 0
    out = capsys.readouterr().out
    assert "seed: 4" in out and "threads: 1" in out


@pytest.mark.parametrize("argv", [["config", "--config", "cpu", "seed=1", "--baseline", "oops"],
                                  ["audit", "/nonexistent-run", "seed=1"]])
def test_stray_words_are_still_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["weights", "config", "non-utf8 config", "nan lr"])
def test_damaged_files_and_bad_numbers_are_one_line(what, tiny_run, tmp_path, monkeypatch,
                                                    capsys):
    """Issue 37, item 2: a truncated .safetensors (export and audit), a run's malformed
    config.yaml (export), a --config that is not UTF-8, a learning rate of NaN: each one
    line naming the file or key and the fix, never a traceback."""
    import shutil

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    if what == "weights":
        w = run / "weights" / "encoder.safetensors"
        w.write_bytes(w.read_bytes()[:100])
        cases = [(["export", str(run), "--out", "x"], "encoder.safetensors is damaged"),
                 (["audit", str(run), "--out", "a"], "encoder.safetensors is damaged")]
    elif what == "config":
        (run / "config.yaml").write_text("data: [unclosed\n")
        cases = [(["export", str(run), "--out", "x"], "config.yaml is not a readable run "
                  "config")]
    elif what == "non-utf8 config":
        (tmp_path / "bad.yaml").write_bytes(b"seed: 1\n\xff\xfe")
        cases = [(["train", "--config", str(tmp_path / "bad.yaml")], "not a UTF-8 text file")]
    else:
        cases = [(["train", "--config", "cpu", "train.task.lr=nan"],
                  "train.task.lr=nan: give a finite number"),
                 (["train", "--config", "cpu", "train.adversarial.lr=0"],
                  "a learning rate must be > 0")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
        assert not (tmp_path / "x").exists()


def test_a_port_out_of_range_is_one_usage_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "/nowhere", "--port", "99999"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "'99999' is not a TCP port: give 1-65535" in err[-1]


def test_an_unreadable_input_file_is_named_as_one_to_read(tmp_path, monkeypatch):
    """Root reads anything, so os.access is simulated: an existing file it may not read
    is an input to fix, not a folder to write elsewhere (issue 37, item 2)."""
    from deepobfuscator.errors import permission_message

    f = tmp_path / "encoder.safetensors"
    f.write_bytes(b"x")
    exc = PermissionError(13, "Permission denied", str(f))
    monkeypatch.setattr("os.access", lambda path, mode: False)
    assert permission_message(exc) == (f"permission denied: cannot read {f}; fix its "
                                       "permissions (chmod u+r)")
    monkeypatch.undo()
    out = PermissionError(13, "Permission denied", str(tmp_path / "ro" / "export"))
    assert "choose a folder you can write to" in permission_message(out)


def test_export_takes_threads(tiny_run, tmp_path, monkeypatch):
    """Issue 37, item 6: `export --threads N` runs PyTorch and the parity check's
    onnxruntime on N threads (it used whatever the machine had), and checks the count."""
    import torch

    before = torch.get_num_threads()
    seen = []
    import onnxruntime as ort

    real = ort.InferenceSession

    def session(path, opts=None, **kw):
        seen.append(opts.intra_op_num_threads if opts is not None else None)
        return real(path, opts, **kw)

    monkeypatch.setattr(ort, "InferenceSession", session)
    try:
        assert main(["export", str(tiny_run), "--out", str(tmp_path / "x"), "--threads", "1",
                     "--no-mobile", "--parity-images", "2"]) == 0
        assert torch.get_num_threads() == 1 and seen and set(seen) == {1}
    finally:
        torch.set_num_threads(before)
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "y"), "--threads", "-2"]) == 2
    assert not (tmp_path / "y").exists()
