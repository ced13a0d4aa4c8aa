"""connector_common."""
