"""Writes this folder's fixtures with the real Hugging Face ``datasets`` library (not a project dependency: run it in
a throwaway venv, ``python -m venv /tmp/hf && /tmp/hf/bin/pip install datasets pillow``, then
``HF_DATASETS_OFFLINE=1 /tmp/hf/bin/python tests/data/domains_hf/make_fixtures.py``). Written with datasets 5.2.0,
pyarrow 26.0.1, Pillow 13.0.0; the tests read the files with pyarrow only.

- ``text_parquet/data/{train,test}-00000-of-00001.parquet``: a text dataset in the Hub's Parquet layout
  (``push_to_hub`` writes each shard with ``to_parquet``), train in row groups of 4 rows;
- ``text_arrow/``: the same as a ``DatasetDict.save_to_disk`` folder (``dataset_dict.json``, ``train/`` in two
  Arrow shards, ``test/``);
- ``caption_parquet/data/train-00000-of-00001.parquet`` and ``caption_arrow/`` (``save_to_disk``): an ``Image``
  column (PNG bytes) and a ``caption`` column; image i is 24x32, grey level 20 * i.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import numpy as np
import PIL.Image

HERE = Path(__file__).parent


def main() -> None:
    for name in ("text_parquet", "text_arrow", "caption_parquet", "caption_arrow"):
        shutil.rmtree(HERE / name, ignore_errors=True)
    train = datasets.Dataset.from_dict({"text": [f"train document {i}: " + " ".join(f"w{i}x{j}" for j in range(20 + i))
                                                 for i in range(10)], "id": list(range(10))})
    test = datasets.Dataset.from_dict({"text": [f"test document {i} only for evaluation." for i in range(3)],
                                       "id": list(range(100, 103))})
    (HERE / "text_parquet" / "data").mkdir(parents=True)
    train.to_parquet(str(HERE / "text_parquet" / "data" / "train-00000-of-00001.parquet"), batch_size=4)
    test.to_parquet(str(HERE / "text_parquet" / "data" / "test-00000-of-00001.parquet"))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(
        str(HERE / "text_arrow"), num_shards={"train": 2, "test": 1})

    images = [PIL.Image.fromarray(np.full((24, 32, 3), 20 * i, np.uint8)) for i in range(6)]
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    pairs = datasets.Dataset.from_dict({"image": images, "caption": [f"a grey square of level {20 * i}"
                                                                      for i in range(6)]}, features=features)
    (HERE / "caption_parquet" / "data").mkdir(parents=True)
    pairs.to_parquet(str(HERE / "caption_parquet" / "data" / "train-00000-of-00001.parquet"), batch_size=2)
    pairs.save_to_disk(str(HERE / "caption_arrow"))


if __name__ == "__main__":
    main()
