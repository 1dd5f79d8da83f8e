"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits with 2.

Each is also the built-in exception of its kind, so that code catching those catches clipdepth's:
a bad value (ConfigError) is a ValueError; a file or checkpoint at fault (DataError, CheckpointError,
EncoderLoadError) is an OSError, with no errno (its message says what is wrong)."""


class ClipdepthError(Exception):
    """Base class: the message must name the file or setting at fault and say what is wrong.

    ``setting``: the argument or option at fault, in the library's name (``captions``); the CLI
    adds the flag that sets it.
    """

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class DataError(ClipdepthError, OSError):
    """A missing, unreadable or invalid input file (image, depth map, split list)."""


class EncoderLoadError(ClipdepthError, OSError):
    """Encoder weights or tokenizer could not be loaded (offline, wrong id or folder)."""


class ConfigError(ClipdepthError, ValueError):
    """An unknown config field, a value of the wrong type, or an unreadable recipe file."""


class CheckpointError(ClipdepthError, OSError):
    """A checkpoint folder that is missing, incomplete or made for another encoder."""


class TrainingError(ClipdepthError):
    """Training cannot go on meaningfully (a non-finite loss); what was saved before is kept."""
