"""How many rows a step must cover for the columns a party has: a gradient over few rows per column gives
away the labels.

A party's gradient is one number per column, Σ_i x_ij·d_i over the batch. With as many columns as rows a
partner solves for every row's residual d_i = u_i/4 + 1/2 − y_i; with fewer, a first gradient from zero
weights is a subset sum that lattice reduction solves for all labels of a batch up to about 5 rows per
column. The card center's secret start (fedscore.protocol.training.start) hides the labels behind about one
logit per row; that holds only while a party has several rows per column. So every party refuses a job
whose smallest step covers fewer than max(min_batch_rows, min_rows_per_column × its columns) rows
(indicator columns included with binning; min_batch_rows is a party daemon's own policy, min_rows_per_column
the job's, 4 unless the card center lowers it), and the coordinator, which learns each partner's column
count when training starts, refuses when any partner's columns make the batch too small.

A card center with no columns of its own (it brings labels only: an audience model, fedscore.protocol.audience)
has no start to hide behind: its part of every score is the intercept alone, the same for every row, so a
partner, which knows its own part, reads each step's gradient as a sum of its columns weighted by the labels
plus one unknown. Steps over changing subsets of rows then add up to as many equations as there are labels
(least squares reads nearly all of them in a few epochs). Such a card center refuses any step smaller than its
whole training set (``check_labels_only``): the partner learns one sum per column over the whole job.
"""
from __future__ import annotations

from fedscore.errors import ConfigError
from fedscore.model.rows import batches


def smallest_batch(train_rows: int, batch_size: int, seed: int) -> int:
    """Rows in a job's smallest step (the same in every epoch)."""
    return min(len(rows) for rows in batches(train_rows, batch_size, seed, 0))


def rows_needed(columns: int, rows_per_column: int, min_batch_rows: int = 0) -> int:
    """The fewest rows a step may cover for a party with ``columns`` columns."""
    return max(min_batch_rows, rows_per_column * columns)


def check_batch(who: str, rows: int, columns: int, rows_per_column: int, min_batch_rows: int = 0) -> None:
    """Refuse a smallest step of ``rows`` rows for a party with ``columns`` columns; the error names the rule,
    its numbers and the settings."""
    needed = rows_needed(columns, rows_per_column, min_batch_rows)
    if rows >= needed:
        return
    per_column = f"the job's min_rows_per_column {rows_per_column} × {columns} columns = {rows_per_column * columns}"
    rule = f"max(its min_batch_rows {min_batch_rows}, {per_column}) = {needed}" if min_batch_rows else per_column
    raise ConfigError(
        f"{who}: refuses batches of {rows} rows for {columns} columns: the rule is rows per batch ≥ {rule} "
        f"(a gradient over few rows per column gives away the labels); raise the job's batch_size "
        f"(0: every training row) or train on fewer columns (fewer features or bins)"
    )


def check_labels_only(who: str, rows: int, train_rows: int) -> None:
    """Refuse steps over fewer than every training row for a card center that brings labels only (see above)."""
    if rows < train_rows:
        raise ConfigError(
            f"{who}: brings labels only (no columns of its own), so it refuses steps of {rows} of its {train_rows} "
            "training rows: steps over changing subsets of rows would let a partner solve its gradients for the "
            "labels; set the job's batch_size = 0 (every step over every training row)"
        )
