"""The registry of backbones, kept as plain data: one record per backbone, and in it
one record per pretrained weights variant (a width of MobileNet, say), as timm keeps
one pretrained config per weights variant.

Two model libraries build them (:mod:`.builders`): ``keras.applications`` (the
classic ImageNet CNNs) and ``keras-hub`` (the foundation encoders DINOv2,
SigLIP, SigLIP 2 and CLIP, named by their keras-hub preset). Reading the
registry imports neither, nor TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SettingsError, UnknownBackboneError

#: Global average pooling, built with ``include_top=False, pooling="avg"``.
GLOBAL_AVG_POOL = "avg_pool"
#: How a layer's map or tokens become one vector; "cls" is a transformer's class token.
POOLINGS = ("avg", "max", "cls")
#: The two model libraries.
KERAS_APPLICATIONS, KERAS_HUB = "keras.applications", "keras-hub"

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
KAGGLE_MODELS_URL = "https://www.kaggle.com/models/"


@dataclass(frozen=True)
class Variant:
    """One pretrained weights variant: its width, features and file.

    ``file`` is the weights file Keras caches under ``$KERAS_HOME/models``
    (``keras.applications``), or the keras-hub preset's name, which is also
    the name of its folder (``keras-hub``).
    """

    alpha: float
    features: int
    file: str
    url: str  #: where it is downloaded from (a Kaggle page for a preset)
    download_mb: float  #: MB (10**6 bytes)
    digest: str = ""  #: the published md5 or sha256 of the file ("" where none is known)


@dataclass(frozen=True)
class Architecture:
    """The numbers keras-hub needs to build a preset's image tower with random weights
    (``-weights None``), and the preprocessing of those random weights."""

    kind: str  #: "dinov2", "siglip" or "clip"
    patch_size: int
    hidden_dim: int
    num_layers: int
    num_heads: int
    intermediate_dim: int
    kaggle_handle: str  #: ``keras/<model>/keras/<preset>/<version>``
    projection_dim: int = 0  #: CLIP's image projection (0: none)
    register_tokens: int = 0  #: DINOv2 with registers
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  #: of 0..1 pixels
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def interpolates(self) -> bool:
        """Whether keras-hub interpolates the position embeddings to other input sizes."""
        return self.kind == "dinov2"


@dataclass(frozen=True)
class Backbone:
    """One image backbone, built by one model library.

    ``family`` groups backbones in lists ("ResNet", "DINOv2"...).
    ``preprocessing`` is ``keras.applications``' mode ("caffe", "tf", "torch",
    or "none" inside the model), or "preset" (the preset's image converter).
    """

    name: str
    family: str
    library: str  #: :data:`KERAS_APPLICATIONS` or :data:`KERAS_HUB`
    module: str  #: ``keras.applications`` submodule holding ``preprocess_input`` ("" for hub)
    input_size: int  #: default (and trained) input size, square
    min_input_size: int
    preprocessing: str
    variants: tuple[Variant, ...]
    #: the default feature: a Keras layer name or :data:`GLOBAL_AVG_POOL` (CNNs), or, for
    #: a keras-hub encoder, what its feature is, in words (:data:`HUB_FEATURES`)
    feature_layer: str = GLOBAL_AVG_POOL
    fixed_input: bool = False  #: the feature needs exactly ``input_size``
    architecture: Architecture | None = None  #: keras-hub encoders only

    @property
    def foundation(self) -> bool:
        """A keras-hub foundation encoder (not a classic ImageNet CNN)."""
        return self.library == KERAS_HUB

    @property
    def has_alpha(self) -> bool:
        return len(self.variants) > 1

    @property
    def pooled(self) -> bool:
        """Whether the default feature is a global pool (any input size works)."""
        return self.feature_layer == GLOBAL_AVG_POOL

    @property
    def feature_description(self) -> str:
        """How the default feature is taken, in words."""
        if self.pooled:
            return "global average pool"
        if self.foundation:
            return self.feature_layer
        return f"layer {self.feature_layer}"

    @property
    def download_mb(self) -> float:
        """The weights' download size at width 1, in MB."""
        return self.variant(1.0).download_mb

    def alphas(self) -> tuple[float, ...]:
        """The width multipliers this backbone accepts (``(1.0,)`` if none)."""
        return tuple(variant.alpha for variant in self.variants)

    def variant(self, alpha: float = 1.0) -> Variant:
        """The weights variant of width ``alpha``; ``SettingsError`` for another width."""
        for variant in self.variants:
            if variant.alpha == float(alpha):
                return variant
        raise SettingsError(
            f"{self.name} takes alpha in {', '.join(f'{a:g}' for a in self.alphas())}; "
            f"got {alpha:g}")

    def usable_alpha(self, alpha: float) -> float:
        """``alpha`` if this backbone takes it, else 1.0 (a width set for another backbone)."""
        return float(alpha) if float(alpha) in self.alphas() else 1.0

    def features(self, alpha: float = 1.0) -> int:
        """The number of default features for width multiplier ``alpha``."""
        return self.variant(alpha).features

    def weights_filename(self, alpha: float = 1.0) -> str:
        """The weights file name Keras uses (a keras-hub preset: its name)."""
        return self.variant(alpha).file

    def weights_url(self, alpha: float = 1.0) -> str:
        """Where the weights are downloaded from."""
        return self.variant(alpha).url

    def weights_digest(self, alpha: float = 1.0) -> str:
        """The file's published md5 or sha256 ("" where none is known)."""
        return self.variant(alpha).digest

    def download_size(self, alpha: float = 1.0) -> float:
        """The weights' download size in MB for width ``alpha``."""
        return self.variant(alpha).download_mb

    @property
    def class_token(self) -> bool:
        """Whether its tokens start with a class token (DINOv2, CLIP)."""
        return self.architecture is not None and self.architecture.kind in ("dinov2", "clip")

    def pooling(self, requested: str | None) -> str:
        """The pooling to use: ``requested``, checked, or this backbone's own (None):
        DINOv2's class token, else the average."""
        if requested is None:
            return "cls" if self.architecture and self.architecture.kind == "dinov2" else "avg"
        if requested not in POOLINGS:
            raise SettingsError(f"pooling must be one of {', '.join(POOLINGS)}, "
                                f"got {requested!r}")
        if requested == "cls" and not self.class_token:
            raise SettingsError(f"{self.name} has no class token; use --pooling avg or max",
                                f"{self.name} has no class token; choose another pooling")
        return requested

    def check_input_size(self, size: int, own: int | None = None) -> None:
        """Refuse an input size this backbone cannot take, saying why. ``own`` is its
        weights' own size where it differs from the registry's (a preset folder's)."""
        own = own or self.input_size
        if self.fixed_input and size != own:
            why = " (keras-hub does not interpolate its position embeddings)" \
                if self.foundation else ""
            raise SettingsError(f"{self.name} takes only {own}x{own} input{why}")
        if size < self.min_input_size and size != own:
            raise SettingsError(f"{self.name} needs an input size of at least "
                                f"{self.min_input_size}, got {size}")
        patch = self.architecture.patch_size if self.architecture else 1
        if size % patch and size != own:
            raise SettingsError(f"{self.name} takes input sizes in multiples of its patch "
                                f"size, {patch}; got {size}")


# --- keras.applications -----------------------------------------------------------------

_NOTOP = "_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _file(folder: str, file: str, features: int, mb: float, digest: str = "", *,
          alpha: float = 1.0, url_file: str = "") -> Variant:
    """A weights file served from Keras' folder ``folder`` (or a full URL)."""
    base = folder if "://" in folder else KERAS_WEIGHTS_URL + folder + "/"
    return Variant(alpha, features, file, base + (url_file or file), mb, digest)


def _cnn(name: str, family: str, module: str, size: int, prep: str, *variants: Variant,
         min_size: int = 32, **more) -> Backbone:
    return Backbone(name=name, family=family, library=KERAS_APPLICATIONS, module=module,
                    input_size=size, min_input_size=min_size, preprocessing=prep,
                    variants=variants, **more)


#: MobileNet (v1): file sizes 0.25 and 1.0 exact, the others interpolated by
#: parameter count. Keras publishes no hashes; 0.25's is of the file Keras serves.
_MOBILENET = (
    _file("mobilenet", "mobilenet_2_5_224_tf_no_top.h5", 256, 2.1,
          "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf", alpha=0.25),
    _file("mobilenet", "mobilenet_5_0_224_tf_no_top.h5", 512, 5.2, alpha=0.5),
    _file("mobilenet", "mobilenet_7_5_224_tf_no_top.h5", 768, 10.2, alpha=0.75),
    _file("mobilenet", "mobilenet_1_0_224_tf_no_top.h5", 1024, 17.2, alpha=1.0),
)
#: MobileNetV2: 1.0's file size exact, the others scaled by parameter count; its last
#: layer keeps 1280 channels for widths up to 1.
_MOBILENET_V2 = tuple(
    _file("mobilenet_v2", f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{text}_224_no_top.h5",
          features, mb, alpha=alpha)
    for alpha, text, features, mb in (
        (0.35, "0.35", 1280, 1.7), (0.5, "0.5", 1280, 2.9), (0.75, "0.75", 1280, 5.8),
        (1.0, "1.0", 1280, 9.4), (1.3, "1.3", 1664, 15.7), (1.4, "1.4", 1792, 18.2)))

#: The seven backbones of the original tool come first.
_ENTRIES = [
    _cnn("Xception", "Xception", "xception", 299, "tf",
         _file("xception", "xception" + _NOTOP, 2048, 83.7, "b0042744bf5b25fce3cb969f33bebb97"),
         min_size=71),
    _cnn("VGG16", "VGG", "vgg16", 224, "caffe",
         _file("vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels.h5", 4096, 553.5,
               "64373286793e3c8b2b4e3219cbf3544b"),
         min_size=224, feature_layer="fc2", fixed_input=True),
    _cnn("VGG19", "VGG", "vgg19", 224, "caffe",
         _file("vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels.h5", 4096, 574.7,
               "cbe5617147190e668d6c5d5026f83318"),
         min_size=224, feature_layer="fc2", fixed_input=True),
    _cnn("ResNet50", "ResNet", "resnet50", 224, "caffe",
         _file("resnet", "resnet50" + _NOTOP, 2048, 94.8, "4d473c1dd8becc155b73f8504c6f6626")),
    _cnn("InceptionV3", "Inception", "inception_v3", 299, "tf",
         _file("inception_v3", "inception_v3" + _NOTOP, 2048, 87.9,
               "bcbd6486424b2319ff4ef7d526e38f63"), min_size=75),
    _cnn("InceptionResNetV2", "Inception", "inception_resnet_v2", 299, "tf",
         _file("inception_resnet_v2", "inception_resnet_v2" + _NOTOP, 1536, 219.1,
               "d19885ff4a710c122648d3b5c3b684e4"), min_size=75),
    _cnn("MobileNet", "MobileNet", "mobilenet", 224, "tf", *_MOBILENET),
    # --- the rest of keras.applications ---
    _cnn("MobileNetV2", "MobileNet", "mobilenet_v2", 224, "tf", *_MOBILENET_V2),
    _cnn("MobileNetV3Small", "MobileNet", "mobilenet_v3", 224, "none",
         _file("mobilenet_v3", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", 576,
               4.3, "d3e8ec802a04aa4fc771ee12a9a9b836")),
    _cnn("MobileNetV3Large", "MobileNet", "mobilenet_v3", 224, "none",
         _file("mobilenet_v3", "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", 960,
               12.7, "07fb09a5933dd0c8eaafa16978110389")),
    _cnn("ResNet101", "ResNet", "resnet", 224, "caffe",
         _file("resnet", "resnet101" + _NOTOP, 2048, 171.4, "88cf7a10940856eca736dc7b7e228a21")),
    _cnn("ResNet152", "ResNet", "resnet", 224, "caffe",
         _file("resnet", "resnet152" + _NOTOP, 2048, 234.7, "ee4c566cf9a93f14d82f913c2dc6dd0c")),
    _cnn("ResNet50V2", "ResNet", "resnet_v2", 224, "tf",
         _file("resnet", "resnet50v2" + _NOTOP, 2048, 94.4, "fac2f116257151a9d068a22e544a4917")),
    _cnn("ResNet101V2", "ResNet", "resnet_v2", 224, "tf",
         _file("resnet", "resnet101v2" + _NOTOP, 2048, 171.3,
               "c0ed64b8031c3730f411d2eb4eea35b5")),
    _cnn("ResNet152V2", "ResNet", "resnet_v2", 224, "tf",
         _file("resnet", "resnet152v2" + _NOTOP, 2048, 234.5,
               "ed17cf2e0169df9d443503ef94b23b33")),
    _cnn("DenseNet121", "DenseNet", "densenet", 224, "torch",
         _file("densenet", "densenet121" + _NOTOP, 1024, 29.1,
               "30ee3e1110167f948a6b9946edeeb738")),
    _cnn("DenseNet169", "DenseNet", "densenet", 224, "torch",
         _file("densenet", "densenet169" + _NOTOP, 1664, 51.9,
               "b8c4d4c20dd625c148057b9ff1c1176b")),
    _cnn("DenseNet201", "DenseNet", "densenet", 224, "torch",
         _file("densenet", "densenet201" + _NOTOP, 1920, 74.8,
               "c13680b51ded0fb44dff2d8f86ac8bb1")),
    _cnn("NASNetMobile", "NASNet", "nasnet", 224, "tf",
         _file("nasnet", "nasnet_mobile_no_top.h5", 1056, 20.0,
               "1ed92395b5b598bdda52abe5c0dbfd63", url_file="NASNet-mobile-no-top.h5"),
         min_size=224, fixed_input=True),
    _cnn("NASNetLarge", "NASNet", "nasnet", 331, "tf",
         _file("nasnet", "nasnet_large_no_top.h5", 4032, 343.6,
               "d81d89dc07e6e56530c4e77faddd61b5", url_file="NASNet-large-no-top.h5"),
         min_size=331, fixed_input=True),
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
_ENTRIES += [
    _cnn(f"EfficientNetB{i}", "EfficientNet", "efficientnet", size, "none",
         _file("https://storage.googleapis.com/keras-applications/",
               f"efficientnetb{i}_notop.h5", features, mb, digest))
    for i, (size, features, mb, digest) in enumerate(_EFFICIENTNET)]

_EFFICIENTNET_V2 = [  # variant, size, features, MB, md5
    ("B0", 224, 1280, 24.3, "893217f2bb855e2983157299931e43ff"),
    ("B1", 240, 1280, 28.5, "0e80663031ca32d657f9caa404b6ec37"),
    ("B2", 260, 1408, 35.8, "1dfe2e7a5d45b6632553a8961ea609eb"),
    ("B3", 300, 1536, 52.6, "f6abf7b5849ac99a89b50dd3fd532856"),
    ("S", 384, 1280, 82.4, "af0682fb74e8c54910f2d4393339c070"),
    ("M", 480, 1280, 214.2, "1b8dc055df72dde80d614482840fe342"),
    ("L", 480, 1280, 473.2, "b0b66b5c863aef5b46e8608fe1711615"),
]
_ENTRIES += [
    _cnn(f"EfficientNetV2{variant}", "EfficientNetV2", "efficientnet_v2", size, "none",
         _file("efficientnet_v2", f"efficientnetv2-{variant.lower()}_notop.h5", features, mb,
               digest))
    for variant, size, features, mb, digest in _EFFICIENTNET_V2]

_CONVNEXT = [  # variant, features, MB, sha256
    ("Tiny", 768, 111.7, "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1"),
    ("Small", 768, 198.6, "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab"),
    ("Base", 1024, 350.9, "40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45"),
    ("Large", 1536, 785.6, "96f02b6f0753d4f543261bc9d09bed650f24dd6bc02ddde3066135b63d23a1cd"),
    ("XLarge", 2048, 1393.3,
     "de3f8a54174130e0cecdc71583354753d557fcf1f4487331558e2a16ba0cfe05"),
]
_ENTRIES += [
    _cnn(f"ConvNeXt{variant}", "ConvNeXt", "convnext", 224, "none",
         _file("convnext", f"convnext_{variant.lower()}_notop.h5", features, mb, digest))
    for variant, features, mb, digest in _CONVNEXT]

# --- keras-hub foundation encoders -------------------------------------------------------

#: Preprocessing of random weights (a preset brings its own image converter).
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The feature each kind gives by default (what ``--list-models`` calls its layer).
HUB_FEATURES = {
    "dinov2": "class token of the final layer-normed output",
    "siglip": "pooled image embedding (get_vision_embeddings)",
    "clip": "pooled, projected image embedding (get_vision_embeddings)",
}


def _hub(preset: str, family: str, size: int, features: int, params: int, version: int,
         kind: str, patch: int, dims: tuple[int, int, int, int], **more) -> Backbone:
    """A keras-hub preset. ``dims``: hidden width, blocks, heads, MLP width.

    Its download size is estimated from keras-hub's published parameter count
    (image and text towers) at 4 bytes a parameter.
    """
    handle = f"keras/{kind}/keras/{preset}/{version}"  #: Kaggle's models are named by kind
    hidden, layers, heads, mlp = dims
    architecture = Architecture(kind, patch, hidden, layers, heads, mlp, handle, **more)
    variant = Variant(1.0, features, preset, KAGGLE_MODELS_URL + handle,
                      round(params * 4 / 1e6, 1))
    return Backbone(name=preset, family=family, library=KERAS_HUB, module="",
                    input_size=size, min_input_size=patch if kind == "dinov2" else size,
                    preprocessing="preset", variants=(variant,),
                    feature_layer=HUB_FEATURES[kind], fixed_input=kind != "dinov2",
                    architecture=architecture)


_DINO = {"mean": _IMAGENET_MEAN, "std": _IMAGENET_STD}
_CLIP = {"mean": _CLIP_MEAN, "std": _CLIP_STD}
_ViT_S, _ViT_B, _ViT_L = (384, 12, 6, 1536), (768, 12, 12, 3072), (1024, 24, 16, 4096)
_HUB_ENTRIES = [
    _hub("dinov2_small", "DINOv2", 224, 384, 22_582_656, 1, "dinov2", 14, _ViT_S, **_DINO),
    _hub("dinov2_base", "DINOv2", 224, 768, 87_632_640, 1, "dinov2", 14, _ViT_B, **_DINO),
    _hub("dinov2_large", "DINOv2", 224, 1024, 305_771_520, 1, "dinov2", 14, _ViT_L, **_DINO),
    _hub("dinov2_with_registers_small", "DINOv2", 224, 384, 22_584_192, 1, "dinov2", 14,
         _ViT_S, register_tokens=4, **_DINO),
    _hub("dinov2_with_registers_base", "DINOv2", 224, 768, 87_635_712, 1, "dinov2", 14,
         _ViT_B, register_tokens=4, **_DINO),
    _hub("dinov2_with_registers_large", "DINOv2", 224, 1024, 305_775_616, 1, "dinov2", 14,
         _ViT_L, register_tokens=4, **_DINO),
    _hub("siglip2_base_patch16_224", "SigLIP 2", 224, 768, 375_188_230, 1, "siglip", 16,
         _ViT_B),
    _hub("siglip2_base_patch16_256", "SigLIP 2", 256, 768, 375_234_370, 1, "siglip", 16,
         _ViT_B),
    _hub("siglip2_base_patch32_256", "SigLIP 2", 256, 768, 376_856_194, 1, "siglip", 32,
         _ViT_B),
    _hub("siglip2_base_patch16_384", "SigLIP 2", 384, 768, 376_856_194, 1, "siglip", 16,
         _ViT_B),
    _hub("siglip2_large_patch16_256", "SigLIP 2", 256, 1024, 881_527_106, 1, "siglip", 16,
         _ViT_L),
    _hub("siglip_base_patch16_224", "SigLIP", 224, 768, 203_156_230, 1, "siglip", 16, _ViT_B),
    _hub("siglip_base_patch16_256", "SigLIP", 256, 768, 203_202_370, 1, "siglip", 16, _ViT_B),
    _hub("siglip_base_patch16_384", "SigLIP", 384, 768, 203_448_450, 1, "siglip", 16, _ViT_B),
    _hub("siglip_large_patch16_256", "SigLIP", 256, 1024, 652_151_106, 1, "siglip", 16,
         _ViT_L),
    _hub("clip_vit_base_patch16", "CLIP", 224, 512, 149_620_934, 3, "clip", 16, _ViT_B,
         projection_dim=512, **_CLIP),
    _hub("clip_vit_base_patch32", "CLIP", 224, 512, 151_277_363, 3, "clip", 32, _ViT_B,
         projection_dim=512, **_CLIP),
    _hub("clip_vit_large_patch14", "CLIP", 224, 768, 427_616_770, 3, "clip", 14, _ViT_L,
         projection_dim=768, **_CLIP),
]

#: The registry, in display order: the classic CNNs, then the foundation encoders.
BACKBONES: dict[str, Backbone] = {b.name: b for b in _ENTRIES + _HUB_ENTRIES}
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
        import difflib

        close = difflib.get_close_matches(str(name).strip().lower(), _BY_LOWER, n=1,
                                          cutoff=0.6)
        hint = f"; did you mean {_BY_LOWER[close[0]].name!r}?" if close else "."
        raise UnknownBackboneError(
            f"Unknown model {name!r}{hint} See transferembed --list-models for all "
            f"{len(BACKBONES)}; the original tool's: {', '.join(ORIGINAL_BACKBONES)}",
            f"Unknown model {name!r}{hint}")
    return backbone


def backbone_names() -> list[str]:
    """All backbone names, the original seven first."""
    return list(BACKBONES)
