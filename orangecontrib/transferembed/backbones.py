"""The registry of backbones, kept as plain data.

Reading it imports nothing heavy: TensorFlow is only imported by
:mod:`orangecontrib.transferembed.extractor` when a model is actually built.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SettingsError, UnknownBackboneError

#: Global average pooling, built with ``include_top=False, pooling="avg"``.
GLOBAL_AVG_POOL = "avg_pool"

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

#: MobileNet (v1) width multipliers and their spelling in Keras' file names.
MOBILENET_ALPHAS = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}
#: MobileNet (v1) no-top file sizes in MB: 0.25 and 1.0 exact, the others
#: interpolated by parameter count.
MOBILENET_DOWNLOAD_MB = {0.25: 2.1, 0.5: 5.2, 0.75: 10.2, 1.0: 17.2}
#: MobileNetV2 width multipliers with ImageNet weights.
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


@dataclass(frozen=True)
class Backbone:
    """One image backbone of ``keras.applications``.

    ``weights_file`` is the ImageNet weights file that Keras downloads and
    caches under ``$KERAS_HOME/models``; ``{alpha}`` and ``{size}`` in it are
    filled in for the backbones that have a width multiplier.
    """

    name: str
    constructor: str  #: attribute of ``keras.applications``
    module: str  #: ``keras.applications`` submodule holding ``preprocess_input``
    feature_layer: str  #: a layer name, or :data:`GLOBAL_AVG_POOL`
    feature_size: int  #: features at ``alpha == 1``
    input_size: int  #: default (and ImageNet-trained) input size, square
    min_input_size: int
    preprocessing: str  #: "caffe", "tf", "torch" or "none" (inside the model)
    download_mb: float  #: size of the ImageNet weights file, in MB (10**6 bytes)
    weights_file: str
    weights_dir: str  #: folder of the file under :data:`KERAS_WEIGHTS_URL`, or a full URL
    family: str = ""
    fixed_input: bool = False  #: the feature needs exactly ``input_size``
    has_alpha: bool = False
    url_file: str = ""  #: the file's name on the server, where it differs from Keras'

    @property
    def pooled(self) -> bool:
        """Whether the feature is a global pool (any input size works)."""
        return self.feature_layer == GLOBAL_AVG_POOL

    @property
    def feature_description(self) -> str:
        """How the feature is taken, in words."""
        if self.pooled:
            return "global average pool"
        return f"layer {self.feature_layer}"

    def features(self, alpha: float = 1.0) -> int:
        """The number of features for width multiplier ``alpha``."""
        if self.has_alpha:
            check_alpha(self, alpha)
            return int(round(self.feature_size * alpha)) if self.name == "MobileNet" \
                else max(self.feature_size, int(round(self.feature_size * alpha)))
        return self.feature_size

    def weights_filename(self, alpha: float = 1.0, size: int | None = None) -> str:
        """The ImageNet weights file name Keras uses for this backbone."""
        size = size or self.input_size
        if self.name == "MobileNet":
            check_alpha(self, alpha)
            return self.weights_file.format(alpha=MOBILENET_ALPHAS[float(alpha)], size=size)
        if self.name == "MobileNetV2":
            check_alpha(self, alpha)
            return self.weights_file.format(alpha=_v2_alpha_text(alpha), size=size)
        return self.weights_file

    def weights_url(self, alpha: float = 1.0, size: int | None = None) -> str:
        """Where Keras downloads :meth:`weights_filename` from."""
        base = self.weights_dir if "://" in self.weights_dir \
            else KERAS_WEIGHTS_URL + self.weights_dir + "/"
        return base + (self.url_file or self.weights_filename(alpha, size))

    def download_size(self, alpha: float = 1.0) -> float:
        """The ImageNet weights file's size in MB for width ``alpha``."""
        if self.name == "MobileNet":
            return MOBILENET_DOWNLOAD_MB.get(float(alpha), self.download_mb)
        return self.download_mb

    def alphas(self) -> tuple[float, ...]:
        """The width multipliers this backbone accepts (``(1.0,)`` if none)."""
        if self.name == "MobileNet":
            return tuple(MOBILENET_ALPHAS)
        if self.name == "MobileNetV2":
            return MOBILENET_V2_ALPHAS
        return (1.0,)


def _v2_alpha_text(alpha: float) -> str:
    return str(float(alpha))


def check_alpha(backbone: Backbone, alpha: float) -> None:
    """Raise ``SettingsError`` if ``alpha`` is not a valid width for ``backbone``."""
    valid = backbone.alphas()
    if float(alpha) not in valid:
        raise SettingsError(
            f"{backbone.name} takes alpha in {', '.join(f'{a:g}' for a in valid)}; "
            f"got {alpha:g}")


def _pool(name, constructor, module, size, input_size, min_size, prep, mb, wfile, wdir,
          family, **kw) -> Backbone:
    return Backbone(name, constructor, module, GLOBAL_AVG_POOL, size, input_size, min_size,
                    prep, mb, wfile, wdir, family, **kw)


_NOTOP = "_weights_tf_dim_ordering_tf_kernels_notop.h5"

#: name -> Backbone; the seven backbones of the original tool come first.
_ENTRIES = [
    _pool("Xception", "Xception", "xception", 2048, 299, 71, "tf", 83.7,
          "xception" + _NOTOP, "xception", "Xception"),
    Backbone("VGG16", "VGG16", "vgg16", "fc2", 4096, 224, 224, "caffe", 553.5,
             "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "vgg16", "VGG", fixed_input=True),
    Backbone("VGG19", "VGG19", "vgg19", "fc2", 4096, 224, 224, "caffe", 574.7,
             "vgg19_weights_tf_dim_ordering_tf_kernels.h5", "vgg19", "VGG", fixed_input=True),
    _pool("ResNet50", "ResNet50", "resnet50", 2048, 224, 32, "caffe", 94.8,
          "resnet50" + _NOTOP, "resnet", "ResNet"),
    _pool("InceptionV3", "InceptionV3", "inception_v3", 2048, 299, 75, "tf", 87.9,
          "inception_v3" + _NOTOP, "inception_v3", "Inception"),
    _pool("InceptionResNetV2", "InceptionResNetV2", "inception_resnet_v2", 1536, 299, 75, "tf",
          219.1, "inception_resnet_v2" + _NOTOP, "inception_resnet_v2", "Inception"),
    _pool("MobileNet", "MobileNet", "mobilenet", 1024, 224, 32, "tf", 17.2,
          "mobilenet_{alpha}_{size}_tf_no_top.h5", "mobilenet", "MobileNet", has_alpha=True),
    # --- the rest of keras.applications ---
    _pool("MobileNetV2", "MobileNetV2", "mobilenet_v2", 1280, 224, 32, "tf", 9.4,
          "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}_no_top.h5",
          "mobilenet_v2", "MobileNet", has_alpha=True),
    _pool("MobileNetV3Small", "MobileNetV3Small", "mobilenet_v3", 576, 224, 32, "none", 4.3,
          "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", "mobilenet_v3",
          "MobileNet"),
    _pool("MobileNetV3Large", "MobileNetV3Large", "mobilenet_v3", 960, 224, 32, "none", 12.7,
          "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", "mobilenet_v3",
          "MobileNet"),
    _pool("ResNet101", "ResNet101", "resnet", 2048, 224, 32, "caffe", 171.4,
          "resnet101" + _NOTOP, "resnet", "ResNet"),
    _pool("ResNet152", "ResNet152", "resnet", 2048, 224, 32, "caffe", 234.7,
          "resnet152" + _NOTOP, "resnet", "ResNet"),
    _pool("ResNet50V2", "ResNet50V2", "resnet_v2", 2048, 224, 32, "tf", 94.4,
          "resnet50v2" + _NOTOP, "resnet", "ResNet"),
    _pool("ResNet101V2", "ResNet101V2", "resnet_v2", 2048, 224, 32, "tf", 171.3,
          "resnet101v2" + _NOTOP, "resnet", "ResNet"),
    _pool("ResNet152V2", "ResNet152V2", "resnet_v2", 2048, 224, 32, "tf", 234.5,
          "resnet152v2" + _NOTOP, "resnet", "ResNet"),
    _pool("DenseNet121", "DenseNet121", "densenet", 1024, 224, 32, "torch", 29.1,
          "densenet121" + _NOTOP, "densenet", "DenseNet"),
    _pool("DenseNet169", "DenseNet169", "densenet", 1664, 224, 32, "torch", 51.9,
          "densenet169" + _NOTOP, "densenet", "DenseNet"),
    _pool("DenseNet201", "DenseNet201", "densenet", 1920, 224, 32, "torch", 74.8,
          "densenet201" + _NOTOP, "densenet", "DenseNet"),
    _pool("NASNetMobile", "NASNetMobile", "nasnet", 1056, 224, 224, "tf", 20.0,
          "nasnet_mobile_no_top.h5", "nasnet", "NASNet", fixed_input=True,
          url_file="NASNet-mobile-no-top.h5"),
    _pool("NASNetLarge", "NASNetLarge", "nasnet", 4032, 331, 331, "tf", 343.6,
          "nasnet_large_no_top.h5", "nasnet", "NASNet", fixed_input=True,
          url_file="NASNet-large-no-top.h5"),
]

for _i, (_size, _mb) in enumerate([(224, 16.7), (240, 27.0), (260, 31.8), (300, 43.9),
                                    (380, 71.7), (456, 115.3), (528, 165.2), (600, 258.1)]):
    _ENTRIES.append(_pool(
        f"EfficientNetB{_i}", f"EfficientNetB{_i}", "efficientnet",
        [1280, 1280, 1408, 1536, 1792, 2048, 2304, 2560][_i], _size, 32, "none", _mb,
        f"efficientnetb{_i}_notop.h5", "https://storage.googleapis.com/keras-applications/",
        "EfficientNet"))

for _name, _size, _feat, _mb in [("B0", 224, 1280, 24.3), ("B1", 240, 1280, 28.5),
                                  ("B2", 260, 1408, 35.8), ("B3", 300, 1536, 52.6),
                                  ("S", 384, 1280, 82.4), ("M", 480, 1280, 214.2),
                                  ("L", 480, 1280, 473.2)]:
    _ENTRIES.append(_pool(
        f"EfficientNetV2{_name}", f"EfficientNetV2{_name}", "efficientnet_v2", _feat, _size, 32,
        "none", _mb, f"efficientnetv2-{_name.lower()}_notop.h5", "efficientnet_v2",
        "EfficientNetV2"))

for _name, _feat, _mb in [("Tiny", 768, 111.7), ("Small", 768, 198.6), ("Base", 1024, 350.9),
                          ("Large", 1536, 785.6), ("XLarge", 2048, 1393.3)]:
    _ENTRIES.append(_pool(
        f"ConvNeXt{_name}", f"ConvNeXt{_name}", "convnext", _feat, 224, 32, "none", _mb,
        f"convnext_{_name.lower()}_notop.h5", "convnext", "ConvNeXt"))

#: The registry, in display order.
BACKBONES: dict[str, Backbone] = {b.name: b for b in _ENTRIES}
#: The seven backbones of the original ``generate_embedding.py``.
ORIGINAL_BACKBONES = ("Xception", "VGG16", "VGG19", "ResNet50", "InceptionV3",
                      "InceptionResNetV2", "MobileNet")
_BY_LOWER = {name.lower(): b for name, b in BACKBONES.items()}


def get_backbone(name: str | Backbone) -> Backbone:
    """The backbone called ``name``, matched case-insensitively."""
    if isinstance(name, Backbone):
        return name
    backbone = _BY_LOWER.get(str(name).strip().lower())
    if backbone is None:
        raise UnknownBackboneError(
            f"Unknown model {name!r}. Valid models: {', '.join(BACKBONES)}")
    return backbone


def backbone_names() -> list[str]:
    """All backbone names, the original seven first."""
    return list(BACKBONES)
