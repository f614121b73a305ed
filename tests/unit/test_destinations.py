"""Where a callback may go: public addresses by default, what SIGNOFF_CALLBACK_ALLOW lists
besides; a URL's text is read as the client that sends it reads it."""

from __future__ import annotations

import ipaddress

import pytest

from signoff.destinations import CallbackPolicy, address_kind
from signoff.errors import CallbackRefused

DEFAULT = CallbackPolicy.from_entries([])


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("100.100.100.200", "shared"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "reserved"),
        ("2001:db8::1", "reserved"),
        ("::7f00:1", "reserved"),  # IPv4-compatible, deprecated
        # IPv6 that carries IPv4: judged by where the packets end up.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2002:7f00:1::", "loopback"),
    ],
)
def test_addresses_that_are_no_place_for_a_callback(address: str, kind: str) -> None:
    found = address_kind(ipaddress.ip_address(address))
    assert found is not None and kind in found


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "8.8.8.8", "172.32.0.1", "2606:4700:4700::1111",
                "::ffff:8.8.8.8", "2002:808:808::"])
def test_public_addresses(address: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
        ("http://localhost/hook", "localhost is a loopback name"),
        ("http://LocalHost./hook", "localhost is a loopback name"),
        ("http://api.localhost/hook", "api.localhost is a loopback name"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local"),
        ("http://10.0.0.7/hook", "10.0.0.7 is a private address"),
        ("http://[::1]:8080/hook", "::1 is a loopback address"),
        ("http://[fe80::1%25eth0]/hook", "fe80::1 is a link-local address"),
        ("http://0.0.0.0:80/", "0.0.0.0 is an unspecified address"),
        # Spellings that the system's resolver reads as 127.0.0.1 without asking DNS.
        ("http://127.1/", "127.0.0.1 is a loopback address"),
        ("http://0x7f000001/", "127.0.0.1 is a loopback address"),
        ("http://2130706433/", "127.0.0.1 is a loopback address"),
        ("http://0/", "0.0.0.0 is an unspecified address"),
        # The host is what follows the user information.
        ("http://example.com@127.0.0.1/", "127.0.0.1 is a loopback address"),
    ],
)
def test_local_destinations_are_refused_by_their_text(url: str, says: str) -> None:
    with pytest.raises(CallbackRefused) as refused:
        DEFAULT.check_url(url)
    assert says in refused.value.message
    assert refused.value.message.startswith("callback_url: ")
    assert "SIGNOFF_CALLBACK_ALLOW" in refused.value.message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/x", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://example.com/", "only http and https"),
        ("http:///path", "no host"),
        ("http://exa mple.com/", "not a valid host name"),
        ("http://[", "not a valid host name"),
    ],
)
def test_what_no_setting_can_allow(url: str, says: str) -> None:
    everything = CallbackPolicy.from_entries(["0.0.0.0/0", "::/0"])
    with pytest.raises(CallbackRefused) as refused:
        everything.check_url(url)
    assert says in refused.value.message


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/ci", "http://93.184.215.14:8080/x",
     "http://[2606:4700:4700::1111]/x", "https://bücher.example/x"],
)
def test_public_addresses_and_names_pass_when_created(url: str) -> None:
    target = DEFAULT.check_url(url)
    assert not target.listed


def test_names_are_checked_by_what_they_resolve_to() -> None:
    target = DEFAULT.check_url("https://hooks.example.com:8443/x")
    assert (target.host, target.port, target.address) == ("hooks.example.com", 8443, None)
    DEFAULT.check_addresses(target, ["93.184.215.14", "2606:2800:220:1::1"])
    for addresses in (["127.0.0.1"], ["93.184.215.14", "10.0.0.1"], ["::ffff:127.0.0.1"]):
        with pytest.raises(CallbackRefused) as refused:
            DEFAULT.check_addresses(target, addresses)
        assert "hooks.example.com resolves to" in refused.value.message


def test_a_url_prefix_allows_its_scheme_host_port_and_path() -> None:
    policy = CallbackPolicy.from_entries(
        ["http://127.0.0.1", "https://hooks.internal:8443/ci/", "http://[::1]/"])
    assert policy.check_url("http://127.0.0.1:5555/callback").listed  # no port: any port
    assert policy.check_url("http://127.1:80/").listed  # the same address, spelt otherwise
    assert policy.check_url("https://hooks.internal:8443/ci/job/1?x=1").listed
    assert policy.check_url("http://[::1]:9/x").listed
    with pytest.raises(CallbackRefused):
        policy.check_url("https://127.0.0.1/x")  # another scheme
    for url in ("https://hooks.internal:9443/ci/",  # another port
                "https://hooks.internal/ci/",
                "https://hooks.internal:8443/admin",  # another path
                "http://127.0.0.1.nip.io/"):  # a name that starts with the prefix's text
        assert not policy.check_url(url).listed, url


def test_a_listed_name_may_resolve_anywhere() -> None:
    policy = CallbackPolicy.from_entries(["hooks.internal", "*.corp.example"])
    for url in ("http://hooks.internal/x", "http://HOOKS.internal./x",
                "https://ci.corp.example/x", "https://a.b.corp.example/x"):
        target = policy.check_url(url)
        assert target.listed, url
        policy.check_addresses(target, ["10.1.2.3", "127.0.0.1"])
    for url in ("http://corp.example/x", "http://evilcorp.example/x", "http://x.hooks.internal/"):
        target = policy.check_url(url)
        assert not target.listed, url
        with pytest.raises(CallbackRefused):
            policy.check_addresses(target, ["10.1.2.3"])


def test_allowed_networks_and_addresses() -> None:
    policy = CallbackPolicy.from_entries(["10.0.0.0/8", "[::1]", "127.0.0.2"])
    policy.check_url("http://10.20.30.40:81/x")
    policy.check_url("http://[::1]/x")
    policy.check_url("http://127.0.0.2/x")
    policy.check_url("http://[::ffff:10.0.0.1]/x")
    for url in ("http://127.0.0.1/x", "http://192.168.0.1/x", "http://11.0.0.1.localhost/"):
        with pytest.raises(CallbackRefused):
            policy.check_url(url)
    target = policy.check_url("https://hooks.example.com/x")
    policy.check_addresses(target, ["10.9.9.9", "93.184.215.14"])
    with pytest.raises(CallbackRefused):
        policy.check_addresses(target, ["10.9.9.9", "172.16.0.1"])


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("ftp://files.example.com/", "not an http(s) URL prefix"),
        ("https://hooks.example.com/?token=1", "no query"),
        ("*", "'*' may only begin"),
        ("hooks.*.example.com", "'*' may only begin"),
        ("hooks.example.com:8443", "has no port"),
        ("10.0.0.0/33", "not a network"),
        ("::1::2", "not an address"),
        ("hooks example", "not a host name"),
    ],
)
def test_entries_that_mean_nothing_are_refused(entry: str, says: str) -> None:
    with pytest.raises(ValueError) as refused:
        CallbackPolicy.from_entries([entry])
    assert says in str(refused.value)
