"""eBay notifications the API receives: Marketplace Account Deletion (docs/ebay-compliance.md)."""
