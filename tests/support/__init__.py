"""Test helpers: real servers in subprocesses and model repositories built from real training."""
