"""Small helpers shared across esam: atomic file output and run metadata."""
