"""The generation layer's error root and its subclasses.

Messages are written for the person who caused them: they name the problem and what is allowed.
"""

from __future__ import annotations


class GenerationError(Exception):
    """Root of every error this package raises on purpose."""

    #: A retryable error may succeed if the same job runs again later (e.g. out of GPU memory).
    retryable: bool = False


class OptionError(GenerationError):
    """A prompt or option the user typed is invalid. Nothing is queued or charged."""


class CommandFileError(GenerationError):
    """A file a local command reads or writes cannot be used: missing, not an image, damaged,
    too large, carrying parameters the settings refuse, or not writable. Nothing is generated."""


class PromptTooLongError(OptionError):
    """The prompt has more tokens than the text encoders accept."""


class ModelLoadError(GenerationError):
    """The model cannot be loaded: missing weights, no network, unknown name, or no room."""

    def __init__(self, message: str, *, out_of_memory: bool = False) -> None:
        super().__init__(message)
        #: The device had no room: unloading other models may let it load.
        self.out_of_memory = out_of_memory


class OutOfMemoryError(GenerationError):
    """The device ran out of memory for this job; the worker stays healthy and may retry."""

    retryable = True


class JobTimedOutError(GenerationError):
    """The job ran past its time limit (the worker's watchdog); another attempt may finish."""

    retryable = True

    def __init__(self, limit_seconds: float) -> None:
        super().__init__(f"it ran longer than its time limit of {round(limit_seconds, 1):g} s")
        self.limit_seconds = limit_seconds


class JobCancelledError(GenerationError):
    """The job was cancelled while it ran; its partial result was discarded."""
