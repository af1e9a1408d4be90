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
# # hf-plasticity: quick start
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/hf-plasticity/blob/main/notebooks/01_quickstart.ipynb)
#
# Load an ImageNet-pretrained ViT from the Hub, see where it has lost plasticity on a downstream dataset, restore it
# with one call, fine-tune it with the `PlasticityTrainer` and the `PlasticityCallback`, and compare with plain
# fine-tuning at the same learning rates.
#
# In Colab choose *Runtime > Change runtime type > T4 GPU*: the defaults below (2,000 MNIST images, 3 epochs per arm)
# take a few minutes there.

# %% tags=["skip-execution"]
# `your-org/hf-plasticity` (here and in the badge above) is a placeholder: put the GitHub owner/name of the
# repository you got hf-plasticity from. From a local checkout instead (a local Jupyter):
# `%pip install -q -e "/path/to/hf-plasticity[trainer,plot]" evaluate`.
# %pip install -q "hf-plasticity[trainer,plot] @ git+https://github.com/your-org/hf-plasticity" evaluate

# %% [markdown]
# ## Parameters
#
# MNIST is *atypical* for an ImageNet model (grayscale strokes, no natural-image statistics): the kind of downstream
# task where a loss of plasticity is expected to show. Any Hub image-classification dataset works (or a local
# `imagefolder` directory): set its id, its image and label columns and its splits.

# %% tags=["parameters"]
MODEL_ID = "google/vit-base-patch16-224"
DATASET_ID = "ylecun/mnist"
IMAGE_COLUMN, LABEL_COLUMN = "image", "label"
TRAIN_SPLIT, TEST_SPLIT = "train", "test"
MAX_TRAIN, MAX_TEST = 2000, 1000  # a subset keeps the run short on a free Colab GPU
EPOCHS = 3
BATCH_SIZE = 32
LEARNING_RATE = 5e-5  # the pretrained backbone's
OWN_LR = 1e-3  # the new parameters': the head in both arms, and the re-drawn block in the restored one
METRIC = "accuracy"  # an `evaluate` metric id (or a local metric script)
SEED = 42

# %% [markdown]
# ## The data
#
# Images go through the model's own image processor, on the fly.

# %%
import torch
from datasets import load_dataset
from transformers import AutoImageProcessor

raw = load_dataset(DATASET_ID)
train_raw = raw[TRAIN_SPLIT].shuffle(seed=SEED).select(range(min(MAX_TRAIN, len(raw[TRAIN_SPLIT]))))
test_raw = raw[TEST_SPLIT].shuffle(seed=SEED).select(range(min(MAX_TEST, len(raw[TEST_SPLIT]))))
label_names = train_raw.features[LABEL_COLUMN].names
id2label = dict(enumerate(label_names))
label2id = {name: i for i, name in id2label.items()}

processor = AutoImageProcessor.from_pretrained(MODEL_ID)


def transform(batch):
    images = [image.convert("RGB") for image in batch[IMAGE_COLUMN]]
    return {"pixel_values": processor(images, return_tensors="pt")["pixel_values"], "labels": batch[LABEL_COLUMN]}


def collate(rows):
    return {
        "pixel_values": torch.stack([row["pixel_values"] for row in rows]),
        "labels": torch.tensor([row["labels"] for row in rows]),
    }


train_ds, test_ds = train_raw.with_transform(transform), test_raw.with_transform(transform)
print(f"{len(train_ds)} training and {len(test_ds)} test images, {len(label_names)} classes: {label_names}")

# %% [markdown]
# ## The pretrained model, diagnosed
#
# `diagnose` runs a few downstream batches through the model, with the new (random) head attached, and measures per
# layer the share of *dormant* units (normalized activation <= tau), the mean |gradient| and the share of
# *insignificant* gradients, the mean |weight|, and per block how well its output separates the classes (a
# nearest-class-mean probe). Large weights with tiny gradients are the saturated signature; a probe that peaks before
# the last block says the late blocks re-encode the data for the pretraining task.

# %%
from torch.utils.data import DataLoader
from transformers import AutoModelForImageClassification

from hf_plasticity import LayerReinitConfig, PlasticityCallback, PlasticityTrainer, diagnose, prepare_pretrained


def load_model():
    torch.manual_seed(SEED)  # the same new head in both arms
    return AutoModelForImageClassification.from_pretrained(
        MODEL_ID, num_labels=len(label_names), id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
    )


device = "cuda" if torch.cuda.is_available() else "cpu"
model = load_model().to(device)  # diagnose and restore run where the model is
calibration = DataLoader(
    train_ds, batch_size=BATCH_SIZE, shuffle=True, collate_fn=collate, generator=torch.Generator().manual_seed(SEED)
)
before = diagnose(model, calibration, batches=8)
print(before)
before.plot()

# %% [markdown]
# ## Restore
#
# The default strategy re-initializes the last eighth of the backbone's blocks (at least one, plus the final norm)
# with the model's own init rule; here we ask for the last block explicitly. Other strategies (`selective`, `redo`,
# `shrink_perturb`, `dash`, `auto`, ...) take a config the same way; data-dependent ones score weights on `data=`.
# With `data=`, the report carries the diagnostics before and after the restore, and `report.plot()` draws them:
# before dashed, after solid, the re-drawn block shaded.

# %%
report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1), data=calibration)
print(report)
report.plot()

# %% [markdown]
# ## Fine-tune: restored vs plain
#
# Both arms run the same `Trainer` settings, seed and data order, in a `PlasticityTrainer` (the `Trainer` that runs
# the callback: same arguments), with the pretrained backbone at `LEARNING_RATE` and the new parameters at their own
# rate, `OWN_LR`. For the optimizer a re-drawn block is new, like the head: at a backbone's rate (AdamW moves a weight
# by about the learning rate per step) a fresh block hardly leaves its init. So the restored arm's callback gives the
# re-drawn block and the head `reinit_lr=OWN_LR` (the head takes `reinit_lr` unless `head_lr` says otherwise), and
# the plain arm's gives its head the same rate (`head_lr=OWN_LR`, with `restore=False`: nothing is re-drawn).
#
# The restored arm's callback sees that the model was already restored (it records that in
# `model.config.plasticity`), says so on the console, and does not restore again; without the `prepare_pretrained`
# call above, `PlasticityCallback(LayerReinitConfig(), reinit_lr=OWN_LR)` would do the restore itself, when the
# Trainer creates its optimizer. In both arms `diagnostics_every` logs the dormant ratio and friends through
# `trainer.log`, so they reach TensorBoard or W&B too.

# %%
import evaluate
import numpy as np

metric = evaluate.load(METRIC)


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    return metric.compute(predictions=np.argmax(logits, axis=-1), references=labels)


# %%
from transformers import TrainingArguments

steps_per_epoch = -(-len(train_ds) // BATCH_SIZE)


def fine_tune(model, callback, run_name):
    args = TrainingArguments(
        output_dir=f"runs/{run_name}",
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=2 * BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=max(1, steps_per_epoch // 4),
        remove_unused_columns=False,  # keep the `image` column for the on-the-fly transform
        fp16=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        seed=SEED,
        data_seed=SEED,
        report_to="none",
    )
    trainer = PlasticityTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=test_ds,
        data_collator=collate,
        compute_metrics=compute_metrics,
        callbacks=[callback],
    )
    trainer.train()
    return trainer.state.log_history


monitor_every = max(1, steps_per_epoch // 2)
restored_log = fine_tune(model, PlasticityCallback(reinit_lr=OWN_LR, diagnostics_every=monitor_every), "restored")
plain_log = fine_tune(
    load_model(), PlasticityCallback(restore=False, head_lr=OWN_LR, diagnostics_every=monitor_every), "plain"
)

# %% [markdown]
# ## Compare

# %%
import matplotlib.pyplot as plt


def series(log, key):
    points = [(entry["epoch"], entry[key]) for entry in log if key in entry]
    return [p[0] for p in points], [p[1] for p in points]


fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for log, label in ((plain_log, "plain fine-tuning"), (restored_log, "restored (last block)")):
    axes[0].plot(*series(log, "eval_accuracy"), marker="o", label=label)
    axes[1].plot(*series(log, "loss"), label=label)
    axes[2].plot(*series(log, "plasticity/dormant_ratio"), marker=".", label=label)
for ax, title in zip(axes, ("test accuracy", "training loss", "dormant-unit ratio (tau = 0.1)")):
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend()
plt.tight_layout()
plt.show()

arms = {"plain": plain_log, "restored": restored_log}
final = {label: series(log, "eval_accuracy")[1][-1] for label, log in arms.items()}
print("final test accuracy:", final)

# %% [markdown]
# ## What the comparison shows
#
# One seed, on a small subset, at one pair of learning rates that nobody tuned: it shows what the restore does at
# these rates, not whether restoring beats fine-tuning. In the repository's benchmark (`docs/BENCHMARKS.md`: every
# choice on a validation split, 10 seeds), a restore made short CNN fine-tuning much less sensitive to the learning
# rate (a small ViT's on one target of three), but against a plain fine-tune whose learning rates were tuned it did
# not raise final accuracy, and giving the top blocks their own rate without re-drawing them did as well. So:
#
# - **Tune the learning rates first** (both arms, a few values each, chosen on a validation split, several seeds):
#   `hf-plasticity compare MODEL --data DATA` does that on your data, with the restore, the own-rate control and the
#   sweep-free recipe as arms.
# - **If you cannot sweep**, let one diagnostic pass choose the rates: `PlasticityCallback(recipe="auto")` in place of
#   the callbacks above (it re-draws nothing, so it takes a freshly loaded model; experimental, see the README).
#
# ## What next
#
# - `02_diagnostics.ipynb`: the plasticity picture for ViT, ConvNeXt and ResNet on typical and atypical data.
# - `03_hub.ipynb`: push the restored checkpoint with a model card that says what was re-initialized.
# - `04_multi_gpu.ipynb`: the same training on several GPUs with Accelerate.
