"""Reading imgfeat's PostgreSQL settings (GUCs) safely.

imgfeat has no C code, so its settings are *placeholder* variables: PostgreSQL lets any
user ``SET`` them in a session (or through PGOPTIONS, ALTER ROLE/DATABASE), and hides them
from ``pg_settings``. Settings that widen what the server process may do
(``imgfeat.image_root``, the ceiling of ``imgfeat.max_image_pixels``) are therefore taken only
from the server configuration files (postgresql.conf, or ``ALTER SYSTEM`` in postgresql.auto.conf),
read through ``imgfeat_internal.config_settings()`` — a SECURITY DEFINER view of
``pg_file_settings`` restricted to ``imgfeat.*``. When the session's current value differs
from the configured one, it was set by a session, role, database or client, and
:func:`trusted_setting` raises :class:`~imgfeat.errors.ConfigurationError`.

``imgfeat.max_image_pixels`` may be lowered by a session, never raised above the configured
(or built-in) value. Tunables (threads, cache size) are read with ``current_setting``. Where
the library lives is no setting at all: it is fixed when the extension is installed.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigurationError

_CONFIG_SQL = "SELECT name, setting FROM imgfeat_internal.config_settings()"


def config_settings(plpy: Any) -> dict[str, str]:
    """``imgfeat.*`` settings from the server configuration files: name -> value."""
    return {r["name"]: r["setting"] for r in plpy.execute(_CONFIG_SQL)}


def current_setting(plpy: Any, name: str) -> str | None:
    """The session's current value of ``name`` (``None`` when never set)."""
    row = plpy.execute(plpy.prepare("SELECT pg_catalog.current_setting($1, true) AS v", ["text"]), [name])[0]
    return row["v"] or None


def trusted_setting(plpy: Any, config: dict[str, str], name: str) -> str | None:
    """The configured value of a server-configuration-only setting, or ``None`` when unset.

    Raises:
        ConfigurationError: the session's value differs from the configuration's (set by a
            session, role, database or client).
    """
    configured = config.get(name) or None
    current = current_setting(plpy, name)
    if current is not None and current != configured:
        raise ConfigurationError(
            f"{name} is set to {current!r} outside the server configuration; imgfeat honours it only from "
            "postgresql.conf or ALTER SYSTEM",
            detail="Any user can SET a placeholder setting, so a session's value could point the server at arbitrary files.",
            hint=f"RESET {name}; a superuser sets it with SET {name} = ''; ALTER SYSTEM SET {name} = '...'; "
            "SELECT pg_reload_conf(); (the SET makes the placeholder known to ALTER SYSTEM)",
        )
    return configured


def parse_int(raw: str | None, default: int, name: str, *, minimum: int = 0) -> int:
    """An integer setting's value; ``default`` when unset or empty. Raises ConfigurationError if not an integer >= minimum."""
    if raw in (None, ""):
        return default
    try:
        value = int(float(raw))  # type: ignore[arg-type]
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {value}")
    return value
