"""Tokens from an identity provider: a real HTTP server serves a JWK Set (RSA and EC keys
made with cryptography); a real worker and a real gateway take RS256 and ES256 tokens
signed with them, refuse a key once the provider dropped it, take a key the provider
added, and do not read the set once per made-up kid."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from conftest import Cluster, Worker, free_port
from cryptography.hazmat.primitives.asymmetric import ec, rsa

pytestmark = pytest.mark.integration

ISSUER = "https://idp.test"
AUDIENCE = "likestream-test"
WAIT_S = 60.0


class Provider:
    """The identity provider: its private keys, and the JWK Set it publishes (one URL per
    process, so each one's reads are counted apart)."""

    def __init__(self) -> None:
        self.private: dict[str, Any] = {}
        self.published: list[str] = []
        self.reads: Counter[str] = Counter()
        self.url = ""

    def add(self, kid: str, key: Any) -> None:
        self.private[kid] = key
        self.published.append(kid)

    def drop(self, kid: str) -> None:
        self.published.remove(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            public = self.private[kid].public_key()
            algorithm = jwt.algorithms.RSAAlgorithm if kid.startswith("rsa") else None
            jwk = (algorithm or jwt.algorithms.ECAlgorithm).to_jwk(public)  # type: ignore[attr-defined]
            keys.append({**orjson.loads(jwk), "kid": kid, "use": "sig"})
        return {"keys": keys}

    def token(self, user: str, kid: str, lifetime: int = 600) -> dict[str, str]:
        now = int(time.time())
        claims = {"sub": user, "iat": now, "exp": now + lifetime, "iss": ISSUER, "aud": AUDIENCE}
        alg = "RS256" if kid.startswith("rsa") else "ES256"
        key = self.private.get(kid) or rsa.generate_private_key(65537, 2048)
        signed = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
        return {"Authorization": f"Bearer {signed}"}


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[Provider]:
    idp = Provider()
    idp.add("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    idp.add("ec-1", ec.generate_private_key(ec.SECP256R1()))

    async def jwks(request: web.Request) -> web.Response:
        idp.reads[request.match_info["who"]] += 1
        return web.json_response(idp.jwks())

    app = web.Application()
    app.router.add_get("/{who}/jwks.json", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    idp.url = f"http://127.0.0.1:{port}"
    yield idp
    await runner.cleanup()


def idp_settings(provider: Provider, who: str, refresh_s: int) -> dict[str, str]:
    return {
        "jwks_url": f"{provider.url}/{who}/jwks.json",
        "jwks_refresh_s": str(refresh_s),
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
    }


@pytest.fixture(scope="module")
async def worker(cluster: Cluster, provider: Provider) -> AsyncIterator[Worker]:
    # Read again every second: a dropped key is refused within about that.
    instance = cluster.worker("w1", **idp_settings(provider, "worker", refresh_s=1))
    async with instance.running():
        yield instance


async def like(
    http: aiohttp.ClientSession, process: Worker, item: str, headers: dict[str, str]
) -> tuple[int, Any]:
    async with http.post(f"{process.url}/items/{item}/like", headers=headers) as resp:
        return resp.status, await resp.json()


async def until_status(
    http: aiohttp.ClientSession,
    process: Worker,
    want: int,
    headers: dict[str, str] | Any,
) -> None:
    """Like with ``headers`` (or a callable making them) until the answer is ``want``."""
    deadline = time.monotonic() + WAIT_S
    status = None
    while time.monotonic() < deadline:
        status, _ = await like(
            http, process, "idp:poll", headers() if callable(headers) else headers
        )
        if status == want:
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"still HTTP {status}, not {want}, after {WAIT_S}s")


async def test_the_worker_takes_rs256_and_es256_tokens_of_the_provider(
    worker: Worker, provider: Provider, http: aiohttp.ClientSession
) -> None:
    for kid, user in (("rsa-1", "idp-rita"), ("ec-1", "idp-ed")):
        status, body = await like(http, worker, f"idp:{kid}", provider.token(user, kid))
        assert status == 202, body
        # The same token reads its own user's membership, and no one else's.
        url = f"{worker.url}/items/idp:{kid}/likes"
        async with http.get(f"{url}/{user}", headers=provider.token(user, kid)) as resp:
            assert resp.status == 200
        async with http.get(f"{url}/someone-else", headers=provider.token(user, kid)) as resp:
            assert resp.status == 403


async def test_the_provider_policy_holds(
    worker: Worker, provider: Provider, http: aiohttp.ClientSession
) -> None:
    too_long = provider.token("idp-rita", "rsa-1", lifetime=2 * 86_400)
    status, body = await like(http, worker, "idp:long", too_long)
    assert (status, body["error"]["code"]) == (401, "invalid_token")
    assert "longer than" in body["error"]["message"]
    forged = provider.token("idp-rita", "rsa-forged")  # a key the provider never published
    status, body = await like(http, worker, "idp:forged", forged)
    assert (status, body["error"]["code"]) == (401, "invalid_token")


async def test_a_key_the_provider_drops_is_refused_and_a_new_one_taken(
    worker: Worker, provider: Provider, http: aiohttp.ClientSession
) -> None:
    provider.drop("rsa-1")
    provider.add("rsa-2", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    await until_status(http, worker, 401, provider.token("idp-rita", "rsa-1"))
    await until_status(http, worker, 202, provider.token("idp-rita", "rsa-2"))
    status, _ = await like(http, worker, "idp:ec", provider.token("idp-ed", "ec-1"))
    assert status == 202  # the other keys are untouched


async def test_made_up_kids_do_not_hammer_the_provider(
    cluster: Cluster, provider: Provider, http: aiohttp.ClientSession
) -> None:
    # A gateway that reads the set every 5 minutes: any read here is from an unknown kid.
    gateway = cluster.worker("gw", command="gateway", **idp_settings(provider, "gw", 300))
    async with gateway.running():
        assert provider.reads["gw"] == 1  # at start-up
        status, _ = await like(http, gateway, "idp:gw", provider.token("idp-gil", "ec-1"))
        assert status == 202
        assert provider.reads["gw"] == 1  # a known key: no read

        made_up = [provider.token("idp-gil", f"rsa-{uuid.uuid4().hex}") for _ in range(100)]
        statuses = await asyncio.gather(*(like(http, gateway, "idp:x", h) for h in made_up))
        assert {s for s, _ in statuses} == {401}
        assert provider.reads["gw"] <= 2  # 100 made-up kids: one read at most

        # A key added since is found by the read its first token triggers (once the
        # cooldown after the last read allows one).
        provider.add("ec-3", ec.generate_private_key(ec.SECP256R1()))
        await until_status(http, gateway, 202, lambda: provider.token("idp-gil", "ec-3"))
        assert provider.reads["gw"] <= 4
