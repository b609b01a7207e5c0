"""Smooth building blocks shared by every model (the lowest layer: imports only torch)."""
