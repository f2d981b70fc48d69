"""The QVD HTTP dialect: one implementation for the L7R, the VMA and their clients."""
