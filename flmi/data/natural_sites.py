"""With ``partition.method = "natural"`` the data, not the config, says how many sites there are.

A collection split into its own hospitals (Fed-Heart-Disease: 4, Fed-TCGA-BRCA:
6) or a table whose site column names each row's site (``source = "csv"``,
or a manifest with ``site_column``) fixes the site count. :func:`fill_site_count`
writes it into the raw config tables before they are checked, so
``partition.num_sites`` may be left out; a count that is set and disagrees is
a :class:`ConfigError` naming both numbers. Generated hospitals have no count
of their own: there ``num_sites`` says how many to generate.

Only the site column of a CSV is read here (no image, no torch).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from flmi.core.errors import ConfigError

#: Collections that come split into a fixed number of their own sites.
FIXED_SITES = {
    "heart_disease": ("Fed-Heart-Disease", 4, "hospitals"),
    "tcga_brca": ("Fed-TCGA-BRCA", 6, "regions"),
}

#: Sources whose ``site_column`` names each row's site.
SITE_COLUMN_SOURCES = ("csv", "manifest")


def column_sites(path: Path, column: str) -> list[str] | None:
    """The distinct non-empty values of ``column`` in the CSV at ``path``, sorted.

    ``None`` when the file or the column is absent: the source's own loading
    then reports that, with its own message.
    """
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or column not in reader.fieldnames:
            return None
        return sorted({(row.get(column) or "").strip() for row in reader} - {""})


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    table = raw.get(name, {})
    return table if isinstance(table, dict) else {}


def natural_site_count(raw: dict[str, Any], *, base: Path | None) -> tuple[int, str] | None:
    """The site count the data fixes, with where it comes from, or ``None`` if it fixes none.

    Parameters
    ----------
    raw
        The config's raw TOML tables.
    base
        The folder a relative ``data.path`` is read from (the config file's);
        ``None``: no file is read, and only a collection's fixed count is found.
    """
    data, partition = _table(raw, "data"), _table(raw, "partition")
    if partition.get("method", "natural") != "natural":
        return None
    source = data.get("source", "synthetic")
    if source in FIXED_SITES:
        title, count, unit = FIXED_SITES[source]
        return count, f"{title} has its own {count} {unit}"
    column, path = data.get("site_column"), data.get("path")
    if source not in SITE_COLUMN_SOURCES or not isinstance(column, str) or not column:
        return None
    if base is None or not isinstance(path, str) or not path:
        return None
    file = base / Path(path).expanduser()  # an absolute path stays as it is
    names = column_sites(file, column)
    if not names:
        return None
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return len(names), f"column '{column}' of {file.name} names {len(names)} sites ({shown})"


def fill_site_count(raw: dict[str, Any], *, base: Path | None) -> dict[str, Any]:
    """``raw`` with ``partition.num_sites`` set from the data where the data fixes it.

    Raises
    ------
    ConfigError
        ``partition.num_sites`` is set and differs from the data's count.
    """
    found = natural_site_count(raw, base=base)
    if found is None:
        return raw
    count, where = found
    partition = dict(_table(raw, "partition"))
    given = partition.get("num_sites")
    if given is not None and not (isinstance(given, int) and not isinstance(given, bool)):
        return raw  # not a count at all: the schema names the key and the type
    if given is not None and given != count:
        raise ConfigError(
            f"partition.num_sites = {given}, but {where}: with partition.method = 'natural' "
            f"the sites come from the data; remove partition.num_sites or set it to {count}"
        )
    partition["num_sites"] = count
    return {**raw, "partition": partition}
