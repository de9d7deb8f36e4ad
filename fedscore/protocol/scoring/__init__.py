"""Scoring new applicants with a trained model: scorecard points, decisions, limits, reasons."""
