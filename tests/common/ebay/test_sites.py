"""The site table: every eBay site in the API notes, and lookups by id, code and marketplace."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from connector_common.ebay import (
    SITES,
    UnknownSiteError,
    site_by_code,
    site_by_id,
    site_for_marketplace,
    sites_for_marketplace,
)

# Copied from the table in ebay-api-notes.md (SiteCodeType, SiteIDToGlobalID, MarketplaceIdEnum).
NOTES_TABLE = [
    (0, "US", "EBAY_US", "EBAY-US"),
    (2, "Canada", "EBAY_CA", "EBAY-ENCA"),
    (3, "UK", "EBAY_GB", "EBAY-GB"),
    (15, "Australia", "EBAY_AU", "EBAY-AU"),
    (16, "Austria", "EBAY_AT", "EBAY-AT"),
    (23, "Belgium_French", "EBAY_BE", "EBAY-FRBE"),
    (123, "Belgium_Dutch", "EBAY_BE", "EBAY-NLBE"),
    (71, "France", "EBAY_FR", "EBAY-FR"),
    (77, "Germany", "EBAY_DE", "EBAY-DE"),
    (100, "eBayMotors", "EBAY_MOTORS_US", "EBAY-MOTOR"),
    (101, "Italy", "EBAY_IT", "EBAY-IT"),
    (146, "Netherlands", "EBAY_NL", "EBAY-NL"),
    (186, "Spain", "EBAY_ES", "EBAY-ES"),
    (193, "Switzerland", "EBAY_CH", "EBAY-CH"),
    (201, "HongKong", "EBAY_HK", "EBAY-HK"),
    (203, "India", "EBAY_IN", "EBAY-IN"),
    (205, "Ireland", "EBAY_IE", "EBAY-IE"),
    (207, "Malaysia", "EBAY_MY", "EBAY-MY"),
    (210, "CanadaFrench", "EBAY_CA", "EBAY-FRCA"),
    (211, "Philippines", "EBAY_PH", "EBAY-PH"),
    (212, "Poland", "EBAY_PL", "EBAY-PL"),
    (216, "Singapore", "EBAY_SG", "EBAY-SG"),
]


@pytest.mark.parametrize(("site_id", "code", "marketplace", "global_id"), NOTES_TABLE)
def test_every_site_maps_id_code_marketplace_and_global_id(
    site_id: int, code: str, marketplace: str, global_id: str
) -> None:
    site = site_by_id(site_id)
    assert (site.code, site.marketplace_id, site.global_id) == (code, marketplace, global_id)
    assert site_by_code(code) is site
    assert site in sites_for_marketplace(marketplace)


def test_table_holds_exactly_the_sites_of_the_notes() -> None:
    assert sorted(s.site_id for s in SITES) == sorted(row[0] for row in NOTES_TABLE)


def test_uk_is_site_3_with_code_uk_and_marketplace_ebay_gb() -> None:
    assert site_for_marketplace("EBAY_GB") == site_by_code("UK") == site_by_id(3)


def test_motors_is_site_100_and_ebay_motors_us() -> None:
    assert site_for_marketplace("EBAY_MOTORS_US") == site_by_code("eBayMotors") == site_by_id(100)


def test_shared_marketplaces_resolve_to_their_main_site() -> None:
    assert site_for_marketplace("EBAY_CA").site_id == 2
    assert site_for_marketplace("EBAY_BE").site_id == 23
    assert {s.site_id for s in sites_for_marketplace("EBAY_CA")} == {2, 210}
    assert site_by_id(210).language == "fr-CA"


def test_lookups_ignore_case_and_spaces() -> None:
    assert site_by_code(" uk ").site_id == 3
    assert site_for_marketplace("ebay_de").site_id == 77


@pytest.mark.parametrize(
    "lookup",
    [
        lambda: site_by_id(999),
        lambda: site_by_code("GB"),  # the REST name is not a Trading site code
        lambda: site_for_marketplace("EBAY_UK"),
        lambda: site_for_marketplace("EBAY_MOTORS"),  # Inventory API's name, not a marketplace
        lambda: sites_for_marketplace("EBAY_XX"),
    ],
)
def test_unknown_sites_raise_a_clear_error(lookup: Callable[[], object]) -> None:
    with pytest.raises(UnknownSiteError, match="unknown eBay"):
        lookup()
