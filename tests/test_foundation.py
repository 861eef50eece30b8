"""Foundation encoders from keras-hub: DINOv2, SigLIP 2 and CLIP, offline.

Every preset here is a small random-initialised model saved by keras-hub's own
``save_to_preset``; nothing is downloaded. The published architectures are
built with ``-weights None``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from AnyQt.QtCore import Qt
from Orange.widgets.tests import base
from PIL import Image

from orangecontrib.transferembed import embed
from orangecontrib.transferembed.cli.main import main
from orangecontrib.transferembed.config import EmbedConfig
from orangecontrib.transferembed.errors import SettingsError, WeightsUnavailableError
from orangecontrib.transferembed.models.registry import get_backbone

keras_hub = pytest.importorskip("keras_hub")

SIDE = 28  #: two DINOv2 patches of 14 px; also the tiny SigLIP and CLIP towers' size
IMAGENET_SCALE = [1 / (255 * s) for s in (0.229, 0.224, 0.225)]
IMAGENET_OFFSET = [-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                          strict=True)]


def _save_dinov2(folder: Path) -> Path:
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64,
        image_shape=(SIDE, SIDE, 3), position_embedding_shape=(SIDE, SIDE))
    converter = keras_hub.layers.DINOV2ImageConverter(
        image_size=(SIDE, SIDE), scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET)
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return folder


@pytest.fixture(scope="module")
def dinov2_preset(tmp_path_factory) -> Path:
    """A random-initialised ``dinov2_small``-kind preset folder, saved by keras-hub."""
    return _save_dinov2(tmp_path_factory.mktemp("presets") / "dinov2_small")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Eight PNGs at the preset's own size, in two class folders."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for cls in ("ants", "bees"):
        (root / cls).mkdir()
        for i in range(4):
            pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


def _pixels(root: Path) -> np.ndarray:
    """The photos in the order the folder source reads them: class, then file name."""
    paths = sorted(root.glob("*/*.png"), key=lambda p: (p.parent.name, p.name))
    return np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths])


def _close(found: np.ndarray, expected: np.ndarray, rtol: float = 1e-4) -> bool:
    """Equal within ``rtol`` of the largest value (random weights: no absolute tolerance)."""
    return found.shape == expected.shape and \
        float(np.abs(found - expected).max()) <= rtol * float(np.abs(expected).max())


def _run(argv: list[str], out: Path, name: str = "run") -> np.ndarray:
    assert main([*argv, "-dir", str(out), "-n", name, "-q"]) == 0
    return np.load(out / f"{name}_data.npy", allow_pickle=False)


def test_preset_folder_through_the_cli_is_keras_hubs_class_token(
        dinov2_preset, photos, tmp_path, empty_keras_home):
    """The checked path: a preset saved by keras-hub, the CLI offline, the default
    runtime (TFLite fp32): keras-hub's image converter plus the backbone's class token,
    within 1e-4, and equal across runs."""
    argv = ["--folder", str(photos), "-tm", "dinov2_small", "-weights", str(dinov2_preset),
            "--no-cache"]
    first = _run(argv, tmp_path, "first")
    again = _run(argv, tmp_path, "again")
    backbone = keras_hub.models.Backbone.from_preset(str(dinov2_preset))
    converter = keras_hub.layers.ImageConverter.from_preset(str(dinov2_preset))
    expected = np.asarray(backbone.predict_on_batch(converter(_pixels(photos))))[:, 0]
    assert first.shape == (8, 32)
    assert _close(first, expected)
    assert np.array_equal(first, again)
    keras = _run([*argv, "--runtime", "keras"], tmp_path, "keras")
    assert _close(keras, expected, 1e-5)


def test_a_preset_folder_is_recorded_by_its_digest(dinov2_preset, photos, tmp_path):
    """A preset folder as weights (a folder, not a file) is named in the output's
    provenance by the hash of its files."""
    from Orange.data import Table

    assert main(["--folder", str(photos), "-tm", "dinov2_small", "-weights",
                 str(dinov2_preset), "--no-cache", "-to-tab", "-dir", str(tmp_path),
                 "-n", "tab", "-q"]) == 0
    table = Table(str(tmp_path / "tab.tab"))
    assert table.attributes["weights"].startswith("preset-sha256:")
    assert table.attributes["backbone"] == "dinov2_small"


def test_patch_mean_and_blocks(dinov2_preset, photos):
    """``--pooling avg``: the mean of the patch tokens; ``--layer blockK``: block K's
    tokens through the final layer norm."""
    backbone = keras_hub.models.Backbone.from_preset(str(dinov2_preset))
    converter = keras_hub.layers.ImageConverter.from_preset(str(dinov2_preset))
    tokens = np.asarray(backbone.predict_on_batch(converter(_pixels(photos))))
    mean = embed(str(photos), "dinov2_small", weights=dinov2_preset, pooling="avg",
                 runtime="keras", cache=False)
    assert _close(mean.embeddings, tokens[:, 1:].mean(axis=1), 1e-5)
    block = embed(str(photos), "dinov2_small", weights=dinov2_preset, layer="block2",
                  runtime="keras", cache=False)
    assert _close(block.embeddings, tokens[:, 0], 1e-5)  # the last block is the output
    with pytest.raises(SettingsError, match="block1 to block12"):
        embed(str(photos), "dinov2_small", weights=None, layer="conv1", cache=False)


def test_offline_message_leads_to_a_working_command(
        dinov2_preset, photos, tmp_path, empty_keras_home, monkeypatch, capsys):
    """No preset here and no network: exit 2 within seconds, naming the preset, Kaggle and
    the folder; a copy of the preset put in that folder makes the same command work."""
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    argv = ["--folder", str(photos), "-tm", "dinov2_small"]
    started = time.monotonic()
    with pytest.raises(SystemExit) as info:
        main([*argv, "-dir", str(tmp_path), "-n", "offline", "-q"])
    assert info.value.code == 2 and time.monotonic() - started < 30
    message = capsys.readouterr().err
    folder = empty_keras_home / "presets" / "dinov2_small"
    assert "dinov2_small" in message and str(folder) in message
    assert "https://www.kaggle.com/models/keras/dinov2/keras/dinov2_small/1" in message
    assert "keras/dinov2/keras/dinov2_small/1" in message and "-weights None" in message
    assert not (tmp_path / "offline_data.npy").exists()
    shutil.copytree(dinov2_preset, folder)
    assert EmbedConfig(model="dinov2_small").input_size == SIDE  # its image converter's
    assert _run(argv, tmp_path, "online").shape == (8, 32)
    assert main(["--list-models"]) == 0
    assert "dinov2_small" in [line.split()[0] for line in capsys.readouterr().out.splitlines()
                              if "(here)" in line]


def test_a_folder_of_another_kind_is_refused(dinov2_preset, photos):
    with pytest.raises(WeightsUnavailableError, match="SigLIPBackbone"):
        embed(str(photos), "siglip2_base_patch16_224", weights=dinov2_preset, cache=False)


@pytest.mark.parametrize("name, width", [("siglip2_base_patch16_224", 768),
                                         ("clip_vit_base_patch32", 512)])
def test_published_widths_with_random_weights(name, width, photos, tmp_path):
    """SigLIP 2 and CLIP: the published architecture, built from the registry's numbers."""
    argv = ["--folder", str(photos), "-tm", name, "-weights", "None", "--runtime", "keras",
            "--no-cache", "--resize", "stretch"]
    features = _run(argv, tmp_path)
    assert features.shape == (8, width) and np.isfinite(features).all()
    assert get_backbone(name).features() == width


def test_clip_large_width_without_running():
    from orangecontrib.transferembed.models import hub

    backbone = get_backbone("clip_vit_large_patch14")
    model, _ = hub.build(backbone, backbone.input_size, None)
    assert model.output_shape == (None, 768)


def _tower_preset(kind: str, folder: Path) -> Path:
    """A tiny SigLIP (``kind`` "SigLIP") or CLIP ("CLIP") preset: both towers and the
    image converter, as keras-hub saves them."""
    models = keras_hub.models
    tower = dict(num_heads=2, intermediate_dim=64, hidden_dim=32)
    vision = getattr(models, f"{kind}VisionEncoder")(
        patch_size=14, num_layers=2, image_shape=(SIDE, SIDE, 3), **tower)
    text = getattr(models, f"{kind}TextEncoder")(
        vocabulary_size=64, embedding_dim=32, num_layers=1, max_sequence_length=8, **tower)
    projection = {"projection_dim": 24} if kind == "CLIP" else {}
    getattr(models, f"{kind}Backbone")(vision, text, **projection).save_to_preset(str(folder))
    scale, offset = (IMAGENET_SCALE, IMAGENET_OFFSET) if kind == "CLIP" else (1 / 127.5, -1.0)
    getattr(keras_hub.layers, f"{kind}ImageConverter")(
        image_size=(SIDE, SIDE), scale=scale, offset=offset).save_to_preset(str(folder))
    return folder


@pytest.mark.parametrize("name, kind", [("siglip2_base_patch16_224", "SigLIP"),
                                        ("clip_vit_base_patch16", "CLIP")])
def test_converted_vision_embedding_is_keras_hubs(name, kind, photos, tmp_path):
    """The default (TFLite fp32) equals ``get_vision_embeddings`` of the image converter's
    output within 1e-4; only the image tower is kept."""
    folder = _tower_preset(kind, tmp_path / name)
    result = embed(str(photos), name, weights=folder, cache=False)
    assert result.config.runtime == "tflite" and not result.notices
    backbone = keras_hub.models.Backbone.from_preset(str(folder))
    converter = keras_hub.layers.ImageConverter.from_preset(str(folder))
    expected = np.asarray(backbone.get_vision_embeddings(converter(_pixels(photos))))
    assert _close(result.embeddings, expected)


def test_input_sizes():
    """DINOv2 interpolates its position embeddings (multiples of 14); SigLIP and CLIP
    take only their own size."""
    assert EmbedConfig(model="dinov2_small", weights=None, input_size=112).input_size == 112
    with pytest.raises(SettingsError, match="multiples of its patch size, 14"):
        EmbedConfig(model="dinov2_small", weights=None, input_size=100)
    with pytest.raises(SettingsError, match="does not interpolate"):
        EmbedConfig(model="siglip2_base_patch16_224", weights=None, input_size=256)
    with pytest.raises(SettingsError, match="own size"):
        EmbedConfig(model="clip_vit_base_patch32", weights=None, input_size="native")
    with pytest.raises(SettingsError, match="no class token"):
        EmbedConfig(model="siglip2_base_patch16_224", weights=None, pooling="cls")


def test_preset_folder_gives_its_own_input_size(dinov2_preset):
    config = EmbedConfig(model="DINOv2_Small", weights=dinov2_preset)
    assert config.input_size == SIDE and config.pooling == "cls"
    assert EmbedConfig(model="dinov2_small", weights=dinov2_preset / "config.json").weights \
        == str(dinov2_preset.resolve())
    assert EmbedConfig(model="ResNet50", weights=None).pooling == "avg"


def test_compare_takes_foundation_candidates_beside_cnns(photos, tmp_path):
    out = tmp_path / "out"
    argv = ["compare", "--folder", str(photos), "-tm", "MobileNet,dinov2_small",
            "--alpha", "0.25", "-weights", "None", "--cv", "2", "--runtime", "keras",
            "-dir", str(out), "-n", "mixed", "-q"]
    assert main(argv) == 0
    rows = (out / "mixed_compare.csv").read_text(encoding="utf-8").splitlines()
    scored = {row.split(",")[0]: row.split(",")[2] for row in rows[1:]}
    assert scored == {"MobileNet": "256", "dinov2_small": "384"}


class TestWidgetLists(base.WidgetTest):
    """Both widgets offer the three families, after the classic CNNs."""

    def test_transfer_embedding_groups_and_marks_the_families(self):
        from orangecontrib.transferembed.widgets.owtransferembedding import (
            OWTransferEmbedding,
        )

        widget = self.create_widget(OWTransferEmbedding)
        combo = widget.model_combo
        texts = [combo.itemText(i) for i in range(combo.count())]
        for family in ("DINOv2", "SigLIP 2", "CLIP"):
            assert any(f"· {family} foundation encoder" in text for text in texts)
        first = min(i for i, text in enumerate(texts) if "foundation" in text)
        assert all("foundation" in text for text in texts[first:])
        assert texts[first].startswith("dinov2_small")
        widget.model_name = "dinov2_small"
        assert widget._config().pooling == "cls"  # the class token, whatever Pooling says

    def test_compare_backbones_offers_them(self):
        from orangecontrib.transferembed.widgets.owcomparebackbones import (
            OWCompareBackbones,
        )

        widget = self.create_widget(OWCompareBackbones)
        model = widget.candidate_model
        labels = [model.item(i).data(Qt.ItemDataRole.UserRole) for i in range(model.rowCount())]
        assert {"dinov2_small", "siglip2_base_patch16_224", "clip_vit_base_patch16"} \
            <= set(labels)


def test_without_keras_hub_the_line_that_adds_it_is_said(monkeypatch, photos):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *more: None if name == "keras_hub" else real(name, *more))
    with pytest.raises(WeightsUnavailableError,
                       match=r'pip install "Orange3-TransferEmbed\[foundation\]"'):
        embed(str(photos), "dinov2_small", weights=None, cache=False)


def test_a_preset_folder_is_known_by_its_content(dinov2_preset, tmp_path):
    from orangecontrib.transferembed.models.weights import weights_identity

    backbone = get_backbone("dinov2_small")
    copy = shutil.copytree(dinov2_preset, tmp_path / "copy")
    assert weights_identity(backbone, str(copy)) == \
        weights_identity(backbone, str(dinov2_preset))
    (copy / "model.weights.h5").write_bytes(b"other")
    assert weights_identity(backbone, str(copy)).startswith("preset:")
    assert weights_identity(backbone, str(copy)) != \
        weights_identity(backbone, str(dinov2_preset))


def test_kagglehubs_own_copy_is_used_offline(dinov2_preset, tmp_path, empty_keras_home,
                                             monkeypatch):
    from orangecontrib.transferembed.models.weights import resolve_weights

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    copy = tmp_path / "kagglehub" / "models" / "keras/dinov2/keras/dinov2_small/1"
    shutil.copytree(dinov2_preset, copy)
    assert resolve_weights(get_backbone("dinov2_small"), "imagenet") == str(copy)
