"""Batches: which row of which batch each image takes.

An image's features can depend, in their last bits, on its row in the batch
and on the batch's size (the kernels a runtime picks). So every batch has a
fixed number of rows, padded with zeros, and a part of a larger job starts
at the row layout where the whole job would be at that point: the part then
gives the same bits as the whole. :class:`Layout` is that position.

At the image's own size a batch holds images of one shape only, and at most
as many pixels as a batch at the backbone's default size: large photos get
fewer rows (one, for a 12-megapixel photo at batch 32). The rule depends on
the shape alone, so results never depend on the memory limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """Where the batch rows stand: rows taken in the open batch, and their image
    shape (at the image's own size only)."""

    rows: int = 0
    shape: tuple[int, ...] | None = None

    def as_json(self) -> list:
        return [self.rows, list(self.shape) if self.shape else None]

    @classmethod
    def from_json(cls, value) -> Layout:
        rows, shape = value
        return cls(int(rows), tuple(int(v) for v in shape) if shape else None)


START = Layout()


@dataclass(frozen=True)
class Part:
    """A part of a job: its first item's position in the job, and the layout it
    starts at. A whole job is ``Part()``."""

    start: int = 0
    layout: Layout = START


def rows_for(shape: tuple[int, ...], batch_size: int, default_side: int, native: bool) -> int:
    """Rows of a batch of images of ``shape``: the batch size, or at the image's
    own size, as many as hold the pixels of a default-size batch (at least one)."""
    if not native:
        return batch_size
    pixels = shape[0] * shape[1]
    return max(1, min(batch_size, batch_size * default_side * default_side // pixels))


class Batch:
    """Decoded images waiting for inference, in the rows of one fixed-size batch.

    Items are any objects with ``pixels`` (a uint8 ``(H, W, 3)`` array, taken
    and dropped on :meth:`add`) and ``index``.
    """

    def __init__(self, batch_size: int, default_side: int, native: bool,
                 layout: Layout = START):
        self.batch_size, self.default_side, self.native = batch_size, default_side, native
        self.first, self.first_shape = layout.rows, layout.shape
        self.buffer: np.ndarray | None = None
        self.items: list = []
        self._spare: np.ndarray | None = None  #: the last buffer, reused for its shape

    def fits(self, pixels: np.ndarray) -> bool:
        return self.buffer is None or self.buffer.shape[1:] == pixels.shape

    def add(self, item) -> None:
        """Put ``item`` in the next row; call :meth:`take` first if it does not fit."""
        if self.buffer is None:
            shape = item.pixels.shape
            rows = rows_for(shape, self.batch_size, self.default_side, self.native)
            if self.first_shape not in (None, shape) or self.first >= rows:
                self.first = 0  # the part before ended on another shape
            spare, self._spare = self._spare, None
            fits = spare is not None and spare.shape == (rows,) + shape
            self.buffer = spare if fits else np.zeros((rows,) + shape, np.float32)
        self.buffer[self.first + len(self.items)] = item.pixels
        item.pixels = None
        self.items.append(item)

    @property
    def full(self) -> bool:
        return self.buffer is not None and self.first + len(self.items) == len(self.buffer)

    @property
    def nbytes(self) -> int:
        return 0 if self.buffer is None else self.buffer.nbytes

    def layout(self) -> Layout:
        """Where the next image would go: what a following part starts at."""
        if self.buffer is None:
            return Layout(self.first, self.first_shape if self.first else None)
        rows = self.first + len(self.items)
        if rows == len(self.buffer):
            return START
        return Layout(rows, tuple(self.buffer.shape[1:]) if self.native else None)

    def take(self) -> tuple[np.ndarray, slice, list]:
        """The padded batch, the rows that hold images, and their items; then empty."""
        buffer, first, items = self.buffer, self.first, self.items
        buffer[:first] = 0
        buffer[first + len(items):] = 0
        self.buffer, self.items, self.first, self.first_shape = None, [], 0, None
        self._spare = buffer  # the caller is done with it before the next add()
        return buffer, slice(first, first + len(items)), items
