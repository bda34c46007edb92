"""Super-resolution task."""
