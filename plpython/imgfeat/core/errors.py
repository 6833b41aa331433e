"""Errors raised by the imgfeat library.

Each error carries a PostgreSQL SQLSTATE, and optionally a detail and a hint, so the
PL/Python entry points can re-raise it as a clean ``ERROR`` (no traceback as the message).
"""

from __future__ import annotations


class ImgfeatError(Exception):
    """Base class. ``sqlstate`` is a five-character PostgreSQL error code."""

    sqlstate = "XX000"

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint

    @property
    def error_class(self) -> str:
        """snake_case of the class name, e.g. ``ImageDecodeError`` -> ``image_decode_error``: the
        ``error_class`` column of ``imgfeat.featurize_errors``, the same from the database and Spark."""
        name = type(self).__name__
        return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class ImageDecodeError(ImgfeatError):
    """The bytes are not an image we can decode (``22P02`` invalid_text_representation)."""

    sqlstate = "22P02"


class ImageTooLargeError(ImageDecodeError):
    """The image's header declares more pixels than the configured limit (``54000`` program_limit_exceeded)."""

    sqlstate = "54000"


class ModelError(ImgfeatError):
    """An ONNX model is invalid or does not fit what was declared (``22023`` invalid_parameter_value)."""

    sqlstate = "22023"


class ModelNotFoundError(ImgfeatError):
    """No model of that name is registered (``42704`` undefined_object)."""

    sqlstate = "42704"


class ConfigurationError(ImgfeatError):
    """A setting is missing, invalid or comes from an untrusted source (``55000`` object_not_in_prerequisite_state)."""

    sqlstate = "55000"


class MissingPackageError(ImgfeatError):
    """The server's Python lacks a package imgfeat needs (``58000`` system_error)."""

    sqlstate = "58000"


class InvalidParameterError(ImgfeatError):
    """An argument is out of its documented range (``22023`` invalid_parameter_value)."""

    sqlstate = "22023"


class InsufficientPrivilegeError(ImgfeatError):
    """The caller may not do this, by imgfeat's own rules (``42501`` insufficient_privilege)."""

    sqlstate = "42501"


class TrainingError(ImgfeatError):
    """Training data or a classifier is unusable (``22023`` invalid_parameter_value)."""

    sqlstate = "22023"


class EngineUnavailableError(ImgfeatError):
    """A model's precision needs an engine or a CPU feature this server lacks: the OpenVINO
    packages, or bf16 instructions (``0A000`` feature_not_supported). Never answered by running
    the model on another engine or at another precision."""

    sqlstate = "0A000"
