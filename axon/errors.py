"""The root of Axon's own exceptions.

Every error that describes the user's input or environment (a corrupt file, a missing folder, a
model that fails its export checks) derives from ``AxonError``, so the CLI can print it as one
line and let anything else -- a bug -- show its traceback.
"""


class AxonError(Exception):
    """An error about input or environment, with a message that says what to fix."""


class UsageError(AxonError):
    """A command-line problem the user can fix (a bad option, a missing extra); printed as one
    line without a traceback."""
