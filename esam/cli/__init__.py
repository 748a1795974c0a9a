"""The ``esam`` command line."""
