"""A training run in its own process (for the kill-and-resume and two-process tests).

    python _child.py MODEL_DIR PAIRS OUT JSON_KWARGS [--die-at-save STEP]

``--die-at-save STEP`` kills the process (SIGKILL, no clean-up) while checkpoint STEP is being
written: after its files are in the temporary directory, before the rename.
"""

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _kit import run  # noqa: E402


def main() -> None:
    import torch

    torch.set_num_threads(1)
    model_dir, pairs, out, kwargs = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
    if "--die-at-save" in sys.argv:
        import ratchet.train.checkpoint as checkpoint

        step, fsync_tree = int(sys.argv[sys.argv.index("--die-at-save") + 1]), checkpoint._fsync_tree

        def die(path):
            if path.name == f".step-{step:07d}.tmp":
                os.kill(os.getpid(), signal.SIGKILL)
            fsync_tree(path)

        checkpoint._fsync_tree = die
    run(model_dir, pairs, out, **kwargs)


if __name__ == "__main__":
    main()
