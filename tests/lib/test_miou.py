"""Tests for pixelclip.eval.miou: hand-computed matrices, merging, and a real 2-process gloo all-reduce."""

from __future__ import annotations

import math
import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pixelclip.eval.miou import ConfusionMatrix

IGN = 255


def t(rows):
    return torch.tensor(rows, dtype=torch.int64)


def test_hand_computed_3_classes_2x3():
    target = t([[0, 0, 1], [1, 2, 2]])
    pred = t([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    # pairs (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0)
    assert torch.equal(cm.matrix, t([[1, 1, 0], [0, 2, 0], [1, 0, 1]]))
    assert cm.matrix.dtype == torch.int64
    # IoU = tp / (gt + pred - tp): class 0: 1/(2+2-1), class 1: 2/(2+3-2), class 2: 1/(2+1-1)
    iou = cm.iou()
    assert iou.dtype == torch.float64
    assert torch.allclose(iou, torch.tensor([1 / 3, 2 / 3, 1 / 2], dtype=torch.float64))
    assert cm.miou() == pytest.approx(0.5)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)


def test_ignore_index_and_absent_class_is_nan():
    target = t([[0, IGN, 1], [IGN, 1, 1]])
    pred = t([[0, 2, 1], [0, 1, 0]])  # class 2 predicted only at an ignored pixel
    cm = ConfusionMatrix(3, ignore_index=IGN)
    cm.update(pred, target)
    # counted pairs: (0,0) (1,1) (1,1) (1,0)
    assert torch.equal(cm.matrix, t([[1, 0, 0], [1, 2, 0], [0, 0, 0]]))
    assert int(cm.matrix.sum()) == 4
    iou = cm.iou()
    assert iou[0].item() == pytest.approx(1 / 2)  # 1 / (1 + 2 - 1)
    assert iou[1].item() == pytest.approx(2 / 3)  # 2 / (3 + 2 - 2)
    assert math.isnan(iou[2].item())
    assert cm.miou() == pytest.approx((1 / 2 + 2 / 3) / 2)  # NaN class excluded
    assert cm.pixel_accuracy() == pytest.approx(3 / 4)


def test_ignored_pixels_may_hold_any_prediction():
    cm = ConfusionMatrix(3)
    cm.update(t([[IGN, 7, -1]]), t([[IGN, IGN, IGN]]))
    assert int(cm.matrix.sum()) == 0
    assert math.isnan(cm.miou())
    assert math.isnan(cm.pixel_accuracy())


def test_predicted_but_absent_class_and_missed_class_have_iou_zero():
    cm = ConfusionMatrix(4)
    cm.update(t([[0, 2], [1, 1], [3, 3]]), t([[0, 0], [1, 1], [2, 2]]))
    # pairs: (0,0) (0,2) (1,1) (1,1) (2,3) (2,3); class 3 only predicted, class 2 never predicted right
    assert torch.equal(cm.matrix, t([[1, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 2], [0, 0, 0, 0]]))
    # class 0: 1/(2+1-1); class 1: 2/2; class 2: 0/(2+1-0); class 3: 0/(0+2-0)
    assert cm.iou().tolist() == pytest.approx([1 / 2, 1.0, 0.0, 0.0])
    assert cm.miou() == pytest.approx(1.5 / 4)


def test_oracle_prediction_gives_one():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 8, 9), generator=g)
    target[:, :2] = IGN
    pred = torch.where(target == IGN, torch.randint(0, 5, target.shape, generator=g), target)
    cm = ConfusionMatrix(5)
    cm.update(pred, target)
    assert cm.miou() == 1.0
    assert cm.pixel_accuracy() == 1.0
    assert int(cm.matrix.sum()) == int((target != IGN).sum())


def test_constant_prediction():
    cm = ConfusionMatrix(3)
    cm.update(torch.zeros(2, 3, dtype=torch.int64), t([[0, 0, 0], [1, 1, 2]]))
    assert torch.equal(cm.matrix, t([[3, 0, 0], [2, 0, 0], [1, 0, 0]]))
    # class 0: 3 / (3 + 6 - 3) = 1/2; classes 1, 2: 0 -> mean 1/6
    assert cm.iou().tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert cm.miou() == pytest.approx(1 / 6)
    assert cm.pixel_accuracy() == pytest.approx(0.5)


def _random_batch(seed, b=4, h=6, w=7, c=4):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < 0.2] = IGN
    pred = torch.randint(0, c, (b, h, w), generator=g, dtype=torch.int32)  # dtypes may differ
    return pred, target


def test_batched_equals_per_image_and_merge_of_halves():
    pred, target = _random_batch(1)
    batched = ConfusionMatrix(4)
    batched.update(pred, target)
    per_image = ConfusionMatrix(4)
    for p, g in zip(pred, target, strict=True):
        per_image.update(p, g)
    assert torch.equal(batched.matrix, per_image.matrix)
    assert int(batched.matrix.sum()) == int((target != IGN).sum())

    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    a.update(pred[:2], target[:2])
    b.update(pred[2:], target[2:])
    assert a.merge(b) is a
    assert torch.equal(a.matrix, batched.matrix)
    assert a.miou() == pytest.approx(batched.miou())


def test_state_dict_roundtrip_and_reset(tmp_path):
    pred, target = _random_batch(2)
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    torch.save(cm.state_dict(), tmp_path / "cm.pt")
    loaded = ConfusionMatrix(4)
    loaded.load_state_dict(torch.load(tmp_path / "cm.pt"))
    assert torch.equal(loaded.matrix, cm.matrix)
    assert torch.equal(ConfusionMatrix.from_state_dict(cm.state_dict()).matrix, cm.matrix)
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(5).load_state_dict(cm.state_dict())
    before = cm.matrix.clone()
    assert cm.all_reduce() is cm  # no process group: a no-op
    assert torch.equal(cm.matrix, before)
    cm.reset()
    assert int(cm.matrix.abs().sum()) == 0
    assert not torch.equal(cm.matrix, loaded.matrix)


def test_bad_input_raises():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        cm.update(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"target.*\[3\]"):
        cm.update(t([[0, 1]]), t([[0, 3]]))
    with pytest.raises(ValueError, match=r"target.*\[-1\]"):
        cm.update(t([[0, 1]]), t([[-1, 1]]))
    with pytest.raises(ValueError, match=r"pred.*\[5\]"):
        cm.update(t([[0, 5]]), t([[0, 1]]))
    with pytest.raises(ValueError, match="integer"):
        cm.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="num_classes"):
        cm.merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)
    assert int(cm.matrix.sum()) == 0  # failed updates leave no partial counts


def _free_port() -> int:
    """A free TCP port on loopback (for the 2-process gloo test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank: int, world_size: int, port: int, out_path: str) -> None:
    loopback = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    os.environ["GLOO_SOCKET_IFNAME"] = loopback[0] if loopback else "lo"  # keep gloo on loopback
    torch.set_num_threads(1)
    init = f"tcp://127.0.0.1:{port}"
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world_size, timeout=timedelta(seconds=20)
    )
    try:
        pred, target = _random_batch(100 + rank)
        cm = ConfusionMatrix(4)
        cm.update(pred, target)
        local = cm.matrix.clone()
        assert cm.all_reduce() is cm
        if rank == 0:
            torch.save({"local": local, "reduced": cm.matrix.clone()}, out_path)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.timeout(60)
def test_all_reduce_two_process_gloo(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_dist_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)

    expected = ConfusionMatrix(4)
    for rank in range(2):
        expected.update(*_random_batch(100 + rank))
    result = torch.load(out)
    assert not torch.equal(result["local"], expected.matrix)  # ranks really saw different data
    assert torch.equal(result["reduced"], expected.matrix)
