"""Training: augmentation, schedule, joint loss, and exact resume from a checkpoint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vptrain import config, data, train
from vptrain.arch import ArchSpec, Classifier
from vptrain.config import TrainConfig


def test_augment_keeps_shape_dtype_and_pixels() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).reshape(2, 1, 6, 6)
    gen = torch.Generator().manual_seed(0)
    y = train.augment(x, gen, flip=True, shift=1)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert set(y.unique().tolist()) <= set(x.unique().tolist()) | {0}
    assert torch.equal(train.augment(x, gen, flip=False, shift=0), x)


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    f = [train.lr_factor(s, 100, 0.1) for s in range(100)]
    assert f[0] == 0.1 and f[9] == 1.0 and f[-1] < 0.01
    assert all(a >= b for a, b in zip(f[9:], f[10:], strict=False))


def test_joint_loss_adds_the_ensemble_term() -> None:
    logits = [torch.randn(4, 10), torch.randn(4, 10)]
    y = torch.tensor([0, 1, 2, 3])
    cfg = TrainConfig()
    plain = train.joint_loss(logits, y, cfg, joint=False)
    joint = train.joint_loss(logits, y, cfg, joint=True)
    mean = torch.stack([torch.softmax(z, 1) for z in logits]).mean(0)
    assert torch.isclose(joint - plain, torch.nn.functional.nll_loss(mean.log(), y))


def _models(ds: data.Dataset) -> list[Classifier]:
    torch.manual_seed(0)
    specs = [ArchSpec(name="a", width=0.25, resolution=8, depth=(1,) * 7, head_channels=32),
             ArchSpec(name="b", width=0.25, resolution=6, depth=(1,) * 7, head_channels=24)]
    return [Classifier(s, 1, 8, 10, ds.mean, ds.std) for s in specs]


def test_resume_from_checkpoint_is_exact(tmp_path: Path) -> None:
    ds = data.load_digits()
    cfg = replace(TrainConfig(), epochs=1.0, batch_size=64, flip=False, shift=1, val_fraction=0.1,
                  train_subset=640, threads=1, checkpoint_every_s=1e9)
    straight = _models(ds)
    assert train.train(straight, ds, cfg, tmp_path / "straight", joint=True, log=lambda _: None) is not None
    resumed = _models(ds)
    assert train.train(resumed, ds, cfg, tmp_path / "resumed", joint=True, log=lambda _: None, stop_after=4) is None
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    fresh = _models(ds)  # a new process would start from new objects
    result = train.train(fresh, ds, cfg, tmp_path / "resumed", joint=True, log=lambda _: None)
    assert result is not None and result.steps == 10
    for a, b in zip(straight, fresh, strict=True):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(va, vb), k
    # A finished run is loaded, not retrained.
    again = _models(ds)
    assert train.train(again, ds, cfg, tmp_path / "resumed", joint=True, log=lambda _: None) is not None
    assert torch.equal(next(iter(again[0].parameters())), next(iter(fresh[0].parameters())))


def test_distillation_term_is_zero_when_student_equals_teacher() -> None:
    z = torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    cfg = TrainConfig(distill_weight=1.0, distill_temperature=4.0)
    plain = train.joint_loss([z], y, cfg, joint=False)
    assert torch.isclose(train.joint_loss([z], y, cfg, joint=False, teacher=z), plain, atol=1e-6)
    assert train.joint_loss([z], y, cfg, joint=False, teacher=torch.randn(8, 10)) > plain


class _Echo(torch.nn.Module):
    """A stand-in model that returns its (float) input, to see what each member was shown."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


def test_member_augment_shares_one_draw_or_gives_each_member_its_own() -> None:
    x = torch.randint(1, 255, (8, 1, 6, 6), dtype=torch.uint8)
    members = [_Echo(), _Echo(), _Echo()]
    shared = train.member_logits(members, x, torch.Generator().manual_seed(0), TrainConfig(shift=2))
    assert all(torch.equal(shared[0], z) for z in shared[1:])
    # `shared` is the draw the trainer always made: one augment call on the batch.
    assert torch.equal(shared[0], train.augment(x, torch.Generator().manual_seed(0), True, 2).float())
    own = train.member_logits(members, x, torch.Generator().manual_seed(0),
                              TrainConfig(shift=2, member_augment="independent"))
    assert not torch.equal(own[0], own[1]) and not torch.equal(own[1], own[2])
    assert torch.equal(own[0], shared[0])  # the first member's draw is the shared one


def test_member_augment_must_be_shared_or_independent() -> None:
    raw = {"family": "f", "dataset": {"name": "digits"}, "variants": [{"name": "a"}],
           "training": {"member_augment": "per-pixel"}}
    with pytest.raises(config.ConfigError, match="member_augment must be shared or independent"):
        config.parse(raw)


def test_spread_is_the_members_squared_distance_from_their_mean_answer() -> None:
    a = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    b = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    # sample 1: mean (0.5, 0.5), each member 0.5 away in both classes: 2 members x 2 classes x 0.25 = 1.0;
    # sample 2: both agree: 0. Batch mean 0.5.
    assert train.spread([a, b]).item() == pytest.approx(0.5)
    assert train.spread([a, a, a]).item() == 0.0


def test_diversity_weight_subtracts_the_spread_and_pushes_members_apart() -> None:
    y = torch.tensor([0, 1])
    z1 = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    z2 = torch.tensor([[1.0, 0.5], [0.3, 1.0]], requires_grad=True)
    plain = train.joint_loss([z1, z2], y, TrainConfig(), joint=True)
    diverse = train.joint_loss([z1, z2], y, TrainConfig(diversity_weight=0.7), joint=True)
    gap = 0.7 * train.spread([torch.softmax(z1, 1), torch.softmax(z2, 1)])
    assert (plain - diverse).item() == pytest.approx(gap.item(), rel=1e-6)
    # Without the joint loss (independent runs, the baseline) the term is not added.
    assert train.joint_loss([z1], y[:1].repeat(2), TrainConfig(diversity_weight=0.7), joint=False).item() == \
        pytest.approx(train.joint_loss([z1], y[:1].repeat(2), TrainConfig(), joint=False).item())
    # A gradient step on the spread alone moves the two members' answers further apart.
    before = train.spread([torch.softmax(z1, 1), torch.softmax(z2, 1)]).item()
    (-train.spread([torch.softmax(z1, 1), torch.softmax(z2, 1)])).backward()
    with torch.no_grad():
        after = train.spread([torch.softmax(z1 - 0.5 * z1.grad, 1), torch.softmax(z2 - 0.5 * z2.grad, 1)]).item()
    assert after > before


def test_peer_targets_are_the_other_members_mean_logits_without_gradient() -> None:
    z = [torch.tensor([[3.0, 0.0]], requires_grad=True), torch.tensor([[1.0, 1.0]], requires_grad=True),
         torch.tensor([[0.0, 2.0]], requires_grad=True)]
    targets = train.peer_targets(z, 2.0)
    # member 0's teacher: mean of members 1 and 2 = (0.5, 1.5), at T = 2.
    assert torch.allclose(targets[0], torch.log_softmax(torch.tensor([[0.25, 0.75]]), 1))
    assert torch.allclose(targets[2], torch.log_softmax(torch.tensor([[1.0, 0.25]]), 1))
    assert not any(t.requires_grad for t in targets)


def test_peer_distillation_adds_nothing_when_members_agree_and_pulls_them_together() -> None:
    y = torch.tensor([0, 1])
    same = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    cfg = TrainConfig(peer_distill_weight=1.0, ensemble_weight=0.0)
    agree = train.joint_loss([same.clone(), same.clone()], y, cfg, joint=True)
    assert agree.item() == pytest.approx(train.joint_loss([same, same], y, TrainConfig(ensemble_weight=0.0),
                                                          joint=True).item(), abs=1e-6)
    z1 = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    z2 = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    with_peers = train.joint_loss([z1, z2], y, cfg, joint=True)
    assert with_peers.item() > train.joint_loss([z1, z2], y, TrainConfig(ensemble_weight=0.0), joint=True).item()
    # Only the peer term's gradient: it moves member 1 towards member 2's answer.
    (train.joint_loss([z1, z2], y, cfg, joint=True)
     - train.joint_loss([z1, z2], y, TrainConfig(ensemble_weight=0.0), joint=True)).backward()
    assert z1.grad is not None and z1.grad[0, 0] > 0 > z1.grad[0, 1]


@pytest.mark.parametrize("key", ["diversity_weight", "peer_distill_weight"])
def test_member_terms_must_be_non_negative_and_need_shared_batches(key: str) -> None:
    base = {"family": "f", "dataset": {"name": "digits"}, "variants": [{"name": "a"}]}
    with pytest.raises(config.ConfigError, match=f"{key} must be >= 0"):
        config.parse({**base, "training": {key: -0.1}})
    with pytest.raises(config.ConfigError, match=f"{key} needs shared member batches"):
        config.parse({**base, "training": {key: 0.5, "member_batches": "independent", "ensemble_weight": 0}})
