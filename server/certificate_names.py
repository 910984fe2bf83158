"""The names a PEM certificate was issued for (its subjectAltName), read with the standard
library alone.

``axon health`` checks the server's certificate over loopback, so it must ask for a name the
certificate carries; the serving image has no X.509 package (``cryptography`` is a test-only
dependency), and the few DER elements on the way to that extension are quick to walk.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterator

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----")
_SUBJECT_ALT_NAME = bytes.fromhex("0603551d11")
"""OBJECT IDENTIFIER 2.5.29.17, as DER encodes it."""
_EXTENSIONS = 0xA3  # [3] EXPLICIT, in TBSCertificate
_DNS_NAME = 0x82  # GeneralName [2] IA5String
_IP_ADDRESS = 0x87  # GeneralName [7] OCTET STRING


def certificate_names(pem: bytes) -> tuple[str, ...]:
    """DNS names and IP addresses in the subjectAltName of the first certificate in ``pem`` (a
    chain file starts with the server's own), in the certificate's order. Empty when there is
    no such extension, or no certificate that can be read: callers then have no name to ask
    for, which the TLS handshake reports."""
    found = _PEM_CERTIFICATE.search(pem)
    if found is None:
        return ()
    try:
        return _alternative_names(base64.b64decode(b"".join(found[1].split()), validate=True))
    except (binascii.Error, ValueError, IndexError, StopIteration):
        return ()


def _alternative_names(der: bytes) -> tuple[str, ...]:
    _, start, end = next(_elements(der, 0, len(der)))  # Certificate
    _, start, end = next(_elements(der, start, end))  # TBSCertificate
    for tag, field_start, field_end in _elements(der, start, end):
        if tag != _EXTENSIONS:
            continue
        _, start, end = next(_elements(der, field_start, field_end))  # SEQUENCE OF Extension
        for _, ext_start, ext_end in _elements(der, start, end):
            if der[ext_start:ext_start + len(_SUBJECT_ALT_NAME)] == _SUBJECT_ALT_NAME:
                *_, (_, value_start, value_end) = _elements(der, ext_start, ext_end)
                _, start, end = next(_elements(der, value_start, value_end))  # GeneralNames
                return tuple(_name(tag, der[s:e]) for tag, s, e in _elements(der, start, end)
                             if tag in (_DNS_NAME, _IP_ADDRESS))
    return ()


def _name(tag: int, value: bytes) -> str:
    return value.decode("ascii") if tag == _DNS_NAME else str(ipaddress.ip_address(value))


def _elements(der: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(tag, content start, content end) of each DER element in ``der[start:end]``."""
    while start < end:
        tag, length = der[start], der[start + 1]
        start += 2
        if length & 0x80:
            size = length & 0x7F
            length = int.from_bytes(der[start:start + size], "big")
            start += size
        if start + length > end:
            raise ValueError("a DER element runs past its container")
        yield tag, start, start + length
        start += length
