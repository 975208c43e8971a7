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
    (["audit", "/nonexistent-run"], "run folder not found"),
    (["sweep", "--grid", "nonsense"], "is not of the form key=v1,v2"),
    (["sweep", "--grid", "model.split_block="], "has an empty value"),
    (["demo", "--threads", "-1"], "threads=-1: use 0 (auto) or a positive count"),
    (["export", "/nonexistent-run", "--out", "x"], "run folder not found"),
    (["serve", "/nonexistent-export"], "export folder not found"),
    (["classify", "face.jpg", "--server", "http://127.0.0.1:9", "--model",
      "/nonexistent-export"], "export folder not found"),
    (["bench", "/nonexistent-export"], "export folder not found"),
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
