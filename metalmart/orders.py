"""Orders: validation, storage and the status life cycle, independent of HTTP."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from metalmart.db import Database, Row, Tx

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS orders (
        id TEXT PRIMARY KEY,
        order_number TEXT NOT NULL UNIQUE,
        customer_email TEXT NOT NULL,
        customer_name TEXT NOT NULL,
        shipping_address {JSON} NOT NULL,
        items {JSON} NOT NULL,
        total_cents {BIG} NOT NULL,
        status TEXT NOT NULL,
        tracking_token TEXT NOT NULL UNIQUE,
        reservation_id TEXT,
        processed_by TEXT,
        source_topic TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS orders_email ON orders (customer_email)",
    """CREATE TABLE IF NOT EXISTS order_status_history (
        id {AUTOID},
        order_id TEXT NOT NULL,
        status TEXT NOT NULL,
        processed_by TEXT,
        source_topic TEXT,
        at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS order_status_history_order ON order_status_history (order_id)",
    """CREATE TABLE IF NOT EXISTS outbox (
        id {AUTOID},
        topic TEXT NOT NULL,
        msg_key TEXT NOT NULL,
        msg_value TEXT NOT NULL,
        headers TEXT NOT NULL,
        created_at TEXT NOT NULL,
        published_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL",
]

# The pipeline is one-way; a status may only move forward along it (cancelled is reachable before shipping).
PIPELINE = ("pending", "processing", "confirmed", "shipped", "delivered")
STATUSES = (*PIPELINE, "cancelled")
_PREDECESSORS: dict[str, tuple[str, ...]] = {
    s: PIPELINE[: PIPELINE.index(s)] for s in PIPELINE
} | {"cancelled": ("pending", "processing", "confirmed")}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CENT = Decimal("0.01")


class ValidationError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(LookupError):
    pass


class StatusConflict(ValueError):
    def __init__(self, current: str, wanted: str) -> None:
        super().__init__(f"order is {current}; it cannot move to {wanted}")
        self.current = current
        self.wanted = wanted


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(body: dict[str, Any], field: str, path: str | None = None, required: bool = True) -> str:
    value = body.get(field)
    name = path or field
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(name, "is required")
        return ""
    if not isinstance(value, str):
        raise ValidationError(name, "must be a string")
    if len(value) > 500:
        raise ValidationError(name, "is longer than 500 characters")
    return value.strip()


def _money(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValidationError(field, "must be a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValidationError(field, "must be a number") from None
    if not amount.is_finite():
        raise ValidationError(field, "must be a finite number")
    if amount < 0:
        raise ValidationError(field, "must not be negative")
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class NewOrder:
    customer_email: str
    customer_name: str
    shipping_address: dict[str, str]
    items: list[dict[str, Any]]
    reservation_id: str
    total: Decimal


def validate_new_order(body: Any) -> NewOrder:
    """Check a POST /api/orders body; raise ValidationError naming the first bad field."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    email = _text(body, "customer_email")
    if not _EMAIL.match(email):
        raise ValidationError("customer_email", "is not a valid e-mail address")
    name = _text(body, "customer_name")
    address_in = body.get("shipping_address")
    if not isinstance(address_in, dict):
        raise ValidationError("shipping_address", "must be an object with street, city, state, zip_code, country")
    address = {
        key: _text(address_in, key, f"shipping_address.{key}", required=key != "state")
        for key in ("street", "city", "state", "zip_code", "country")
    }
    items_in = body.get("items")
    if not isinstance(items_in, list) or not items_in:
        raise ValidationError("items", "must be a non-empty list")
    if len(items_in) > 100:
        raise ValidationError("items", "must hold at most 100 items")
    items: list[dict[str, Any]] = []
    total = Decimal(0)
    for i, item in enumerate(items_in):
        where = f"items[{i}]"
        if not isinstance(item, dict):
            raise ValidationError(where, "must be an object")
        quantity = item.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            raise ValidationError(f"{where}.quantity", "must be a whole number")
        if quantity < 1:
            raise ValidationError(f"{where}.quantity", "must be at least 1")
        price = _money(item.get("price"), f"{where}.price")
        items.append(
            {
                "product_id": _text(item, "product_id", f"{where}.product_id"),
                "product_name": _text(item, "product_name", f"{where}.product_name", required=False),
                "quantity": quantity,
                "price": float(price),
            }
        )
        total += price * quantity
    reservation = body.get("reservation_id") or ""
    if not isinstance(reservation, str):
        raise ValidationError("reservation_id", "must be a string")
    return NewOrder(email, name, address, items, reservation, total.quantize(_CENT))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def order_view(row: Row) -> dict[str, Any]:
    """The order as the API shows it."""
    return {
        "id": row["id"],
        "order_number": row["order_number"],
        "customer_email": row["customer_email"],
        "customer_name": row["customer_name"],
        "shipping_address": _loads(row["shipping_address"]),
        "items": _loads(row["items"]),
        "total_amount": float(Decimal(row["total_cents"]) / 100),
        "status": row["status"],
        "tracking_token": row["tracking_token"],
        "reservation_id": row["reservation_id"] or None,
        "processed_by": row["processed_by"],
        "source_topic": row["source_topic"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def event_for(order: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The `order.created` event: key, value and headers. The header is what mirrord's filter matches."""
    value = {
        "order_id": order["id"],
        "order_number": order["order_number"],
        "customer_email": order["customer_email"],
        "total_amount": order["total_amount"],
        "status": order["status"],
        "created_at": order["created_at"],
    }
    return order["id"], value, {"customer_email": order["customer_email"]}


def processed_by_label(source: str | None) -> str | None:
    """`X-Processor-Source` as sent by the processor → the label the stats count."""
    if not source:
        return None
    return "mirrord" if "mirrord" in source.lower() else "cluster"


class OrderStore:
    def __init__(self, db: Database, topic: str) -> None:
        self.db = db
        self.topic = topic

    async def create(self, new: NewOrder) -> dict[str, Any]:
        """Store the order and its event in one transaction (the outbox): no order exists without its event."""
        stamp = now_iso()
        order_id = str(uuid.uuid4())
        row = {
            "id": order_id,
            "order_number": f"ORD-{stamp[:10].replace('-', '')}-{secrets.token_hex(4).upper()}",
            "customer_email": new.customer_email,
            "customer_name": new.customer_name,
            "shipping_address": new.shipping_address,
            "items": new.items,
            "total_cents": int(new.total * 100),
            "status": "pending",
            "tracking_token": secrets.token_urlsafe(16),
            "reservation_id": new.reservation_id,
            "processed_by": None,
            "source_topic": None,
            "created_at": stamp,
            "updated_at": stamp,
        }
        order = order_view(row)
        key, value, headers = event_for(order)
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO orders (id, order_number, customer_email, customer_name, shipping_address, items,"
                " total_cents, status, tracking_token, reservation_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    order_id, row["order_number"], new.customer_email, new.customer_name,
                    _json(new.shipping_address), _json(new.items), row["total_cents"], "pending",
                    row["tracking_token"], new.reservation_id, stamp, stamp,
                ),
            )
            await tx.execute(
                "INSERT INTO order_status_history (order_id, status, at) VALUES (?, ?, ?)",
                (order_id, "pending", stamp),
            )
            await tx.execute(
                "INSERT INTO outbox (topic, msg_key, msg_value, headers, created_at) VALUES (?, ?, ?, ?, ?)",
                (self.topic, key, json.dumps(value), json.dumps(headers), stamp),
            )
        return order

    async def get(self, order_id: str) -> dict[str, Any]:
        async with self.db.transaction() as tx:
            row = await tx.fetchone("SELECT * FROM orders WHERE id = ?", (order_id,))
        if row is None:
            raise NotFound(order_id)
        return order_view(row)

    async def by_token(self, token: str) -> dict[str, Any]:
        async with self.db.transaction() as tx:
            row = await tx.fetchone("SELECT * FROM orders WHERE tracking_token = ?", (token,))
        if row is None:
            raise NotFound(token)
        return order_view(row)

    async def history(self, order_id: str) -> list[dict[str, Any]]:
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT status, processed_by, source_topic, at FROM order_status_history"
                " WHERE order_id = ? ORDER BY id",
                (order_id,),
            )
        return rows

    async def list(self, email: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        async with self.db.transaction() as tx:
            if email:
                rows = await tx.fetchall(
                    "SELECT * FROM orders WHERE customer_email = ? ORDER BY created_at DESC LIMIT ?", (email, limit)
                )
            else:
                rows = await tx.fetchall("SELECT * FROM orders ORDER BY created_at DESC LIMIT ?", (limit,))
        return [order_view(r) for r in rows]

    async def set_status(
        self, order_id: str, status: str, source: str | None = None, topic: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Move an order forward. Returns (order, changed); the same status again is a no-op, so redelivered
        messages cannot step an order twice; a step backwards raises StatusConflict."""
        if status not in STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(STATUSES)}")
        label = processed_by_label(source)
        stamp = now_iso()
        allowed = _PREDECESSORS[status]
        async with self.db.transaction() as tx:
            changed = 0
            if allowed:
                marks = ", ".join("?" for _ in allowed)
                changed = await tx.execute(
                    "UPDATE orders SET status = ?, updated_at = ?,"
                    " processed_by = COALESCE(?, processed_by), source_topic = COALESCE(?, source_topic)"
                    f" WHERE id = ? AND status IN ({marks})",
                    (status, stamp, label, topic or None, order_id, *allowed),
                )
            if changed:
                await tx.execute(
                    "INSERT INTO order_status_history (order_id, status, processed_by, source_topic, at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (order_id, status, label, topic or None, stamp),
                )
            row = await tx.fetchone("SELECT * FROM orders WHERE id = ?", (order_id,))
        if row is None:
            raise NotFound(order_id)
        if not changed and row["status"] != status:
            raise StatusConflict(row["status"], status)
        return order_view(row), bool(changed)

    async def stats(self) -> dict[str, Any]:
        async with self.db.transaction() as tx:
            by_status = await tx.fetchall("SELECT status, COUNT(*) AS n FROM orders GROUP BY status")
            by_source = await tx.fetchall(
                "SELECT processed_by, COUNT(*) AS n FROM orders WHERE processed_by IS NOT NULL GROUP BY processed_by"
            )
            pending = await tx.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
        processed = {"cluster": 0, "mirrord": 0}
        processed.update({r["processed_by"]: int(r["n"]) for r in by_source})
        return {
            "by_status": {r["status"]: int(r["n"]) for r in by_status},
            "processed_by": processed,
            "total": sum(int(r["n"]) for r in by_status),
            "outbox_unpublished": int(pending["n"]) if pending else 0,
        }


async def unpublished(tx: Tx, limit: int, exclude: set[int]) -> list[Row]:
    rows = await tx.fetchall(
        "SELECT id, topic, msg_key, msg_value, headers FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
        (limit + len(exclude),),
    )
    return [r for r in rows if r["id"] not in exclude][:limit]
