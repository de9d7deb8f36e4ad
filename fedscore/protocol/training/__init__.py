"""Training a vertical logistic regression: each role's session, and the driver that orders their messages."""
