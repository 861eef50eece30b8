"""Orange3-TransferEmbed: image embeddings from ImageNet-pretrained CNNs.

>>> from orangecontrib.transferembed import embed
>>> result = embed("photos/", "MobileNet", alpha=0.25)  # doctest: +SKIP
>>> result.embeddings.shape  # doctest: +SKIP
(398, 256)

Importing this package does not import TensorFlow; the first embedding does.
"""

from .api import embed
from .backbones import BACKBONES, Backbone, backbone_names, get_backbone
from .engine import EmbedConfig, EmbeddingResult, Skipped
from .errors import (
    EmbeddingCancelled,
    SourceError,
    TransferEmbedError,
    UnknownBackboneError,
    WeightsUnavailableError,
)
from .sources import ArraySource, FileSource, Source, csv_source, folder_source, npy_source

__version__ = "0.1.0"

__all__ = [
    "embed", "BACKBONES", "Backbone", "backbone_names", "get_backbone", "EmbedConfig",
    "EmbeddingResult", "Skipped", "EmbeddingCancelled", "SourceError", "TransferEmbedError",
    "UnknownBackboneError", "WeightsUnavailableError", "ArraySource", "FileSource", "Source",
    "csv_source", "folder_source", "npy_source", "__version__",
]
