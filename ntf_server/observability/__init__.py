"""Observability: log events and their catalogue, counted summaries, log set-up and redaction, the
figures (stats) and their Prometheus names. Pure leaves: every part of the server may import them; they
import nothing of the server but each other."""
