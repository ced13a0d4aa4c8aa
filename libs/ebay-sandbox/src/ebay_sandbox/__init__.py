"""ebay_sandbox."""
