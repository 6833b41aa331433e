"""SQLAlchemy (2.x) helpers: imgfeat's SQL functions as typed expressions, and a feature-vector column type.

Usable in Core and ORM queries::

    from imgfeat_loader.sqlalchemy import FeatureVector, featurize_image, predict
    stmt = select(images.c.path, featurize_image(images.c.image, "resnet18"))

The function classes are registered as SQLAlchemy generic functions in the ``imgfeat``
package, so ``func.imgfeat.featurize_image(...)`` builds the same typed expression. All render
schema-qualified: ``imgfeat.featurize_image(...)``.

``predict`` and ``predict_proba`` wrap the classifier functions of the extension
(``imgfeat.predict(classifier, features) -> text`` and ``imgfeat.predict_proba(classifier,
features) -> jsonb``); they only build SQL, so the server must have them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import REAL, Text, literal
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import GenericFunction
from sqlalchemy.types import ARRAY, LargeBinary, TypeDecorator, TypeEngine

SCHEMA = "imgfeat"
"""The extension's schema, rendered before each function name."""


class _ImgfeatFunction(GenericFunction[Any]):
    """A function in the ``imgfeat`` schema (rendered ``imgfeat.<name>(...)``)."""

    inherit_cache = True
    _register = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.packagenames = (SCHEMA,)


class FeaturizeImageFunction(_ImgfeatFunction):
    """``imgfeat.featurize_image(image bytea, model_name text, resize text) -> real[]``."""

    name = "featurize_image"
    type = ARRAY(REAL())
    package = SCHEMA  # read from each class's own body: registers func.imgfeat.<name>
    inherit_cache = True


class PredictFunction(_ImgfeatFunction):
    """``imgfeat.predict(classifier, features real[]) -> text``: the predicted label."""

    name = "predict"
    type = Text()
    package = SCHEMA  # read from each class's own body: registers func.imgfeat.<name>
    inherit_cache = True


class PredictProbaFunction(_ImgfeatFunction):
    """``imgfeat.predict_proba(classifier, features real[]) -> jsonb``: class probabilities."""

    name = "predict_proba"
    type = JSONB()
    package = SCHEMA  # read from each class's own body: registers func.imgfeat.<name>
    inherit_cache = True


def _arg(value: Any, type_: TypeEngine[Any]) -> Any:
    """Python values become typed bind parameters (``::TEXT`` rather than ``::VARCHAR``); SQL expressions pass through."""
    if isinstance(value, ColumnElement) or hasattr(value, "__clause_element__"):
        return value
    return literal(value, type_)


def featurize_image(
    image: Any,
    model_name: Any = "resnet18",
    resize: Any = None,
    *,
    type_: TypeEngine[Any] | None = None,
) -> FeaturizeImageFunction:
    """``imgfeat.featurize_image(image, model_name[, resize])``: a ``real[]`` of the model's feature_dim.

    Args:
        image: a ``bytea`` column or expression, or Python ``bytes``.
        model_name: a registered model's name (str or SQL expression); default ``'resnet18'``.
        resize: ``'isocrop' | 'isopad' | 'aniso'`` to override the model's resize mode; omitted if None.
        type_: the result type; default ``ARRAY(REAL)`` (Python lists of floats). Pass
            :class:`FeatureVector` for numpy float32 arrays.
    """
    args = [_arg(image, LargeBinary()), _arg(model_name, Text())]
    if resize is not None:
        args.append(_arg(resize, Text()))
    kw: dict[str, Any] = {"type_": type_} if type_ is not None else {}
    return FeaturizeImageFunction(*args, **kw)


def predict(classifier: Any, features: Any) -> PredictFunction:
    """``imgfeat.predict(classifier, features)`` (text): the label the classifier predicts.

    ``classifier``: the classifier's name (str) or a SQL expression; ``features``: a ``real[]``
    expression such as :func:`featurize_image` or a :class:`FeatureVector` column.
    """
    return PredictFunction(_arg(classifier, Text()), _arg(features, ARRAY(REAL())))


def predict_proba(classifier: Any, features: Any) -> PredictProbaFunction:
    """``imgfeat.predict_proba(classifier, features)`` (jsonb, returned as Python objects): class probabilities."""
    return PredictProbaFunction(_arg(classifier, Text()), _arg(features, ARRAY(REAL())))


class FeatureVector(TypeDecorator[np.ndarray]):
    """A ``real[]`` column whose Python values are 1-D numpy ``float32`` arrays.

    Args:
        dim: when given, values bound or fetched must have exactly this many elements.

    Binding accepts any 1-D sequence of numbers (converted to float32); fetching returns
    ``np.ndarray`` (dtype float32, shape ``(n,)``). NULL stays None. With the ORM, assign a
    new array to change a value: changing an array in place is not detected.

    Raises (wrapped by SQLAlchemy in ``StatementError`` on bind):
        ValueError: not one-dimensional, a NULL element, or a length other than ``dim``.
    """

    impl = ARRAY
    cache_ok = True

    def __init__(self, dim: int | None = None) -> None:
        super().__init__(REAL())
        if dim is not None and dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim

    def _check(self, arr: np.ndarray) -> np.ndarray:
        if arr.ndim != 1:
            raise ValueError(f"a feature vector is one-dimensional, got shape {arr.shape}")
        if self.dim is not None and arr.shape[0] != self.dim:
            raise ValueError(f"feature vector has {arr.shape[0]} elements, expected {self.dim}")
        return arr

    def process_bind_param(self, value: Any, dialect: Dialect) -> list[float] | None:
        if value is None:
            return None
        arr = self._check(np.asarray(value, dtype=np.float32))
        return arr.tolist()  # Python floats, exact images of the float32 values

    def process_result_value(self, value: Any, dialect: Dialect) -> np.ndarray | None:
        if value is None:
            return None
        if any(v is None for v in value):
            raise ValueError("feature vector holds NULL elements")
        return self._check(np.asarray(value, dtype=np.float32))

    def compare_values(self, x: Any, y: Any) -> bool:
        """Element-wise equality (the ORM's change detection; ``==`` on arrays is not a bool)."""
        if x is None or y is None:
            return x is y
        a, b = np.asarray(x), np.asarray(y)
        return a.shape == b.shape and bool(np.array_equal(a, b))

    def copy(self, **kw: Any) -> "FeatureVector":
        return FeatureVector(self.dim)


__all__ = [
    "FeatureVector",
    "FeaturizeImageFunction",
    "PredictFunction",
    "PredictProbaFunction",
    "SCHEMA",
    "featurize_image",
    "predict",
    "predict_proba",
]
