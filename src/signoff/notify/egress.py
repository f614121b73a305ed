"""Sending a callback to the address that was checked, and to no other.

Checking a host name's addresses and then letting the HTTP client resolve the name again
to connect would leave a gap: the name could answer a public address to the check and a
private one a moment later (DNS rebinding). So the name is resolved here, once
(``loop.getaddrinfo``); every address it resolves to must pass (``destinations``); and
the connection goes to a checked address: the URL's host is replaced by it, while the
``Host`` header and TLS (the SNI and the name the certificate must carry, httpcore's
``sni_hostname`` extension) keep the name. A URL whose host is an address, or a name the
allow list vouches for, is sent as it is.

Every callback has a connection of its own, closed after its answer, so a TLS connection
verified for one name never carries a request for another name at the same address.
Proxies from the environment are not used: a proxy would resolve the name again. Only
the first 64 KiB of an answer are read, so a receiver cannot make a delivery endless.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable

import httpx

from signoff.destinations import CallbackPolicy, Destination

Resolve = Callable[[str, int], Awaitable[list[str]]]
RESOLVE_TIMEOUT = 5.0  # when the request carries no connect timeout
MAX_ANSWER = 64 * 1024
# Describe the body as it was read: decoded, and perhaps cut short.
_BODY_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses the system's resolver gives for ``host``, in its order, once each."""
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


class CallbackTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends only where ``policy`` allows, to checked addresses.

    A refusal raises ``errors.CallbackRefused`` (trying again cannot help); a name that
    does not resolve raises ``httpx.ConnectError`` (it may, later)."""

    def __init__(
        self,
        policy: CallbackPolicy,
        *,
        verify: ssl.SSLContext | bool = True,
        resolve: Resolve = resolve_host,
    ) -> None:
        self.policy = policy
        self.ssl_context = httpx.create_ssl_context(verify=verify)
        self.resolve = resolve

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self.policy.check_url(request.url)
        if target.listed or target.address is not None:
            return await self._send(request)
        addresses = await self._resolve(target, request)
        self.policy.check_addresses(target, addresses)
        failure: httpx.ConnectError | None = None
        for address in addresses:  # each checked; the next if one cannot be reached
            pinned = httpx.Request(
                request.method, request.url.copy_with(host=address), headers=request.headers,
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": target.host},
            )
            try:
                return await self._send(pinned)
            except httpx.ConnectError as exc:
                failure = exc
        assert failure is not None  # a resolution gives at least one address
        raise failure

    async def _resolve(self, target: Destination, request: httpx.Request) -> list[str]:
        timeouts = request.extensions.get("timeout") or {}
        limit = timeouts.get("connect") or RESOLVE_TIMEOUT
        try:
            async with asyncio.timeout(limit):
                addresses = await self.resolve(target.host, target.port)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"resolving {target.host} timed out",
                                       request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {target.host}: {exc}",
                                     request=request) from exc
        if not addresses:
            raise httpx.ConnectError(f"{target.host} resolves to no address", request=request)
        return addresses

    async def _send(self, request: httpx.Request) -> httpx.Response:
        async with httpx.AsyncHTTPTransport(verify=self.ssl_context, trust_env=False) as inner:
            response = await inner.handle_async_request(request)
            try:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= MAX_ANSWER:
                        break
            finally:
                await response.aclose()
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _BODY_HEADERS]
        return httpx.Response(response.status_code, headers=headers,
                              content=bytes(body[:MAX_ANSWER]), request=request)
