"""imgfeat_loader: the client side of imgfeat — the ``imgfeat`` command-line tool, data
loading over psycopg 3, a throwaway local PostgreSQL cluster, and SQLAlchemy helpers."""

from imgfeat import __version__

__all__ = ["__version__"]
