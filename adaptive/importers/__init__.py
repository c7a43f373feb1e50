"""Import existing training logs as v1 traces: TensorBoard, MLflow, CSV (W&B / MLflow exports).

Each importer reads the scalars with the source's own well-kept reader (tensorboard's
event-file loader, the stdlib `sqlite3` for MLflow's SQLite store), maps tags to loss
components and metrics as one `ImportOptions` says (the same for every source:
`components={"fk": "train/loss_fk"}` or `patterns=["train/loss_*"]`), derives epochs from a
logged `epoch` scalar or `steps_per_epoch`, and writes the
trace atomically. Nothing is downsampled; steps missing for some component are kept with
an empty value and reported.
"""

from adaptive.importers._common import (
    ImportOptions,
    ImportReport,
    Series,
    TraceImportError,
    import_options,
    import_to_runs,
    parse_mapping,
)
from adaptive.importers._csv import import_csv, read_csv_series
from adaptive.importers._mlflow import import_mlflow, mlflow_runs
from adaptive.importers._tensorboard import import_tensorboard, read_tensorboard, tensorboard_runs

__all__ = [
    "ImportOptions",
    "ImportReport",
    "Series",
    "TraceImportError",
    "import_csv",
    "import_mlflow",
    "import_options",
    "import_tensorboard",
    "import_to_runs",
    "mlflow_runs",
    "parse_mapping",
    "read_csv_series",
    "read_tensorboard",
    "tensorboard_runs",
]
