"""Where images come from: `ImageSource` (base.py), one module per stored format, and
`open_source` (factory.py), which picks the class for a path and dataset name.

Each format registers its opener under its `--data.dataset` name (`@SOURCES.register`,
fastssl/registry.py); importing this package imports them all, in the order `--help` lists them.
scikit-learn and torchvision are imported only when their sets are opened.
"""

from fastssl.data.sources import digits as _digits  # noqa: F401
from fastssl.data.sources import npz_shards as _npz_shards  # noqa: F401, I001
from fastssl.data.sources import image_folder as _image_folder  # noqa: F401, I001
from fastssl.data.sources import file_list as _file_list  # noqa: F401, I001
from fastssl.data.sources import webdataset as _webdataset  # noqa: F401, I001
from fastssl.data.sources import torchvision_sets as _torchvision_sets  # noqa: F401, I001
