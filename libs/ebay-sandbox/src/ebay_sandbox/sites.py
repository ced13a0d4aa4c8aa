"""The eBay sites the sandbox knows: site id, Trading site code, REST marketplace id, country.

This table is the sandbox's own copy, on purpose: the sandbox stands in for eBay and must not share
the client's code, or a mistake in one table would hide in both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxSite:
    """One eBay site as eBay's own APIs name it."""

    site_id: int
    code: str  # Trading SiteCodeType
    marketplace_id: str  # REST marketplace id
    country: str  # ISO 3166 country of registration addresses


SITES: tuple[SandboxSite, ...] = (
    SandboxSite(0, "US", "EBAY_US", "US"),
    SandboxSite(2, "Canada", "EBAY_CA", "CA"),
    SandboxSite(3, "UK", "EBAY_GB", "GB"),
    SandboxSite(15, "Australia", "EBAY_AU", "AU"),
    SandboxSite(16, "Austria", "EBAY_AT", "AT"),
    SandboxSite(23, "Belgium_French", "EBAY_BE", "BE"),
    SandboxSite(71, "France", "EBAY_FR", "FR"),
    SandboxSite(77, "Germany", "EBAY_DE", "DE"),
    SandboxSite(100, "eBayMotors", "EBAY_MOTORS_US", "US"),
    SandboxSite(101, "Italy", "EBAY_IT", "IT"),
    SandboxSite(123, "Belgium_Dutch", "EBAY_BE", "BE"),
    SandboxSite(146, "Netherlands", "EBAY_NL", "NL"),
    SandboxSite(186, "Spain", "EBAY_ES", "ES"),
    SandboxSite(193, "Switzerland", "EBAY_CH", "CH"),
    SandboxSite(201, "HongKong", "EBAY_HK", "HK"),
    SandboxSite(203, "India", "EBAY_IN", "IN"),
    SandboxSite(205, "Ireland", "EBAY_IE", "IE"),
    SandboxSite(207, "Malaysia", "EBAY_MY", "MY"),
    SandboxSite(210, "CanadaFrench", "EBAY_CA", "CA"),
    SandboxSite(211, "Philippines", "EBAY_PH", "PH"),
    SandboxSite(212, "Poland", "EBAY_PL", "PL"),
    SandboxSite(216, "Singapore", "EBAY_SG", "SG"),
)

_BY_ID = {site.site_id: site for site in SITES}
# The first site listed for a marketplace is its main one (EBAY_CA -> Canada, not CanadaFrench).
_BY_MARKETPLACE: dict[str, SandboxSite] = {}
for _site in SITES:
    _BY_MARKETPLACE.setdefault(_site.marketplace_id, _site)


def site_by_id(site_id: int) -> SandboxSite | None:
    """The site with this Trading site id, or None."""
    return _BY_ID.get(site_id)


def site_for(value: str | int) -> SandboxSite | None:
    """A site from an id, a Trading code (``UK``) or a marketplace id (``EBAY_GB``)."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return _BY_ID.get(int(value))
    upper = value.upper()
    if upper in _BY_MARKETPLACE:
        return _BY_MARKETPLACE[upper]
    for site in SITES:
        if site.code.upper() == upper:
            return site
    return None
