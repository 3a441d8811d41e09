"""Where images come from: `ImageSource` (base.py), one module per stored format, and
`open_source` (factory.py), which picks the class for a path and dataset name."""
