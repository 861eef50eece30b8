"""Keras models from a backbone: cut at a feature layer, pooled, with their weights.

One builder per model library: ``keras.applications`` here, keras-hub in
:mod:`.hub`; :func:`pixel_step` is the one door both runtimes use (the Keras
runtime runs it, the converter converts it). Every function here imports
TensorFlow (through :mod:`.tfimport`) when called.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass

from ..errors import SettingsError, WeightsUnavailableError
from .registry import Backbone
from .tfimport import import_tensorflow
from .weights import RANDOM_SEED


@dataclass(frozen=True)
class Layer:
    """A layer whose output can be a feature vector."""

    name: str
    features: int
    spatial: bool  #: a (height, width, channels) map, pooled to one vector
    default: bool = False  #: the backbone's own features


def _keras():
    import_tensorflow()
    import keras

    return keras


def _full_model(keras, backbone: Backbone, alpha: float, input_size: int | None,
                pooling: str | None):
    """The backbone without its classifier (with it for VGG, whose feature is fc2)."""
    constructor = getattr(keras.applications, backbone.name)
    kwargs = {"weights": None}
    if backbone.has_alpha:
        kwargs["alpha"] = alpha
    if backbone.pooled:
        return constructor(include_top=False, pooling=pooling,
                           input_shape=(input_size, input_size, 3), **kwargs)
    return constructor(include_top=True, **kwargs)


def pixel_step(backbone: Backbone, alpha: float, input_size: int | None,
               weights_path: str | None, layer: str = "default", pooling: str = "avg"):
    """``(model, step)``: the feature model, and one ``tf.function`` from a float32 batch
    of 0..255 RGB pixels (``input_size`` square, None: any) through the backbone's own
    preprocessing to its features."""
    if backbone.foundation:
        from . import hub

        model, preprocess = hub.build(backbone, input_size, weights_path, layer, pooling)
    else:
        model = build(backbone, alpha, input_size, weights_path, layer, pooling)
        preprocess = importlib.import_module(
            f"keras.applications.{backbone.module}").preprocess_input
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, input_size, input_size, 3),
                                                tf.float32)])
    def step(batch):
        return model(preprocess(batch), training=False)

    return model, step


def build(backbone: Backbone, alpha: float, input_size: int | None, weights_path: str | None,
          layer: str = "default", pooling: str = "avg"):
    """A Keras model from preprocessed pixels to features.

    ``input_size`` None takes any size (pooled backbones); ``layer`` is a
    Keras layer name or ``"default"``; a spatial layer is pooled by ``pooling``.
    """
    keras = _keras()
    default = layer == "default"
    full = _full_model(keras, backbone, alpha, input_size,
                       pooling if default and backbone.pooled else None)
    if weights_path is None:
        full = _with_seeded_initializers(keras, full)
    else:
        _load_weights(full, backbone, alpha, weights_path)
    if default and backbone.pooled:
        return full
    name = backbone.feature_layer if default else layer
    output = _layer(full, backbone, name).output
    if len(output.shape) == 4:
        pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" \
            else keras.layers.GlobalMaxPooling2D
        output = pool(name=f"transferembed_{pooling}_pool")(output)
    elif len(output.shape) != 2:
        raise SettingsError(f"layer {name!r} of {backbone.name} gives a tensor of shape "
                            f"{tuple(output.shape)}, not a feature map or a vector",
                            f"layer {name!r} of {backbone.name} gives no features")
    return keras.Model(full.inputs, output, name=f"{backbone.name}_{name}")


def _layer(model, backbone: Backbone, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        raise SettingsError(
            f"{backbone.name} has no layer {name!r}; see transferembed --list-layers "
            f"{backbone.name}", f"{backbone.name} has no layer {name!r}; choose one from "
            f"the Layer list") from None


def _load_weights(model, backbone: Backbone, alpha: float, path: str) -> None:
    try:
        model.load_weights(path)
    except Exception as exc:  # Keras raises many types for a wrong file
        raise WeightsUnavailableError(
            f"Cannot load weights for {backbone.name} from {path}: {exc}. "
            f"The file must hold {backbone.name} weights "
            f"({'with' if not backbone.pooled else 'without'} the classifier top, "
            f"as Keras' {backbone.weights_filename(alpha)}).") from None


def list_layers(backbone: Backbone, alpha: float = 1.0) -> list[Layer]:
    """The layers of ``backbone`` that can give features, input to output."""
    if backbone.foundation:  # transformer blocks, from the registry alone
        from .hub import layer_names

        width = backbone.architecture.hidden_dim
        return [Layer(name, width, True) for name in layer_names(backbone)]
    keras = _keras()
    model = _full_model(keras, backbone, alpha, backbone.input_size, None)
    layers = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = None if shape is None or isinstance(shape, (list, tuple)) else shape.shape
        if isinstance(layer, keras.layers.InputLayer) or shape is None \
                or len(shape) not in (2, 4):
            continue
        default = layer.name == (model.layers[-1].name if backbone.pooled
                                 else backbone.feature_layer)
        layers.append(Layer(layer.name, int(shape[-1]), len(shape) == 4, default))
    keras.backend.clear_session()
    return layers


def _with_seeded_initializers(keras, model):
    """``model`` rebuilt with every random initializer seeded from its layer's position.

    Keras draws an unseeded initializer's seed from Python's process-wide
    ``random`` when the layer is made, so any other thread that uses ``random``
    meanwhile (Dask's event loop, say) changes the weights. Explicit seeds make
    random weights the same in every process and thread, whatever ran before.
    """
    positions = {id(layer): number for number, layer in enumerate(model.layers)}

    def clone(layer):
        config = layer.get_config()
        if id(layer) in positions:  # not a bare operation (those hold no weights)
            seed_base = f"{RANDOM_SEED}:{positions[id(layer)]}:{type(layer).__name__}"
            config = _seed_config(config, seed_base)
        return type(layer).from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def _seed_config(config, path: str):
    """A layer config with a fixed seed for every unseeded Keras initializer in it."""
    if isinstance(config, list):
        return [_seed_config(value, f"{path}/{i}") for i, value in enumerate(config)]
    if not isinstance(config, dict):
        return config
    config = {key: _seed_config(value, f"{path}/{key}") for key, value in config.items()}
    inner = config.get("config")
    if (config.get("module") == "keras.initializers" and isinstance(inner, dict)
            and "seed" in inner and inner["seed"] is None):
        digest = hashlib.sha256(path.encode()).digest()
        config["config"] = {**inner, "seed": int.from_bytes(digest[:4], "little") >> 1}
    return config
