"""Joint training of a variant family (one loop, same batches) and of the baseline, with checkpoints and resume.

Joint loss = sum over variants of CE(logits_i, y) + ensemble_weight * CE(mean_i softmax_i, y)
            - diversity_weight * sum over variants of |softmax_i - mean_j softmax_j|^2 (negative correlation)
            + peer_distill_weight * T^2 * sum over variants of KL(peers_i || variant_i) (members taught by each other).
The baseline uses the same loop and recipe with its plain CE; so does each variant of a family trained with
`member_batches: independent` (one run per variant, each with its own data stream: shuffle order and augmentation).
Every validation writes the models' validation probabilities (val-probs-<epoch>.npy) for the ensemble curves.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .arch import Classifier
from .config import TrainConfig
from .data import Dataset, split_validation

Log = Callable[[str], None]


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def augment(x: torch.Tensor, gen: torch.Generator, flip: bool, shift: int) -> torch.Tensor:
    """Random translation (zero padded) and horizontal flip on a uint8 batch [N, C, H, W]."""
    n, _, h, w = x.shape
    if shift > 0:
        padded = F.pad(x, (shift, shift, shift, shift))
        oy = torch.randint(0, 2 * shift + 1, (n,), generator=gen, device=gen.device).to(x.device)
        ox = torch.randint(0, 2 * shift + 1, (n,), generator=gen, device=gen.device).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=gen, device=gen.device) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    warm = max(1, int(total * warmup_fraction))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def joint_loss(logits: list[torch.Tensor], y: torch.Tensor, cfg: TrainConfig, joint: bool,
               teacher: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of per-model CE, plus the ensemble's CE when training a family, plus distillation from `teacher`."""
    loss = sum(F.cross_entropy(z, y, label_smoothing=cfg.label_smoothing) for z in logits)
    if teacher is not None and cfg.distill_weight > 0:
        t = cfg.distill_temperature
        target = F.log_softmax(teacher / t, dim=1)
        for z in logits:
            kl = F.kl_div(F.log_softmax(z / t, dim=1), target, reduction="batchmean", log_target=True)
            loss = loss + cfg.distill_weight * t * t * kl
    probs = [F.softmax(z, dim=1) for z in logits] if joint and (cfg.ensemble_weight > 0 or cfg.diversity_weight > 0) \
        else []  # shared by the ensemble CE and the spread term
    if joint and cfg.ensemble_weight > 0:
        mean_probs = torch.stack(probs).mean(0)
        loss = loss + cfg.ensemble_weight * F.nll_loss(torch.log(mean_probs.clamp_min(1e-12)), y)
    if joint and cfg.peer_distill_weight > 0 and len(logits) > 1:
        t = cfg.distill_temperature
        for target, z in zip(peer_targets(logits, t), logits, strict=True):
            kl = F.kl_div(F.log_softmax(z / t, dim=1), target, reduction="batchmean", log_target=True)
            loss = loss + cfg.peer_distill_weight * t * t * kl
    if joint and cfg.diversity_weight > 0:
        loss = loss - cfg.diversity_weight * spread(probs)
    return loss  # type: ignore[return-value]


def peer_targets(logits: list[torch.Tensor], t: float) -> list[torch.Tensor]:
    """Each member's teacher in peer distillation: log_softmax(mean of the OTHER members' logits / t), detached (no
    gradient flows into the teachers; online distillation as in Zhang et al.'s deep mutual learning, with the peers
    averaged as in KDCL)."""
    stacked = torch.stack([z.detach() for z in logits])
    others = (stacked.sum(0, keepdim=True) - stacked) / (len(logits) - 1)
    return [F.log_softmax(o / t, dim=1) for o in others]


def spread(probs: list[torch.Tensor]) -> torch.Tensor:
    """Negative-correlation diversity (Liu and Yao 1999, on class probabilities): the batch mean of
    sum_i |p_i - p_mean|^2, the members' squared distance from their mean answer. The joint loss subtracts it, so
    members are rewarded for disagreeing where the ensemble CE and their own CE allow."""
    stacked = torch.stack(probs)
    return (stacked - stacked.mean(0, keepdim=True)).pow(2).sum(dim=(0, 2)).mean()


def member_logits(models: list[Classifier], xb: torch.Tensor, gen: torch.Generator,
                  cfg: TrainConfig) -> list[torch.Tensor]:
    """Every model's logits for one batch: one augmentation draw shared by all (`member_augment: shared`), or a
    draw of its own per model (`independent`: the same images, shifted and flipped differently for each)."""
    if cfg.member_augment == "independent":
        return [m(augment(xb, gen, cfg.flip, cfg.shift)) for m in models]
    shared = augment(xb, gen, cfg.flip, cfg.shift)
    return [m(shared) for m in models]


@torch.no_grad()
def predict_probs(model: Classifier, x: np.ndarray, device: torch.device, batch: int) -> np.ndarray:
    """Softmax outputs of a model (eval mode) for uint8 images."""
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i:i + batch]).to(device)
        out.append(F.softmax(model(xb), dim=1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@dataclass
class TrainResult:
    """What a finished run reports."""

    wall_time_s: float
    steps: int
    samples_seen: int
    train_samples: int
    val_samples: int
    val_accuracy: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    load_average: list[float] = field(default_factory=list)


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(models: list[Classifier], data: Dataset, cfg: TrainConfig, run_dir: Path, joint: bool,
          log: Log = print, stop_after: int | None = None,
          teacher_logits: np.ndarray | None = None, stream: int = 0) -> TrainResult | None:
    """Trains `models` together on the same batches; resumes from run_dir/checkpoint.pt; writes final.pt.

    With `stop_after`, returns None after that many steps of this call, leaving a checkpoint to resume from.
    `teacher_logits` ([len(train_x), classes], aligned with data.train_x) enables distillation.
    `stream` > 0 gives the run its own shuffle order and augmentation draws (independently trained members).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / "final.pt"
    ckpt_path = run_dir / "checkpoint.pt"
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)

    if final.exists():
        state = torch.load(final, map_location=device, weights_only=False)
        for m, sd in zip(models, state["models"], strict=True):
            m.load_state_dict(sd)
        log(f"{run_dir.name}: already trained, loaded {final}")
        return TrainResult(**state["result"])

    train_idx, val_idx = split_validation(len(data.train_x), cfg.val_fraction, cfg.seed)
    if cfg.train_subset is not None:
        train_idx = np.sort(np.random.default_rng(cfg.seed + 1).permutation(train_idx)[:cfg.train_subset])
    x_train = torch.from_numpy(data.train_x[train_idx]).to(device)
    y_train = torch.from_numpy(data.train_y[train_idx]).to(device)
    t_train = None if teacher_logits is None else torch.from_numpy(teacher_logits[train_idx]).float().to(device)
    steps_per_epoch = max(1, len(train_idx) // cfg.batch_size)  # drop the ragged last batch
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))

    for m in models:
        m.to(device=device, memory_format=torch.channels_last)  # faster convs on CPU (oneDNN) and GPU
    params = [p for m in models for p in m.parameters()]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 2 + 7919 * stream)
    step, elapsed, history = 0, 0.0, []
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        for m, sd in zip(models, state["models"], strict=True):
            m.load_state_dict(sd)
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        log(f"{run_dir.name}: resumed at step {step}/{total_steps}")

    def snapshot() -> dict:
        return {"models": [m.state_dict() for m in models], "optimizer": opt.state_dict(), "gen": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "step": step, "elapsed": elapsed, "history": history}

    load_start = list(os.getloadavg())
    t0 = time.monotonic() - elapsed
    last_ckpt = time.monotonic()
    running, running_n, start_step = 0.0, 0, step
    while step < total_steps:
        epoch, pos = divmod(step, steps_per_epoch)
        key = [cfg.seed, epoch] + ([stream] if stream else [])
        perm = torch.from_numpy(np.random.default_rng(key).permutation(len(train_idx))).to(device)
        for m in models:
            m.train()
        while pos < steps_per_epoch and step < total_steps:
            idx = perm[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
            yb = y_train[idx]
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(step, total_steps, cfg.warmup_fraction)
            tb = None if t_train is None else t_train[idx]
            loss = joint_loss(member_logits(models, x_train[idx], gen, cfg), yb, cfg, joint, tb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step, pos = step + 1, pos + 1
            running, running_n = running + float(loss.detach()), running_n + 1
            if step % 20 == 0 or step == total_steps:
                el = time.monotonic() - t0
                log(f"{run_dir.name}: step {step}/{total_steps} epoch {epoch} loss {running / running_n:.4f} "
                    f"{step * cfg.batch_size / max(el, 1e-9):.1f} img/s elapsed {el:.0f}s")
                running, running_n = 0.0, 0
            if stop_after is not None and step - start_step >= stop_after and step < total_steps:
                elapsed = time.monotonic() - t0
                _save(ckpt_path, snapshot())
                log(f"{run_dir.name}: stopped at step {step}, checkpoint written")
                return None
            if time.monotonic() - last_ckpt > cfg.checkpoint_every_s:
                elapsed = time.monotonic() - t0
                _save(ckpt_path, snapshot())
                last_ckpt = time.monotonic()
        if pos >= steps_per_epoch or step >= total_steps:
            entry = {"epoch": float(epoch + 1 if pos >= steps_per_epoch else epoch + pos / steps_per_epoch),
                     **_validate(models, data, val_idx, device, cfg, log, run_dir, len(history) + 1)}
            history.append(entry)
            elapsed = time.monotonic() - t0
            _save(ckpt_path, snapshot())
            last_ckpt = time.monotonic()

    wall = time.monotonic() - t0
    result = TrainResult(
        wall_time_s=round(wall, 1), steps=step, samples_seen=step * cfg.batch_size, train_samples=len(train_idx),
        val_samples=len(val_idx), val_accuracy={k: v for k, v in (history[-1] if history else {}).items()
                                                if k != "epoch"},
        history=history, load_average=[round(v, 2) for v in load_start + list(os.getloadavg())])
    _save(final, {"models": [m.state_dict() for m in models], "result": result.__dict__})
    log(f"{run_dir.name}: done in {wall:.0f}s, val {result.val_accuracy}")
    return result


def _validate(models: list[Classifier], data: Dataset, val_idx: np.ndarray, device: torch.device,
              cfg: TrainConfig, log: Log, run_dir: Path, index: int) -> dict[str, float]:
    """Validation accuracy of each model and of the soft-vote ensemble; saves the probabilities."""
    if len(val_idx) == 0:
        return {}
    tag = run_dir.name
    x, y = data.train_x[val_idx], data.train_y[val_idx]
    probs = [predict_probs(m, x, device, cfg.eval_batch) for m in models]
    np.save(run_dir / f"val-probs-{index}.npy", np.stack(probs))
    out = {m.spec.name: round(float((p.argmax(1) == y).mean()), 4) for m, p in zip(models, probs, strict=True)}
    if len(models) > 1:
        out["ensemble"] = round(float((np.mean(probs, axis=0).argmax(1) == y).mean()), 4)
    log(f"{tag}: validation {out}")
    return out
