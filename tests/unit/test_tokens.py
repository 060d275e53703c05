"""Tokens: HS256 only, ``sub`` and ``exp`` required, every bad token refused with a reason."""

from __future__ import annotations

import base64
import time

import jwt
import orjson
import pytest

from likestream._tokens import InvalidToken, mint_token, verify_token

SECRET = "unit-test-secret-" + "0123456789abcdef" * 4  # long enough for HS512 too
LATER = int(time.time()) + 3600


def b64(doc: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()


def signed(claims: dict[str, object], key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def test_minted_token_verifies_to_its_user() -> None:
    token = mint_token(SECRET, "alice", 60)
    assert verify_token(SECRET, token) == "alice"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 60


@pytest.mark.parametrize(("user", "ttl"), [("bad user", 60), ("", 60), ("alice", 0)])
def test_mint_refuses_bad_input(user: str, ttl: int) -> None:
    with pytest.raises(ValueError, match=r"user id|ttl"):
        mint_token(SECRET, user, ttl)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "malformed"),
        ("not-a-token", "malformed"),
        ("a.b.c", "malformed"),
        (signed({"sub": "alice", "exp": LATER}, key=SECRET + "x"), "signature"),
        (signed({"sub": "alice", "exp": int(time.time()) - 10}), "expired"),
        (signed({"sub": "alice", "exp": LATER}, key="", alg="none"), "not signed with HS256"),
        (f"{b64({'alg': 'none'})}.{b64({'sub': 'alice', 'exp': LATER})}.", "HS256"),
        (signed({"sub": "alice", "exp": LATER}, alg="HS512"), "not signed with HS256"),
        (signed({"sub": "alice", "exp": LATER}, alg="HS384"), "not signed with HS256"),
        (signed({"sub": "alice"}), "no 'exp' claim"),
        (signed({"exp": LATER}), "no 'sub' claim"),
        (signed({"sub": "not a valid id", "exp": LATER}), "subject"),
        (signed({"sub": 42, "exp": LATER}), "Subject must be a string"),
        (signed({"sub": "alice", "exp": "tomorrow"}), "exp"),
        (signed({"sub": "alice", "exp": LATER, "nbf": LATER - 60}), "not yet valid"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(token: str, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        verify_token(SECRET, token)


def test_a_real_token_relabelled_alg_none_is_refused() -> None:
    # The classic forgery: keep a genuine payload, claim alg "none", drop or keep the MAC.
    header, payload, mac = mint_token(SECRET, "alice", 60).split(".")
    none = b64({"alg": "none", "typ": "JWT"})
    for forged in (f"{none}.{payload}.", f"{none}.{payload}.{mac}"):
        with pytest.raises(InvalidToken, match="HS256"):
            verify_token(SECRET, forged)
    assert verify_token(SECRET, f"{header}.{payload}.{mac}") == "alice"
