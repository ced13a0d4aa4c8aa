"""Screenshots of the admin console and an account page, at 1400 px and 390 px wide, from a
running `make run` (Playwright driving Debian's chromium; nothing is changed in the system).

    make screenshots                      # against http://127.0.0.1:8000, token from .data
    .venv/bin/python -m scripts.screenshots --url http://127.0.0.1:8123 --account London

It logs in with a development token (minted with the secret `make run` keeps in
``.data/dev-jwt-secret``, or ``--token``), waits until the pages are drawn, and writes
``docs/screenshots/{console,account}-{1400,390}.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTHS = (1400, 390)


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    secret_file = Path(args.data_dir) / "dev-jwt-secret"
    if not secret_file.exists():
        raise SystemExit(f"no {secret_file}: start `make run` first, or pass --token")
    from connector_api.devtokens import mint_dev_token

    return mint_dev_token(
        secret_file.read_text().strip(), org=args.org, role="admin", subject="screenshots"
    )


async def shoot(args: argparse.Namespace, out: Path, token: str) -> list[Path]:
    """Log in once, then photograph both pages at both widths."""
    from playwright.async_api import async_playwright, expect

    written: list[Path] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": WIDTHS[0], "height": 900})
        page = await context.new_page()
        await page.goto(f"{args.url}/admin")
        await page.fill("textarea[name=token]", token)
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_test_id("counts")).to_be_visible()
        link = page.locator("table.accounts td.house a", has_text=args.account).first
        if await link.count() == 0:
            link = page.locator("table.accounts td.house a").first
        account_url = args.url + str(await link.get_attribute("href"))
        for name, url in (("console", f"{args.url}/admin"), ("account", account_url)):
            for width in WIDTHS:
                await page.set_viewport_size({"width": width, "height": 900})
                await page.goto(url)
                await page.wait_for_load_state("networkidle")
                path = out / f"{name}-{width}.png"
                await page.screenshot(path=str(path), full_page=True)
                written.append(path)
        await context.close()
        await browser.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running API")
    parser.add_argument("--data-dir", default=".data", help="`make run`'s data folder")
    parser.add_argument("--token", help="an admin token (default: minted from the data folder)")
    parser.add_argument("--org", default="demo")
    parser.add_argument("--account", default="London", help="the account page to photograph")
    parser.add_argument("--out", default="docs/screenshots")
    args = parser.parse_args()
    if shutil.which(CHROMIUM) is None:
        print(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(args, out, _token(args))):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
