"""One UserError base: every error a user can fix is caught once at the command line."""

import pytest

from deepobfuscator.config import ConfigError
from deepobfuscator.data.base import DataError
from deepobfuscator.deploy.cli_commands import UsageError
from deepobfuscator.deploy.client import ClientError
from deepobfuscator.deploy.manifest import ExportError
from deepobfuscator.deploy.preprocess_np import ImageError
from deepobfuscator.errors import USER_ERRORS, RunError, UserError
from deepobfuscator.preprocessing import ImageRefused
from deepobfuscator.wire import WireError


@pytest.mark.parametrize("error", [ConfigError, DataError, RunError, ExportError, WireError,
                                   ClientError, ImageError, UsageError, ImageRefused])
def test_every_user_facing_error_is_a_user_error(error):
    assert issubclass(error, UserError)
    assert issubclass(error, USER_ERRORS)


def test_a_damaged_checkpoint_is_one_line_saying_what_to_do(tmp_path, tiny_config, capsys):
    from deepobfuscator.cli import main
    from deepobfuscator.training import train

    cfg = tiny_config("privacy.method=none", "train.task.epochs=2")
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as m:  # stop after the first epoch's checkpoint
        import deepobfuscator.training.trainer as trainer

        real = trainer.save_checkpoint

        def save_then_stop(path, payload):
            real(path, payload)
            raise KeyboardInterrupt

        m.setattr(trainer, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run, progress=False)
    (run / "checkpoint.pt").write_bytes(b"\x00 not a checkpoint")
    with pytest.raises(RunError, match="cannot be read.*delete it to restart"):
        train(cfg, run, progress=False)
    # the command line: the run's own config.yaml, one line on stderr, exit status 2
    assert main(["train", "--config", str(run / "config.yaml"), "--out", str(run),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint") and "Traceback" not in err
    assert err.count("\n") == 1
