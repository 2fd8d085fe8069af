"""Family configuration (YAML): the data set, the baseline, the variants and the training recipe."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .arch import DEFAULT_DEPTH, ArchSpec


class ConfigError(ValueError):
    """A family config is malformed."""


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe, shared by the joint variant run and the baseline run."""

    epochs: float = 1.0                 # may be fractional: training stops after that share of the last epoch
    batch_size: int = 128
    lr: float = 0.05                    # peak learning rate (SGD, Nesterov momentum)
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_fraction: float = 0.05       # linear warm-up share of all steps, then cosine decay to 0
    ensemble_weight: float = 1.0        # weight of the ensemble's CE in the joint loss (shared batches only)
    member_batches: str = "shared"      # shared: every variant sees the same batch; independent: each its own
                                        # shuffle order and augmentation draw (more diverse members)
    diversity_weight: float = 0.0       # shared batches only; >0: subtract diversity_weight * the members' spread
                                        # around their mean probabilities (negative correlation, train.spread)
    member_augment: str = "shared"      # shared batches only; shared: every variant sees the same augmented batch;
                                        # independent: the same images, each variant its own shift/flip draw
    distill_weight: float = 0.0         # >0: add distill_weight * T^2 * KL(teacher || variant) per variant
    distill_temperature: float = 4.0    # T; the teacher is the trained baseline (logits on un-augmented images)
    peer_distill_weight: float = 0.0    # shared batches only; >0: add weight * T^2 * KL(peers || variant) per variant,
                                        # the teacher being the mean logits of the other variants (train.peer_targets)
    label_smoothing: float = 0.0
    val_fraction: float = 0.0833        # share of the training split held out for validation
    train_subset: int | None = None     # use only this many training samples (quick runs; labelled as such)
    flip: bool = True                   # random horizontal flips (off for digits)
    shift: int = 2                      # random translation, pixels (zero padded)
    seed: int = 0
    threads: int = 1                    # torch CPU threads (1: fastest on a shared, busy CPU)
    checkpoint_every_s: float = 120.0   # mid-epoch checkpoint period
    eval_batch: int = 500
    note: str = ""                      # free text copied to the manifest (e.g. "early, briefly trained")


@dataclass(frozen=True)
class FamilyConfig:
    """A whole family."""

    family: str
    dataset: str
    baseline: ArchSpec
    variants: tuple[ArchSpec, ...]
    training: TrainConfig
    targets: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    own_recipes: dict[str, TrainConfig] = field(default_factory=dict)  # variants trained in a run of their own
    own_streams: dict[str, int] = field(default_factory=dict)  # their `stream`, where the config sets one

    @property
    def all_specs(self) -> tuple[ArchSpec, ...]:
        """Variants in family order, then the baseline."""
        return (*self.variants, self.baseline)

    @property
    def group(self) -> tuple[ArchSpec, ...]:
        """The variants trained by the family's own recipe (jointly, or one after the other), in family order."""
        return tuple(s for s in self.variants if s.name not in self.own_recipes)


# What a variant's `recipe` may change: how it is trained alongside the others, never its budget (epochs, batch,
# schedule, augmentation, validation split and seed stay the family's, so it stays comparable with the baseline).
# `stream` (>= 1) picks the run's initialisation (seed + stream - 1) and data stream (shuffle order and augmentation
# draws); default: the variant's family index + 1, as for independently trained members.
OWN_RECIPE_KEYS = ("distill_weight", "distill_temperature", "stream")


def _own_recipe(name: str, recipe: Any, training: TrainConfig) -> TrainConfig:
    """A variant's own recipe: the family's, trained on its own (independent, no ensemble loss), with the
    `recipe` overrides."""
    if not isinstance(recipe, dict):
        raise ConfigError(f"variant {name}: recipe must be a mapping, got {recipe!r}")
    unknown = set(recipe) - set(OWN_RECIPE_KEYS)
    if unknown:
        raise ConfigError(f"variant {name}: recipe may only set {list(OWN_RECIPE_KEYS)}, not {sorted(unknown)} "
                          "(the budget stays the family's)")
    for key in ("distill_weight", "distill_temperature"):
        v = recipe.get(key, 1.0)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (key == "distill_temperature" and v == 0):
            raise ConfigError(f"variant {name}: recipe.{key} must be a number >= 0 (temperature > 0), got {v!r}")
    own = replace(training, member_batches="independent", ensemble_weight=0.0, diversity_weight=0.0,
                  peer_distill_weight=0.0,
                  **{k: v for k, v in recipe.items() if k != "stream"})
    stream = recipe.get("stream", 1)
    if not isinstance(stream, int) or isinstance(stream, bool) or stream < 1:
        raise ConfigError(f"variant {name}: recipe.stream must be an integer >= 1, got {stream!r}")
    return own


def _spec(entry: dict[str, Any], defaults: dict[str, Any]) -> ArchSpec:
    merged = {**defaults, **entry}
    allowed = {"name", "width", "resolution", "depth", "head_channels", "stem_stride", "strides", "dropout"}
    unknown = set(merged) - allowed
    if unknown:
        raise ConfigError(f"unknown model keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    if "name" not in merged:
        raise ConfigError(f"model entry without a name: {entry}")
    for key in ("depth", "strides"):
        if key in merged:
            merged[key] = tuple(int(v) for v in merged[key])
    return ArchSpec(**merged)


def parse(raw: dict[str, Any], native_resolution: int | None = None) -> FamilyConfig:
    """Builds a FamilyConfig from the parsed YAML mapping; checks names and shapes."""
    try:
        family = str(raw["family"])
        dataset = str(raw["dataset"]["name"])
        arch_defaults = dict(raw.get("architecture", {}))
        if native_resolution is not None:
            arch_defaults.setdefault("resolution", native_resolution)
        baseline = _spec({"name": "baseline", "depth": list(DEFAULT_DEPTH), **raw.get("baseline", {})},
                         arch_defaults)
        entries = list(raw["variants"])
        if not all(isinstance(v, dict) for v in entries):
            raise ConfigError(f"every variant must be a mapping, got {entries}")
        variants = tuple(_spec({k: x for k, x in v.items() if k != "recipe"}, arch_defaults) for v in entries)
        training = TrainConfig(**raw.get("training", {}))
        own = {str(v.get("name")): _own_recipe(str(v.get("name")), v["recipe"], training)
               for v in entries if "recipe" in v}
        streams = {str(v.get("name")): v["recipe"]["stream"] for v in entries if "stream" in v.get("recipe", {})}
        if training.member_batches not in ("shared", "independent"):
            raise ConfigError(f"training.member_batches must be shared or independent, got {training.member_batches!r}")
        if training.member_augment not in ("shared", "independent"):
            raise ConfigError(f"training.member_augment must be shared or independent, got {training.member_augment!r}")
        for key in ("diversity_weight", "peer_distill_weight"):  # terms over the members of one shared batch
            value = getattr(training, key)
            if value < 0:
                raise ConfigError(f"training.{key} must be >= 0, got {value}")
            if training.member_batches == "independent" and value > 0:
                raise ConfigError(f"training.{key} needs shared member batches (set it to 0 with independent)")
        if training.member_batches == "independent" and training.ensemble_weight > 0:
            raise ConfigError("training.ensemble_weight needs shared member batches (set it to 0 with independent)")
    except KeyError as e:
        raise ConfigError(f"family config lacks {e}") from e
    except TypeError as e:
        raise ConfigError(f"family config: {e}") from e
    names = [s.name for s in (*variants, baseline)]
    if len(set(names)) != len(names):
        raise ConfigError(f"model names must be unique: {names}")
    for n in names:
        if not (0 < len(n) <= 40 and all(c.isdigit() or c == "-" or "a" <= c <= "z" for c in n)
                and n[0] != "-" and n[-1] != "-"):
            raise ConfigError(f"model name {n!r} is not DNS-label safe ([a-z0-9-], <= 40 chars)")
    if not 1 <= len(variants) <= 8:
        raise ConfigError(f"a family needs 1..8 variants, got {len(variants)}")
    if len(own) == len(variants):
        raise ConfigError("at least one variant must be trained by the family's recipe (without a `recipe` of its own)")
    return FamilyConfig(family, dataset, baseline, variants, training, dict(raw.get("targets", {})), raw, own,
                        streams)


def load(path: Path, native_resolution: int | None = None) -> FamilyConfig:
    """Reads and parses a family config file."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read family config {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse(raw, native_resolution)


def spec_dict(spec: ArchSpec) -> dict[str, Any]:
    """A spec as plain YAML-friendly data."""
    d = asdict(spec)
    d.pop("extra", None)
    d["depth"] = list(spec.depth)
    d["strides"] = list(spec.strides)
    return d
