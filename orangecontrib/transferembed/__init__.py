"""Orange3-TransferEmbed: image embeddings from ImageNet-pretrained CNNs.

>>> from orangecontrib.transferembed import embed
>>> result = embed("photos/", "MobileNet", alpha=0.25)  # doctest: +SKIP
>>> result.embeddings.shape  # doctest: +SKIP
(398, 256)

Importing this package does not import TensorFlow; the first embedding does.
"""

import logging

from .api import compare, embed, list_layers, validate
from .config import EmbedConfig
from .errors import (
    EmbeddingCancelled,
    SettingsError,
    SourceError,
    TransferEmbedError,
    UnknownBackboneError,
    WeightsUnavailableError,
)
from .models.registry import BACKBONES, Backbone, backbone_names, get_backbone
from .pipeline.results import EmbeddingResult, Skipped
from .pipeline.sources import (
    ArraySource,
    FileSource,
    Source,
    csv_source,
    folder_source,
    npy_source,
)

__version__ = "0.2.0"

# A library logs; the faces decide what the user sees (warnings come as notices).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "compare", "embed", "list_layers", "validate", "BACKBONES", "Backbone", "backbone_names",
    "get_backbone",
    "EmbedConfig", "EmbeddingResult", "Skipped", "EmbeddingCancelled", "SettingsError",
    "SourceError", "TransferEmbedError", "UnknownBackboneError", "WeightsUnavailableError",
    "ArraySource", "FileSource", "Source", "csv_source", "folder_source", "npy_source",
    "__version__",
]
