"""Results tables measured by one command (`fastssl report ...`).

- `few_label.py`: the rows of the few-label table (scratch, linear probes, fine-tune, self-training);
- `table.py`: CSV and markdown output;
- `commands.py`: `fastssl report few-label`.
"""
