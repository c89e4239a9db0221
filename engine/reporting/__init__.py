"""Reporting: regression rules and verdicts, the nightly HTML report, overlays and plots."""
