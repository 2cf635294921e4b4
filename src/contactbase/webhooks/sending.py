"""The HTTP half of webhook delivery: one signed POST to a receiver's URL, sent safely.

The caller (the delivery queue) brings the body and its signature headers; this module decides
where the bytes may go and reports what came back, never raising for network trouble.

The protocol of one delivery:

1. The host is resolved once, at delivery time (DNS can change between a webhook's creation
   and its deliveries), and every address returned is checked: one private record beside a
   public one refuses the delivery, or a name could be made to reach an internal service.
2. The request goes to the first checked address and no other: the URL carries the IP in place
   of the name, the Host header and, for https, the TLS server name and certificate check keep
   the name. Nothing resolves the name a second time, so DNS rebinding cannot slip an
   unchecked address in between the check and the connection.
3. Each endpoint (the caller's key) has its own client. httpx pools connections by scheme, IP
   and port; a TLS connection made, and verified, for one host name must never carry a request
   for another endpoint that happens to share the IP.
4. One timeout bounds the whole exchange (resolution, connect, send, reading the answer), and
   at most RESPONSE_LIMIT bytes of the answer are read: a receiver cannot hold or flood a worker.
"""

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass

import httpx

MAX_URL_LENGTH = 2048
RESPONSE_LIMIT = 4096
SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: not global, not "private"
HOST_NAME = re.compile(r"[a-z0-9._-]+")

Resolve = Callable[[str, int], Awaitable[list[str]]]
Origin = tuple[str, str, int]


class UrlRefused(Exception):
    """A URL that may not be used: the message is one line for whoever gave the URL; `error`
    is the shorter form a delivery's Answer records."""

    def __init__(self, message: str, error: str) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class Answer:
    """What one POST came to. `error` says why there was no answer, or why it was cut short."""

    status: int | None
    response: str
    error: str | None
    latency_ms: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def resolve_host(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver, in its order of preference."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def check_url_shape(url: str) -> str | None:
    """Why `url` cannot be a webhook's URL, or None when its shape is fine."""
    if len(url) > MAX_URL_LENGTH:
        return f"The URL {url[:60]}... is {len(url):,} characters long; at most 2,048 are allowed."
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"The URL {url[:100]!r} is not valid: {exc}"
    host = parsed.raw_host.decode("ascii")
    if parsed.scheme not in ("http", "https"):
        return f"The URL {url} must start with http:// or https://."
    if not host:
        return f"The URL {url} has no host."
    if parsed.userinfo:
        return f"The URL {url} holds a user name or password; use the signature to authenticate."
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return f"The URL {url} has port {parsed.port}; a port is between 1 and 65535."
    if not HOST_NAME.fullmatch(host) and not (":" in host and _is_ip(host)):
        return f"The URL {url} has an invalid host, {parsed.host}."
    return None


def refused_kind(address: str) -> str | None:
    """What kind of non-public address this is ("loopback", "private", ...), None if public."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    v4 = isinstance(ip, ipaddress.IPv4Address)
    kinds = (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),  # includes the cloud metadata address 169.254.169.254
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("shared", v4 and ip in SHARED),
        ("private", ip.is_private),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("reserved", ip.is_reserved),
    )
    for kind, matches in kinds:
        if matches:
            return kind
    return None if ip.is_global else "non-public"


async def check_url(url: str, *, allow_private: bool, resolve: Resolve = resolve_host) -> None:
    """Raise UrlRefused unless a delivery to `url` would be sent now."""
    await _pin(url, allow_private, resolve)


class Sender:
    """Sends webhook POSTs, one pooled client per endpoint; close() when done."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        allow_private: bool = False,
        resolve: Resolve | None = None,
        connections: int = 4,
    ) -> None:
        self.timeout = timeout
        self.connections = connections  # per endpoint: as many as may be in flight to one
        self.allow_private = allow_private
        self.resolve = resolve or resolve_host
        self._clients: dict[Hashable, tuple[Origin, httpx.AsyncClient]] = {}

    async def post(
        self, key: Hashable, url: str, body: bytes, headers: Mapping[str, str]
    ) -> Answer:
        """POST `body` to `url` for the endpoint `key`; the Answer says what came of it."""
        started = time.perf_counter()
        status: int | None = None
        received = bytearray()
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout):
                parsed, address = await _pin(url, self.allow_private, self.resolve)
                client = await self._client(key, parsed)
                sent = httpx.Headers(headers)
                sent["Host"] = parsed.netloc.decode("ascii")  # carries the port if not default
                sent["Accept-Encoding"] = "identity"  # a compressed answer could unpack huge
                target = parsed.copy_with(host=address)
                # httpcore uses sni_hostname for the TLS server name and the certificate's check.
                sni = {"sni_hostname": parsed.raw_host.decode("ascii")}
                async with client.stream(
                    "POST", target, content=body, headers=sent, extensions=sni
                ) as reply:
                    status = reply.status_code
                    async for chunk in reply.aiter_raw():
                        received += chunk
                        if len(received) >= RESPONSE_LIMIT:
                            break
        except UrlRefused as refused:
            error = refused.error
        except TimeoutError:
            error = f"timed out after {self.timeout:g} s"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            error = _describe(exc)
        latency_ms = round((time.perf_counter() - started) * 1000)
        response = bytes(received[:RESPONSE_LIMIT]).decode("utf-8", errors="replace")
        return Answer(status, response, error, latency_ms)

    async def close(self) -> None:
        clients = [client for _, client in self._clients.values()]
        self._clients.clear()
        for client in clients:
            await client.aclose()

    async def _client(self, key: Hashable, parsed: httpx.URL) -> httpx.AsyncClient:
        """The endpoint's client, replaced when its URL moved to another scheme, host or port
        (a delivery still in flight on the old one then fails, and is retried like any other)."""
        origin = (parsed.scheme, parsed.raw_host.decode("ascii"), _port(parsed))
        held = self._clients.get(key)
        if held is not None and held[0] == origin:
            return held[1]
        client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # no proxy, no netrc from the environment
            verify=True,
            timeout=None,  # post's own timeout bounds the whole exchange, not each phase
            limits=httpx.Limits(
                max_connections=self.connections, max_keepalive_connections=self.connections
            ),
        )
        self._clients[key] = (origin, client)
        if held is not None:
            await held[1].aclose()
        return client


async def _pin(url: str, allow_private: bool, resolve: Resolve) -> tuple[httpx.URL, str]:
    """The parsed URL and the one checked address a delivery to it connects to."""
    problem = check_url_shape(url)
    if problem is not None:
        raise UrlRefused(problem, problem)
    parsed = httpx.URL(url)
    host = parsed.raw_host.decode("ascii")
    literal = _is_ip(host)
    if literal:
        addresses = [host]
    else:
        try:
            addresses = await resolve(host, _port(parsed))
        except (OSError, UnicodeError):
            addresses = []
        if not addresses:
            raise UrlRefused(
                f"The URL's host {host} does not resolve.", f"could not resolve {host}"
            )
    for address in addresses:
        kind = None if allow_private else refused_kind(address)
        if kind is not None:
            what = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
            reason = f"{host} is {what}" if literal else f"{host} resolves to {address}, {what}"
            raise UrlRefused(
                f"The URL's host {reason}; webhooks may only go to public addresses "
                "(CONTACTBASE_WEBHOOK_ALLOW_PRIVATE=true allows private ones).",
                f"refused: {reason}",
            )
    return parsed, addresses[0]


def _port(parsed: httpx.URL) -> int:
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    """One line for a failed exchange, from the most telling error in the chain."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not accepted: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause.reason or cause}"
        cause = cause.__cause__ or cause.__context__
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
