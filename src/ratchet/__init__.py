"""ratchet: self-improving preference optimization.

A model samples answers, a judge scores them, the scores become preference data, the model is
trained on it, and the round is kept only if a held-out metric does not regress.

Each stage lives in its own subpackage and exchanges plain files (JSONL, safetensors) with the
next, so every stage can be re-run alone:

    generate/  sampling k completions per prompt          -> completions.jsonl
    judge/     scoring completions                         -> judgments.jsonl
    data/      tasks, records, pairing, tokenisation       -> prompts.jsonl, pairs.jsonl
    train/     the training loop over any objective        -> model/ (safetensors)
    evaluate/  held-out metrics                            -> metrics.json
    loop/      rounds of the above, with the ratchet gate
    losses/    pure objective functions and the LOSSES registry
"""

__version__ = "0.1.0"
