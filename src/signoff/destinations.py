"""Where a request's ``callback_url`` may point: the rules of ``SIGNOFF_CALLBACK_ALLOW``.

A requester chooses its callback URL, so without rules it could make signoff post to the
services of its own host (loopback), to a cloud's metadata endpoint (169.254.169.254) or
anywhere on the private network. By default a callback goes only to a public address,
over http or https. The setting lists what may go elsewhere, each entry one of:

- a URL prefix, ``https://hooks.example.com/ci/``: that scheme and host, the port if the
  prefix names one (any port if not), and a path that starts with the prefix's path;
- a host name, ``hooks.example.com``, or every name under a domain, ``*.example.com``;
- an address or a network, ``10.1.2.3``, ``10.0.0.0/8``, ``fd00::/8``.

A URL that a prefix or a name matches may lead to any address: the operator vouches for
that host. Any other URL is checked twice: when the request is created, by what its text
says (a literal address, a ``localhost`` name) and without DNS, which keeps creation
fast; and when the callback is delivered, every address its host resolves to
(``notify.egress``), so that a name pointing at a private address is refused too.

URLs are read with httpx's parser, the one that delivers them, so that the host checked
is the host connected to. No I/O here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Iterable, Sequence

import httpx

from signoff.errors import CallbackRefused

SETTING = "SIGNOFF_CALLBACK_ALLOW"
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

PRIVATE = "a private address"
RESERVED = "a reserved address"
LOOPBACK = "a loopback address"
LINK_LOCAL = "a link-local address"
MULTICAST = "a multicast address"
UNSPECIFIED = "an unspecified address"

# Checked in order, the first that holds names the kind. An address in none is public.
_REFUSED: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), kind) for net, kind in (
        ("0.0.0.0/8", UNSPECIFIED),
        ("10.0.0.0/8", PRIVATE),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", LOOPBACK),
        ("169.254.0.0/16", LINK_LOCAL),
        ("172.16.0.0/12", PRIVATE),
        ("192.0.0.0/24", RESERVED),
        ("192.0.2.0/24", RESERVED),
        ("192.88.99.0/24", RESERVED),
        ("192.168.0.0/16", PRIVATE),
        ("198.18.0.0/15", RESERVED),
        ("198.51.100.0/24", RESERVED),
        ("203.0.113.0/24", RESERVED),
        ("224.0.0.0/4", MULTICAST),
        ("240.0.0.0/4", RESERVED),
        ("::/128", UNSPECIFIED),
        ("::1/128", LOOPBACK),
        ("64:ff9b:1::/48", PRIVATE),
        ("100::/64", RESERVED),
        ("2001::/23", RESERVED),
        ("2001:db8::/32", RESERVED),
        ("fc00::/7", PRIVATE),
        ("fe80::/10", LINK_LOCAL),
        ("fec0::/10", PRIVATE),
        ("ff00::/8", MULTICAST),
    )
)
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_NUMERIC = re.compile(r"[0-9a-fx.]+")


def address_kind(address: Address) -> str | None:
    """What makes ``address`` no place for a callback (``"a loopback address"``), or None
    for a public one. An IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4) is
    judged by the IPv4 address, where the packets end up."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return address_kind(inner)
    for network, kind in _REFUSED:
        if address.version == network.version and address in network:
            return kind
    if address.version == 6 and address not in _GLOBAL_UNICAST:
        return RESERVED
    return None


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_address(text: str) -> Address | None:
    """The address a URL's host names literally, or None for a name. Besides the usual
    forms this reads what the system's resolver reads as an IPv4 address without asking
    DNS (``127.1``, ``0x7f000001``, ``2130706433``), so that no spelling slips through.
    Raises ``ValueError`` for text that looks like an IPv6 address and is not one."""
    text = text.strip("[]").lower()
    if ":" in text:
        # A zone (``fe80::1%eth0``, percent-encoded in a URL) does not change the kind.
        return ipaddress.IPv6Address(urllib.parse.unquote(text).split("%", 1)[0])
    if not _NUMERIC.fullmatch(text):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def is_local_name(host: str) -> bool:
    """``localhost`` and the names under it are the loopback's (RFC 6761), whatever DNS
    says."""
    return host == "localhost" or host.endswith(".localhost")


@dataclasses.dataclass(frozen=True)
class Prefix:
    """An allowed URL prefix: scheme, host, the port if named, the start of the path."""

    scheme: str
    host: str
    port: int | None
    path: str

    def matches(self, target: Destination) -> bool:
        return (target.scheme == self.scheme and target.host == self.host
                and (self.port is None or target.port == self.port)
                and target.path.startswith(self.path))


@dataclasses.dataclass(frozen=True)
class Destination:
    """A callback URL as checked: its parts, and what the check found."""

    url: httpx.URL
    scheme: str
    host: str  # lower case, in ASCII (IDNA), without a trailing dot; an address canonical
    port: int
    path: str
    address: Address | None  # when the host is an address
    listed: bool  # a prefix or a name of the allow list matches: any address will do


class CallbackPolicy:
    """The allow list, parsed once: ``check_url`` when a request is created and again
    before delivery, ``check_addresses`` on what a host name resolved to."""

    def __init__(
        self, *, prefixes: Sequence[Prefix] = (), names: Sequence[str] = (),
        domains: Sequence[str] = (), networks: Sequence[Network] = (),
    ) -> None:
        self.prefixes = tuple(prefixes)
        self.names = frozenset(names)
        self.domains = tuple(domains)  # "*.example.com" is kept as ".example.com"
        self.networks = tuple(networks)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> CallbackPolicy:
        """Parse ``SIGNOFF_CALLBACK_ALLOW``'s entries; ``ValueError`` names a bad one."""
        prefixes: list[Prefix] = []
        names: list[str] = []
        domains: list[str] = []
        networks: list[Network] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if "://" in entry:
                prefixes.append(_parse_prefix(entry))
            elif "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                except ValueError:
                    raise ValueError(f"{entry!r} is not a network (like 10.0.0.0/8)") from None
            else:
                address = _entry_address(entry)
                if address is not None:
                    networks.append(ipaddress.ip_network(address))
                elif entry.startswith("*."):
                    domains.append("." + _entry_name(entry, entry[2:]))
                else:
                    names.append(_entry_name(entry, entry))
        return cls(prefixes=prefixes, names=names, domains=domains, networks=networks)

    def check_url(self, url: str | httpx.URL) -> Destination:
        """The destination of ``url`` if it may be a callback's; else ``CallbackRefused``.

        A host name that no entry lists passes here: what it resolves to is checked on
        delivery (``check_addresses``)."""
        target = _destination(url)
        listed = (any(p.matches(target) for p in self.prefixes)
                  or (target.address is None and self._names_match(target.host)))
        target = dataclasses.replace(target, listed=listed)
        if listed:
            return target
        if target.address is not None:
            self._check_address(target, target.address)
        elif is_local_name(target.host):
            raise _refused(f"{target.host} is a loopback name")
        return target

    def check_addresses(self, target: Destination, addresses: Iterable[str]) -> None:
        """Refuse a destination whose host resolved to any address it may not reach."""
        if target.listed:
            return
        for text in addresses:
            self._check_address(target, ipaddress.ip_address(text.split("%", 1)[0]))

    def _names_match(self, host: str) -> bool:
        return host in self.names or any(host.endswith(d) for d in self.domains)

    def _allows(self, address: Address) -> bool:
        candidates = [address]
        inner = embedded_ipv4(address)
        if inner is not None:
            candidates.append(inner)
        return any(a.version == n.version and a in n for a in candidates for n in self.networks)

    def _check_address(self, target: Destination, address: Address) -> None:
        if self._allows(address):
            return
        kind = address_kind(address)
        if kind is None:
            return
        if target.address is not None:
            raise _refused(f"{target.host} is {kind}")
        raise _refused(f"{target.host} resolves to {address}, {kind}")


def _refused(why: str) -> CallbackRefused:
    return CallbackRefused(
        f"callback_url: {why}; callbacks go only to public addresses unless {SETTING} "
        "allows the destination"
    )


def _destination(url: str | httpx.URL) -> Destination:
    """The parts of a callback URL, with the checks that no setting can lift."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise CallbackRefused("callback_url: not a valid URL") from None
    if parsed.scheme not in SCHEMES:
        raise CallbackRefused(
            f"callback_url: only http and https callbacks are sent, not {parsed.scheme!r}")
    if not host:
        raise CallbackRefused("callback_url: the URL has no host")
    try:
        address = parse_address(host)
    except ValueError:
        raise CallbackRefused(f"callback_url: {host!r} is not a valid address") from None
    if address is None and not _NAME.fullmatch(host):
        raise CallbackRefused(f"callback_url: {host!r} is not a valid host name")
    path = parsed.raw_path.split(b"?", 1)[0].decode("ascii")
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    shown = host if address is None else str(address)
    return Destination(parsed, parsed.scheme, shown, port, path, address, listed=False)


def _parse_prefix(entry: str) -> Prefix:
    try:
        target = _destination(entry)
        port = urllib.parse.urlsplit(entry).port  # as written, the scheme's default too
    except (CallbackRefused, ValueError):
        raise ValueError(f"{entry!r} is not an http(s) URL prefix") from None
    if "?" in entry or "#" in entry:
        raise ValueError(f"{entry!r}: a URL prefix has no query or fragment")
    return Prefix(target.scheme, target.host, port, target.path)


def _entry_address(entry: str) -> Address | None:
    if entry.count(":") == 1:
        _entry_name(entry, entry)  # a name with a port: say so
    try:
        return parse_address(entry)
    except ValueError:
        raise ValueError(f"{entry!r} is not an address") from None


def _entry_name(entry: str, name: str) -> str:
    if ":" in name:
        raise ValueError(
            f"{entry!r}: a host pattern has no port; to name one, give a URL prefix "
            "like https://host:8443/")
    if "*" in name:
        raise ValueError(f"{entry!r}: '*' may only begin a pattern, as in *.example.com")
    try:
        host = httpx.URL(f"http://{name}/").raw_host.decode("ascii").lower().rstrip(".")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        host = ""
    if not _NAME.fullmatch(host):
        raise ValueError(f"{entry!r} is not a host name")
    return host
