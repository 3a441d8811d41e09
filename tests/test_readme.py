"""The README's recipe table says what each recipe is: size, batch and epochs as the code has them."""

import re
from pathlib import Path

import pytest

from fastssl.recipes import RECIPES

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
# | `name` | method | backbone | data | size | batch | epochs | notes |
ROWS = [r for r in (line.split("|")[1:-1] for line in README.splitlines() if line.startswith("| `"))
        if len(r) == 8 and re.fullmatch(r" `[\w.-]+` ", r[0]) and r[4].strip().isdigit()]


def test_the_table_is_found():
    assert len(ROWS) >= 25


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r[0].strip(" `"))
def test_recipe_row_matches_the_recipe(row):
    name = row[0].strip(" `")
    cfg = RECIPES.get(name)()
    size, batch, epochs = (int(c.strip().replace(",", "")) for c in row[4:7])
    assert (size, batch, epochs) == (cfg.data.image_size, cfg.train.batch_size, cfg.train.epochs)
