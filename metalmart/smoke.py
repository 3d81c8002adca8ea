"""One order from the order service to `shipped`: the check fresh-start runs on every target (in a cluster, inside
the order pod: `python -m metalmart smoke`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed

# Never a demo address: a mirrord session filtering on the demo's e-mails (…@metalbear.com) must not take the verify
# order, or a fresh-start re-run while a session stops at its breakpoint would wait for it in vain.
SMOKE_EMAIL = "verify@metalmart.invalid"
SMOKE_ORDER = {
    "customer_email": SMOKE_EMAIL, "customer_name": "Smoke Test",
    "shipping_address": {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip_code": "62701",
                         "country": "US"},
    "items": [{"product_id": "MM-HAMMER-02", "product_name": "Cross-Peen Hammer 1 kg", "quantity": 1, "price": 42.5}],
}


class SmokeFailed(Exception):
    """The order did not ship in time; the message says where it stopped."""


class _NotYet(Exception):
    pass


def _json(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                 method="POST" if body else "GET", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def smoke(order_service_url: str, timeout: float = 60.0) -> dict[str, Any]:
    """Place one order and poll its status (bounded) until it is shipped; returns the order as last seen."""
    base = order_service_url.rstrip("/")
    try:
        order = _json(f"{base}/api/orders", SMOKE_ORDER)
    except (urllib.error.URLError, OSError) as exc:
        raise SmokeFailed(f"could not place the smoke order at {base}: {exc}") from None
    last: dict[str, Any] = {"status": order.get("status")}

    @retry(stop=stop_after_delay(timeout), wait=wait_fixed(0.05), retry=retry_if_exception_type((_NotYet, OSError)))
    def shipped() -> dict[str, Any]:
        last.update(_json(f"{base}/api/orders/{order['id']}/status"))
        if last["status"] != "shipped":
            raise _NotYet
        return last

    try:
        status = shipped()
    except RetryError:
        raise SmokeFailed(f"order {order['order_number']} is still {last['status']} after {timeout:.0f} s") from None
    return {**order, **status}
