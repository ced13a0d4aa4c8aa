"""connector_health_checker."""
