"""Command-line interface: `mlret`."""
