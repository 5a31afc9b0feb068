"""Backups: take one (dump), prove it restores (drill), restore it in place (restore). The project's
most destructive code, kept apart from the read-only verdicts of ``checks``."""
