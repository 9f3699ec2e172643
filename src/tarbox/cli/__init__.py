"""Command-line interface (``tarbox``)."""
