"""Exceptions that carry a message meant for the user."""


class TransferEmbedError(Exception):
    """A problem the user can fix: a bad setting, file or missing weights.

    The command line prints its message and exits with status 2; the widget
    shows it as an error.
    """


class UnknownBackboneError(TransferEmbedError, ValueError):
    """A model name that is not in the registry."""


class SettingsError(TransferEmbedError, ValueError):
    """A setting out of range: batch size, input size, alpha, resize policy."""


class SourceError(TransferEmbedError):
    """An input (npy pair, CSV, folder, table) that cannot be used at all."""


class WeightsUnavailableError(TransferEmbedError):
    """Weights that cannot be downloaded or loaded."""


class EmbeddingCancelled(Exception):
    """Raised by the engine when its ``is_cancelled`` callback says so."""


class ImageError(Exception):
    """One item that cannot be embedded; the run skips it with this reason."""
