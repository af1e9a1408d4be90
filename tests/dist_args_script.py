"""Run by tests/test_distributed.py on two CPU processes under ``torchrun --nproc_per_node 2``: each rank writes
``OUTPUT_DIR/rank{r}.json`` saying whether the `Trainer` would train the processes together (DDP) with the
`TrainingArguments` options `compare` gives its runs, and with the gloo backend alone (no ``use_cpu``), and what the
library warns in each case."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import TrainingArguments  # noqa: E402

from hf_plasticity.comparison.runner import _ddp_options  # noqa: E402
from hf_plasticity.core.collectives import process_group_warning  # noqa: E402
from hf_plasticity.integrations.trainer_adapter import trains_together  # noqa: E402


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    record = {}
    for name, options in (("compare", _ddp_options()), ("gloo_only", {"ddp_backend": "gloo"})):
        args = TrainingArguments(output_dir=str(out / name), report_to=[], **options)
        together = trains_together(args)
        record[name] = {
            "parallel_mode": str(args.parallel_mode),
            "world_size": args.world_size,
            "trains_together": together,
            "warning": process_group_warning(together),
        }
    (out / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
