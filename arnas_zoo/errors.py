"""Typed exceptions of arnas-zoo.

Every error subclasses a builtin so that callers who do not know this package can still catch it
(``except ValueError``), and every message says what was expected, what came, and what to do.
"""

from __future__ import annotations


class ArnasZooError(Exception):
    """Base class of every error raised on purpose by arnas-zoo."""


class GenotypeError(ArnasZooError, ValueError):
    """A genotype (JSON or dict) is malformed; the message starts with the JSON path."""


class ConfigError(ArnasZooError, ValueError):
    """A model, training or search configuration is invalid."""


class UnknownModelError(ArnasZooError, KeyError):
    """A registry name is unknown; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(ArnasZooError, ValueError):
    """A registry name is registered twice."""


class InputRangeError(ArnasZooError, ValueError):
    """Input images are outside [0, 1] or of the wrong shape/dtype."""


class DataError(ArnasZooError, ValueError):
    """A data file (npz batch, image, dataset file) is unreadable, or its contents look wrong."""


class DataNotFoundError(ArnasZooError, FileNotFoundError):
    """A dataset is not on disk; the message says where it looked and how to fetch it."""


class NonFiniteError(ArnasZooError, FloatingPointError):
    """A loss or gradient became NaN or infinite; the step was undone and the run stopped."""


class CheckpointError(ArnasZooError, RuntimeError):
    """A checkpoint or weight file is corrupt or does not fit its configuration."""


class UntrustedFileError(ArnasZooError, ValueError):
    """A file read from disk is too large, not UTF-8, not JSON, nested too deeply or of the wrong shape."""


class RunFolderBusyError(ArnasZooError, RuntimeError):
    """Another process holds the run folder (one writer per run folder); the message names it."""


class NoGradientPathError(ArnasZooError, RuntimeError):
    """A gradient attack was asked of a model whose output has no autograd path to its input."""
