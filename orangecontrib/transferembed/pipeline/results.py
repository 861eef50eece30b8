"""What an embedding job gives back."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import EmbedConfig
from .sources import Source


@dataclass
class Skipped:
    """An item that could not be embedded."""

    index: int  #: position in the source
    item: str  #: path or row, as the user knows it
    reason: str


@dataclass
class EmbeddingResult:
    """Embeddings of the items that could be embedded, and the rest with reasons."""

    embeddings: np.ndarray  #: float32 ``(n_embedded, K)``
    indices: np.ndarray  #: positions in the source of the embedded items
    skipped: list[Skipped]
    source: Source
    config: EmbedConfig  #: the settings, with the runtime that ran
    n_cached: int = 0
    labels: np.ndarray | None = field(default=None)  #: labels of the embedded items
    #: What the user should know about the run: a runtime fallback, a damaged cache.
    notices: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.labels is None and self.source.labels is not None:
            self.labels = self.source.labels[self.indices]

    @property
    def feature_names(self) -> list[str]:
        return [f"n{i}" for i in range(self.embeddings.shape[1])]

    def __len__(self) -> int:
        return len(self.indices)
