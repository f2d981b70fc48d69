"""The API's actions, one module per family of objects."""
