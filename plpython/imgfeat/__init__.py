"""imgfeat: the server-side library behind the ``imgfeat`` PostgreSQL extension.

Two layers: :mod:`imgfeat.core`, the pure library (image decoding and preprocessing with
Pillow, ONNX feature extractors built with numpy + onnx, onnxruntime sessions,
logistic-regression training), importable and testable outside PostgreSQL; and
:mod:`imgfeat.db`, what runs in a backend, whose entry points take ``plpy`` as an argument
(see :mod:`imgfeat.db.server`). Imports run one way: ``db`` uses ``core``, never the reverse.
"""

__version__ = "0.3.0"
