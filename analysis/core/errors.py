"""Our error types. Every bad input raises one of these; pages and the CLI catch only ``LensError``,
so a bug in the library still shows as a bug (a traceback), never as a user-input message.

All are ``ValueError`` subclasses, for callers that already expect that.
"""

from __future__ import annotations


class LensError(ValueError):
    """Bad input to ResNet Lens; the message says what is wrong and what to change."""


class SpecError(LensError):
    """An architecture spec that cannot be built (unknown model, impossible configuration)."""


class CheckpointError(LensError):
    """A checkpoint that cannot be used: unreadable, unsafe, or not matching its architecture."""


class DatasetError(LensError):
    """A dataset that is missing, incomplete or corrupt; the message names the path."""


class ConfigError(LensError):
    """An experiment setting out of range (training recipe, sweep, measurement)."""


class DivergedError(ConfigError):
    """Training blew up (a NaN or infinite loss, weights or BatchNorm statistics): a result of the
    net and recipe, told apart by its type, never by matching its message (issue 22)."""
