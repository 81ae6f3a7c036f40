"""The research harness: compare, sweep, prune, report and the TT rank sweep, each over runs or models."""
