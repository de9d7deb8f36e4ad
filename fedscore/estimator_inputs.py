"""What the estimator accepts: its parties (DataFrames or ``Party``), id columns and ``binning`` setting.

Kept apart from fedscore.estimator so that turning a notebook's arguments into
the job's settings, with errors naming what was wrong, is one small module.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import pandas as pd

from fedscore.errors import ConfigError
from fedscore.job import Binning


@dataclass(frozen=True)
class Party:
    """One party's rows: a DataFrame, its id column(s) and, for the card center only, its label column.

    ``id_columns`` None means the default: fit's ``id_columns``, and when
    scoring, the columns this party used in fit. An id column may also be an
    index level.
    """

    frame: pd.DataFrame
    id_columns: str | Sequence[str] | None = None
    label: str | None = None


def column_list(columns: str | Sequence[str], what: str) -> list[str]:
    listed = [columns] if isinstance(columns, str) else list(columns)
    if not listed or not all(isinstance(c, str) and c for c in listed):
        raise ConfigError(f"{what}: id_columns must name a column, or a list of columns, got {columns!r}")
    return listed


def as_party(value: Party | pd.DataFrame, name: str) -> Party:
    if isinstance(value, Party):
        return value
    if isinstance(value, pd.DataFrame):
        return Party(value)
    raise ConfigError(f"party {name!r}: expected a pandas DataFrame or a fedscore.Party, got {type(value).__name__}")


def as_binning(value: Binning | Mapping | str) -> Binning:
    """The ``binning`` parameter as the job's Binning: a Binning, a dict of its fields (``special_values``
    as {column: [codes]}), or a method name ("none": raw standardised columns; "quantile")."""
    if isinstance(value, Binning):
        return value
    if isinstance(value, str):
        return Binning(method=value)
    if isinstance(value, Mapping):
        known = {f.name for f in fields(Binning)}
        unknown = sorted(map(str, set(value) - known))
        if unknown:
            raise ConfigError(f"binning: unknown setting {unknown[0]!r} (settings: {', '.join(sorted(known))})")
        settings = dict(value)
        specials = settings.pop("special_values", ())
        pairs = specials.items() if isinstance(specials, Mapping) else specials
        try:
            settings["special_values"] = tuple(
                (str(column), tuple(float(v) for v in codes)) for column, codes in sorted(pairs, key=lambda p: str(p[0]))
            )
        except (TypeError, ValueError):
            raise ConfigError("binning: special_values must map each column to a list of numbers") from None
        return Binning(**settings)
    raise ConfigError(f"binning must be a fedscore.job.Binning, a dict of its settings or a method name, got {type(value).__name__}")
