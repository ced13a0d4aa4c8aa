"""connector_token_refresher."""
