"""connector_api."""
