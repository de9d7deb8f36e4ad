"""Model maths: data loading, row splits, scaling, the Taylor-approximated loss, metrics."""
