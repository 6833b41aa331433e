"""SQLAlchemy helpers (imgfeat_loader.sqlalchemy) against the real database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import conninfo
from sqlalchemy import Column, Engine, Integer, LargeBinary, MetaData, Table, Text, create_engine, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from imgfeat_loader.db import resolve_dsn
from imgfeat_loader.sqlalchemy import (
    FeatureVector,
    FeaturizeImageFunction,
    featurize_image,
    predict,
    predict_proba,
)


def sqlalchemy_url(dsn: str) -> URL:
    """A ``postgresql+psycopg`` URL for a libpq DSN (a Unix-socket host goes in the query string)."""
    p = conninfo.conninfo_to_dict(dsn)
    host = str(p.get("host") or "")
    return URL.create(
        "postgresql+psycopg", username=p.get("user"), password=p.get("password"),  # type: ignore[arg-type]
        host=None if host.startswith("/") else host or None,
        port=int(p["port"]) if p.get("port") else None, database=p.get("dbname"),  # type: ignore[arg-type]
        query={"host": host} if host.startswith("/") else {},
    )


@pytest.fixture(scope="module")
def engine(dsn: str) -> Iterator[Engine]:
    e = create_engine(sqlalchemy_url(dsn))
    yield e
    e.dispose()


@pytest.fixture(scope="module")
def faces_table(dsn: str, face_files: list[Path]) -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS sa_faces")
        c.execute("CREATE TABLE sa_faces (id int PRIMARY KEY, path text, image bytea)")
        for i, f in enumerate(face_files[:3]):
            c.execute("INSERT INTO sa_faces VALUES (%s, %s, %s)", (i, f.name, f.read_bytes()))
    return "sa_faces"


def test_rendering() -> None:
    images = Table("images", MetaData(), Column("image", LargeBinary))
    d = postgresql.dialect()
    e = featurize_image(images.c.image, "resnet50")
    assert str(e.compile(dialect=d)).startswith("imgfeat.featurize_image(images.image, %(param_1)s")
    assert isinstance(e.type, postgresql.ARRAY) or e.type.__class__.__name__ == "ARRAY"
    assert isinstance(e.type.item_type, postgresql.REAL)  # type: ignore[attr-defined]
    e3 = featurize_image(images.c.image, resize="aniso")
    assert str(e3.compile(dialect=d)).count("%(param_") == 2
    # the generic-function registry: func.imgfeat.featurize_image is the typed class; func.featurize_image is not
    assert isinstance(func.imgfeat.featurize_image(images.c.image), FeaturizeImageFunction)
    assert not isinstance(func.featurize_image(images.c.image), FeaturizeImageFunction)
    p = predict("faces_clf", featurize_image(images.c.image))
    assert str(p.compile(dialect=d)).startswith("imgfeat.predict(%(param_1)s::VARCHAR, imgfeat.featurize_image(")
    assert isinstance(p.type, Text)
    pp = predict_proba("faces_clf", images.c.image)
    assert str(pp.compile(dialect=d)).startswith("imgfeat.predict_proba(")
    assert isinstance(pp.type, postgresql.JSONB)


def test_featurize_image_core(engine: Engine, dsn: str, resnet18: str, faces_table: str) -> None:
    t = Table(faces_table, MetaData(), autoload_with=engine)
    with engine.connect() as c:
        got = c.execute(select(t.c.id, featurize_image(t.c.image, resnet18)).order_by(t.c.id)).all()
        typed = c.execute(select(featurize_image(t.c.image, resnet18, type_=FeatureVector(512))).order_by(t.c.id)).all()
    with psycopg.connect(dsn) as pc:
        ref = pc.execute("SELECT imgfeat.featurize_image(image, %s) FROM sa_faces ORDER BY id", (resnet18,)).fetchall()
    assert [r[0] for r in got] == [0, 1, 2]
    assert [r[1] for r in got] == [r[0] for r in ref]
    assert all(len(r[1]) == 512 for r in got)
    for (vec,), (expected,) in zip(typed, ref):
        assert isinstance(vec, np.ndarray) and vec.dtype == np.float32 and vec.shape == (512,)
        np.testing.assert_array_equal(vec, np.asarray(expected, dtype=np.float32))


class Base(DeclarativeBase):
    pass


class Face(Base):
    __tablename__ = "sa_orm_faces"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image: Mapped[bytes] = mapped_column(LargeBinary)
    features: Mapped[Any] = mapped_column(FeatureVector(512), nullable=True)


def test_orm_feature_vector_roundtrip(engine: Engine, resnet18: str, face_files: list[Path]) -> None:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([Face(id=i, image=f.read_bytes()) for i, f in enumerate(face_files[:2])])
        s.commit()
        # featurize in the database through the ORM
        for face in s.scalars(select(Face).order_by(Face.id)):
            face.features = s.scalar(select(featurize_image(Face.image, resnet18, type_=FeatureVector(512)))
                                     .where(Face.id == face.id))
        s.commit()
        expected = s.scalars(select(featurize_image(Face.image, resnet18)).order_by(Face.id)).all()
    with Session(engine) as s:
        loaded = s.scalars(select(Face).order_by(Face.id)).all()
        assert len(loaded) == 2
        for face, exp in zip(loaded, expected):
            assert isinstance(face.features, np.ndarray) and face.features.dtype == np.float32
            np.testing.assert_array_equal(face.features, np.asarray(exp, dtype=np.float32))
        # a vector of another length is refused before it reaches the database
        loaded[0].features = np.zeros(3, dtype=np.float32)
        with pytest.raises(StatementError, match="feature vector has 3 elements, expected 512"):
            s.commit()


def test_feature_vector_checks() -> None:
    fv = FeatureVector(4)
    d = postgresql.dialect()
    assert fv.process_bind_param([1, 2, 3, 4.5], d) == [1.0, 2.0, 3.0, 4.5]
    assert fv.process_bind_param(None, d) is None
    out = fv.process_result_value([0.1, 0.2, 0.3, 0.4], d)
    assert out is not None and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32))
    with pytest.raises(ValueError, match="one-dimensional"):
        fv.process_bind_param([[1, 2], [3, 4]], d)
    with pytest.raises(ValueError, match="5 elements, expected 4"):
        fv.process_result_value([0.0] * 5, d)
    with pytest.raises(ValueError, match="NULL elements"):
        fv.process_result_value([0.0, None, 1.0, 2.0], d)
    assert FeatureVector().process_bind_param(np.arange(7), d) == [float(i) for i in range(7)]
    with pytest.raises(ValueError, match="positive"):
        FeatureVector(0)


def test_resolve_dsn_from_engine(engine: Engine, dsn: str) -> None:
    """The loader's functions take an engine: its URL becomes a libpq DSN for the same database."""
    with psycopg.connect(resolve_dsn(engine)) as c:
        row = c.execute("SELECT current_database(), current_user").fetchone()
    p = conninfo.conninfo_to_dict(dsn)
    assert row == (p["dbname"], p["user"])


def test_predict_and_predict_proba(engine: Engine, dsn: str, resnet18: str, face_files: list[Path]) -> None:
    """The whole chain through SQLAlchemy: features into a FeatureVector column, a classifier
    trained in the database, then predict / predict_proba, checked against plain SQL."""
    left = [f for f in face_files if "_left_" in f.name][:6]
    right = [f for f in face_files if "_right_" in f.name][:6]
    t = Table("sa_clf_faces", MetaData(), Column("id", Integer, primary_key=True), Column("label", Text),
              Column("image", LargeBinary), Column("features", FeatureVector(512)))
    t.drop(engine, checkfirst=True)
    t.create(engine)
    with engine.begin() as c:
        c.execute(t.insert(), [{"id": i, "label": "left" if f in left else "right", "image": f.read_bytes()}
                               for i, f in enumerate(left + right)])
        c.execute(t.update().values(features=featurize_image(t.c.image, resnet18)))
    with psycopg.connect(dsn, autocommit=True) as pc:
        pc.execute("CALL imgfeat.train_logistic_regression('sa_clf', 'sa_clf_faces'::regclass, replace => true)")
        ref = pc.execute("SELECT imgfeat.predict('sa_clf', features), imgfeat.predict_proba('sa_clf', features) "
                         "FROM sa_clf_faces ORDER BY id").fetchall()
    with engine.connect() as c:
        got = c.execute(select(predict("sa_clf", t.c.features), predict_proba("sa_clf", t.c.features))
                        .order_by(t.c.id)).all()
        nested = c.execute(select(predict("sa_clf", featurize_image(t.c.image, resnet18))).order_by(t.c.id)).scalars().all()
    assert [tuple(r) for r in got] == ref
    assert nested == [r[0] for r in ref]
    labels = ["left"] * 6 + ["right"] * 6
    assert [r[0] for r in got] == labels  # 12 training images, separable: fitted exactly
    for (label, proba), want in zip(got, labels):
        assert set(proba) == {"left", "right"} and abs(sum(proba.values()) - 1) < 1e-9
        assert proba[want] > 0.5
