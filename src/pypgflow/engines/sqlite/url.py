"""SQLite database URLs: ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
``sqlite://:memory:``, with options (today ``?synchronous=full|normal``), checked here so that a
mistake is named before any file is opened or created."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

from pypgflow.errors import ConfigurationError

MEMORY = ":memory:"
SYNCHRONOUS = ("full", "normal")
URL_OPTIONS = ("synchronous",)
URL_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite://:memory: "
    "(optionally with ?synchronous=normal)"
)


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """The database path and the options of a ``sqlite://`` URL."""

    def malformed(problem: str) -> ConfigurationError:
        return ConfigurationError(f"{problem}; write {URL_FORMS}")

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise malformed(f"not a SQLite URL: {url!r}")
    rest, _, query = rest.partition("?")
    if rest in (MEMORY, "/" + MEMORY):
        path = MEMORY
    elif rest.startswith("/"):
        path = unquote(rest[1:])
    elif rest:
        host = rest.split("/")[0]
        raise malformed(f"a SQLite URL has no host, but {url!r} names {host!r} as one")
    else:
        path = ""
    if not path:
        raise malformed(f"the SQLite URL {url!r} names no database file")
    if path.endswith("/"):
        raise malformed(f"the SQLite URL {url!r} names a directory, not a database file")
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise malformed(f"malformed options in the SQLite URL {url!r}") from None
    for key, value in pairs:
        if key not in URL_OPTIONS:
            raise malformed(
                f"unknown option {key!r} in the SQLite URL {url!r} "
                f"(known: {', '.join(URL_OPTIONS)})"
            )
        options[key] = value
    if "synchronous" in options:
        try:
            options["synchronous"] = check_synchronous(options["synchronous"])
        except ConfigurationError as exc:
            raise malformed(f"{exc.message} in the SQLite URL {url!r}") from None
    return path, options


def sqlite_path_from_url(url: str) -> str:
    """The database path a ``sqlite://`` URL names (``:memory:`` for an in-memory database).

    ``sqlite:///relative/path.db`` is relative to the working directory,
    ``sqlite:////absolute/path.db`` absolute. Raises ConfigurationError for anything else.
    """
    return parse_url(url)[0]


def check_synchronous(value: str) -> str:
    """The ``synchronous`` setting, lower-cased; ConfigurationError unless full or normal."""
    if value.lower() not in SYNCHRONOUS:
        raise ConfigurationError(
            f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got {value!r}"
        )
    return value.lower()


__all__ = ["MEMORY", "check_synchronous", "parse_url", "sqlite_path_from_url"]
