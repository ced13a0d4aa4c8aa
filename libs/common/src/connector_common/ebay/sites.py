"""Every eBay site: Trading site id and site code, REST marketplace id, Finding global id.

One table, from eBay's SiteCodeType, SiteIDToGlobalID and MarketplaceIdEnum pages. The UK is
site 3, Trading code ``UK``, marketplace ``EBAY_GB``; eBay Motors is site 100, ``eBayMotors``,
``EBAY_MOTORS_US``. Nothing else in the code base may assume a site: look it up here.
"""

from __future__ import annotations

from dataclasses import dataclass


class UnknownSiteError(LookupError):
    """No eBay site matches the given id, code or marketplace."""


@dataclass(frozen=True)
class Site:
    """One eBay site."""

    site_id: int
    code: str  # Trading API SiteCodeType (the ``User/Site`` value)
    marketplace_id: str  # REST X-EBAY-C-MARKETPLACE-ID
    global_id: str  # Finding/Shopping global id
    name: str
    language: str  # Accept-Language / Content-Language for this site
    currency: str


SITES: tuple[Site, ...] = (
    Site(0, "US", "EBAY_US", "EBAY-US", "United States", "en-US", "USD"),
    Site(2, "Canada", "EBAY_CA", "EBAY-ENCA", "Canada (English)", "en-CA", "CAD"),
    Site(3, "UK", "EBAY_GB", "EBAY-GB", "United Kingdom", "en-GB", "GBP"),
    Site(15, "Australia", "EBAY_AU", "EBAY-AU", "Australia", "en-AU", "AUD"),
    Site(16, "Austria", "EBAY_AT", "EBAY-AT", "Austria", "de-AT", "EUR"),
    Site(23, "Belgium_French", "EBAY_BE", "EBAY-FRBE", "Belgium (French)", "fr-BE", "EUR"),
    Site(71, "France", "EBAY_FR", "EBAY-FR", "France", "fr-FR", "EUR"),
    Site(77, "Germany", "EBAY_DE", "EBAY-DE", "Germany", "de-DE", "EUR"),
    Site(100, "eBayMotors", "EBAY_MOTORS_US", "EBAY-MOTOR", "eBay Motors", "en-US", "USD"),
    Site(101, "Italy", "EBAY_IT", "EBAY-IT", "Italy", "it-IT", "EUR"),
    Site(123, "Belgium_Dutch", "EBAY_BE", "EBAY-NLBE", "Belgium (Dutch)", "nl-BE", "EUR"),
    Site(146, "Netherlands", "EBAY_NL", "EBAY-NL", "Netherlands", "nl-NL", "EUR"),
    Site(186, "Spain", "EBAY_ES", "EBAY-ES", "Spain", "es-ES", "EUR"),
    Site(193, "Switzerland", "EBAY_CH", "EBAY-CH", "Switzerland", "de-CH", "CHF"),
    Site(201, "HongKong", "EBAY_HK", "EBAY-HK", "Hong Kong", "zh-HK", "HKD"),
    Site(203, "India", "EBAY_IN", "EBAY-IN", "India", "en-IN", "INR"),
    Site(205, "Ireland", "EBAY_IE", "EBAY-IE", "Ireland", "en-IE", "EUR"),
    Site(207, "Malaysia", "EBAY_MY", "EBAY-MY", "Malaysia", "en-MY", "MYR"),
    Site(210, "CanadaFrench", "EBAY_CA", "EBAY-FRCA", "Canada (French)", "fr-CA", "CAD"),
    Site(211, "Philippines", "EBAY_PH", "EBAY-PH", "Philippines", "en-PH", "PHP"),
    Site(212, "Poland", "EBAY_PL", "EBAY-PL", "Poland", "pl-PL", "PLN"),
    Site(216, "Singapore", "EBAY_SG", "EBAY-SG", "Singapore", "en-SG", "SGD"),
)

_BY_ID: dict[int, Site] = {site.site_id: site for site in SITES}
_BY_CODE: dict[str, Site] = {site.code.lower(): site for site in SITES}
# Two sites share EBAY_BE and EBAY_CA; the marketplace's main site is the one listed first
# (Belgium_French 23, Canada 2), as eBay's own SiteIDToGlobalID page orders them.
_BY_MARKETPLACE: dict[str, Site] = {}
for _site in SITES:
    _BY_MARKETPLACE.setdefault(_site.marketplace_id, _site)


def site_by_id(site_id: int) -> Site:
    """The site with this Trading site id (``X-EBAY-API-SITEID``)."""
    try:
        return _BY_ID[site_id]
    except KeyError:
        raise UnknownSiteError(f"unknown eBay site id {site_id!r}") from None


def site_by_code(code: str) -> Site:
    """The site for a Trading ``SiteCodeType`` value (``UK``, ``eBayMotors``); case-insensitive."""
    try:
        return _BY_CODE[code.strip().lower()]
    except (KeyError, AttributeError):
        raise UnknownSiteError(f"unknown eBay site code {code!r}") from None


def site_for_marketplace(marketplace_id: str) -> Site:
    """The main site of a REST marketplace id (``EBAY_GB`` -> site 3)."""
    try:
        return _BY_MARKETPLACE[marketplace_id.strip().upper()]
    except (KeyError, AttributeError):
        raise UnknownSiteError(f"unknown eBay marketplace id {marketplace_id!r}") from None


def sites_for_marketplace(marketplace_id: str) -> tuple[Site, ...]:
    """Every site of a marketplace (EBAY_BE has 23 and 123; EBAY_CA has 2 and 210)."""
    found = tuple(s for s in SITES if s.marketplace_id == marketplace_id.strip().upper())
    if not found:
        raise UnknownSiteError(f"unknown eBay marketplace id {marketplace_id!r}")
    return found
