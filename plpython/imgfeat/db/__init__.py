"""The database layer: what runs inside a PostgreSQL backend and talks to it through ``plpy``.

The entry points the extension's SQL functions call (:mod:`.server`), the backend's state
(:mod:`.state`: settings, parallel mode, loaded models, image root), the catalog
(:mod:`.catalog`), featurize jobs (:mod:`.jobs`), the model registry (:mod:`.registry`),
classifiers' storage (:mod:`.classifiers`) and int8 variants of registered models
(:mod:`.quantize`). It uses :mod:`imgfeat.core` for everything it computes.
"""
