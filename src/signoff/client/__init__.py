"""A Python client for signoff's HTTP API, and a gate that runs code only once people
have approved it::

    from signoff.client import Client

    with Client() as client:  # SIGNOFF_URL and SIGNOFF_TOKEN
        with client.gate("restart pod web-1", risk="low", ttl=600):
            restart("web-1")  # runs once approved; its outcome is reported

It speaks HTTP (httpx) and imports nothing of the server, so an automation that uses it
loads neither the database drivers nor the web framework.
"""

from signoff.client.aio import AsyncClient
from signoff.client.calls import DEFAULT_URL, RequestOptions
from signoff.client.errors import (
    Cancelled,
    Expired,
    NotApproved,
    Rejected,
    SignoffError,
    Unreachable,
)
from signoff.client.sync import Client

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "Cancelled",
    "Client",
    "Expired",
    "NotApproved",
    "Rejected",
    "RequestOptions",
    "SignoffError",
    "Unreachable",
]
