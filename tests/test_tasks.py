"""Tasks as a type (tasks.py): specs, labels, losses, heads that learn their own task,
the erasure that keeps every task, the multi-task floor and the folder's class columns."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from deepobfuscator.config import load_config
from deepobfuscator.data.base import DataError, FaceDataset, Preprocess
from deepobfuscator.errors import ConfigError
from deepobfuscator.tasks import parse_tasks, task_set

HAIR = {"name": "hair", "classes": ["Black_Hair", "Blond_Hair", "other"]}


def _ds(columns: dict[str, list[int]]) -> FaceDataset:
    n = len(next(iter(columns.values())))
    return FaceDataset(np.zeros((n, 4, 4, 3), np.uint8),
                       np.array(list(columns.values()), np.int8).T, list(columns),
                       np.full(n, -1), [str(i) for i in range(n)], np.zeros(n, np.int8), "t")


def test_one_name_is_todays_task_and_keeps_its_hash():
    one = load_config("cpu", ["data.task=Smiling"])
    assert load_config("cpu", ["data.task=[Smiling]"]).data.task == "Smiling"
    assert load_config("cpu", ["data.task=[Smiling]"]).fingerprint() == one.fingerprint()
    assert load_config("cpu").fingerprint() == one.fingerprint()  # held_out, balance: late keys
    ts = task_set(one)
    assert ts.single and ts.outputs == 1 and ts.names == ["Smiling"]


def test_specs_parse_into_outputs_and_slices():
    ts = parse_tasks(["Smiling", {"name": "Eyeglasses", "weight": 2}, HAIR,
                      {"name": "mood", "column": "mood", "classes": 3}])
    assert ts.names == ["Smiling", "Eyeglasses", "hair", "mood"]
    assert ts.slices == ((0, 1), (1, 2), (2, 5), (5, 8)) and ts.outputs == 8
    assert not ts.single and ts.tasks[1].weight == 2.0
    assert ts.tasks[3].classes == ("0", "1", "2")
    assert ts.attributes == ["Smiling", "Eyeglasses", "Black_Hair", "Blond_Hair", "mood"]
    assert parse_tasks(ts.to_spec()) == ts  # the normalised spec reads back the same


@pytest.mark.parametrize("spec, message", [
    (["Smiling", "Smiling"], "given twice"),
    (["Black_Hair", HAIR], "feed two tasks"),
    ("[Smiling, Eyeglasses]", "looks like a list written as one string"),
    ([{"name": "h", "classes": ["other", "Black_Hair"]}], "must be the last class"),
    ([{"name": "h", "classes": ["Black_Hair"]}], "at least two classes"),
    ([{"classes": ["Black_Hair", "other"]}], "needs a name"),
    ([{"name": "m", "column": "m", "classes": "three"}], "classes: K"),
    ([{"name": "h", "classes": ["A", "other"], "overlap": "last"}], "overlap='last'"),
    ([], "is empty"),
])
def test_bad_task_specs_are_one_line_errors(spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_tasks(spec)
    assert "\n" not in str(err.value)


def test_class_groups_label_each_image_once():
    ds = _ds({"Black_Hair": [1, 0, 0, 1], "Blond_Hair": [0, 1, 0, 1]})
    with pytest.raises(DataError, match="1 of 4 images in 't' have more than one"):
        parse_tasks([HAIR]).labels(ds)
    first = parse_tasks([{**HAIR, "overlap": "first"}]).labels(ds)
    np.testing.assert_array_equal(first[:, 0], [0, 1, 2, 0])  # none of them: other (2)
    with pytest.raises(DataError, match="add 'other' as the last class"):
        parse_tasks([{"name": "h", "classes": ["Black_Hair", "Blond_Hair"],
                      "overlap": "first"}]).labels(ds)


def test_a_folder_csv_column_holds_classes(tmp_path: Path):
    from test_data_sources import PRE, write_image

    from deepobfuscator.data.folder import load_folder

    rows = [["a.png", "1", "0"], ["b.png", "0", "2"], ["c.png", "1", "1"]]
    for i, r in enumerate(rows):
        write_image(tmp_path / r[0], size=(20, 20), seed=i)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "Smiling", "mood"], *rows])
    ds = load_folder(tmp_path, tmp_path / "labels.csv", PRE, use_cache=False)
    mood = parse_tasks([{"name": "mood", "column": "mood", "classes": 3}])
    np.testing.assert_array_equal(mood.labels(ds)[:, 0], [0, 2, 1])
    with pytest.raises(DataError, match="holds classes 0..2, not a binary attribute"):
        ds.attribute("mood")
    with pytest.raises(DataError, match="holds class 2, but the task has 2 classes"):
        parse_tasks([{"name": "mood", "column": "mood", "classes": 2}]).labels(ds)
    assert isinstance(PRE, Preprocess)


def test_the_loss_is_each_tasks_loss_weighted():
    ts = parse_tasks(["A", {"name": "B", "weight": 3}, {"name": "C", "column": "C",
                                                         "classes": 3}])
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=g)
    y = torch.stack([torch.randint(0, 2, (16,), generator=g), torch.randint(0, 2, (16,),
                     generator=g), torch.randint(0, 3, (16,), generator=g)], 1).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    ce = torch.nn.functional.cross_entropy
    want = (bce(logits[:, 0], y[:, 0]) + 3 * bce(logits[:, 1], y[:, 1])
            + ce(logits[:, 2:5], y[:, 2].long())) / 5
    torch.testing.assert_close(ts.loss(logits, y), want)
    one = parse_tasks("A")
    torch.testing.assert_close(one.loss(logits[:, 0], y[:, :1]), bce(logits[:, 0], y[:, 0]))
    # the logit-adjusted loss: the log prior (counts smoothed by one) is added inside it
    prior = one.log_priors(np.array([[1], [0], [0], [0]]))
    np.testing.assert_allclose(prior[0], [np.log(2 / 4)])
    torch.testing.assert_close(
        one.loss(logits[:, 0], y[:, :1], [torch.from_numpy(prior[0])]),
        bce(logits[:, 0] + float(prior[0][0]), y[:, 0]))
    c = parse_tasks([{"name": "C", "column": "C", "classes": 3}])
    np.testing.assert_allclose(c.log_priors(np.array([[0], [0], [1]]))[0],
                               np.log([3 / 6, 2 / 6, 1 / 6]))


def test_each_head_learns_its_own_task_from_planted_signals():
    """Three independent tasks planted in three groups of input numbers, a linear cloud
    trained on the TaskSet's loss: each output slice reads its own task, not the others'
    (the slices, the per-task losses and their gradients are wired to the right task)."""
    from deepobfuscator.metrics import roc_auc

    ts = parse_tasks(["Smiling", "Eyeglasses", {"name": "hair", "classes":
                                                ["Black_Hair", "Blond_Hair", "other"]}])
    g = torch.Generator().manual_seed(0)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.stack([torch.randint(0, 2, (n,), generator=g), torch.randint(
            0, 2, (n,), generator=g), torch.randint(0, 3, (n,), generator=g)], 1)
        x = torch.randn(n, 12, generator=g)
        x[:, 0:2] += 1.5 * (2 * y[:, :1] - 1)  # Smiling in numbers 0-1
        x[:, 2:4] += 1.5 * (2 * y[:, 1:2] - 1)  # Eyeglasses in 2-3
        x[:, 4:7] += 2.0 * torch.nn.functional.one_hot(y[:, 2], 3)  # hair in 4-6
        return x, y.float()

    torch.manual_seed(0)
    cloud = torch.nn.Linear(12, ts.outputs)
    opt = torch.optim.Adam(cloud.parameters(), lr=0.05)
    for _ in range(300):
        x, y = batch(64)
        opt.zero_grad()
        ts.loss(cloud(x), y).backward()
        opt.step()
    x, y = batch(2000)
    with torch.no_grad():
        smile, glasses, hair = (p.numpy() for p in ts.probabilities(cloud(x)))
    for own, other, p in ((0, 1, smile), (1, 0, glasses)):
        assert roc_auc(y[:, own].numpy(), p) > 0.95
        assert abs(roc_auc(y[:, other].numpy(), p) - 0.5) < 0.05
    assert (hair.argmax(1) == y[:, 2].numpy()).mean() > 0.85
    np.testing.assert_allclose(hair.sum(1), 1.0, rtol=1e-5)
    # the weights agree: each slice leans on its own numbers
    w = cloud.weight.detach().abs()
    assert w[0, 0:2].mean() > 5 * w[0, 2:].mean() and w[1, 2:4].mean() > 5 * w[1, 4:].mean()


def test_the_erasure_keeps_every_tasks_direction():
    """Two tasks whose directions also carry the private attribute: the projection leaves
    both tasks' class-mean differences untouched and removes the rest of the attribute."""
    from deepobfuscator.defences.erasure import erasure_basis

    rng = np.random.default_rng(0)
    n = 4000
    t = rng.integers(0, 2, (n, 2))
    z = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 6))
    x[:, 0] += 2 * t[:, 0] + 0.5 * z  # task 1's axis also carries the attribute
    x[:, 1] += 2 * t[:, 1] + 0.5 * z  # task 2's too
    x[:, 2] += 1.5 * z  # the attribute alone
    q = erasure_basis(x, t, z[:, None])
    erased = x - (x @ q) @ q.T
    for k in range(2):
        d_before = x[t[:, k] == 1].mean(0) - x[t[:, k] == 0].mean(0)
        d_after = erased[t[:, k] == 1].mean(0) - erased[t[:, k] == 0].mean(0)
        np.testing.assert_allclose(d_after, d_before, atol=1e-9)
    assert abs(erased[:, 2][z == 1].mean() - erased[:, 2][z == 0].mean()) < 0.1


def test_the_multi_task_floor_is_the_best_table_of_answer_combinations():
    """Hand-computed: answers (A, B); the attribute is 1 mostly where A == B."""
    from deepobfuscator.metrics import answer_floor

    answers = np.array([[0, 0], [0, 0], [1, 1], [1, 1], [0, 1], [0, 1], [1, 0], [1, 0]])
    target = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    # the table: (0,0) -> 1 (2 of 2), (1,1) -> tie -> 0, (0,1) -> 0, (1,0) -> tie -> 0
    # predictions on the same rows: [1,1,0,0,0,0,0,0]: TPR 2/4, TNR 4/4 -> 0.75
    assert answer_floor(answers, target, answers, target) == 0.75
    # one task alone (A) tells nothing here: 0.5
    assert answer_floor(answers[:, :1], target, answers[:, :1], target) == 0.5


def test_answer_vectors_rank_by_agreeing_answers():
    ts = parse_tasks(["A", {"name": "C", "column": "C", "classes": 3}])
    v = ts.answer_vectors(np.array([[1, 2], [1, 0], [0, 2]]))
    np.testing.assert_array_equal(v, [[1, -1, -1, 1], [1, 1, -1, -1], [-1, -1, -1, 1]])
