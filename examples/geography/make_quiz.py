"""Writes quiz.jsonl, this example's data, from countries.csv: three questions per country.

    python examples/geography/make_quiz.py

Rows: {"id", "question", "answer", "kind"}; ``kind`` (capital, continent, country) is an extra
column that ratchet passes through to the judge (judge.py reads it).
"""

import csv
import json
from pathlib import Path

HERE = Path(__file__).parent


def questions(country: str, capital: str, continent: str):
    yield "capital", f"What is the capital of {country}?", capital
    yield "continent", f"On which continent is {country}?", continent
    yield "country", f"{capital} is the capital of which country?", country


def main() -> None:
    with (HERE / "countries.csv").open() as f, (HERE / "quiz.jsonl").open("w") as out:
        for row in csv.DictReader(f):
            for kind, question, answer in questions(row["country"], row["capital"], row["continent"]):
                slug = row["country"].lower().replace(" ", "-")
                out.write(json.dumps({"id": f"{kind}-{slug}", "question": question, "answer": answer,
                                      "kind": kind}) + "\n")
    print(HERE / "quiz.jsonl")


if __name__ == "__main__":
    main()
