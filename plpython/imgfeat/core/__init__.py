"""The pure library: what imgfeat computes, with no database in sight.

Image decoding and preprocessing (:mod:`.image`, :mod:`.spec`), onnxruntime sessions
(:mod:`.runtime`), ONNX import (:mod:`.onnx_import`), the model zoo (:mod:`.zoo`), int8
quantization (:mod:`.quantize`), logistic-regression training (:mod:`.training`) and metrics
(:mod:`.metrics`), reading files under a root (:mod:`.files`). Nothing here imports ``plpy``
or :mod:`imgfeat.db` (a test enforces it), so all of it runs and is tested outside PostgreSQL.
"""
