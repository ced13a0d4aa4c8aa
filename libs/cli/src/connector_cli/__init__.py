"""connector_cli."""
