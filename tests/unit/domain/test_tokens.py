"""Tokens: every bad token refused with a reason; keys by kid; algorithms never cross key
types; the identity provider's keys read again only when they may help."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from likestream.domain._tokens import (
    InvalidToken,
    TokenPolicy,
    Tokens,
    UnknownKey,
    key_id,
    mint_token,
)
from likestream.runtime._jwks import JwksError, JwksKeys, parse_jwks

SECRET = "unit-test-secret-" + "0123456789abcdef" * 4  # long enough for HS512 too
OLD = "unit-test-old-secret-" + "fedcba9876543210" * 2
NOW = int(time.time())
LATER = NOW + 3600
POLICY = TokenPolicy(issuer="https://idp.example", audience="likestream", max_lifetime=3600)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(doc: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()


def signed(
    claims: dict[str, object], key: Any = SECRET, alg: str = "HS256", kid: str | None = "auto"
) -> str:
    headers = {"kid": key_id(SECRET) if kid == "auto" else kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def claims(**extra: object) -> dict[str, object]:
    """Good claims for POLICY; ``name=None`` leaves one out."""
    doc: dict[str, object] = {
        "sub": "alice",
        "iat": NOW,
        "exp": NOW + 1800,
        "iss": POLICY.issuer,
        "aud": POLICY.audience,
    }
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not None}


def jwk(key: Any, kid: str, **extra: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPublicKey) else None
    doc = orjson.loads(
        (algorithm or jwt.algorithms.ECAlgorithm).to_jwk(key)  # type: ignore[attr-defined]
    )
    return {**doc, "kid": kid, "use": "sig", **extra}


class StaticKeys:
    """A key set as last read, with reads counted; ``then`` is what a read finds."""

    def __init__(self, keys: dict[str, jwt.PyJWK], then: dict[str, jwt.PyJWK] | None = None):
        self.keys = keys
        self.then = then
        self.reads = 0

    def get(self, kid: str) -> jwt.PyJWK | None:
        return self.keys.get(kid)

    async def refresh(self) -> bool:
        self.reads += 1
        if self.then is None:
            return False
        self.keys = self.then
        return True

    async def keep_fresh(self) -> None:
        await asyncio.Event().wait()


def public_set(*entries: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    return parse_jwks({"keys": list(entries)})


RSA_JWK = jwk(RSA_KEY.public_key(), "rsa-1")
EC_JWK = jwk(EC_KEY.public_key(), "ec-1")


# -- HS256 ------------------------------------------------------------------------------


def test_minted_token_verifies_to_its_user() -> None:
    token = mint_token(SECRET, "alice", 60, POLICY)
    assert Tokens(SECRET, policy=POLICY).verify(token) == "alice"
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": key_id(SECRET)}
    got = jwt.decode(token, SECRET, algorithms=["HS256"], audience="likestream")
    assert got["exp"] - got["iat"] == 60
    assert (got["iss"], got["aud"]) == (POLICY.issuer, POLICY.audience)


def test_the_kid_is_stable_and_says_nothing_of_the_secret() -> None:
    assert key_id(SECRET) == key_id(SECRET) != key_id(OLD)
    assert SECRET[:8] not in key_id(SECRET)


@pytest.mark.parametrize(("user", "ttl"), [("bad user", 60), ("", 60), ("alice", 0)])
def test_mint_refuses_bad_input(user: str, ttl: int) -> None:
    with pytest.raises(ValueError, match=r"user id|ttl"):
        mint_token(SECRET, user, ttl)


def test_mint_refuses_a_lifetime_the_policy_would_refuse() -> None:
    with pytest.raises(ValueError, match="LIKESTREAM_JWT_MAX_LIFETIME_S"):
        mint_token(SECRET, "alice", 3601, POLICY)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "malformed"),
        ("not-a-token", "malformed"),
        ("a.b.c", "malformed"),
        (signed(claims(), key=SECRET + "x"), "signature"),
        (signed(claims(iat=NOW - 700, exp=NOW - 100)), "expired"),
        (signed(claims(), key="", alg="none"), "not signed with HS256"),
        (f"{b64({'alg': 'none'})}.{b64(claims())}.", "HS256"),
        (signed(claims(), alg="HS512"), "not signed with HS256"),
        (signed(claims(), alg="HS384"), "not signed with HS256"),
        (signed(claims(exp=None)), "no 'exp' claim"),
        (signed(claims(iat=None)), "no 'iat' claim"),
        (signed(claims(sub=None)), "no 'sub' claim"),
        (signed(claims(iss=None)), "no 'iss' claim"),
        (signed(claims(aud=None)), "no 'aud' claim"),
        (signed(claims(iss="https://evil.example")), "issuer is not accepted"),
        (signed(claims(aud="another-service")), "audience is not accepted"),
        (signed(claims(aud=["another-service"])), "audience is not accepted"),
        (signed(claims(exp=NOW + 3601)), "longer than the 3600s"),
        (signed(claims(iat=NOW - 7200, exp=NOW + 1800)), "longer than the 3600s"),
        (signed(claims(iat=NOW + 600, exp=NOW + 900)), "not yet valid"),
        (signed(claims(sub="not a valid id")), "subject"),
        (signed(claims(sub=42)), "Subject must be a string"),
        (signed(claims(exp="tomorrow")), "exp"),
        (signed(claims(nbf=LATER - 60)), "not yet valid"),
        (signed(claims(), kid="no-such-kid"), "kid names no secret"),
        (f"{b64({'alg': 'HS256', 'kid': 7})}.{b64(claims())}.c2ln", "Key ID"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(token: str, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        Tokens(SECRET, policy=POLICY).verify(token)


def test_a_real_token_relabelled_alg_none_is_refused() -> None:
    # The classic forgery: keep a genuine payload, claim alg "none", drop or keep the MAC.
    header, payload, mac = mint_token(SECRET, "alice", 60, POLICY).split(".")
    none = b64({"alg": "none", "typ": "JWT", "kid": key_id(SECRET)})
    tokens = Tokens(SECRET, policy=POLICY)
    for forged in (f"{none}.{payload}.", f"{none}.{payload}.{mac}"):
        with pytest.raises(InvalidToken, match="HS256"):
            tokens.verify(forged)
    assert tokens.verify(f"{header}.{payload}.{mac}") == "alice"


def test_without_a_policy_issuer_and_audience_a_token_must_carry_no_audience() -> None:
    tokens = Tokens(SECRET)
    assert tokens.verify(signed(claims(iss=None, aud=None))) == "alice"
    assert tokens.verify(signed(claims(aud=None))) == "alice"  # an iss is not checked
    with pytest.raises(InvalidToken, match="audience"):
        tokens.verify(signed(claims(iss=None)))


def test_rotation_previous_secrets_verify_until_removed() -> None:
    old_token = mint_token(OLD, "alice", 60, POLICY)
    new_token = mint_token(SECRET, "bob", 60, POLICY)
    rotating = Tokens(SECRET, [OLD], POLICY)
    assert rotating.verify(old_token) == "alice"
    assert rotating.verify(new_token) == "bob"
    assert jwt.get_unverified_header(rotating.mint("carol", 60))["kid"] == key_id(SECRET)
    rotated = Tokens(SECRET, policy=POLICY)
    with pytest.raises(InvalidToken, match="rotated out"):
        rotated.verify(old_token)
    # A kid-less token (minted before kids) is tried against the signing secret only.
    kidless = signed(claims(), key=OLD, kid=None)
    with pytest.raises(InvalidToken, match="signature"):
        rotating.verify(kidless)
    assert rotating.verify(signed(claims(), kid=None)) == "alice"


def test_moving_to_the_identity_provider_old_tokens_verify_and_nothing_mints() -> None:
    # Prod with LIKESTREAM_JWKS_URL, no LIKESTREAM_SECRET, the old one still verifying.
    moving = Tokens(None, [OLD], POLICY, StaticKeys(public_set(RSA_JWK)))
    assert moving.verify(mint_token(OLD, "alice", 60, POLICY)) == "alice"
    assert not moving.can_mint
    with pytest.raises(InvalidToken, match="HS256 token has no kid"):
        moving.verify(signed(claims(), key=OLD, kid=None))


def test_without_a_secret_hs256_is_refused_and_nothing_mints() -> None:
    tokens = Tokens(policy=POLICY, jwks=StaticKeys(public_set(RSA_JWK)))
    with pytest.raises(InvalidToken, match="HS256 tokens are not accepted"):
        tokens.verify(mint_token(SECRET, "alice", 60, POLICY))
    assert not tokens.can_mint
    with pytest.raises(ValueError, match="identity provider"):
        tokens.mint("alice", 60)


# -- RS256 / ES256 from a key set ---------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "alg", "kid"), [(RSA_KEY, "RS256", "rsa-1"), (EC_KEY, "ES256", "ec-1")]
)
def test_public_key_tokens_verify_with_the_key_their_kid_names(
    key: Any, alg: str, kid: str
) -> None:
    tokens = Tokens(SECRET, policy=POLICY, jwks=StaticKeys(public_set(RSA_JWK, EC_JWK)))
    assert tokens.verify(signed(claims(sub="idp-user"), key=key, alg=alg, kid=kid)) == "idp-user"
    # The same policy: lifetime, issuer, audience.
    with pytest.raises(InvalidToken, match="longer than"):
        tokens.verify(signed(claims(exp=NOW + 3601), key=key, alg=alg, kid=kid))
    with pytest.raises(InvalidToken, match="issuer"):
        tokens.verify(signed(claims(iss="https://evil.example"), key=key, alg=alg, kid=kid))


def test_public_key_refusals() -> None:
    tokens = Tokens(SECRET, policy=POLICY, jwks=StaticKeys(public_set(RSA_JWK, EC_JWK)))
    cases = [
        (signed(claims(), key=OTHER_RSA, alg="RS256", kid="rsa-1"), "signature"),
        (signed(claims(), key=RSA_KEY, alg="RS256", kid=None), "RS256 token has no kid"),
        (signed(claims(), key=RSA_KEY, alg="RS256", kid="ec-1"), "names a ES256 key, not RS256"),
        (signed(claims(), key=EC_KEY, alg="ES256", kid="rsa-1"), "names a RS256 key, not ES256"),
        (signed(claims(), key=RSA_KEY, alg="RS512", kid="rsa-1"), "not signed with"),
        (signed(claims(), key=RSA_KEY, alg="PS256", kid="rsa-1"), "not signed with"),
    ]
    for token, reason in cases:
        with pytest.raises(InvalidToken, match=reason):
            tokens.verify(token)
    with pytest.raises(UnknownKey, match="no key of the identity provider"):
        tokens.verify(signed(claims(), key=RSA_KEY, alg="RS256", kid="rsa-9"))


def test_without_a_key_set_public_key_tokens_are_refused() -> None:
    with pytest.raises(InvalidToken, match="not signed with HS256"):
        Tokens(SECRET, policy=POLICY).verify(
            signed(claims(), key=RSA_KEY, alg="RS256", kid="rsa-1")
        )


def test_hs256_signed_with_the_rsa_public_key_is_refused() -> None:
    # Algorithm confusion: the public key (anyone has it) used as an HMAC secret, the
    # header naming the RSA key. HS256 looks only at the secrets, so no key matches; and
    # PyJWT itself would not take a PEM public key as an HMAC secret.
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"})
    body = b64(claims())
    import hashlib
    import hmac

    mac = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    for signing in (SECRET, None):
        tokens = Tokens(signing, policy=POLICY, jwks=StaticKeys(public_set(RSA_JWK)))
        with pytest.raises(InvalidToken, match=r"kid names no secret|HS256 tokens are not"):
            tokens.verify(forged)


def test_a_symmetric_key_in_the_key_set_is_never_used() -> None:
    oct_key = {"kty": "oct", "kid": "hmac-1", "k": b64({"x": 1}), "use": "sig"}
    ed_like = {**RSA_JWK, "kid": "enc-1", "use": "enc"}
    ps256 = {**RSA_JWK, "kid": "ps-1", "alg": "PS256"}
    keys = parse_jwks({"keys": [oct_key, ed_like, ps256, {"kty": "RSA"}, "junk", EC_JWK]})
    assert set(keys) == {"ec-1"}
    with pytest.raises(JwksError, match="not a JWK Set"):
        parse_jwks({"nokeys": []})


async def test_an_unknown_kid_reads_the_key_set_again_once() -> None:
    rotated = StaticKeys(public_set(RSA_JWK), then=public_set(RSA_JWK, EC_JWK))
    tokens = Tokens(policy=POLICY, jwks=rotated)
    assert await tokens.verify_async(signed(claims(), key=EC_KEY, alg="ES256", kid="ec-1"))
    assert rotated.reads == 1
    assert await tokens.verify_async(signed(claims(), key=EC_KEY, alg="ES256", kid="ec-1"))
    assert rotated.reads == 1  # known now: no read
    with pytest.raises(UnknownKey):
        await tokens.verify_async(signed(claims(), key=RSA_KEY, alg="RS256", kid="made-up"))
    assert rotated.reads == 2
    # Known kids and HS256 never read.
    await tokens.verify_async(signed(claims(), key=RSA_KEY, alg="RS256", kid="rsa-1"))
    assert rotated.reads == 2


async def test_made_up_kids_read_the_key_set_at_most_once_per_cooldown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = JwksKeys("http://127.0.0.1:9/jwks", refresh_s=300, cooldown_s=3600)
    fetched: list[float] = []

    def fetch() -> dict[str, Any]:
        fetched.append(time.monotonic())
        return {"keys": [RSA_JWK]}

    monkeypatch.setattr(keys._client, "fetch_data", fetch)
    tokens = Tokens(policy=POLICY, jwks=keys)
    attempts = [
        tokens.verify_async(signed(claims(), key=RSA_KEY, alg="RS256", kid=f"random-{i}"))
        for i in range(50)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    assert all(isinstance(r, UnknownKey) for r in results)
    assert len(fetched) == 1  # 50 made-up kids: one read, shared
    assert keys.kids == {"rsa-1"}
    assert await tokens.verify_async(signed(claims(), key=RSA_KEY, alg="RS256", kid="rsa-1"))
    assert len(fetched) == 1


async def test_a_failed_read_keeps_the_keys_read_before(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = JwksKeys("http://127.0.0.1:9/jwks", refresh_s=300, cooldown_s=0)
    monkeypatch.setattr(keys._client, "fetch_data", lambda: {"keys": [RSA_JWK]})
    keys.load()

    def down() -> None:
        raise jwt.PyJWKClientConnectionError("connection refused")

    monkeypatch.setattr(keys._client, "fetch_data", down)
    assert await keys.refresh() is False
    assert keys.kids == {"rsa-1"}
