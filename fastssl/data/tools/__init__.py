"""Command-line data tools: `fastssl data convert` (convert.py)."""
