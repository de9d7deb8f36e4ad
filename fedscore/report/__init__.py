"""The job report: built once for every way a job runs (build), drawn as one HTML page (html, plots)."""
