"""The errors gemma_np raises for a user's mistake or a damaged model folder.

Every class subclasses ValueError, so `except ValueError` catches all of them; each message names the
file, key, tensor or argument that was wrong and, where there is one, the fix.
"""


class GemmaNPError(ValueError):
    """Base class of every error gemma_np raises on purpose."""


class ModelFolderError(GemmaNPError):
    """A model folder, or one of its JSON files, is missing something or holds a value we do not implement."""


class WeightsError(GemmaNPError):
    """A safetensors file is damaged, or its tensors do not match the configuration."""


class InputError(GemmaNPError):
    """An argument to encode() and friends is out of range (a wrong *type* raises TypeError instead)."""
