"""The catalogue's seed, and the storefront driven by a person's clicks in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from demokit.probes import free_port, http_ok, until
from tests.helpers import AppStack, Broker, Proc, request, service, sql


def _seed(database_url: str) -> dict[str, int]:
    import json

    out = subprocess.run([sys.executable, "-m", "metalmart", "seed"], env={"DATABASE_URL": database_url,
                         "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_seeding_twice_leaves_one_set_of_products(database_url: str) -> None:
    first = _seed(database_url)
    second = _seed(database_url)
    assert first["added"] == 12
    assert second == {"added": 0, "existing": 12}
    assert sql(database_url, "SELECT COUNT(*) AS n FROM products")[0]["n"] == 12


@pytest.fixture
def shop(broker: Broker, tmp_path: Path, log_dir: Path) -> Iterator[tuple[AppStack, str, Proc]]:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    _seed(url)
    stack = AppStack(broker.bootstrap, url, log_dir).start()
    cat_port, front_port = free_port(), free_port()
    catalogue = service("catalogue", {"DATABASE_URL": url, "PORT": str(cat_port)}, log_dir).start()
    front = service("storefront", {"PORT": str(front_port), "ORDER_SERVICE_URL": stack.base,
                                   "CATALOGUE_URL": f"http://127.0.0.1:{cat_port}", "DEMO_MODE": "true"},
                    log_dir).start()
    base = f"http://127.0.0.1:{front_port}"
    # The storefront is ready without its services (its pages say when they are away): wait for each.
    until(lambda: http_ok(f"http://127.0.0.1:{cat_port}/ready"), 30, "catalogue")
    until(lambda: http_ok(f"{base}/ready"), 30, "storefront")
    yield stack, base, catalogue
    front.stop()
    catalogue.stop()
    stack.stop()


def test_catalogue_lists_seeded_products_with_stock(shop: tuple[AppStack, str, Proc]) -> None:
    _, _, catalogue = shop
    port = catalogue.env["PORT"]
    code, products = request("GET", f"http://127.0.0.1:{port}/api/products")
    assert code == 200
    assert len(products) == 12
    anvil = request("GET", f"http://127.0.0.1:{port}/api/products/MM-ANVIL-01")[1]
    assert (anvil["price"], anvil["stock"]) == (349.0, 12)
    assert request("GET", f"http://127.0.0.1:{port}/api/products/nope")[0] == 404


@pytest.mark.browser
def test_a_person_orders_in_the_storefront_and_watches_it_ship(shop: tuple[AppStack, str, Proc]) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is missing; `./run test` installs it (scripts/ensure-test-deps.sh)")
    from playwright.sync_api import sync_playwright

    stack, base, _ = shop
    email = f"visitor-{uuid.uuid4().hex[:6]}@anything.example"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        page = browser.new_page()
        page.goto(base)
        assert page.locator(".product").count() == 12
        page.select_option("select[name=product_id]", "MM-COPPER-04")
        page.fill("input[name=quantity]", "2")
        page.fill("input[name=email]", "not an e-mail")
        page.fill("input[name=name]", "Vera Visitor")
        page.fill("input[name=street]", "7 Rivet Row")
        page.fill("input[name=city]", "Pittsburgh")
        page.fill("input[name=zip_code]", "15201")
        # The browser's own check stops a malformed address; the service's check must stop it too.
        page.eval_on_selector("form.order", "f => f.noValidate = true")
        page.click("button[type=submit]")
        assert "e-mail" in page.locator("#problem").inner_text() or "email" in page.locator("#problem").inner_text()
        page.fill("input[name=email]", email)
        page.fill("input[name=session_key]", "vera")  # for her `mirrord up` session
        page.click("button[type=submit]")
        page.wait_for_url("**/track/**")
        page.wait_for_function("document.querySelector('#status').textContent === 'shipped'", timeout=30000)
        assert page.locator("#processed-by").inner_text() == "the cluster"
        page.screenshot(path=str(Path(stack.log_dir) / "storefront-shipped.png"))
        browser.close()
    orders = request("GET", f"{stack.base}/api/orders?email={email}")[1]
    assert [(o["status"], o["total_amount"]) for o in orders] == [("shipped", 116.0)]
    assert stack.stats()["by_session"] == {"vera": {"orders": 1, "shipped": 1}}, "placed for her session"
