"""eBay's daily call budget: counting every call, and planning work within the limits."""
