"""The project's one error type: a message for the user, naming the file, key or count at fault.

Scripts turn it into one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""


class SemdefectError(Exception):
    """Bad input the user can fix: a config key, a dataset folder, an image or a model file."""


class ConfigError(SemdefectError):
    """A config file or override that cannot be used."""


class ImageError(SemdefectError):
    """An image file that cannot be read or is refused (too large, not an image)."""


class DatasetError(SemdefectError):
    """A dataset folder with the wrong layout or no readable image."""


class ModelError(SemdefectError):
    """A model file that is missing, corrupt, of the wrong kind or without semdefect metadata."""
