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


def training_parties(
    parties: Mapping[str, Party | pd.DataFrame],
    card_center: str | None,
    id_columns: str | Sequence[str],
    label: str | None,
) -> tuple[dict[str, Party], str]:
    """Every party as a Party with its id columns and label settled, and the card center's name (fit's arguments)."""
    if not isinstance(parties, Mapping) or not parties:
        raise ConfigError("fit: parties must be a mapping from party name to DataFrame, with at least two parties")
    default_ids = column_list(id_columns, "fit")
    named = {name: as_party(value, name) for name, value in parties.items()}
    labelled = [name for name, party in named.items() if party.label is not None]
    if card_center is None:
        if len(labelled) != 1:
            raise ConfigError(
                "fit: say which party is the card center: fit(parties, card_center=NAME, label=COLUMN), "
                "or give it as Party(frame, label=COLUMN)"
                + (f" (now {len(labelled)} parties carry a label: {', '.join(labelled)})" if labelled else "")
            )
        card_center = labelled[0]
    if card_center not in named:
        raise ConfigError(f"fit: card_center {card_center!r} is not one of the parties ({', '.join(map(str, named))})")
    others = [name for name in labelled if name != card_center]
    if others:
        raise ConfigError(f"fit: only the card center carries a label; party {others[0]!r} names one too")
    settled = {}
    for name, party in named.items():
        ids = default_ids if party.id_columns is None else column_list(party.id_columns, f"party {name!r}")
        own_label = (party.label or label) if name == card_center else None
        if name == card_center and own_label is None:
            raise ConfigError(f"fit: the card center {card_center!r} needs its label column: fit(..., label=COLUMN)")
        settled[name] = Party(party.frame, ids, own_label)
    return settled, card_center


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
