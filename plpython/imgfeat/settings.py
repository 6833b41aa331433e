"""Reading imgfeat's PostgreSQL settings (GUCs) safely.

imgfeat has no C code, so its settings are *placeholder* variables: PostgreSQL lets any
user ``SET`` them in a session. Settings that widen what the server process may do
(``imgfeat.python_lib_dir``, ``imgfeat.image_root``) are therefore honoured only when
``pg_settings.source`` says they come from the server configuration (postgresql.conf,
``ALTER SYSTEM``, or the postmaster command line); anything else raises
:class:`~imgfeat.errors.ConfigurationError`.

Tunables a session may change (threads, cache size) are read with ``current_setting``.
``imgfeat.max_image_pixels`` may be lowered by a session, never raised above the
configured (or built-in) value.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigurationError

TRUSTED_SOURCES = frozenset({"configuration file", "command line", "default"})
"""``pg_settings.source`` values that only a superuser or the server owner can produce."""

_SETTINGS_SQL = (
    "SELECT name, setting, source FROM pg_catalog.pg_settings "
    "WHERE name OPERATOR(pg_catalog.~~) 'imgfeat.%'"
)


def read_settings(plpy: Any) -> dict[str, tuple[str, str]]:
    """All ``imgfeat.*`` settings visible in this session: name -> (value, source)."""
    return {r["name"]: (r["setting"], r["source"]) for r in plpy.execute(_SETTINGS_SQL)}


def trusted_setting(settings: dict[str, tuple[str, str]], name: str) -> str | None:
    """The value of a server-configuration-only setting, or ``None`` when unset.

    Raises:
        ConfigurationError: the setting was set by a session, role, database or client.
    """
    if name not in settings:
        return None
    value, source = settings[name]
    if source not in TRUSTED_SOURCES:
        raise ConfigurationError(
            f"{name} is set by source '{source}'; imgfeat honours it only from the server configuration",
            detail="Any user can SET a placeholder setting, so a session's value could point the server at arbitrary files.",
            hint=f"A superuser sets it with: ALTER SYSTEM SET {name} = '...'; SELECT pg_reload_conf();",
        )
    return value or None


def int_setting(settings: dict[str, tuple[str, str]], name: str, default: int, *, minimum: int = 0) -> int:
    """An integer tunable; ``default`` when unset or empty. Raises ConfigurationError if not an integer >= minimum."""
    raw = settings.get(name, ("", ""))[0]
    if raw in ("", None):
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {value}")
    return value


def capped_int_setting(
    settings: dict[str, tuple[str, str]], name: str, default: int, *, minimum: int = 1
) -> int:
    """An integer limit a session may lower but never raise.

    The ceiling is the configured value when the current one comes from the server
    configuration, else ``default``; a session's value above the ceiling is ignored in
    favour of the ceiling.
    """
    if name not in settings:
        return default
    value = int_setting(settings, name, default, minimum=minimum)
    if settings[name][1] in TRUSTED_SOURCES:
        return value
    return min(value, default)
