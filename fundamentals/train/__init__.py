"""The training engine (appendix A.7): `fit`, the compiled program it runs, evaluation and prediction.

- `program.py`: `TrainState` and `TrainProgram`, the compiled step and its scans;
- `cache.py`: compiled programs, cached by the program JAX traced;
- `chunks.py`: where an epoch's chunks come from (host stacks, device gathers);
- `fit.py`: the loop, its log lines, evaluation points, checkpoints and resume;
- `callbacks.py`: `Callback`, `EarlyStopping`, `BestCheckpoint`;
- `preemption.py`: SIGTERM, stopped at a chunk boundary;
- `evaluate.py`: `compute_accuracy`, `predict`, `predict_proba`.
"""

from .callbacks import BestCheckpoint, Callback, EarlyStopping, Run
from .evaluate import compute_accuracy, predict, predict_proba
from .fit import TrainingDivergedError, fit, format_step_log
from .program import TrainProgram, TrainState

__all__ = [
    "fit",
    "Callback",
    "Run",
    "EarlyStopping",
    "BestCheckpoint",
    "compute_accuracy",
    "predict",
    "predict_proba",
    "TrainProgram",
    "TrainState",
    "TrainingDivergedError",
    "format_step_log",
]
