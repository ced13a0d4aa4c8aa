"""connector_scheduler."""
