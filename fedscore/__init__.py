"""fedscore: federated credit scoring for card approval.

A card center and its data partners train one vertical logistic regression
without pooling data: each party keeps its rows, columns and weights, and
only Paillier-encrypted or masked values cross its boundary.
"""

__version__ = "0.1.0"
