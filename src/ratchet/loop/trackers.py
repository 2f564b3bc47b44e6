"""The loop's per-round metrics sent to experiment trackers (TensorBoard, W&B, MLflow, trackio...).

accelerate's tracker classes do the talking, as the trainer's per-step metrics do (the trainer
gets the same ``log.report_to`` and logs under ``round_<r>/train/``); here each round's numeric
metrics (held-out metric, pass@k, B-STaR numbers, pairs kept, stage seconds) are logged at step r.
TensorBoard files land in ``<run>/logs/`` and need no network.
"""

from __future__ import annotations

from pathlib import Path

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio", "aim", "comet_ml", "clearml", "dvclive", "swanlab")
"""accelerate's tracker names (``accelerate.tracking.LOGGER_TYPE_TO_CLASS``; a test keeps them equal)."""


def numeric(metrics: dict, prefix: str = "") -> dict:
    """The numbers in ``metrics``, nested dicts flattened to ``a/b``; booleans as 0/1; the rest left out."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(numeric(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and value == value:  # NaN is left out
            out[f"{prefix}{key}"] = float(value)
    return out


class RoundLog:
    """One run's trackers; a no-op when ``report_to`` is empty."""

    def __init__(self, report_to: list[str], run_dir: Path, run_name: str, config: dict):
        self.trackers = []
        if not report_to:
            return
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        for name in report_to:
            cls = LOGGER_TYPE_TO_CLASS[name]
            tracker = cls(run_name, str(Path(run_dir) / "logs")) if cls.requires_logging_directory else cls(run_name)
            tracker.start()
            tracker.store_init_configuration(numeric(config) | _strings(config))
            self.trackers.append(tracker)

    def log(self, metrics: dict, step: int) -> None:
        values = numeric(metrics)
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


def _strings(config: dict, prefix: str = "") -> dict:
    """The config's string values (names of model, task, judge, loss) as hyper-parameters."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_strings(value, f"{prefix}{key}/"))
        elif isinstance(value, str):
            out[f"{prefix}{key}"] = value
    return out
