"""What imgfeat reads from PostgreSQL's catalog, and the one layout of a features table.

One reader of relations and their columns (:func:`relation`), the checks of an image column
(:func:`image_column`) and an id column (:func:`check_id_column`), and the target table of a
featurize job (:func:`target_table`: created if missing in the layout ``CALL imgfeat.featurize``
writes, else checked). The same code serves a backend (through PL/Python's ``plpy``) and a
client such as the Spark driver (through psycopg): both hand it a :class:`Database`.

Queries here use ``$1``-style parameters, every one passed as text and cast in the SQL
(``$1::pg_catalog.regclass``), so one text runs unchanged on both.

A relation checked once is read and written by OID later, in other transactions, through a
temporary view bound to it (:func:`pin_view`): ``CALL imgfeat.featurize`` in each batch
transaction, the Spark executors in each of theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..core.errors import ConfigurationError, InsufficientPrivilegeError, InvalidParameterError


class Database(Protocol):
    """Where catalog queries run: a backend's SPI (:class:`PlpyDatabase`) or a client connection."""

    def rows(self, query: str, *params: Any) -> list[dict[str, Any]]:
        """The rows of ``query`` (``$n`` parameters, each passed as text or NULL) as dicts."""

    def quote_ident(self, name: str) -> str:
        """``name`` quoted as an SQL identifier where needed."""

    def execute(self, statement: str) -> None:
        """Run ``statement`` (no parameters, no result) in the current transaction."""

    def create(self, ddl: str) -> bool:
        """Run a ``CREATE`` statement; False if the object exists already (created concurrently)."""

    def parse_ident(self, text: str) -> list[str] | None:
        """``pg_catalog.parse_ident(text)``: the parts of a qualified name, None if it is not one."""


class PlpyDatabase:
    """:class:`Database` over PL/Python's ``plpy``; plans are prepared once per query text."""

    def __init__(self, plpy: Any) -> None:
        self.plpy = plpy
        self._prepared: dict[tuple[str, int], Any] = {}

    def rows(self, query: str, *params: Any) -> list[dict[str, Any]]:
        key = (query, len(params))
        plan = self._prepared.get(key)
        if plan is None:
            plan = self._prepared[key] = self.plpy.prepare(query, ["pg_catalog.text"] * len(params))
        return list(self.plpy.execute(plan, [None if p is None else str(p) for p in params]))

    def quote_ident(self, name: str) -> str:
        return str(self.plpy.quote_ident(name))

    def execute(self, statement: str) -> None:
        self.plpy.execute(statement)

    def create(self, ddl: str) -> bool:
        try:
            self.plpy.execute(ddl)
        except self.plpy.SPIError as exc:
            if getattr(exc, "sqlstate", None) in ALREADY_EXISTS:
                return False
            raise
        return True

    def parse_ident(self, text: str) -> list[str] | None:
        try:  # each SPI call runs in a subtransaction: an error here leaves the transaction usable
            return list(self.rows("SELECT pg_catalog.parse_ident($1) AS p", text)[0]["p"])
        except self.plpy.SPIError:
            return None


ALREADY_EXISTS = ("42P07", "23505")
"""duplicate_table, and unique_violation (a concurrent CREATE of the same table or its row type)."""


@dataclass(frozen=True)
class Column:
    """A column of a relation, from the catalog."""

    name: str
    quoted: str
    type: str
    """``format_type``, e.g. ``real[]``, ``character varying(20)``."""
    typname: str
    """``pg_type.typname`` of the column's type, e.g. ``_float4``."""
    element: str | None
    """``typname`` of the element type for arrays, else ``None``."""
    typtype: str
    """``pg_type.typtype``: ``b`` base, ``d`` domain, ``e`` enum, ``c`` composite, ``r`` range, ..."""
    base_type: str = ""
    """``format_type`` of the type under any domains (``pg_type.typbasetype``, followed to the
    end, with the domain's typmod), e.g. ``integer`` for a domain over ``int``; the column's own
    type when it is no domain."""
    base_typname: str = ""
    """``typname`` of :attr:`base_type`."""
    base_element: str | None = None
    """``typname`` of :attr:`base_type`'s element type for arrays, else ``None``."""
    base_typtype: str = ""
    """``typtype`` of :attr:`base_type` (never ``d``)."""
    foreign_domains: tuple[str, ...] = ()
    """The domains in the column type's chain that belong to a role whose rights the reader
    does not have (``pg_has_role(typowner, 'USAGE')``): their CHECK constraints would run
    their owner's code with the rights of whoever stores a value of that type."""

    @property
    def is_enum(self) -> bool:
        return self.typtype == "e"


@dataclass(frozen=True)
class Relation:
    """A table, view, materialized view or foreign table."""

    oid: int
    quoted: str
    """Schema-qualified, quoted name (``format('%I.%I')``)."""
    relkind: str
    columns: dict[str, Column]

    def column(self, name: str | None, role: str) -> Column:
        """The column called ``name`` (exact, case-sensitive), or an error listing the columns.

        Raises:
            InvalidParameterError: NULL or no such column.
        """
        if name is None:
            raise InvalidParameterError(f"{role}_column must not be NULL")
        if name not in self.columns:
            raise InvalidParameterError(
                f"{role} column {name!r} does not exist in {self.quoted}",
                detail=f"columns: {', '.join(self.columns)}",
                hint="column names are case-sensitive and given unquoted, e.g. 'features'",
            )
        return self.columns[name]


BASE_TYPE = (
    "WITH RECURSIVE d(typ, mod, depth) AS ("
    "SELECT a.atttypid, a.atttypmod, 0 "
    "UNION ALL SELECT dt.typbasetype, CASE WHEN dt.typtypmod <> -1 THEN dt.typtypmod ELSE d.mod END, d.depth + 1 "
    "FROM d JOIN pg_catalog.pg_type dt ON dt.oid = d.typ WHERE dt.typtype = 'd' AND d.depth < 100) "
    "SELECT (SELECT d.typ FROM d ORDER BY d.depth DESC LIMIT 1) AS typ, "
    "(SELECT d.mod FROM d ORDER BY d.depth DESC LIMIT 1) AS mod, "
    "(SELECT pg_catalog.array_agg(pg_catalog.format_type(dt.oid, NULL) ORDER BY d.depth) FROM d "
    "JOIN pg_catalog.pg_type dt ON dt.oid = d.typ WHERE dt.typtype = 'd' "
    "AND NOT pg_catalog.pg_has_role(dt.typowner, 'USAGE'))::pg_catalog.text[] AS foreign_domains"
)
"""A lateral subquery over a ``pg_attribute a``: the column type under its domains (``typ``,
``mod``: PostgreSQL's getBaseTypeAndTypmod), and the domains of the chain that belong to roles
whose rights the reader does not have (``foreign_domains``)."""

READABLE_RELKINDS = ("r", "p", "v", "m", "f")
"""Tables, partitioned tables, views, materialized views and foreign tables."""


def relation(db: Database, source: str | int | None) -> Relation:
    """Look up ``source``, a ``regclass``'s text (e.g. ``public.faces``) or a relation's OID:
    OID, quoted name, columns.

    Raises:
        InvalidParameterError: NULL, or not a table or view (an index, a sequence, ...).
        The database's own error for a relation that does not exist.
    """
    if source is None:
        raise InvalidParameterError("source must not be NULL")
    by = "$1::pg_catalog.oid" if isinstance(source, int) else "$1::pg_catalog.regclass"
    rows = db.rows(
        "SELECT c.oid::pg_catalog.int8 AS oid, c.relkind::pg_catalog.text AS relkind, "
        "pg_catalog.format('%I.%I', n.nspname, c.relname) AS quoted "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.oid = {by}",
        source,
    )
    if not rows:
        raise InvalidParameterError(f"relation {source} does not exist")
    row = rows[0]
    if row["relkind"] not in READABLE_RELKINDS:
        raise InvalidParameterError(f"{row['quoted']} is not a table or view (relkind {row['relkind']!r})")
    cols = db.rows(
        "SELECT a.attname::pg_catalog.text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, "
        "t.typname::pg_catalog.text AS typname, e.typname::pg_catalog.text AS element, t.typtype::pg_catalog.text AS typtype, "
        "pg_catalog.format_type(b.typ, b.mod) AS base_type, bt.typname::pg_catalog.text AS base_typname, "
        "be.typname::pg_catalog.text AS base_element, bt.typtype::pg_catalog.text AS base_typtype, b.foreign_domains "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' "
        f"CROSS JOIN LATERAL ({BASE_TYPE}) b "
        "JOIN pg_catalog.pg_type bt ON bt.oid = b.typ "
        "LEFT JOIN pg_catalog.pg_type be ON be.oid = bt.typelem AND bt.typcategory = 'A' "
        "WHERE a.attrelid = $1::pg_catalog.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        row["oid"],
    )
    columns = {
        c["name"]: Column(c["name"], db.quote_ident(c["name"]), c["type"], c["typname"], c["element"], c["typtype"],
                          c["base_type"], c["base_typname"], c["base_element"], c["base_typtype"],
                          tuple(c["foreign_domains"] or ()))
        for c in cols
    }
    return Relation(int(row["oid"]), row["quoted"], row["relkind"], columns)


def image_column(rel: Relation, name: str | None) -> tuple[Column, bool]:
    """The image column and whether it holds paths: ``bytea`` holds image bytes, ``text`` or
    ``varchar`` paths under ``imgfeat.image_root``.

    Raises:
        InvalidParameterError: no such column, or another type.
    """
    col = rel.column(name, "image")
    if col.typname == "bytea":
        return col, False
    if col.typname in ("text", "varchar"):
        return col, True
    raise InvalidParameterError(
        f"image column {name!r} is {col.type}; it must be bytea (image bytes) or text (paths under imgfeat.image_root)"
    )


def check_id_column(rel: Relation, col: Column) -> None:
    """An id column must be a scalar type with an ordering (integer, text, uuid, date, ...), or a
    domain over one. The job reads, compares and stores ids as the type under the domains
    (:attr:`Column.base_type`), so no domain's CHECK runs in it: a domain's constraints are its
    owner's code, which would run with the caller's rights.

    Raises:
        InvalidParameterError: bytea, json, xml, arrays, composites, ranges (or a domain over one).
    """
    if (col.base_typtype not in ("b", "e") or col.base_element is not None
            or col.base_typname in ("bytea", "json", "xml")):
        raise InvalidParameterError(
            f"id column {col.name!r} is {col.type}: it must be a scalar type with an ordering "
            "(integer, bigint, text, uuid, date, timestamp, ...)",
            hint="pass id_column => <the table's key column>",
        )


TARGET_COLUMNS = {"id": None, "model_name": "text", "features": "real[]"}
"""The columns a features table must have (name -> ``format_type``; the id's type is the type
under the source id's domains, :attr:`Column.base_type`)."""


def target_ddl(quoted: str, id_type: str) -> str:
    """``CREATE TABLE`` of a features table: one row per (id, model_name). ``id_type`` is a base
    type (:attr:`Column.base_type`), never a domain: another role's domain in the caller's table
    would run its owner's CHECK with the caller's rights on every insert."""
    return (
        f"CREATE TABLE {quoted} (id {id_type} NOT NULL, model_name text NOT NULL, "
        "features real[] NOT NULL, featurized_at timestamptz NOT NULL DEFAULT pg_catalog.now(), "
        "PRIMARY KEY (id, model_name))"
    )


def target_table(db: Database, target: str | None, id_type: str, default_schema: str | None) -> Relation:
    """The features table ``target``, created if missing (:func:`target_ddl`), else checked.

    ``target`` is parsed as a (possibly schema-qualified, possibly quoted) identifier with
    ``parse_ident``; an unqualified name goes to ``default_schema`` (the caller's current
    schema). Jobs started at once into the same new target: one creates it, the others find it
    (no lock is taken: a lock with a key anyone can compute is a lock anyone can hold). An
    existing target must belong to the caller (or a role whose rights it inherits): another
    role's table could carry triggers or rules that would run with the caller's rights.

    Raises:
        InvalidParameterError: not a valid name, an existing table without the columns of
            :data:`TARGET_COLUMNS` or a unique index on (id, model_name).
        InsufficientPrivilegeError: an existing target that belongs to another role, or whose id
            column is of another role's domain.
    """
    if not target or not target.strip():
        raise InvalidParameterError("target must name a table (table or schema.table)")
    parts = db.parse_ident(target)
    if parts is None:
        raise InvalidParameterError(
            f"target {target!r} is not a valid table name",
            hint='write table, schema.table, or quote unusual names: \'"My Table"\'',
        )
    if len(parts) == 1:
        if default_schema is None:
            raise InvalidParameterError("no schema to create the target table in: qualify it as schema.table")
        parts = [default_schema, parts[0]]
    if len(parts) != 2:
        raise InvalidParameterError(f"target {target!r} must be table or schema.table")
    quoted = f"{db.quote_ident(parts[0])}.{db.quote_ident(parts[1])}"
    if not db.rows("SELECT pg_catalog.to_regclass($1) IS NOT NULL AS e", quoted)[0]["e"]:
        db.create(target_ddl(quoted, id_type))
    rel = relation(db, quoted)
    owner = db.rows(
        "SELECT pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text AS owner, "
        "pg_catalog.pg_has_role(c.relowner, 'USAGE') AS mine FROM pg_catalog.pg_class c WHERE c.oid = $1::pg_catalog.oid",
        rel.oid,
    )[0]
    if not owner["mine"]:
        raise InsufficientPrivilegeError(
            f"target table {rel.quoted} belongs to {owner['owner']}: imgfeat writes features only into "
            "tables that belong to you",
            detail="Another role's table may carry triggers or rules that would run with your rights.",
            hint="Choose a target name of your own (it is created for you), or ask its owner to run the job.",
        )
    id_col = rel.columns.get("id")
    if id_col is not None and id_col.foreign_domains:
        raise InsufficientPrivilegeError(
            f"target table {rel.quoted}: its id column is of type {id_col.type}, a domain that belongs to another "
            f"role ({', '.join(id_col.foreign_domains)}): imgfeat writes no values of another role's domain",
            detail="A domain's CHECK constraints are its owner's code; storing an id would run it with your rights.",
            hint=f"ALTER TABLE {rel.quoted} ALTER COLUMN id TYPE {id_col.base_type}; or choose a new target name.",
        )
    for name, typ in TARGET_COLUMNS.items():
        col = rel.columns.get(name)
        if col is None or (typ is not None and col.type != typ):
            raise InvalidParameterError(
                f"target table {rel.quoted} exists but lacks column {name}" + (f" {typ}" if typ else ""),
                hint="Use a new target name, or a table with columns id, model_name text, features real[].",
            )
    unique = db.rows(
        "SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = $1::pg_catalog.oid AND i.indisunique "
        "AND (SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY a.attname) FROM pg_catalog.pg_attribute a "
        "WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) = ARRAY['id', 'model_name']",
        rel.oid,
    )
    if not unique:
        raise InvalidParameterError(
            f"target table {rel.quoted} needs a unique index on (id, model_name)",
            hint=f"CREATE UNIQUE INDEX ON {rel.quoted} (id, model_name);",
        )
    return rel


PINNED_NAME = (
    "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS quoted, "
    "pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text AS owner, "
    "pg_catalog.pg_has_role(c.relowner, 'USAGE') AS mine "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.oid = $1::pg_catalog.oid"
)
"""The name a relation has now, its owner, and whether the current role has its owner's rights."""

VIEW_READS = (
    "SELECT DISTINCT d.refobjid::pg_catalog.int8 AS oid FROM pg_catalog.pg_rewrite r "
    "JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid "
    "AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> r.ev_class "
    "WHERE r.ev_class = $1::pg_catalog.regclass"
)
"""The relations a view's rule reads, besides the view itself (``pg_depend``)."""


def pin_view(
    db: Database, view: str, oid: int, quoted: str, what: str, columns: str, *, owned: bool,
    job: str = "the featurize job", again: str = "Call imgfeat.featurize again to go on",
) -> str:
    """Bind the temporary view ``view`` (``pg_temp.name``) to the relation ``oid``, checked when
    the job started as ``quoted``, for the rest of the current transaction; returns the name the
    relation has now.

    A name is looked up again whenever a statement is planned: between two transactions of a
    job, the owner of a table's schema can drop it and put a table of its own under its name
    (whose triggers, rules, policies or view functions would run with the job's rights), or
    rename the schema and put another one under its name (which locks no table). So a job
    never names the relation in a later transaction: it creates ``view`` as ``SELECT
    <columns> FROM <the name the OID has now> s``, checks in ``pg_depend`` that the view reads
    exactly that OID (a name taken over in between shows there), and, with ``owned``, that the
    relation still belongs to the current role (or one whose rights it has). The view's
    creation locks the relation until the transaction ends (no DROP, RENAME or OWNER TO
    meanwhile); every query of the transaction reads and writes through the view. The view is
    the caller's to drop before the commit (or it goes with the session).

    ``what`` (``source``, ``target``) and ``job`` name the relation and the job in errors;
    ``again`` is the hint of a dropped relation.

    Raises:
        ConfigurationError: the relation was dropped.
        InsufficientPrivilegeError: its name leads to another relation now (nothing was read
            through the view), or, with ``owned``, it belongs to another role now.
    """

    def dropped() -> ConfigurationError:
        return ConfigurationError(
            f"{what} table {quoted} was dropped while {job} ran",
            detail="The batches committed before stay committed.",
            hint=f"{again} (it starts on the table that has the name then).",
        )

    now = db.rows(PINNED_NAME, oid)
    if not now:
        raise dropped()
    name = now[0]["quoted"]
    db.execute(f"DROP VIEW IF EXISTS {view}")
    db.execute(f"CREATE TEMPORARY VIEW {view} AS SELECT {columns} FROM {name} s")
    reads = [int(r["oid"]) for r in db.rows(VIEW_READS, view)]
    if reads != [oid]:  # the name changed hands since it was read: nothing was read through it
        if not db.rows(PINNED_NAME, oid):
            raise dropped()
        raise InsufficientPrivilegeError(
            f"{what} table {quoted} was replaced while {job} ran: {name} is no longer "
            "the table checked when the job started",
            detail="The batches committed before stay committed; nothing was written to the new table.",
        )
    if owned:
        owner = db.rows(PINNED_NAME, oid)[0]  # locked now: stays so until the commit
        if not owner["mine"]:
            raise InsufficientPrivilegeError(
                f"{what} table {name} now belongs to {owner['owner']}: imgfeat writes features only into "
                "tables that belong to you",
                detail="The batches committed before stay committed.",
            )
    return str(name)
