"""connector_devstack: the development stack (embedded servers, `connector dev`, demo data)."""
