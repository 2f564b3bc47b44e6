"""Saves this example's quiz as a Hugging Face dataset folder (``datasets``' ``save_to_disk``), with
a ``train`` and a ``test`` split, as a dataset prepared elsewhere would arrive:

    python examples/geography/save_dataset.py      # -> examples/geography/dataset/

``dataset.yaml`` trains on its ``train`` split and evaluates on its ``test`` split.
"""

from pathlib import Path

import datasets

HERE = Path(__file__).parent


def main(out: Path = HERE / "dataset") -> Path:
    quiz = datasets.load_dataset("json", data_files=str(HERE / "quiz.jsonl"), split="train")
    # every third country's questions are the test split, so no country is in both
    countries = sorted({i.split("-", 1)[1] for i in quiz["id"]})
    test = set(countries[::3])
    split = datasets.DatasetDict({
        "train": quiz.filter(lambda row: row["id"].split("-", 1)[1] not in test),
        "test": quiz.filter(lambda row: row["id"].split("-", 1)[1] in test)})
    split.save_to_disk(str(out))
    print(out, {name: len(part) for name, part in split.items()})
    return out


if __name__ == "__main__":
    main()
