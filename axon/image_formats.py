"""The image formats Axon reads, by decoder name and by file suffix.

Kept apart from ``axon.preprocessing`` so that code which only picks files by name (the
``axon classify`` client) can use it without importing numpy or Pillow.
"""

SERVED_FORMATS = ("PNG", "JPEG")
"""What the classification API decodes: the formats callers send, and no more of Pillow's
decoders than that (some, like EPS, would run other programs)."""

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
"""File suffixes (lower case) of the ``SERVED_FORMATS``: how a folder's image files are found."""
