"""The backbone registry: the original seven, names, and real built feature sizes.

Every entry is checked against Keras itself by ``bench/check_registry.py``
(slow: it builds all of them); here only the cheap backbones are built.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from orangecontrib.transferembed.errors import TransferEmbedError, UnknownBackboneError
from orangecontrib.transferembed.models.registry import (
    BACKBONES,
    ORIGINAL_BACKBONES,
    backbone_names,
    get_backbone,
)

#: The original generate_embedding.py's models and feature sizes.
ORIGINAL = {
    "VGG16": ("fc2", 4096),
    "VGG19": ("fc2", 4096),
    "ResNet50": ("avg_pool", 2048),
    "Xception": ("avg_pool", 2048),
    "InceptionV3": ("avg_pool", 2048),
    "InceptionResNetV2": ("avg_pool", 1536),
    "MobileNet": ("avg_pool", 1024),
}


@pytest.mark.parametrize("name", sorted(ORIGINAL))
def test_original_backbones_keep_their_features(name):
    backbone = get_backbone(name)
    layer, size = ORIGINAL[name]
    assert backbone.feature_layer == layer
    assert backbone.features() == size
    assert backbone.pooled == (layer == "avg_pool")


def test_original_seven_come_first():
    assert set(ORIGINAL_BACKBONES) == set(ORIGINAL)
    assert set(backbone_names()[:7]) == set(ORIGINAL)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, 1.0])
def test_mobilenet_width_multiplier(alpha):
    mobilenet = get_backbone("MobileNet")
    assert mobilenet.features(alpha) == int(1024 * alpha)
    assert mobilenet.weights_filename(alpha).endswith("_224_tf_no_top.h5")


def test_mobilenet_rejects_other_alphas():
    with pytest.raises(ValueError, match="0.25, 0.5, 0.75, 1"):
        get_backbone("MobileNet").features(0.3)


def test_mobilenet_025_file_is_the_shared_one():
    assert get_backbone("MobileNet").weights_filename(0.25) == "mobilenet_2_5_224_tf_no_top.h5"
    assert get_backbone("MobileNet").weights_url(0.25) == (
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
        "mobilenet_2_5_224_tf_no_top.h5")


def test_vgg16_downloads_the_file_with_top():
    vgg = get_backbone("VGG16")
    assert vgg.weights_filename() == "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    assert vgg.weights_url() == (
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    assert vgg.download_mb == pytest.approx(553.5, abs=0.1)  # 553,467,096 bytes


@pytest.mark.parametrize("spelling", ["mobilenet", "MOBILENET", " MobileNet ", "mObIlEnEt"])
def test_names_are_case_insensitive(spelling):
    assert get_backbone(spelling).name == "MobileNet"


def test_get_backbone_passes_a_backbone_through():
    vgg = get_backbone("vgg16")
    assert get_backbone(vgg) is vgg


def test_unknown_name_points_to_the_list_and_the_closest_name():
    with pytest.raises(UnknownBackboneError) as info:
        get_backbone("AlexNet")
    message = str(info.value)
    assert "AlexNet" in message and "--list-models" in message
    assert f"all {len(BACKBONES)}" in message
    with pytest.raises(UnknownBackboneError) as info:
        get_backbone("ResNet05")
    assert "did you mean 'ResNet50'?" in str(info.value)
    assert isinstance(info.value, TransferEmbedError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", [
    "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "EfficientNetB7",
    "EfficientNetV2B0", "EfficientNetV2L", "ConvNeXtTiny", "ConvNeXtXLarge", "DenseNet121",
    "DenseNet201", "NASNetMobile", "NASNetLarge", "ResNet101", "ResNet152", "ResNet50V2",
    "ResNet152V2"])
def test_the_rest_of_keras_applications_is_there(name):
    assert get_backbone(name).name == name


CNNS = [b for b in BACKBONES.values() if not b.foundation]
FOUNDATION = [b for b in BACKBONES.values() if b.foundation]


@pytest.mark.parametrize("backbone", CNNS, ids=[b.name for b in CNNS])
def test_entries_are_consistent(backbone):
    assert backbone.min_input_size <= backbone.input_size
    if backbone.fixed_input:
        assert backbone.min_input_size == backbone.input_size
    assert backbone.preprocessing in ("caffe", "tf", "torch", "none")
    assert backbone.download_mb > 0
    for alpha in backbone.alphas():
        assert backbone.features(alpha) > 0
        name = backbone.weights_filename(alpha)
        assert name.endswith(".h5") and "{" not in name
        assert backbone.weights_url(alpha).startswith("https://storage.googleapis.com/")
        if backbone.pooled:  # built without the top: only the no-top file is downloaded
            assert "notop" in name.replace("_", "").replace("-", "")


def test_one_record_per_weights_variant():
    """Each width is a record of its own, with its file, URL and size written out."""
    mobilenet = get_backbone("MobileNet")
    assert [v.alpha for v in mobilenet.variants] == [0.25, 0.5, 0.75, 1.0]
    quarter = mobilenet.variant(0.25)
    assert (quarter.features, quarter.file, quarter.download_mb) == \
        (256, "mobilenet_2_5_224_tf_no_top.h5", 2.1)
    assert quarter.url.endswith("/mobilenet/" + quarter.file)
    assert get_backbone("MobileNetV2").features(1.4) == 1792
    assert get_backbone("MobileNetV2").features(0.35) == 1280
    assert not get_backbone("ResNet50").has_alpha


@pytest.mark.parametrize("backbone", FOUNDATION, ids=[b.name for b in FOUNDATION])
def test_foundation_entries_are_consistent(backbone):
    arch = backbone.architecture
    assert backbone.library == "keras-hub" and backbone.preprocessing == "preset"
    assert backbone.weights_filename() == backbone.name  # the preset, and its folder
    assert arch.kaggle_handle.endswith(f"/keras/{backbone.name}/" + arch.kaggle_handle[-1])
    assert backbone.weights_url() == "https://www.kaggle.com/models/" + arch.kaggle_handle
    assert backbone.input_size % arch.patch_size == 0 and backbone.download_mb > 0
    width = arch.projection_dim or arch.hidden_dim
    assert backbone.features() == width
    assert backbone.fixed_input == (arch.kind != "dinov2")


def test_families_are_true():
    """``family`` groups the lists: every family named, the foundation ones last."""
    families = [b.family for b in BACKBONES.values()]
    assert {"VGG", "ResNet", "MobileNet", "DINOv2", "SigLIP", "SigLIP 2", "CLIP"} \
        <= set(families)
    assert {b.family for b in FOUNDATION} == {"DINOv2", "SigLIP", "SigLIP 2", "CLIP"}
    assert list(BACKBONES.values())[len(CNNS):] == FOUNDATION


def test_registry_does_not_import_tensorflow():
    """Nor keras-hub: ``--list-models`` shows the foundation encoders from plain data."""
    code = (
        "import sys\n"
        "import orangecontrib.transferembed as te\n"
        "from orangecontrib.transferembed.cli.main import main\n"
        "main(['--list-models'])\n"
        "from orangecontrib.transferembed.models.registry import BACKBONES, get_backbone\n"
        "from orangecontrib.transferembed.config import EmbedConfig\n"
        "sizes = [b.features(a) for b in BACKBONES.values() for a in b.alphas()]\n"
        "EmbedConfig(model='vgg16', weights=None)\n"
        "assert get_backbone('mobilenet').features(0.25) == 256\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules]\n"
        "print('heavy:', heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout
    assert "siglip2_base_patch16_224" in done.stdout and "Foundation encoders" in done.stdout


#: Cheap backbones built with random weights at a small input: the real output
#: must have the registry's feature size.
CHEAP = [("MobileNet", 0.25), ("MobileNet", 0.5), ("MobileNet", 0.75), ("MobileNet", 1.0),
         ("MobileNetV2", 0.35), ("MobileNetV3Small", 1.0),
         ("MobileNetV3Large", 1.0), ("EfficientNetB0", 1.0), ("DenseNet121", 1.0)]


@pytest.mark.parametrize("name, alpha", CHEAP, ids=[f"{n}-{a:g}" for n, a in CHEAP])
def test_built_feature_size_matches_registry(name, alpha):
    import keras

    from orangecontrib.transferembed.models.builders import build

    backbone = get_backbone(name)
    side = backbone.min_input_size
    model = build(backbone, alpha, side, None)
    assert model.output_shape == (None, backbone.features(alpha))
    keras.backend.clear_session()


def test_keras_runtime_runs_at_the_minimum_input():
    from orangecontrib.transferembed.config import EmbedConfig
    from orangecontrib.transferembed.runtimes.keras_runtime import KerasRuntime

    config = EmbedConfig(model="MobileNet", weights=None, alpha=0.25, input_size=32,
                         runtime="keras")
    runtime = KerasRuntime(config, None)
    assert runtime.feature_size == 256
    out = runtime(np.full((2, 32, 32, 3), 100, np.float32))
    assert out.shape == (2, 256)
    assert out.dtype == np.float32
