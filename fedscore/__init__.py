"""fedscore: federated credit scoring for card approval.

A card center and its data partners train one vertical logistic regression
without pooling data: each party keeps its rows, columns and weights, and
only Paillier-encrypted or masked values cross its boundary.

``fedscore.FederatedLogisticRegression`` runs the same protocol with every
party in one process, for notebooks (fedscore.estimator); ``fedscore.cross_validate``
and ``fedscore.FederatedKFold`` select models with it (fedscore.model_selection).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FederatedKFold", "FederatedLogisticRegression", "Party", "cross_validate", "__version__"]

if TYPE_CHECKING:
    from fedscore.estimator import FederatedLogisticRegression
    from fedscore.estimator_inputs import Party
    from fedscore.model_selection import FederatedKFold, cross_validate


def __getattr__(name: str) -> Any:
    # Imported on first use: scikit-learn's import costs seconds, and the CLI and daemons never need it.
    if name == "FederatedLogisticRegression":
        from fedscore.estimator import FederatedLogisticRegression

        return FederatedLogisticRegression
    if name == "Party":
        from fedscore.estimator_inputs import Party

        return Party
    if name in ("FederatedKFold", "cross_validate"):
        from fedscore import model_selection

        return getattr(model_selection, name)
    raise AttributeError(f"module 'fedscore' has no attribute {name!r}")
