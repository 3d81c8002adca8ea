"""Orders: validation, storage and the status life cycle, independent of HTTP."""

from __future__ import annotations

import json
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from metalmart import sessions
from metalmart.db import Database, Row, Tx, Unavailable, UniqueViolation
from metalmart.groupcommit import GroupCommit

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
    "CREATE INDEX IF NOT EXISTS outbox_key ON outbox (msg_key)",
    "CREATE INDEX IF NOT EXISTS orders_status ON orders (status, updated_at)",
    # Each time the reconciler published an order's event again (metalmart/reconcile.py).
    """CREATE TABLE IF NOT EXISTS republished (
        id {AUTOID},
        order_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS republished_order ON republished (order_id)",
    # Where the broker put each event it acknowledged (from the delivery report), and when the reconciler last
    # found the record still there: the evidence it decides from (metalmart/reconcile.py).
    """CREATE TABLE IF NOT EXISTS outbox_landed (
        outbox_id {BIG} PRIMARY KEY,
        kafka_partition INTEGER NOT NULL,
        kafka_offset {BIG} NOT NULL,
        checked_at TEXT
    )""",
    # The `mirrord up` session an order was placed for (`baggage: mirrord-session=K` on its POST; its event carries
    # that baggage on, metalmart.sessions), for the counts per key. A table of its own: no column is added to a
    # database a running demo already holds.
    """CREATE TABLE IF NOT EXISTS order_sessions (
        order_id TEXT PRIMARY KEY,
        session_key TEXT NOT NULL
    )""",
    # The mirrord session whose laptop processed an order: the key the operator stamped on the copy it routed there
    # (`mirrord-key`, operator 3.233+), as the processor reported it.
    """CREATE TABLE IF NOT EXISTS order_routed (
        order_id TEXT PRIMARY KEY,
        session_key TEXT NOT NULL
    )""",
]

log = logging.getLogger("metalmart.orders")

# The pipeline is one-way; a status may only move forward along it (cancelled is reachable before shipping).
PIPELINE = ("pending", "processing", "confirmed", "shipped", "delivered")
STATUSES = (*PIPELINE, "cancelled")
_PREDECESSORS: dict[str, tuple[str, ...]] = {
    s: PIPELINE[: PIPELINE.index(s)] for s in PIPELINE
} | {"cancelled": ("pending", "processing", "confirmed")}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CENT = Decimal("0.01")
MAX_QUANTITY = 10_000
MAX_PRICE = Decimal("1000000.00")  # per item, in the shop's currency


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
    if _CONTROL.search(value):
        raise ValidationError(name, "must not contain control characters")
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
    if amount > MAX_PRICE:
        raise ValidationError(field, f"must be at most {MAX_PRICE}")
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class NewOrder:
    customer_email: str
    customer_name: str
    shipping_address: dict[str, str]
    items: list[dict[str, Any]]
    reservation_id: str
    total: Decimal
    session_key: str | None = None
    # The request's W3C trace context and baggage (`baggage`, `traceparent`, `tracestate`), carried on into the
    # event's Kafka headers: `mirrord up` routes on the baggage's `mirrord-session` entry.
    trace_headers: Mapping[str, str] = field(default_factory=dict)


def trace_context(headers: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    """The `mirrord up` session a request is for and the trace headers it carries on (metalmart.sessions)."""
    try:
        return sessions.carried(headers)
    except ValueError as exc:
        raise ValidationError("baggage", str(exc)) from None


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
        if quantity > MAX_QUANTITY:
            raise ValidationError(f"{where}.quantity", f"must be at most {MAX_QUANTITY}")
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
    reservation = _text(body, "reservation_id", required=False)
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
        # The mirrord session whose laptop processed it, when the operator routed it there (its `mirrord-key`).
        "processed_for_session": row.get("routed_session"),
    }


def event_for(order: dict[str, Any], trace_headers: Mapping[str, str] | None = None
              ) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The `order.created` event: key, value and headers. The headers are what mirrord routes on: a session's
    `customer_email` filter, and for `mirrord up` the request's W3C baggage (`mirrord-session=K`) with its trace
    context."""
    value = {
        "order_id": order["id"],
        "order_number": order["order_number"],
        "customer_email": order["customer_email"],
        "total_amount": order["total_amount"],
        "status": order["status"],
        "created_at": order["created_at"],
    }
    headers = {"customer_email": order["customer_email"], **(trace_headers or {})}
    return order["id"], value, headers


def carried_on(headers: Mapping[str, str]) -> dict[str, str]:
    """The trace headers of an event already in the outbox, for its republish. An event written before the baggage
    was carried on (its header `mirrord-session: K`) gets its session's baggage."""
    kept = {name: value for name, value in headers.items() if name in sessions.CARRIED}
    legacy = headers.get(sessions.ENTRY)
    if legacy and "baggage" not in kept:
        kept.update(sessions.marked(legacy, kept))
    return kept


def processed_by_label(source: str | None) -> str | None:
    """`X-Processor-Source` as sent by the processor → the label the stats count."""
    if not source:
        return None
    return "mirrord" if "mirrord" in source.lower() else "cluster"


NUMBER_ATTEMPTS = 5


def new_order_number(stamp: str) -> str:
    """ORD-<date>-<32 random bits>: short enough to read out on a call; a collision is retried (OrderStore.create)."""
    return f"ORD-{stamp[:10].replace('-', '')}-{secrets.token_hex(4).upper()}"


@dataclass(frozen=True)
class _Prepared:
    """A new order as its rows: the API's view, the orders row's values, its session and trace headers."""
    order: dict[str, Any]
    row: tuple[Any, ...]
    stamp: str
    session: str | None
    trace_headers: Mapping[str, str]

    @classmethod
    def of(cls, new: NewOrder) -> _Prepared:
        stamp = now_iso()
        row = {
            "id": str(uuid.uuid4()),
            "order_number": new_order_number(stamp),
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
        if new.session_key:
            order["session_key"] = new.session_key
        values = (row["id"], row["order_number"], new.customer_email, new.customer_name,
                  _json(new.shipping_address), _json(new.items), row["total_cents"], "pending",
                  row["tracking_token"], new.reservation_id, stamp, stamp)
        return cls(order, values, stamp, new.session_key, new.trace_headers)


# What a status change answers with: the order's id, its status and who processed it.
_STEPPED = "id, status, processed_by"


@dataclass(frozen=True)
class _Step:
    """A status change asked for: the order, the status, who processed it (`processed_by_label`), from which topic."""
    order_id: str
    status: str
    label: str | None
    topic: str | None
    routed: str | None = None  # the mirrord session the message was routed to (its `mirrord-key`)


class OrderStore:
    def __init__(self, db: Database, topic: str, overdue_after_s: float = 40.0) -> None:
        self.db = db
        self.topic = topic
        self.overdue_after_s = overdue_after_s
        self._creates: GroupCommit[NewOrder, dict[str, Any]] = GroupCommit(self._create_many)
        self._statuses: GroupCommit[_Step, tuple[dict[str, Any], bool]] = GroupCommit(self._set_many)

    def group_commit(self) -> dict[str, dict[str, int]]:
        """This process's transactions so far and what they held: fewer transactions than requests is many
        requests sharing one."""
        return {"orders": {"transactions": self._creates.batches, "requests": self._creates.items},
                "status_changes": {"transactions": self._statuses.batches, "requests": self._statuses.items}}

    def overdue_cutoff(self) -> str:
        """Events published before this instant have had their time: an order of theirs still pending is overdue."""
        return (datetime.now(UTC) - timedelta(seconds=self.overdue_after_s)).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")

    async def create(self, new: NewOrder) -> dict[str, Any]:
        """Store the order and its event in one transaction (the outbox): no order exists without its event. Orders
        posted together share that transaction (metalmart.groupcommit); each is answered once it committed."""
        return await self._creates.submit(new)

    async def _create_many(self, news: list[NewOrder]) -> list[dict[str, Any] | Exception]:
        """One transaction for all of them; when it fails for anything but the database being away, each is stored
        on its own, so one order's failure (a taken number, a value the database refuses) is only its own."""
        try:
            return list(await self._insert([_Prepared.of(new) for new in news]))
        except Unavailable:
            raise
        except Exception as exc:
            if len(news) > 1:
                log.info("%d orders committed together failed (%s); storing each on its own", len(news), exc)
        results: list[dict[str, Any] | Exception] = []
        for new in news:
            try:
                results.append(await self._create_one(new))
            except Exception as exc:  # this order's own failure, answered to its own request
                results.append(exc)
        return results

    async def _create_one(self, new: NewOrder) -> dict[str, Any]:
        """Order numbers are short and random, so two can collide: the order is then stored again under a new
        number."""
        for attempt in range(1, NUMBER_ATTEMPTS + 1):
            try:
                return (await self._insert([_Prepared.of(new)]))[0]
            except UniqueViolation as exc:
                if not any(col in exc.what for col in ("order_number", "tracking_token")) or \
                        attempt == NUMBER_ATTEMPTS:
                    raise
                log.warning("order number or tracking token taken (%s); drawing new ones (attempt %d)", exc.what,
                            attempt + 1)
        raise AssertionError("unreachable")

    async def _insert(self, prepared: list[_Prepared]) -> list[dict[str, Any]]:
        async with self.db.writes() as tx:
            await tx.insert_many(
                "INSERT INTO orders (id, order_number, customer_email, customer_name, shipping_address, items,"
                " total_cents, status, tracking_token, reservation_id, created_at, updated_at)",
                [p.row for p in prepared])
            await tx.insert_many("INSERT INTO order_status_history (order_id, status, at)",
                                 [(p.order["id"], "pending", p.stamp) for p in prepared])
            for_sessions = [(p.order["id"], p.session) for p in prepared if p.session]
            if for_sessions:
                await tx.insert_many("INSERT INTO order_sessions (order_id, session_key)", for_sessions)
            await tx.insert_many("INSERT INTO outbox (topic, msg_key, msg_value, headers, created_at)",
                                 [self._event_row(p.order, p.stamp, p.trace_headers) for p in prepared])
        return [p.order for p in prepared]

    def _event_row(self, order: dict[str, Any], stamp: str, trace_headers: Mapping[str, str]) -> tuple[Any, ...]:
        key, value, headers = event_for(order, trace_headers)
        return (self.topic, key, json.dumps(value), json.dumps(headers), stamp)

    async def overdue(self, tx: Tx, published_before: str, limit: int | None = None,
                      max_republish: int | None = None, unchecked_since: str | None = None) -> list[Row]:
        """Orders not yet shipped that have not moved since `published_before`, and whose latest event was published
        before then (the processor has had its time), with that event's topic, where the broker put it (partition
        and offset, when the delivery report said) and how often the order was republished already. Not only
        pending ones: an order a processor had taken to `processing` when its message vanished (a broker that lost
        its storage before the offset was committed) is just as stuck. `unchecked_since` leaves out the events whose
        record the reconciler found on the broker since then. Such an order is waiting (a consumer held at a
        breakpoint, or a slow one), not lost: only the reconciler's read of the broker tells the two apart."""
        checked = " AND (l.checked_at IS NULL OR l.checked_at < ?)" if unchecked_since else ""
        rows = await tx.fetchall(
            "SELECT o.id AS id, e.id AS outbox_id, e.topic AS topic, l.kafka_partition AS kafka_partition,"
            " l.kafka_offset AS kafka_offset,"
            " (SELECT COUNT(*) FROM republished r WHERE r.order_id = o.id) AS republished"
            " FROM orders o JOIN outbox e ON e.id = (SELECT MAX(x.id) FROM outbox x WHERE x.msg_key = o.id)"
            " LEFT JOIN outbox_landed l ON l.outbox_id = e.id"
            " WHERE o.status IN ('pending', 'processing', 'confirmed') AND o.updated_at < ?"
            f" AND e.published_at IS NOT NULL AND e.published_at < ?{checked} ORDER BY o.id",
            (published_before, published_before, *((unchecked_since,) if unchecked_since else ())),
        )
        if max_republish is not None:
            rows = [r for r in rows if int(r["republished"]) < max_republish]
        return rows[:limit] if limit is not None else rows

    async def republish(self, order_ids: list[str], published_before: str, reason: str) -> list[str]:
        """Publish again the event of each order that is still not shipped and has not moved since
        `published_before` (the reconciler found its record gone from the broker): an event the broker acknowledged
        and then lost would leave the order stuck for good. The processor takes an order on from where it stands and
        the order service refuses a step backwards or twice, so this can never ship an order twice."""
        stamp = now_iso()
        done = []
        async with self.db.transaction() as tx:
            for order_id in order_ids:
                order = await tx.fetchone(
                    "SELECT * FROM orders WHERE id = ? AND status IN ('pending', 'processing', 'confirmed')"
                    " AND updated_at < ?", (order_id, published_before))
                if order is None:
                    continue  # it moved meanwhile
                # The event again with the trace headers of the last one: the session it was placed for still gets it.
                last = await tx.fetchone("SELECT headers FROM outbox WHERE msg_key = ? ORDER BY id DESC LIMIT 1",
                                         (order_id,))
                trace_headers = carried_on(json.loads(last["headers"])) if last else {}
                await tx.execute(
                    "INSERT INTO outbox (topic, msg_key, msg_value, headers, created_at) VALUES (?, ?, ?, ?, ?)",
                    self._event_row(order_view(order), stamp, trace_headers))
                await tx.execute("INSERT INTO republished (order_id, reason, at) VALUES (?, ?, ?)",
                                 (order_id, reason, stamp))
                done.append(order_id)
        return done

    async def still_held(self, outbox_ids: list[int]) -> None:
        """Note that the broker still holds these events' records (checked now): not looked at again for a while."""
        if not outbox_ids:
            return
        stamp = now_iso()
        async with self.db.transaction() as tx:
            for start in range(0, len(outbox_ids), 500):
                chunk = outbox_ids[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                await tx.execute(f"UPDATE outbox_landed SET checked_at = ? WHERE outbox_id IN ({marks})",
                                 (stamp, *chunk))

    async def get(self, order_id: str) -> dict[str, Any]:
        return await self._one("o.id = ?", order_id)

    async def by_token(self, token: str) -> dict[str, Any]:
        return await self._one("o.tracking_token = ?", token)

    async def _one(self, where: str, value: str) -> dict[str, Any]:
        async with self.db.transaction() as tx:
            row = await tx.fetchone("SELECT o.*, r.session_key AS routed_session FROM orders o"
                                    f" LEFT JOIN order_routed r ON r.order_id = o.id WHERE {where}", (value,))
        if row is None:
            raise NotFound(value)
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
        self, order_id: str, status: str, source: str | None = None, topic: str | None = None,
        routed: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Move an order forward. Returns ({id, status, processed_by}, changed); the same status again is a no-op, so
        redelivered messages cannot step an order twice; a step backwards raises StatusConflict. Changes asked for
        together share one transaction (metalmart.groupcommit). `routed`: the key of the mirrord session whose
        copy of the message this step comes from (a session's processor, whatever its topic is called)."""
        if status not in STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(STATUSES)}")
        if routed is not None and sessions.key_problem(routed):
            raise ValidationError(sessions.ROUTED_HEADER, sessions.key_problem(routed))
        label = "mirrord" if routed else processed_by_label(source)
        return await self._statuses.submit(_Step(order_id, status, label, topic or None, routed or None))

    async def _set_many(self, steps: list[_Step]) -> list[tuple[dict[str, Any], bool] | Exception]:
        """In one transaction, in the order asked (by order id, so two replicas' transactions take row locks in
        the same order); when the transaction fails for anything but the database being away, each step is taken
        on its own, so one step's failure is only its own."""
        order = sorted(range(len(steps)), key=lambda i: steps[i].order_id)
        try:
            async with self.db.transaction() as tx:
                done = await self._steps(tx, [steps[i] for i in order])
                changed = [(step.order_id, step.status, step.label, step.topic, stamp)
                           for step, (result, stamp) in zip((steps[i] for i in order), done, strict=True)
                           if not isinstance(result, Exception) and result[1]]
                if changed:
                    await tx.insert_many(
                        "INSERT INTO order_status_history (order_id, status, processed_by, source_topic, at)", changed)
                routed = {step.order_id: step.routed for step, (result, _) in zip((steps[i] for i in order), done,
                                                                                  strict=True)
                          if step.routed and not isinstance(result, Exception) and result[1]}
                if routed:
                    await tx.insert_many("INSERT INTO order_routed (order_id, session_key)", list(routed.items()),
                                         " ON CONFLICT (order_id) DO NOTHING")
        except Unavailable:
            raise
        except Exception as exc:
            if len(steps) == 1:
                raise
            log.info("%d status changes committed together failed (%s); taking each on its own", len(steps), exc)
            return [await self._set_one(step) for step in steps]
        results: list[tuple[dict[str, Any], bool] | Exception] = [ValueError()] * len(steps)
        for i, (result, _) in zip(order, done, strict=True):
            results[i] = result
        return results

    async def _set_one(self, step: _Step) -> tuple[dict[str, Any], bool] | Exception:
        try:
            return (await self._set_many([step]))[0]
        except Exception as exc:  # this step's own failure, answered to its own request
            return exc

    async def _steps(self, tx: Tx, steps: list[_Step]
                     ) -> list[tuple[tuple[dict[str, Any], bool] | Exception, str]]:
        """The status changes inside the shared transaction, in order: per step the order as it is after it and
        whether it moved, or the reason it did not (NotFound, StatusConflict), which fails only its own request.
        Every step's conditional UPDATE goes at once (one round trip on PostgreSQL); the orders a step did not move
        are read after."""
        if len(steps) > 1 and len({step.order_id for step in steps}) < len(steps):
            # One order twice (a message redelivered beside its next step): each step sees the one before it.
            return [result for step in steps for result in await self._steps(tx, [step])]
        stamp = now_iso()
        updates = []
        for step in steps:
            allowed = _PREDECESSORS[step.status] or ("",)  # "pending" follows nothing: no row matches ""
            marks = ", ".join("?" for _ in allowed)
            updates.append((
                "UPDATE orders SET status = ?, updated_at = ?,"
                " processed_by = COALESCE(?, processed_by), source_topic = COALESCE(?, source_topic)"
                f" WHERE id = ? AND status IN ({marks})",
                (step.status, stamp, step.label, step.topic, step.order_id, *allowed)))
        if self.db.dialect == "postgresql":  # each moved order as it is now, in the same round trip
            moved = await tx.fetch_each([(sql + f" RETURNING {_STEPPED}", params) for sql, params in updates])
        else:  # SQLite in-process: no round trips to save, and RETURNING needs SQLite 3.35 (Ubuntu 20.04 has 3.31)
            moved = [await tx.fetchone(f"SELECT {_STEPPED} FROM orders WHERE id = ?", (step.order_id,))
                     if await tx.execute(sql, params) else None
                     for step, (sql, params) in zip(steps, updates, strict=True)]
        unmoved = [i for i, row in enumerate(moved) if row is None]
        current = dict(zip(unmoved, await tx.fetch_each(
            [(f"SELECT {_STEPPED} FROM orders WHERE id = ?", (steps[i].order_id,)) for i in unmoved]), strict=True))
        results: list[tuple[tuple[dict[str, Any], bool] | Exception, str]] = []
        for i, step in enumerate(steps):
            row = moved[i]
            if row is not None:
                results.append(((row, True), stamp))
            elif (now := current[i]) is None:
                results.append((NotFound(step.order_id), stamp))
            elif now["status"] != step.status:
                results.append((StatusConflict(now["status"], step.status), stamp))
            else:
                results.append(((now, False), stamp))
        return results

    async def stats(self) -> dict[str, Any]:
        async with self.db.transaction() as tx:
            by_status = await tx.fetchall("SELECT status, COUNT(*) AS n FROM orders GROUP BY status")
            by_source = await tx.fetchall(
                "SELECT processed_by, COUNT(*) AS n FROM orders WHERE processed_by IS NOT NULL GROUP BY processed_by"
            )
            shipped = await tx.fetchall(
                "SELECT COALESCE(source_topic, '') AS topic, processed_by, COUNT(*) AS n FROM orders"
                " WHERE status IN ('shipped', 'delivered') GROUP BY COALESCE(source_topic, ''), processed_by")
            pending = await tx.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
            republished = await tx.fetchone("SELECT COUNT(*) AS n FROM republished")
            placed = await tx.fetchall(
                "SELECT s.session_key, COUNT(*) AS n, SUM(CASE WHEN o.status IN ('shipped', 'delivered') THEN 1"
                " ELSE 0 END) AS shipped FROM order_sessions s JOIN orders o ON o.id = s.order_id"
                " GROUP BY s.session_key")
            routed = await tx.fetchall("SELECT session_key, COUNT(*) AS n FROM order_routed GROUP BY session_key")
            overdue = await self.overdue(tx, self.overdue_cutoff())
        processed = {"cluster": 0, "mirrord": 0}
        processed.update({r["processed_by"]: int(r["n"]) for r in by_source})
        return {
            "by_status": {r["status"]: int(r["n"]) for r in by_status},
            "processed_by": processed,
            # Orders shipped, by the topic they were processed from (a mirrord session's own, the fallback, or
            # the original) and who processed them.
            "shipped_by_topic": [{"topic": r["topic"], "processed_by": r["processed_by"] or "cluster",
                                  "shipped": int(r["n"])} for r in shipped],
            "total": sum(int(r["n"]) for r in by_status),
            "outbox_unpublished": int(pending["n"]) if pending else 0,
            "republished": int(republished["n"]) if republished else 0,
            "overdue": len(overdue),
            "overdue_after_s": self.overdue_after_s,
            # Orders placed for a `mirrord up` session, by its key.
            "by_session": {r["session_key"]: {"orders": int(r["n"]), "shipped": int(r["shipped"] or 0)}
                           for r in placed},
            # Orders a session's laptop processed, by the key the operator stamped on the copies it routed there.
            "processed_by_session": {r["session_key"]: int(r["n"]) for r in routed},
        }


async def unpublished(tx: Tx, limit: int, exclude: set[int]) -> list[Row]:
    rows = await tx.fetchall(
        "SELECT id, topic, msg_key, msg_value, headers FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
        (limit + len(exclude),),
    )
    return [r for r in rows if r["id"] not in exclude][:limit]
