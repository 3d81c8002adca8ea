"""The catalogue (HTTP, port 8082): products with stock, and an idempotent seed."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from metalmart import db as dbmod
from metalmart.db import Database
from metalmart.settings import CatalogueSettings
from metalmart.web import OPENER, add_probes, database_unavailable, error

log = logging.getLogger("metalmart.catalogue")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS products (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        category TEXT NOT NULL,
        price_cents {BIG} NOT NULL,
        stock {BIG} NOT NULL
    )""",
]

# (id, name, category, price, stock, description)
PRODUCTS: tuple[tuple[str, str, str, float, int, str], ...] = (
    ("MM-ANVIL-01", "Cast-Iron Anvil 50 kg", "forge", 349.00, 12, "London-pattern anvil with a hardened face."),
    ("MM-HAMMER-02", "Cross-Peen Hammer 1 kg", "tools", 42.50, 80, "Hickory handle, forged head."),
    ("MM-TONGS-03", "Flat-Jaw Tongs", "tools", 29.90, 60, "For stock up to 12 mm."),
    ("MM-COPPER-04", "Copper Sheet 1 mm", "sheet", 58.00, 150, "300 × 300 mm, half-hard C110."),
    ("MM-STEEL-05", "Mild Steel Bar 20 mm", "bar", 17.25, 400, "1 m length, S235JR."),
    ("MM-BRASS-06", "Brass Rod 10 mm", "bar", 23.40, 220, "CZ121, 500 mm."),
    ("MM-TITAN-07", "Titanium Plate 3 mm", "sheet", 189.00, 25, "Grade 5, 150 × 150 mm."),
    ("MM-FLUX-08", "Borax Welding Flux 500 g", "consumables", 9.95, 300, "For forge welding."),
    ("MM-FILE-09", "Bastard File 250 mm", "tools", 14.80, 140, "Double cut."),
    ("MM-APRON-10", "Leather Smithing Apron", "safety", 64.00, 45, "Split cowhide, cross-back straps."),
    ("MM-GLOVE-11", "Heat-Resistant Gloves", "safety", 24.99, 120, "Aramid lining, to 350 °C."),
    ("MM-ALU-12", "Aluminium Angle 25 mm", "bar", 11.60, 260, "6063-T6, 1 m."),
)


def product_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "description": row["description"], "category": row["category"],
        "price": row["price_cents"] / 100, "stock": int(row["stock"]),
    }


async def seed(db: Database) -> dict[str, int]:
    """Insert the catalogue's products; seeding again updates names and prices and leaves stock as it is, so there
    is always exactly one set of products. Returns how many rows were added and how many already existed."""
    await dbmod.migrate(db, SCHEMA)
    added = 0
    async with db.transaction() as tx:
        for pid, name, category, price, stock, description in PRODUCTS:
            exists = await tx.fetchone("SELECT id FROM products WHERE id = ?", (pid,))
            await tx.execute(
                "INSERT INTO products (id, name, description, category, price_cents, stock)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                " description = excluded.description, category = excluded.category,"
                " price_cents = excluded.price_cents",
                (pid, name, description, category, round(price * 100), stock),
            )
            added += exists is None
    return {"added": added, "existing": len(PRODUCTS) - added}


DB = web.AppKey("db", Database)


async def list_products(request: web.Request) -> web.Response:
    async with request.app[DB].transaction() as tx:
        rows = await tx.fetchall("SELECT * FROM products ORDER BY category, name")
    return web.json_response([product_view(r) for r in rows])


async def get_product(request: web.Request) -> web.Response:
    async with request.app[DB].transaction() as tx:
        row = await tx.fetchone("SELECT * FROM products WHERE id = ?", (request.match_info["id"],))
    if row is None:
        return error(404, "product not found", "id")
    return web.json_response(product_view(row))


def build_app(settings: CatalogueSettings | None = None) -> web.Application:
    settings = settings or CatalogueSettings()
    database = dbmod.connect(settings.database_url, 4)
    app = web.Application(middlewares=[database_unavailable])
    app[DB] = database
    opener = app[OPENER] = dbmod.Opener(database, SCHEMA)  # waits for a database that comes later

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        await opener.start()
        log.info("catalogue on port %s, database %s", settings.port, database.dialect)
        yield
        await opener.stop()
        await database.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/api/products", list_products)
    app.router.add_get("/api/products/{id}", get_product)
    add_probes(app, {"database": opener.check})
    return app
