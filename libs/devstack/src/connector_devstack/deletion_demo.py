"""`connector dev`: register the API's account-deletion endpoint with the sandbox (as a
developer does in eBay's portal), and tell the person how to make eBay delete a seller."""

from __future__ import annotations

import json
import shlex

import httpx

from connector_devstack.dev import say, show

DELETION_PATH = "/ebay/notifications/account-deletion"


def register(
    http: httpx.Client,
    api_url: str,
    sandbox_url: str,
    verification_token: str,
    nats_url: str | None,
    example_seller: str | None = None,
) -> bool:
    """Register the endpoint (the sandbox runs eBay's challenge against it); True when it held."""
    response = http.post(
        f"{sandbox_url}/_sandbox/notifications/endpoint",
        json={"url": f"{api_url}{DELETION_PATH}", "verification_token": verification_token},
        timeout=30,
    )
    if response.status_code != 200:
        say(f"account deletion: the sandbox could not verify {DELETION_PATH} ({response.text})")
        return False
    say(
        f"account deletion: {api_url}{DELETION_PATH} registered with the sandbox (challenge passed)"
    )
    user_id = "<ebay user id from the admin page>"
    if example_seller:
        found = http.get(f"{sandbox_url}/_sandbox/sellers/{example_seller}", timeout=10)
        if found.status_code == 200:
            user_id = str(found.json().get("user_id") or user_id)
    body = json.dumps({"user_id": user_id})
    say("to play eBay deleting a seller's account (the admin page then shows it purged):")
    show(
        f"  curl -s -X POST {sandbox_url}/_sandbox/notifications/account-deletion "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )
    if nats_url:
        say("and to watch the events on NATS (account.deleted_by_ebay among them):")
        show(f"  .venv/bin/connector events --nats-url {nats_url} --follow")
    return True
