"""Named SQL queries, loaded once from the ``.sql`` files of the package.

Each store in :mod:`taskmill.common.store` has its queries in the ``.sql`` file beside it, and
the migration runner in ``migrate.sql``. A file holds blocks that each start with a
``-- name: <query_name>`` line; the block's text up to the next name line is the query.
Parameters use pg8000's ``:name`` style. A block whose name starts with ``_`` is a fragment,
not a query: a line ``-- include: _fragment`` in another block stands for its text, so two
queries that share a part (the claims' lanes) say it once.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_INCLUDE_LINE = re.compile(r"^--\s*include:\s*(_\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Splits the text of a ``.sql`` file into its named queries.

    Raises:
        ValueError: A name appears twice.
    """
    queries: dict[str, str] = {}
    matches = list(_NAME_LINE.finditer(text))
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(text)
        name = match.group(1)
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = text[match.end() : end].strip()
    return _included(queries)


def _included(blocks: dict[str, str]) -> dict[str, str]:
    """The queries of a file with their include lines replaced by the fragments' text.

    Raises:
        KeyError: An include names no fragment of the file.
    """
    fragments = {name: sql for name, sql in blocks.items() if name.startswith("_")}
    return {
        name: _INCLUDE_LINE.sub(lambda line: fragments[line.group(1)], sql)
        for name, sql in blocks.items()
        if not name.startswith("_")
    }


def query_files() -> list[Traversable]:
    """The files named queries come from: every store's ``.sql`` file, and ``migrate.sql``."""
    package = resources.files("taskmill.common")
    stores = sorted(
        (entry for entry in (package / "store").iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [*stores, package / "migrate.sql"]


@cache
def all_queries() -> dict[str, str]:
    """Every named query of the package, by name."""
    queries: dict[str, str] = {}
    for file in query_files():
        for name, sql in parse_queries(file.read_text("utf-8")).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice")
            queries[name] = sql
    return queries


def query(name: str) -> str:
    """Returns the SQL text of a named query.

    Raises:
        KeyError: No query has this name.
    """
    return all_queries()[name]
