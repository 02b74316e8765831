"""The project's exception types.

Every error a user can cause (bad data, a broken bundle, an unknown name) is raised
as a subclass of :class:`XcytoError` with a message that says what was wrong and
what to do, so callers can catch one type and the CLI can print it without a
traceback.
"""


class XcytoError(Exception):
    """Base class of every error xcyto raises on purpose."""


class DataError(XcytoError):
    """A dataset, manifest or folder cannot be read as cells."""


class ImageError(DataError):
    """An image file or array is unreadable, truncated, too large or of an unsupported kind."""


class LeakageError(DataError):
    """A split puts the same group or byte-identical image on both sides."""


class ModelError(XcytoError):
    """An unknown architecture, or weights that cannot be built or found."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights were asked for but are neither cached nor downloadable."""


class BundleError(XcytoError):
    """A bundle folder is missing, corrupt, or inconsistent with its weights."""


class TrainingError(XcytoError):
    """Training cannot start or continue with the given settings."""


class ExplainError(XcytoError):
    """An explanation was asked for with an unknown method, class or bad input."""


class EmbeddingError(XcytoError):
    """A gallery, map or neighbour search cannot give what was asked (e.g. t-SNE has no transform)."""
