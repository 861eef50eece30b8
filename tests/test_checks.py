"""Errors before work: every setting, layer names included, is checked before any
conversion, download or image read, in the command line, in ``compare`` and in the API."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from orangecontrib.transferembed import EmbedConfig, compare, validate
from orangecontrib.transferembed.cli.main import main
from orangecontrib.transferembed.errors import SettingsError
from orangecontrib.transferembed.models import layers as layer_lists
from orangecontrib.transferembed.pipeline.cache import default_cache_dir


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), (80 * i, 60, 200)).save(root / label / f"{i}.png")
    return root


def _store_files():
    folder = default_cache_dir() / "converted"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.own_store
def test_cli_misspelt_layer_is_one_message_and_no_work(images, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["--folder", str(images), "-tm", "MobileNet", "--alpha", "0.25",
              "--layer", "conv_pw_11_relux", "-dir", str(out)])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err  # no "note: ... does not convert" first
    assert lines[0].startswith("transferembed: error: MobileNet has no layer "
                               "'conv_pw_11_relux'")
    assert "did you mean 'conv_pw_11_relu'?" in lines[0]
    assert "--list-layers MobileNet --alpha 0.25" in lines[0]
    assert "Converting" not in captured.err + captured.out
    assert _store_files() == []  # nothing converted, nothing marked as failing
    assert not list(out.iterdir())


@pytest.mark.own_store
def test_compare_misspelt_layer_stops_before_any_conversion(images, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--folder", str(images), "-tm", "MobileNet,MobileNet:nope",
              "--alpha", "0.25", "-dir", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "MobileNet has no layer 'nope'" in err and "--list-layers" in err
    assert _store_files() == [] and not list(out.iterdir())
    with pytest.raises(SettingsError, match="no layer 'nope'"):
        compare(images, "MobileNet,MobileNet:nope", alpha=0.25,
                is_cancelled=lambda: pytest.fail("the comparison started"))
    assert _store_files() == []


def test_validate_checks_every_setting():
    config = validate("MobileNet", alpha=0.25, layer="conv_pw_11_relu", weights=None)
    assert isinstance(config, EmbedConfig) and config.layer == "conv_pw_11_relu"
    with pytest.raises(SettingsError, match="no layer 'conv_pw_11_relux'"):
        validate("MobileNet", alpha=0.25, layer="conv_pw_11_relux")
    with pytest.raises(SettingsError, match="int8"):
        validate("MobileNet", alpha=0.25, runtime="keras", precision="int8")
    with pytest.raises(SettingsError, match="alpha"):
        validate("MobileNet", alpha=0.3)


def test_layer_names_are_kept_once_listed(monkeypatch):
    validate("MobileNet", alpha=0.5, layer="conv_pw_3_relu", weights=None)
    kept = default_cache_dir() / "layers"
    (found,) = [p for p in kept.iterdir() if p.name.startswith("MobileNet-alpha0.5-")]
    names = [row["name"] for row in json.loads(found.read_text())]
    assert "conv_pw_3_relu" in names and "conv_pw_13_relu" in names

    def no_build(*args):
        raise AssertionError("built the model again")

    from orangecontrib.transferembed.models import builders

    monkeypatch.setattr(builders, "list_layers", no_build)
    monkeypatch.setattr(layer_lists, "_known", {})  # a new process: only the file is left
    validate("MobileNet", alpha=0.5, layer="conv_pw_3_relu", weights=None)
    with pytest.raises(SettingsError, match="did you mean 'conv_pw_3_relu'"):
        validate("MobileNet", alpha=0.5, layer="conv_pw_3_rel", weights=None)


def test_a_damaged_layer_list_is_listed_again(monkeypatch):
    validate("MobileNet", alpha=0.75, layer="conv_pw_3_relu", weights=None)
    (found,) = (default_cache_dir() / "layers").glob("MobileNet-alpha0.75-*.json")
    found.write_text("not json")
    monkeypatch.setattr(layer_lists, "_known", {})
    validate("MobileNet", alpha=0.75, layer="conv_pw_3_relu", weights=None)
    assert json.loads(found.read_text())


def test_embed_checks_the_layer_before_reading(tmp_path):
    from orangecontrib.transferembed import embed

    with pytest.raises(SettingsError, match="no layer 'nope'"):
        embed(np.zeros((2, 32, 32, 3), np.uint8), "MobileNet", alpha=0.25, layer="nope",
              weights=None, cache=False)


def test_layer_lists_are_kept_in_the_cache_folder_the_caller_names(tmp_path, monkeypatch):
    from orangecontrib.transferembed import list_layers

    default = tmp_path / "default"
    monkeypatch.setenv("TRANSFEREMBED_CACHE_DIR", str(default))
    named = tmp_path / "named"
    names = [layer.name for layer in list_layers("MobileNet", 0.5, cache=named)]
    assert "conv_pw_11_relu" in names
    assert list((named / "layers").glob("*.json"))
    assert not default.exists() or not any(default.rglob("*.json"))
