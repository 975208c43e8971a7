"""The one crop-and-resize implementation: known boxes, known pixels, clear refusals."""

import json

import numpy as np
import pytest
from PIL import Image

from deepobfuscator.config import ConfigError, load_config
from deepobfuscator.data.base import DataError, Preprocess
from deepobfuscator.deploy.preprocess_np import ImageError, check_settings
from deepobfuscator.preprocessing import crop_box, parse_crop, to_uint8


@pytest.mark.parametrize(("size", "crop", "box"), [
    ((250, 250), "square", (0, 0, 250, 250)),
    ((178, 218), "square", (0, 20, 178, 198)),
    ((250, 250), "none", None),
    ((250, 250), "center:0.4", (75, 75, 175, 175)),  # LFW: the central 100 x 100
    ((178, 218), "center:0.5", (44, 64, 133, 153)),  # side 89 of the shorter 178
    ((45, 60), "center:0.5", (11, 18, 34, 41)),  # 22.5 rounds half up to 23
    ((250, 250), "center:100px", (75, 75, 175, 175)),
    ((80, 60), "center:100px", (10, 0, 70, 60)),  # a smaller photo: the shorter side
    ((250, 250), "center:1", (0, 0, 250, 250)),
])
def test_crop_boxes_have_known_answers(size, crop, box):
    assert crop_box(*size, crop) == box


def test_a_centre_crop_keeps_only_the_centre():
    arr = np.zeros((250, 250, 3), np.uint8)
    arr[..., 2] = 255  # blue frame
    arr[75:175, 75:175] = (255, 0, 0)  # red centre: what center:0.4 keeps
    out = to_uint8(Image.fromarray(arr), (64, 64), "center:0.4")
    assert out.shape == (64, 64, 3)
    assert (out[..., 0] == 255).all() and (out[..., 2] == 0).all()
    sq = to_uint8(Image.fromarray(arr), (64, 64), "square")
    assert (sq[0, 0] == (0, 0, 255)).all()  # the frame survives the largest square


@pytest.mark.parametrize("bad", ["center", "center:0", "center:1.5", "center:abc",
                                 "center:0px", "middle", "center:-0.2", "center:nan"])
def test_unknown_crops_are_refused_everywhere_with_the_accepted_forms(bad):
    with pytest.raises(ValueError, match="center:0.4"):
        parse_crop(bad)
    with pytest.raises(DataError, match="center:Npx"):
        Preprocess(crop=bad)
    with pytest.raises(ConfigError, match="data.crop"):
        load_config("cpu", [f"data.crop={bad}"])
    with pytest.raises(ImageError, match="manifest"):
        check_settings({**Preprocess().to_dict(), "crop": bad})


def test_the_run_records_the_crop_the_phone_must_apply(tmp_path, tiny_config):
    from deepobfuscator.runs import RunPaths
    from deepobfuscator.training.trainer import _write_preprocessing

    cfg = tiny_config("data.crop=center:0.4")
    paths = RunPaths(tmp_path)
    paths.root.mkdir(parents=True, exist_ok=True)
    _write_preprocessing(cfg, paths)
    pre = json.loads(paths.preprocessing.read_text())
    assert pre["crop"] == "center:0.4" and "center:F" in pre["note"]
