"""imgfeat: the server-side library behind the ``imgfeat`` PostgreSQL extension.

Image decoding and preprocessing (Pillow), ONNX feature extractors (numpy + onnx),
onnxruntime sessions, and logistic-regression training. Everything here is importable
and testable outside PostgreSQL; the entry points used by PL/Python take ``plpy`` as an
argument (see :mod:`imgfeat.server`).
"""

__version__ = "0.3.0"
