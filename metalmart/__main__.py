"""`python -m metalmart order|processor|catalogue|storefront|seed|smoke|loadgen`: one image, one entry point each."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from metalmart.settings import SettingsError
from metalmart.smoke import SmokeFailed

SERVICES = ("order", "processor", "catalogue", "storefront", "seed", "smoke", "loadgen")


def _run(service: str, timeout: float) -> None:
    if service == "order":
        from metalmart import web
        from metalmart.order_service import build_app
        from metalmart.settings import OrderSettings

        settings = OrderSettings()
        web.serve(lambda: build_app(settings), settings.port, settings.workers)
    elif service == "catalogue":
        from metalmart import web
        from metalmart.catalogue import build_app
        from metalmart.settings import CatalogueSettings

        cat = CatalogueSettings()
        web.serve(build_app(cat), cat.port)
    elif service == "storefront":
        from metalmart import web
        from metalmart.settings import StorefrontSettings
        from metalmart.storefront import build_app

        front = StorefrontSettings()
        web.serve(build_app(front), front.port)
    elif service == "processor":
        import asyncio

        from metalmart.processor import main
        from metalmart.web import new_event_loop

        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(main())
    elif service == "seed":
        import asyncio

        from metalmart import db as dbmod
        from metalmart.catalogue import seed
        from metalmart.settings import CatalogueSettings

        async def go() -> dict[str, int]:
            database = dbmod.connect(CatalogueSettings().database_url, 1)
            await database.open()
            try:
                return await seed(database)
            finally:
                await database.close()

        print(json.dumps(asyncio.run(go())))
    elif service == "smoke":
        from metalmart.services import local_url
        from metalmart.settings import env_str
        from metalmart.smoke import smoke

        order = smoke(env_str("ORDER_SERVICE_URL", local_url("order")), timeout)
        print(f"order {order['order_number']} shipped (processed by {order.get('processed_by') or 'cluster'})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadgen"]:
        from metalmart.loadgen import cli

        return cli(argv[1:])
    parser = argparse.ArgumentParser(prog="metalmart", description=__doc__)
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--timeout", type=float, default=60.0, help="smoke: seconds the order may take to ship")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stdout,
        format=f"%(asctime)s %(levelname)s {args.service} %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        _run(args.service, args.timeout)
    except SmokeFailed as exc:
        print(f"metalmart smoke: {exc}", file=sys.stderr)
        return 1
    except SettingsError as exc:
        print(f"metalmart {args.service}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
