"""The registry of backbones, kept as plain data.

Reading it imports nothing heavy: TensorFlow is imported only when a model is
built (:mod:`.models`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SettingsError, UnknownBackboneError

#: Global average pooling, built with ``include_top=False, pooling="avg"``.
GLOBAL_AVG_POOL = "avg_pool"

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Widths:
    """A backbone's width multipliers (Keras' ``alpha``) and what depends on them.

    The tuples run in step with ``values``: how the width is spelled in the
    weights file's name, the file's size, and its hash ("" where unknown).
    """

    values: tuple[float, ...]
    file_texts: tuple[str, ...]
    download_mb: tuple[float, ...]
    hashes: tuple[str, ...] = ()
    #: Features never fall below the backbone's ``feature_size`` (MobileNetV2's
    #: last layer keeps 1280 channels for widths below 1).
    at_least_base: bool = False

    def position(self, alpha: float) -> int:
        return self.values.index(float(alpha))


@dataclass(frozen=True)
class Backbone:
    """One image backbone of ``keras.applications``.

    ``weights_file`` is the ImageNet weights file that Keras downloads and
    caches under ``$KERAS_HOME/models``; ``{alpha}`` in it is filled in for
    backbones with :attr:`widths`.
    """

    name: str
    family: str
    module: str  #: ``keras.applications`` submodule holding ``preprocess_input``
    feature_size: int  #: features at width 1
    input_size: int  #: default (and ImageNet-trained) input size, square
    min_input_size: int
    preprocessing: str  #: "caffe", "tf", "torch" or "none" (inside the model)
    download_mb: float  #: size of the ImageNet weights file, in MB (10**6 bytes)
    weights_file: str
    weights_dir: str  #: folder of the file under :data:`KERAS_WEIGHTS_URL`, or a full URL
    feature_layer: str = GLOBAL_AVG_POOL  #: a layer name, or :data:`GLOBAL_AVG_POOL`
    fixed_input: bool = False  #: the feature needs exactly ``input_size``
    url_file: str = ""  #: the file's name on the server, where it differs from Keras'
    weights_hash: str = ""  #: Keras' published md5 or sha256 of the file, if any
    widths: Widths | None = None

    @property
    def constructor(self) -> str:
        """The attribute of ``keras.applications`` that builds it."""
        return self.name

    @property
    def has_alpha(self) -> bool:
        return self.widths is not None

    @property
    def pooled(self) -> bool:
        """Whether the default feature is a global pool (any input size works)."""
        return self.feature_layer == GLOBAL_AVG_POOL

    @property
    def feature_description(self) -> str:
        """How the default feature is taken, in words."""
        if self.pooled:
            return "global average pool"
        return f"layer {self.feature_layer}"

    def alphas(self) -> tuple[float, ...]:
        """The width multipliers this backbone accepts (``(1.0,)`` if none)."""
        return self.widths.values if self.widths else (1.0,)

    def usable_alpha(self, alpha: float) -> float:
        """``alpha`` if this backbone takes it, else 1.0 (a width set for another backbone)."""
        return float(alpha) if float(alpha) in self.alphas() else 1.0

    def _width(self, alpha: float) -> int | None:
        check_alpha(self, alpha)
        return self.widths.position(alpha) if self.widths else None

    def features(self, alpha: float = 1.0) -> int:
        """The number of default features for width multiplier ``alpha``."""
        if self._width(alpha) is None:
            return self.feature_size
        scaled = int(round(self.feature_size * float(alpha)))
        return max(scaled, self.feature_size) if self.widths.at_least_base else scaled

    def weights_filename(self, alpha: float = 1.0) -> str:
        """The ImageNet weights file name Keras uses for this backbone."""
        position = self._width(alpha)
        if position is None:
            return self.weights_file
        return self.weights_file.format(alpha=self.widths.file_texts[position])

    def weights_url(self, alpha: float = 1.0) -> str:
        """Where Keras downloads :meth:`weights_filename` from."""
        base = self.weights_dir if "://" in self.weights_dir \
            else KERAS_WEIGHTS_URL + self.weights_dir + "/"
        return base + (self.url_file or self.weights_filename(alpha))

    def weights_digest(self, alpha: float = 1.0) -> str:
        """The file's published md5 or sha256 ("" where none is known)."""
        position = self._width(alpha)
        if position is None:
            return self.weights_hash
        hashes = self.widths.hashes
        return hashes[position] if position < len(hashes) else ""

    def download_size(self, alpha: float = 1.0) -> float:
        """The ImageNet weights file's size in MB for width ``alpha``."""
        position = self._width(alpha)
        return self.download_mb if position is None else self.widths.download_mb[position]


def check_alpha(backbone: Backbone, alpha: float) -> None:
    """Raise ``SettingsError`` if ``alpha`` is not a valid width for ``backbone``."""
    valid = backbone.alphas()
    if float(alpha) not in valid:
        raise SettingsError(
            f"{backbone.name} takes alpha in {', '.join(f'{a:g}' for a in valid)}; "
            f"got {alpha:g}")


_NOTOP = "_weights_tf_dim_ordering_tf_kernels_notop.h5"

#: MobileNet (v1): file sizes 0.25 and 1.0 exact, the others interpolated by
#: parameter count. Keras publishes no hashes; 0.25's is of the file Keras serves.
MOBILENET_WIDTHS = Widths(
    values=(0.25, 0.5, 0.75, 1.0), file_texts=("2_5", "5_0", "7_5", "1_0"),
    download_mb=(2.1, 5.2, 10.2, 17.2),
    hashes=("dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf",))
#: MobileNetV2: 1.0's file size exact, the others scaled by parameter count.
MOBILENET_V2_WIDTHS = Widths(
    values=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    file_texts=("0.35", "0.5", "0.75", "1.0", "1.3", "1.4"),
    download_mb=(1.7, 2.9, 5.8, 9.4, 15.7, 18.2), at_least_base=True)


def _entry(name: str, family: str, module: str, features: int, size: int, prep: str,
           mb: float, weights_file: str, weights_dir: str, digest: str, *,
           min_size: int = 32, **more) -> Backbone:
    """A pooled backbone, the common case, with its fields named."""
    return Backbone(name=name, family=family, module=module, feature_size=features,
                    input_size=size, min_input_size=min_size, preprocessing=prep,
                    download_mb=mb, weights_file=weights_file, weights_dir=weights_dir,
                    weights_hash=digest, **more)


#: The seven backbones of the original tool come first.
_ENTRIES = [
    _entry("Xception", "Xception", "xception", 2048, 299, "tf", 83.7, "xception" + _NOTOP,
           "xception", "b0042744bf5b25fce3cb969f33bebb97", min_size=71),
    Backbone(name="VGG16", family="VGG", module="vgg16", feature_layer="fc2",
             feature_size=4096, input_size=224, min_input_size=224, preprocessing="caffe",
             download_mb=553.5, weights_file="vgg16_weights_tf_dim_ordering_tf_kernels.h5",
             weights_dir="vgg16", weights_hash="64373286793e3c8b2b4e3219cbf3544b",
             fixed_input=True),
    Backbone(name="VGG19", family="VGG", module="vgg19", feature_layer="fc2",
             feature_size=4096, input_size=224, min_input_size=224, preprocessing="caffe",
             download_mb=574.7, weights_file="vgg19_weights_tf_dim_ordering_tf_kernels.h5",
             weights_dir="vgg19", weights_hash="cbe5617147190e668d6c5d5026f83318",
             fixed_input=True),
    _entry("ResNet50", "ResNet", "resnet50", 2048, 224, "caffe", 94.8, "resnet50" + _NOTOP,
           "resnet", "4d473c1dd8becc155b73f8504c6f6626"),
    _entry("InceptionV3", "Inception", "inception_v3", 2048, 299, "tf", 87.9,
           "inception_v3" + _NOTOP, "inception_v3", "bcbd6486424b2319ff4ef7d526e38f63",
           min_size=75),
    _entry("InceptionResNetV2", "Inception", "inception_resnet_v2", 1536, 299, "tf", 219.1,
           "inception_resnet_v2" + _NOTOP, "inception_resnet_v2",
           "d19885ff4a710c122648d3b5c3b684e4", min_size=75),
    _entry("MobileNet", "MobileNet", "mobilenet", 1024, 224, "tf", 17.2,
           "mobilenet_{alpha}_224_tf_no_top.h5", "mobilenet", "", widths=MOBILENET_WIDTHS),
    # --- the rest of keras.applications ---
    _entry("MobileNetV2", "MobileNet", "mobilenet_v2", 1280, 224, "tf", 9.4,
           "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5",
           "mobilenet_v2", "", widths=MOBILENET_V2_WIDTHS),
    _entry("MobileNetV3Small", "MobileNet", "mobilenet_v3", 576, 224, "none", 4.3,
           "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", "mobilenet_v3",
           "d3e8ec802a04aa4fc771ee12a9a9b836"),
    _entry("MobileNetV3Large", "MobileNet", "mobilenet_v3", 960, 224, "none", 12.7,
           "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", "mobilenet_v3",
           "07fb09a5933dd0c8eaafa16978110389"),
    _entry("ResNet101", "ResNet", "resnet", 2048, 224, "caffe", 171.4, "resnet101" + _NOTOP,
           "resnet", "88cf7a10940856eca736dc7b7e228a21"),
    _entry("ResNet152", "ResNet", "resnet", 2048, 224, "caffe", 234.7, "resnet152" + _NOTOP,
           "resnet", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
    _entry("ResNet50V2", "ResNet", "resnet_v2", 2048, 224, "tf", 94.4, "resnet50v2" + _NOTOP,
           "resnet", "fac2f116257151a9d068a22e544a4917"),
    _entry("ResNet101V2", "ResNet", "resnet_v2", 2048, 224, "tf", 171.3,
           "resnet101v2" + _NOTOP, "resnet", "c0ed64b8031c3730f411d2eb4eea35b5"),
    _entry("ResNet152V2", "ResNet", "resnet_v2", 2048, 224, "tf", 234.5,
           "resnet152v2" + _NOTOP, "resnet", "ed17cf2e0169df9d443503ef94b23b33"),
    _entry("DenseNet121", "DenseNet", "densenet", 1024, 224, "torch", 29.1,
           "densenet121" + _NOTOP, "densenet", "30ee3e1110167f948a6b9946edeeb738"),
    _entry("DenseNet169", "DenseNet", "densenet", 1664, 224, "torch", 51.9,
           "densenet169" + _NOTOP, "densenet", "b8c4d4c20dd625c148057b9ff1c1176b"),
    _entry("DenseNet201", "DenseNet", "densenet", 1920, 224, "torch", 74.8,
           "densenet201" + _NOTOP, "densenet", "c13680b51ded0fb44dff2d8f86ac8bb1"),
    _entry("NASNetMobile", "NASNet", "nasnet", 1056, 224, "tf", 20.0, "nasnet_mobile_no_top.h5",
           "nasnet", "1ed92395b5b598bdda52abe5c0dbfd63", min_size=224, fixed_input=True,
           url_file="NASNet-mobile-no-top.h5"),
    _entry("NASNetLarge", "NASNet", "nasnet", 4032, 331, "tf", 343.6, "nasnet_large_no_top.h5",
           "nasnet", "d81d89dc07e6e56530c4e77faddd61b5", min_size=331, fixed_input=True,
           url_file="NASNet-large-no-top.h5"),
]

_EFFICIENTNET = [  # size, features, MB, md5
    (224, 1280, 16.7, "50bc09e76180e00e4465e1a485ddc09d"),
    (240, 1280, 27.0, "74c4e6b3e1f6a1eea24c589628592432"),
    (260, 1408, 31.8, "111f8e2ac8aa800a7a99e3239f7bfb39"),
    (300, 1536, 43.9, "af6d107764bb5b1abb91932881670226"),
    (380, 1792, 71.7, "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    (456, 2048, 115.3, "38879255a25d3c92d5e44e04ae6cec6f"),
    (528, 2304, 165.2, "9ecce42647a20130c1f39a5d4cb75743"),
    (600, 2560, 258.1, "cbcfe4450ddf6f3ad90b1b398090fe4a"),
]
for _i, (_size, _features, _mb, _digest) in enumerate(_EFFICIENTNET):
    _ENTRIES.append(_entry(
        f"EfficientNetB{_i}", "EfficientNet", "efficientnet", _features, _size, "none", _mb,
        f"efficientnetb{_i}_notop.h5", "https://storage.googleapis.com/keras-applications/",
        _digest))

_EFFICIENTNET_V2 = [  # variant, size, features, MB, md5
    ("B0", 224, 1280, 24.3, "893217f2bb855e2983157299931e43ff"),
    ("B1", 240, 1280, 28.5, "0e80663031ca32d657f9caa404b6ec37"),
    ("B2", 260, 1408, 35.8, "1dfe2e7a5d45b6632553a8961ea609eb"),
    ("B3", 300, 1536, 52.6, "f6abf7b5849ac99a89b50dd3fd532856"),
    ("S", 384, 1280, 82.4, "af0682fb74e8c54910f2d4393339c070"),
    ("M", 480, 1280, 214.2, "1b8dc055df72dde80d614482840fe342"),
    ("L", 480, 1280, 473.2, "b0b66b5c863aef5b46e8608fe1711615"),
]
for _variant, _size, _features, _mb, _digest in _EFFICIENTNET_V2:
    _ENTRIES.append(_entry(
        f"EfficientNetV2{_variant}", "EfficientNetV2", "efficientnet_v2", _features, _size,
        "none", _mb, f"efficientnetv2-{_variant.lower()}_notop.h5", "efficientnet_v2",
        _digest))

_CONVNEXT = [  # variant, features, MB, sha256
    ("Tiny", 768, 111.7, "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1"),
    ("Small", 768, 198.6, "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab"),
    ("Base", 1024, 350.9, "40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45"),
    ("Large", 1536, 785.6, "96f02b6f0753d4f543261bc9d09bed650f24dd6bc02ddde3066135b63d23a1cd"),
    ("XLarge", 2048, 1393.3,
     "de3f8a54174130e0cecdc71583354753d557fcf1f4487331558e2a16ba0cfe05"),
]
for _variant, _features, _mb, _digest in _CONVNEXT:
    _ENTRIES.append(_entry(
        f"ConvNeXt{_variant}", "ConvNeXt", "convnext", _features, 224, "none", _mb,
        f"convnext_{_variant.lower()}_notop.h5", "convnext", _digest))

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
