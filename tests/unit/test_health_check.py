"""``axon health``'s pure parts: the names read from a certificate, and how the check connects
for given settings. The command against real servers: tests/integration/test_health_check.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from axon.errors import UsageError
from axon.server.certificate_names import certificate_names
from axon.server.config import load_settings
from axon.server.health_check import ProbePlan, check_settings, loopback_address, plan_probe
from tests.support.certificates import CertificateAuthority


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority("names CA")


def test_names_come_from_the_subject_alternative_names_in_order(
        authority: CertificateAuthority) -> None:
    hosts = ("axon.axon.svc", "*.axon.example", "10.1.2.3", "::1", "localhost")
    assert certificate_names(authority.issue_server(hosts).certificate) == hosts


def test_a_chain_is_read_from_its_first_certificate(authority: CertificateAuthority) -> None:
    leaf = authority.issue_server(("axon.internal",))
    assert certificate_names(leaf.certificate + authority.certificate) == ("axon.internal",)
    # The CA has no alternative names; a client certificate neither.
    assert certificate_names(authority.certificate) == ()
    assert certificate_names(authority.issue_client("probe").certificate) == ()


@pytest.mark.parametrize("text", [
    b"", b"not a certificate",
    b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    b"-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n",
])
def test_what_is_no_certificate_has_no_names(text: bytes) -> None:
    assert certificate_names(text) == ()


def test_a_cut_certificate_has_no_names(authority: CertificateAuthority) -> None:
    pem = authority.issue_server(("axon.internal",)).certificate
    lines = pem.splitlines()
    cut = b"\n".join([*lines[:3], lines[-1]])  # header, two lines of base64, footer
    assert certificate_names(cut) == ()


@pytest.mark.parametrize(("address", "probed"), [
    ("0.0.0.0:8001", "127.0.0.1:8001"), ("[::]:8001", "[::1]:8001"),
    ("127.0.0.1:9000", "127.0.0.1:9000"), ("10.0.0.5:8001", "10.0.0.5:8001"),
    ("localhost:8001", "localhost:8001"),
])
def test_a_server_on_every_address_is_probed_on_loopback(address: str, probed: str) -> None:
    assert loopback_address(address) == probed


def test_a_port_picked_at_start_cannot_be_probed() -> None:
    with pytest.raises(UsageError, match="picks a free port"):
        loopback_address("0.0.0.0:0")


@pytest.fixture
def tls_files(tmp_path: Path, authority: CertificateAuthority) -> dict[str, Path]:
    server = authority.issue_server(("axon.axon.svc", "axon"))
    files = {"tls.crt": server.certificate, "tls.key": server.key,
             "ca.crt": authority.certificate}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return {name: tmp_path / name for name in files}


def test_plain_text_when_the_server_has_no_certificate() -> None:
    plan = plan_probe(check_settings(), load_settings(address="0.0.0.0:8001"))
    assert plan == ProbePlan("127.0.0.1:8001")
    with pytest.raises(UsageError, match="no tls_cert"):
        plan_probe(check_settings(tls_ca=Path("ca.crt")), load_settings())


def test_tls_trusts_the_servers_own_chain_by_the_name_in_it(
        tls_files: dict[str, Path]) -> None:
    server = load_settings(tls_cert=tls_files["tls.crt"], tls_key=tls_files["tls.key"])
    assert plan_probe(check_settings(), server) == ProbePlan(
        "127.0.0.1:8001", tls=True, ca=tls_files["tls.crt"], server_name="axon.axon.svc")
    given = check_settings(tls_ca=tls_files["ca.crt"], tls_server_name="axon")
    assert plan_probe(given, server) == ProbePlan(
        "127.0.0.1:8001", tls=True, ca=tls_files["ca.crt"], server_name="axon")


def test_no_name_is_asked_for_when_the_certificate_names_the_probed_host(
        tmp_path: Path, authority: CertificateAuthority) -> None:
    pem = authority.issue_server(("axon.internal", "127.0.0.1"))
    (tmp_path / "tls.crt").write_bytes(pem.certificate)
    server = load_settings(tls_cert=tmp_path / "tls.crt", tls_key=tmp_path / "tls.key")
    assert plan_probe(check_settings(), server).server_name is None


def test_mutual_tls_presents_the_given_certificate_or_the_servers_own(
        tls_files: dict[str, Path]) -> None:
    server = load_settings(tls_cert=tls_files["tls.crt"], tls_key=tls_files["tls.key"],
                            tls_client_ca=tls_files["ca.crt"])
    own = plan_probe(check_settings(), server)
    assert (own.cert, own.key, own.own_certificate) == (
        tls_files["tls.crt"], tls_files["tls.key"], True)
    probe = check_settings(tls_cert=Path("probe.crt"), tls_key=Path("probe.key"))
    given = plan_probe(probe, server)
    assert (given.cert, given.key, given.own_certificate) == (
        Path("probe.crt"), Path("probe.key"), False)


def test_an_address_leaves_the_servers_settings_out(tls_files: dict[str, Path]) -> None:
    check = check_settings(address="axon.example:443", tls=True)
    assert plan_probe(check, None) == ProbePlan("axon.example:443", tls=True)


def test_variables_feed_the_check_and_flags_beat_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AXON_HEALTH_TLS_CA", "/etc/axon/tls/ca.crt")
    monkeypatch.setenv("AXON_HEALTH_TIMEOUT", "1.5")
    assert check_settings().tls_ca == Path("/etc/axon/tls/ca.crt")
    assert check_settings(timeout=0.5).timeout == 0.5
    assert check_settings().timeout == 1.5
