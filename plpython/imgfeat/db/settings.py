"""Reading imgfeat's PostgreSQL settings (GUCs) safely.

imgfeat has no C code, so its settings are *placeholder* variables: PostgreSQL lets any
user ``SET`` them in a session (or through PGOPTIONS, ALTER ROLE/DATABASE), and hides them
from ``pg_settings``. Settings that widen what the server process may do
(``imgfeat.image_root``, the ceiling of ``imgfeat.max_image_pixels``) are therefore taken only
from the server configuration files (postgresql.conf, or ``ALTER SYSTEM`` in postgresql.auto.conf),
read through ``imgfeat_internal.config_settings()`` — a SECURITY DEFINER view of
``pg_file_settings`` restricted to ``imgfeat.*``. When the session's current value differs
from the configured one, it was set by a session, role, database or client, and
:func:`trusted_setting` raises :class:`~imgfeat.core.errors.ConfigurationError`.

``imgfeat.max_image_pixels`` may be lowered by a session, never raised above the configured
(or built-in) value. The other settings (threads, cache size) are read with ``current_setting``. Where
the library lives is no setting at all: it is fixed when the extension is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigurationError

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


def parse_int(raw: str | None, default: int, name: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer setting's value; ``default`` when unset or empty.

    Raises:
        ConfigurationError: not an integer, or outside [minimum, maximum].
    """
    if raw in (None, ""):
        return default
    try:
        value = int(float(raw))  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        raise ConfigurationError(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigurationError(f"{name} must be {bound}, not {value}")
    return value


MAX_SESSION_CACHE_SIZE = 16
"""Most models a backend may keep loaded (``imgfeat.session_cache_size``): each holds its
weights and onnxruntime's buffers (about 0.1 to 0.5 GB for the zoo's networks)."""


def max_threads() -> int:
    """Most onnxruntime threads a session may ask for (``imgfeat.intra_op_num_threads``,
    ``imgfeat.inter_op_num_threads``): the server's CPUs. More only oversubscribe them, and
    an unbounded number lets one session exhaust the server's processes and memory."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    """The session's settings as imgfeat uses them (``imgfeat.*``, see the README's Settings)."""

    max_image_pixels: int
    """The smaller of the session's ``imgfeat.max_image_pixels`` and the configured ceiling."""
    intra_op_num_threads: int
    inter_op_num_threads: int
    session_cache_size: int


def settings_from(
    max_pixels: str | None, intra: str | None, inter: str | None, cache_size: str | None, ceiling: int
) -> Settings:
    """:class:`Settings` from the settings' ``current_setting`` texts; ``max_pixels`` is capped at ``ceiling``.

    Raises:
        ConfigurationError: a value that is not an integer in its range.
    """
    from ..core import runtime

    return Settings(
        max_image_pixels=min(parse_int(max_pixels, ceiling, "imgfeat.max_image_pixels", minimum=1), ceiling),
        intra_op_num_threads=parse_int(intra, runtime.DEFAULT_INTRA_OP_THREADS, "imgfeat.intra_op_num_threads",
                                       maximum=max_threads()),
        inter_op_num_threads=parse_int(inter, 1, "imgfeat.inter_op_num_threads", maximum=max_threads()),
        session_cache_size=parse_int(cache_size, runtime.DEFAULT_CACHE_SIZE, "imgfeat.session_cache_size", minimum=1,
                                     maximum=MAX_SESSION_CACHE_SIZE),
    )


def pixel_ceiling(configured: str | None) -> int:
    """The configured ``imgfeat.max_image_pixels`` (``None`` or ``''``: not configured, the
    built-in :data:`imgfeat.core.image.DEFAULT_MAX_PIXELS`): a session may only lower it."""
    from ..core.image import DEFAULT_MAX_PIXELS

    return parse_int(configured, DEFAULT_MAX_PIXELS, "imgfeat.max_image_pixels", minimum=1)
