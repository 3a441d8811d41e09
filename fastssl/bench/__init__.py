"""Benchmarks behind `fastssl bench`: one harness (`harness`: timing, peak memory, provenance),
one way to report (`report`: CSV, PNG, table, JSON), and one module per benchmark
(`loss`, `loader`, `backbone`, `step`). `commands.add_parser` wires them into the CLI.
"""
