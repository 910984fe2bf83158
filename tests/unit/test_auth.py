"""Token parsing and the role check, without a server (the server's tests: test_security)."""

from __future__ import annotations

import pytest

from axon.server.auth import ADMIN_METHODS, Role, TokenAuthenticator, TokenConfigError, parse_tokens

INFER = "infer-0123456789abcdef"
ADMIN = "admin-0123456789abcdef"


def test_lines_commas_and_comments() -> None:
    tokens = parse_tokens(["# comment", f"infer:{INFER}, admin:{ADMIN}  # trailing", ""], "f")
    assert [(t.secret.decode(), t.role) for t in tokens] == [(INFER, Role.INFER),
                                                              (ADMIN, Role.ADMIN)]
    assert INFER not in repr(tokens)


@pytest.mark.parametrize(("line", "message"), [
    ("infer", "line 1: expected ROLE:TOKEN"),
    ("infer:", "expected ROLE:TOKEN"),
    ("root:0123456789abcdefgh", "unknown role 'root'"),
    ("infer:short", "at least 16"),
    ("infer:has\ttab-0123456789", "printable ASCII"),
    (f"infer:{INFER},admin:{INFER}", "listed twice"),
])
def test_malformed_entries_name_the_line_not_the_token(line: str, message: str) -> None:
    with pytest.raises(TokenConfigError, match=message) as error:
        parse_tokens([line], "tokens.txt")
    assert INFER not in str(error.value) and "0123456789abcdefgh" not in str(error.value)


def test_the_role_comes_from_an_exact_bearer_token() -> None:
    authenticator = TokenAuthenticator(parse_tokens([f"infer:{INFER},admin:{ADMIN}"], "s"))
    assert authenticator.role_of([("authorization", f"Bearer {INFER}")]) is Role.INFER
    assert authenticator.role_of([("authorization", f"Bearer {ADMIN}")]) is Role.ADMIN
    for metadata in ([], [("authorization", INFER)], [("authorization", f"Basic {INFER}")],
                     [("authorization", f"Bearer {INFER}x")],
                     [("authorization", f"Bearer {INFER[:-1]}")], [("x-token", INFER)]):
        assert authenticator.role_of(metadata) is None
    with pytest.raises(TokenConfigError):
        TokenAuthenticator([])


def test_only_admin_may_change_what_is_served() -> None:
    for method in ADMIN_METHODS:
        assert Role.ADMIN.allows(method) and not Role.INFER.allows(method)
    assert Role.INFER.allows("/inference.GRPCInferenceService/ModelInfer")
    assert Role.INFER.allows("/axon.v1.Classifier/ClassifyStream")
