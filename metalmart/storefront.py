"""The storefront (HTTP, port 8080): server-rendered pages, no JavaScript build chain.

A person picks a product, types any e-mail and places an order; the tracking page refreshes itself until the
order is shipped and shows whether the cluster or a mirrord session processed it.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import jinja2
from aiohttp import web

from metalmart import sessions
from metalmart.orders import PIPELINE
from metalmart.services import probe
from metalmart.settings import StorefrontSettings
from metalmart.web import add_probes

log = logging.getLogger("metalmart.storefront")

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("metalmart", "templates"), autoescape=jinja2.select_autoescape(["html"])
)
HTTP = web.AppKey("http", aiohttp.ClientSession)
SETTINGS = web.AppKey("settings", StorefrontSettings)


def render(name: str, status: int = 200, **context: Any) -> web.Response:
    return web.Response(text=ENV.get_template(name).render(**context), status=status, content_type="text/html")


async def _products(app: web.Application) -> list[dict[str, Any]]:
    async with app[HTTP].get(f"{app[SETTINGS].catalogue_url}/api/products") as resp:
        resp.raise_for_status()
        return await resp.json()


async def index(request: web.Request, form: dict[str, str] | None = None, problem: str | None = None,
                status: int = 200) -> web.Response:
    try:
        products = await _products(request.app)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return render("index.html", status=503, products=[], form=form or {},
                      problem=f"The catalogue is not answering ({type(exc).__name__}). Try again in a moment.",
                      demo_mode=request.app[SETTINGS].demo_mode)
    return render("index.html", status=status, products=products, form=form or {}, problem=problem,
                  demo_mode=request.app[SETTINGS].demo_mode)


async def place_order(request: web.Request) -> web.StreamResponse:
    form = {k: str(v).strip() for k, v in (await request.post()).items()}
    app = request.app
    try:
        products = {p["id"]: p for p in await _products(app)}
        quantity = int(form.get("quantity") or "1")
    except ValueError:
        return await index(request, form, "Quantity must be a whole number.", 422)
    except (aiohttp.ClientError, TimeoutError):
        return await index(request, form, "The catalogue is not answering; try again in a moment.", 503)
    product = products.get(form.get("product_id", ""))
    if product is None:
        return await index(request, form, "Pick a product from the list.", 422)
    body = {
        "customer_email": form.get("email", ""),
        "customer_name": form.get("name", ""),
        "shipping_address": {
            "street": form.get("street", ""), "city": form.get("city", ""), "state": form.get("state", ""),
            "zip_code": form.get("zip_code", ""), "country": form.get("country", ""),
        },
        "items": [{"product_id": product["id"], "product_name": product["name"], "quantity": quantity,
                   "price": product["price"]}],
    }
    # A `mirrord up` session's orders: the key typed in the form, set in the baggage the request came with (what
    # mirrord's browser extension adds), else that baggage as it came; carried on to the order service, which
    # carries it on into the event's Kafka headers.
    key = form.get("session_key", "")
    if key and sessions.key_problem(key):
        return await index(request, form, f"Please check the session key: {sessions.key_problem(key)}.", 422)
    trace = sessions.marked(key, request.headers) if key else {
        name: value for name, value in request.headers.items() if name.lower() in sessions.CARRIED}
    try:
        async with app[HTTP].post(f"{app[SETTINGS].order_service_url}/api/orders", json=body,
                                  headers=trace or None) as resp:
            answer = await resp.json(content_type=None)
            if resp.status == 422:
                field = answer.get("field", "").replace("customer_", "").replace("shipping_address.", "")
                field = "the session key" if field == "baggage" else field
                return await index(request, form, f"Please check {field}: {answer.get('error')}.", 422)
            if resp.status != 201:
                return await index(request, form, f"The order service answered {resp.status}; try again.", 502)
    except (aiohttp.ClientError, TimeoutError):
        return await index(request, form, "The order service is not answering; try again in a moment.", 503)
    raise web.HTTPSeeOther(f"/track/{answer['tracking_token']}")


async def track(request: web.Request) -> web.Response:
    app = request.app
    token = request.match_info["token"]
    try:
        async with app[HTTP].get(f"{app[SETTINGS].order_service_url}/api/orders/track/{token}") as resp:
            if resp.status == 404:
                return render("track.html", status=404, order=None, steps=[], token=token)
            resp.raise_for_status()
            order = await resp.json()
    except (aiohttp.ClientError, TimeoutError):
        return render("track.html", status=503, order=None, steps=[], token=token, unavailable=True)
    reached = {h["status"]: h for h in order.get("history", [])}
    steps = [{"status": s, "done": s in reached, "at": reached.get(s, {}).get("at")} for s in PIPELINE[:4]]
    return render("track.html", order=order, steps=steps, token=token,
                  refresh=order["status"] in ("pending", "processing", "confirmed"))


def _upstream(app: web.Application, name: str, url: str) -> Any:
    async def check() -> None:
        async with app[HTTP].get(f"{url}{probe('health')}") as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")

    return check


def build_app(settings: StorefrontSettings | None = None) -> web.Application:
    settings = settings or StorefrontSettings()
    app = web.Application()
    app[SETTINGS] = settings

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        app[HTTP] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        log.info("storefront on port %s; orders at %s, catalogue at %s", settings.port,
                 settings.order_service_url, settings.catalogue_url)
        yield
        await app[HTTP].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/", index)
    app.router.add_post("/order", place_order)
    app.router.add_get("/track/{token}", track)
    # Ready whenever it answers: with the order service or the catalogue away, its pages say so themselves, which a
    # presenter's browser shows instead of "connection refused" from a NodePort with no endpoint. They are reported.
    add_probes(app, {}, {name: _upstream(app, name, url) for name, url in (
        ("order", settings.order_service_url), ("catalogue", settings.catalogue_url))})
    return app
