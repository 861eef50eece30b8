"""Exceptions that carry a message meant for the user, and the one cancel check."""

from __future__ import annotations

from collections.abc import Callable


class TransferEmbedError(Exception):
    """A problem the user can fix: a bad setting, file or missing weights.

    The command line prints its message and exits with status 2; the widget
    shows :attr:`gui`, the same message in the words of the widget's controls
    (Weights › File… where the command line says ``-weights PATH``).
    """

    def __init__(self, message: str, gui: str | None = None):
        super().__init__(message)
        self.gui = gui or message

    def __reduce__(self):  # keeps the GUI wording across processes (cluster workers)
        return type(self), (str(self), self.gui)


class UnknownBackboneError(TransferEmbedError, ValueError):
    """A model name that is not in the registry."""


class SettingsError(TransferEmbedError, ValueError):
    """A setting out of range: batch size, input size, alpha, resize policy, layer."""


class SourceError(TransferEmbedError):
    """An input (npy pair, CSV, folder, table) that cannot be used at all."""


class WeightsUnavailableError(TransferEmbedError):
    """Weights that cannot be downloaded, verified or loaded."""


class EmbeddingCancelled(Exception):
    """Raised by the engine when its ``is_cancelled`` callback says so."""


def check_cancelled(is_cancelled: Callable[[], bool] | None) -> None:
    """Raise :class:`EmbeddingCancelled` once ``is_cancelled()`` says so."""
    if is_cancelled is not None and is_cancelled():
        raise EmbeddingCancelled()


class ImageError(Exception):
    """One item that cannot be embedded; the run skips it with this reason."""
