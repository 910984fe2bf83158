"""Test helpers: model repositories built from real training runs."""
