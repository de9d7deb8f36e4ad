"""Watching a served model at its card center: what it scored, against what it was trained on.

The card center's scoring log (scoring_log) holds one line per answered
request; the monitoring baseline (baseline), written beside the model when
training ends, holds the training population's distributions as aggregates.
The readers compare the two per day or per N requests: score and feature
stability (stability), partner health (partners), the decision mix
(decisions), and raise alerts past configurable thresholds (alerts). Nothing
here sends anything anywhere: the log and the baseline stay at the card center.
"""
