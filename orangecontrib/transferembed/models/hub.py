"""The keras-hub builder: a foundation encoder's image tower, cut at its feature.

Features (doc/foundation.md):

- DINOv2: the class token of the backbone's final, layer-normed output
  (``pooling="cls"``, its default); ``avg``/``max`` pool the patch tokens.
- SigLIP, SigLIP 2 and CLIP: the image tower's pooled (and, for CLIP,
  projected) embedding, as keras-hub's ``get_vision_embeddings`` gives it.
- ``blockK`` (layer): the tokens after transformer block K (DINOv2's through
  its final layer norm), pooled by ``pooling``.

Only the image tower is kept: a preset's text tower is built by keras-hub
while loading and released at once. keras-hub and TensorFlow are imported
only here, when a model is built.
"""

from __future__ import annotations

import random

from ..errors import WeightsUnavailableError
from .registry import Architecture, Backbone
from .tfimport import import_tensorflow
from .weights import RANDOM_SEED

#: DINOv2's position embeddings were trained at 518 px; keras-hub interpolates them.
DINOV2_POSITIONS = (518, 518)


def layer_names(backbone: Backbone) -> list[str]:
    """The transformer blocks that ``layer`` can name, input to output."""
    return [f"block{k}" for k in range(1, backbone.architecture.num_layers + 1)]


def _keras_hub():
    import_tensorflow()
    import keras_hub  # its absence is told before any work (weights.require_keras_hub)

    return keras_hub


def build(backbone: Backbone, input_size: int, weights_path: str | None,
          layer: str = "default", pooling: str = "cls"):
    """``(model, preprocess)``: the Keras model from preprocessed pixels to features,
    and the function from 0..255 RGB pixels to its input (the image converter's
    scale and offset)."""
    keras_hub = _keras_hub()  # ``layer`` was checked before any work (layers.check_layer)
    state = random.getstate()
    random.seed(RANDOM_SEED)  # unseeded initializers draw from Python's random
    try:
        if weights_path is None:
            tower, scale, offset = _random_tower(keras_hub, backbone.architecture, input_size)
        else:
            tower, scale, offset = _preset_tower(keras_hub, backbone, input_size, weights_path)
    finally:
        random.setstate(state)
    model = _feature_model(tower, backbone, layer, pooling)
    return model, _preprocess(scale, offset)


def _random_tower(keras_hub, arch: Architecture, size: int):
    """The published architecture's image tower, random weights, and its preprocessing."""
    common = dict(patch_size=arch.patch_size, hidden_dim=arch.hidden_dim,
                  num_layers=arch.num_layers, num_heads=arch.num_heads,
                  intermediate_dim=arch.intermediate_dim, image_shape=(size, size, 3))
    if arch.kind == "dinov2":
        tower = keras_hub.models.DINOV2Backbone(
            num_register_tokens=arch.register_tokens,
            position_embedding_shape=DINOV2_POSITIONS, **common)
    elif arch.kind == "siglip":
        tower = keras_hub.models.SigLIPVisionEncoder(**common)
    else:
        tower = _clip_tower(keras_hub.models.CLIPVisionEncoder(**common),
                            arch.projection_dim)
    scale = [1 / (255 * s) for s in arch.std]
    offset = [-m / s for m, s in zip(arch.mean, arch.std, strict=True)]
    return tower, scale, offset


def _clip_tower(encoder, projection_dim: int, projection=None):
    """CLIP's image tower: the encoder, its pooler (the class token, as keras-hub's
    ``CLIPVisionPooler``) and the projection."""
    import keras

    projection = projection or keras.layers.Dense(projection_dim, use_bias=False,
                                                  name="vision_projection")
    images = keras.Input(encoder.image_shape, name="images")
    pooler = keras.layers.Lambda(lambda tokens: tokens[:, 0, :], name="vision_pooler")
    embedding = projection(pooler(encoder(images)))
    return keras.Model(images, embedding, name="clip_image_tower")


def _preset_tower(keras_hub, backbone: Backbone, size: int, folder: str):
    """A preset folder's image tower (its text tower released) and its image converter's
    scale and offset."""
    kind = backbone.architecture.kind
    try:
        extra = {"image_shape": (size, size, 3)} if kind == "dinov2" else {}
        loaded = keras_hub.models.Backbone.from_preset(folder, **extra)
        converter = keras_hub.layers.ImageConverter.from_preset(folder)
    except Exception as exc:  # keras-hub raises many types for a wrong folder
        raise WeightsUnavailableError(
            f"Cannot load the keras-hub preset {backbone.name} from {folder}: "
            f"{type(exc).__name__}: {exc}") from None
    if kind == "dinov2":
        tower = loaded
    elif kind == "siglip":
        tower = loaded.vision_encoder
    else:
        tower = _clip_tower(loaded.vision_encoder, 0, loaded.vision_projection)
    del loaded  # the text tower goes with it
    return tower, converter.scale, converter.offset


def _feature_model(tower, backbone: Backbone, layer: str, pooling: str):
    """The tower cut at ``layer`` and pooled: preprocessed pixels to one vector."""
    import keras

    images = tower.inputs[0]
    kind = backbone.architecture.kind
    if layer == "default" and kind != "dinov2":
        return keras.Model(images, tower.outputs[0], name=f"{backbone.name}_default")
    skip = 1 + backbone.architecture.register_tokens if backbone.class_token else 0
    if layer == "default":
        tokens = tower.outputs[0]
    elif kind == "dinov2":  # through the final layer norm, as DINOv2's probes take them
        tokens = tower.layernorm(tower.pyramid_outputs[f"stage{layer[5:]}"])
    else:
        encoder = tower if kind == "siglip" else tower.layers[1]
        tokens = encoder.encoder_layers[int(layer[5:]) - 1].output
        if kind == "clip":
            tokens = keras.Model(encoder.inputs, tokens)(images)
    pooled = keras.layers.Lambda(lambda t: _pool(t, pooling, skip),
                                 name=f"transferembed_{pooling}_pool")(tokens)
    return keras.Model(images, pooled, name=f"{backbone.name}_{layer}")


def _pool(tokens, pooling: str, skip: int):
    """The class token, or the mean or max of the other tokens."""
    import keras

    if pooling == "cls":
        return tokens[:, 0]
    rest = tokens[:, skip:]
    return keras.ops.mean(rest, axis=1) if pooling == "avg" else keras.ops.max(rest, axis=1)


def _preprocess(scale, offset):
    """0..255 RGB pixels times ``scale`` plus ``offset`` (scalars or per channel)."""
    import tensorflow as tf

    scale = tf.constant(1.0 if scale is None else scale, tf.float32)
    offset = tf.constant(0.0 if offset is None else offset, tf.float32)

    def preprocess(batch):
        return batch * scale + offset

    return preprocess
