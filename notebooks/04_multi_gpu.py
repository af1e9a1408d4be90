# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # hf-plasticity on many GPUs
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/hf-plasticity/blob/main/notebooks/04_multi_gpu.ipynb)
#
# The quick start's training, run data-parallel on every GPU of the machine with Accelerate's `notebook_launcher`. The
# `Trainer` is built on Accelerate, so nothing in the training code changes: the `PlasticityCallback` (in a
# `PlasticityTrainer`) restores once before the optimizer is built, with rank 0 reading the calibration batches and
# planning and every rank applying the same plan, so all processes hold bitwise-identical weights.
#
# A free Colab runtime has one GPU (the launcher then simply runs the function); Kaggle's free 2 x T4 runtime or any
# multi-GPU machine shows the distributed run. Outside notebooks, use `accelerate launch` (below).

# %% tags=["skip-execution"]
# `your-org/hf-plasticity` (here and in the badge above) is a placeholder: put the GitHub owner/name of the
# repository you got hf-plasticity from. From a local checkout instead (a local Jupyter):
# `%pip install -q -e "/path/to/hf-plasticity[trainer]" evaluate`.
# %pip install -q "hf-plasticity[trainer] @ git+https://github.com/your-org/hf-plasticity" evaluate

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
import torch

MODEL_ID = "google/vit-base-patch16-224"
DATASET_ID = "ylecun/mnist"
IMAGE_COLUMN, LABEL_COLUMN = "image", "label"
TRAIN_SPLIT, TEST_SPLIT = "train", "test"
MAX_TRAIN, MAX_TEST = 2000, 1000
EPOCHS = 3
BATCH_SIZE = 32  # per device
LEARNING_RATE = 5e-5
METRIC = "accuracy"  # an `evaluate` metric id (or a local metric script)
SEED = 42
NUM_PROCESSES = max(1, torch.cuda.device_count())  # counts the GPUs without initializing CUDA (fork needs that)
PORT = "29500"

# %% [markdown]
# ## The training function
#
# Everything that touches a device lives inside the function: `notebook_launcher` forks one process per GPU, and CUDA
# must not be initialized before the fork. The downloads (model, data, metric) happen once, here, before the launch,
# so the processes read them from the cache.

# %%
import evaluate
from datasets import load_dataset
from transformers import AutoImageProcessor

raw = load_dataset(DATASET_ID)
train_raw = raw[TRAIN_SPLIT].shuffle(seed=SEED).select(range(min(MAX_TRAIN, len(raw[TRAIN_SPLIT]))))
test_raw = raw[TEST_SPLIT].shuffle(seed=SEED).select(range(min(MAX_TEST, len(raw[TEST_SPLIT]))))
label_names = train_raw.features[LABEL_COLUMN].names
processor = AutoImageProcessor.from_pretrained(MODEL_ID)
metric = evaluate.load(METRIC)

# %%
import json
import os

import numpy as np


def train():
    import torch
    from accelerate.utils import gather_object
    from transformers import AutoModelForImageClassification, TrainingArguments

    from hf_plasticity import LayerReinitConfig, PlasticityCallback, PlasticityTrainer

    def transform(batch):
        images = [image.convert("RGB") for image in batch[IMAGE_COLUMN]]
        return {"pixel_values": processor(images, return_tensors="pt")["pixel_values"], "labels": batch[LABEL_COLUMN]}

    def collate(rows):
        return {
            "pixel_values": torch.stack([row["pixel_values"] for row in rows]),
            "labels": torch.tensor([row["labels"] for row in rows]),
        }

    def compute_metrics(eval_pred):
        logits, labels = eval_pred
        return metric.compute(predictions=np.argmax(logits, axis=-1), references=labels)

    torch.manual_seed(SEED)
    model = AutoModelForImageClassification.from_pretrained(
        MODEL_ID,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        ignore_mismatched_sizes=True,
    )
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    args = TrainingArguments(
        output_dir="runs/multi",
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=2 * BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=5,
        remove_unused_columns=False,
        fp16=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=("nccl" if torch.cuda.is_available() else "gloo") if multi else None,
        ddp_find_unused_parameters=False if multi else None,
        seed=SEED,
        report_to="none",
    )
    trainer = PlasticityTrainer(
        model=model,
        args=args,
        train_dataset=train_raw.with_transform(transform),
        eval_dataset=test_raw.with_transform(transform),
        data_collator=collate,
        compute_metrics=compute_metrics,
        callbacks=[PlasticityCallback(LayerReinitConfig(num_blocks=1))],
    )
    trainer.train()
    # Every process must end with the same weights: compare a checksum of the parameters across processes.
    checksum = sum(p.detach().double().sum().item() for p in trainer.model.parameters())
    checksums = gather_object([checksum])
    if trainer.is_world_process_zero():
        accuracy = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e]
        result = {
            "processes": trainer.args.world_size,
            "accuracy": accuracy,
            "checksums": checksums,
            "restored": model.config.plasticity["strategy"],
        }
        with open("multi_gpu_result.json", "w") as f:
            json.dump(result, f)


# %% [markdown]
# ## Launch

# %%
from accelerate import notebook_launcher

notebook_launcher(
    train, num_processes=NUM_PROCESSES, use_port=PORT, mixed_precision="fp16" if torch.cuda.is_available() else "no"
)

# %%
with open("multi_gpu_result.json") as f:
    result = json.load(f)
print(result)
assert len(set(result["checksums"])) == 1, "the processes ended with different weights"

# %% [markdown]
# ## From a script: `accelerate launch`
#
# Outside a notebook, put the body of `train()` in a script and launch it; the `Trainer` and the callback need no
# change:
#
# ```bash
# accelerate config                                       # once: GPUs, machines, mixed precision
# accelerate launch --multi_gpu --num_processes 2 train.py # or: torchrun --nproc_per_node 2 train.py
# ```
#
# Without the `Trainer`, `PlasticityController` drives the same restore and periodic resets in any loop:
# [examples/train_accelerate.py](../examples/train_accelerate.py) is a complete Accelerate script, and
# [examples/accelerate_configs/](../examples/accelerate_configs/) has one-GPU, multi-GPU and multi-node configs:
#
# ```bash
# accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml \
#     examples/train_accelerate.py --model facebook/convnext-tiny-224 --dataset cifar10
# # several machines: run on each node with its own --machine_rank
# accelerate launch --config_file examples/accelerate_configs/multi_node.yaml --machine_rank 0 \
#     examples/train_accelerate.py --model facebook/convnext-tiny-224 --dataset cifar10
# ```
#
# FSDP, DeepSpeed ZeRO-3 and DTensor shard the parameters, and the callback refuses them: restore the plain model
# first (`prepare_pretrained(model, config, data=...)` before building the `Trainer` or calling
# `accelerator.prepare`), then wrap it. The README's *Multi-GPU and multi-node* section has the details.
