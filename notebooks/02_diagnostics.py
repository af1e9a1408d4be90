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
# # hf-plasticity: the plasticity picture
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/hf-plasticity/blob/main/notebooks/02_diagnostics.ipynb)
#
# How plastic are ImageNet-pretrained ViT, ConvNeXt and ResNet checkpoints on a *typical* downstream dataset (natural
# photos, like their pretraining data) and on an *atypical* one (grayscale handwritten digits)? `diagnose` measures it
# per layer and per block, without training: a few forward/backward passes each. A free Colab GPU runs the six
# diagnoses in a couple of minutes (most of it is downloading).

# %% tags=["skip-execution"]
# `your-org/hf-plasticity` (here and in the badge above) is a placeholder: put the GitHub owner/name of the
# repository you got hf-plasticity from. From a local checkout instead (a local Jupyter):
# `%pip install -q -e "/path/to/hf-plasticity[plot]"`.
# %pip install -q "hf-plasticity[plot] @ git+https://github.com/your-org/hf-plasticity"

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
MODELS = {
    "ViT-B/16": "google/vit-base-patch16-224",
    "ConvNeXt-T": "facebook/convnext-tiny-224",
    "ResNet-50": "microsoft/resnet-50",
}
DATASETS = {  # name -> Hub id (or imagefolder directory), image column, label column, split
    "typical (CIFAR-10)": ("uoft-cs/cifar10", "img", "label", "train"),
    "atypical (MNIST)": ("ylecun/mnist", "image", "label", "train"),
}
BATCHES, BATCH_SIZE = 8, 32  # diagnose reads BATCHES x BATCH_SIZE images per (model, dataset)
TAU = 0.1  # a unit is dormant when its normalized mean |activation| <= TAU
SEED = 42

# %% [markdown]
# ## Diagnose every model on every dataset
#
# Each model gets a new head for the dataset's classes (as in fine-tuning), and `diagnose` reads `BATCHES` batches
# through the model's own image processor. It never changes the weights.

# %%
import torch
from datasets import load_dataset
from transformers import AutoImageProcessor, AutoModelForImageClassification
from transformers.utils import logging as hf_logging

from hf_plasticity import diagnose

hf_logging.set_verbosity_error()  # silence the "newly initialized head" notice
examples = {}
for data_name, (dataset_id, image_column, label_column, split) in DATASETS.items():
    ds = load_dataset(dataset_id, split=split).shuffle(seed=SEED)
    ds = ds.select(range(min(BATCHES * BATCH_SIZE, len(ds))))
    examples[data_name] = (
        [image.convert("RGB") for image in ds[image_column]],
        ds[label_column],
        ds.features[label_column].num_classes,
    )

reports = {}
for model_name, model_id in MODELS.items():
    processor = AutoImageProcessor.from_pretrained(model_id)
    for data_name, (images, labels, num_classes) in examples.items():
        torch.manual_seed(SEED)
        model = AutoModelForImageClassification.from_pretrained(
            model_id, num_labels=num_classes, ignore_mismatched_sizes=True
        )
        if torch.cuda.is_available():
            model = model.cuda()
        batches = [
            {
                "pixel_values": processor(images[i : i + BATCH_SIZE], return_tensors="pt")["pixel_values"],
                "labels": torch.tensor(labels[i : i + BATCH_SIZE]),
            }
            for i in range(0, len(images), BATCH_SIZE)
        ]
        reports[model_name, data_name] = diagnose(model, batches, batches=BATCHES, tau=TAU)
        del model
print(f"{len(reports)} diagnoses")

# %% [markdown]
# ## The overall numbers
#
# One row per (model, dataset): the share of dormant units, the share of insignificant gradients (|g| <= 1% of the
# network's mean |g|), the mean |gradient| and |weight|, and the effective rank of the features the head sees (out of
# their dimension).

# %%
print(f"{'model':<12} {'data':<20} {'dormant':>8} {'insig.g':>8} {'mean|g|':>9} {'mean|w|':>9} {'eff.rank':>12}")
for (model_name, data_name), r in reports.items():
    dormant = "-" if r.dormant_ratio is None else f"{r.dormant_ratio:.1%}"
    print(
        f"{model_name:<12} {data_name:<20} {dormant:>8} {r.insignificant_grad_share:>8.1%} {r.mean_abs_grad:>9.2e} "
        f"{r.mean_abs_weight:>9.3f} {r.effective_rank:>7.3g}/{r.feature_dim:<4}"
    )

# %% [markdown]
# ## The picture, per block
#
# `report.plot()` draws one column per backbone block (named as in the model) and four panels: how well the block's
# output separates the classes (nearest class mean, leave-one-out: the signal `AutoReinitConfig` decides on), the
# dormant ratio, the share of insignificant gradients and the mean |w|. Here, each model on the atypical data:

# %%
from IPython.display import display

atypical = list(DATASETS)[-1]
for model_name in MODELS:
    display(reports[model_name, atypical].plot(title=f"{model_name} on {atypical}"))

# %% [markdown]
# ## Typical vs atypical, block by block
#
# The probe accuracy per block on both datasets, depth normalized so that the three architectures share an axis. On
# data like the pretraining data it rises to the last block; on atypical data it often peaks earlier, and the blocks
# after the peak make the task harder.

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, len(MODELS), figsize=(5 * len(MODELS), 3.5), squeeze=False)
for ax, model_name in zip(axes[0], MODELS):
    for data_name in DATASETS:
        rows = reports[model_name, data_name].per_block()
        depth = [i / max(1, len(rows) - 1) for i in range(len(rows))]
        ax.plot(depth, [row["probe_accuracy"] for row in rows], marker="o", label=data_name)
    ax.set_title(model_name)
    ax.set_xlabel("relative depth of the block")
    ax.set_ylabel("probe accuracy")
    ax.grid(alpha=0.3)
axes[0, 0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What it means
#
# - **Probe accuracy per block**: how well each block's output separates the classes. If it peaks before the last
#   block, the blocks after the peak re-encode the data for the pretraining task; `AutoReinitConfig` re-initializes
#   them, with two limits: the peak is the last block within `tolerance` (0.02) of the best one, so small dips are not
#   a reason to re-draw, and at most `max_blocks` blocks are re-drawn (default: an eighth of the blocks, at least
#   one), counted back from the last block.
# - **Dormant units** (normalized mean |activation| <= tau) pass almost nothing downstream and get almost no gradient:
#   capacity the new task cannot use. A dormant ratio that is higher on the atypical data, above all in the late
#   blocks, says the late, ImageNet-specific features do not fire on it.
# - **Insignificant gradients**: the share of weights whose gradient is tiny next to the network's average. Together
#   with **large weights** this is the *saturated* signature: big weights that the downstream loss barely moves, so
#   fine-tuning changes them slowly. (The mean |weight| is the same for both datasets: it is one checkpoint; read it
#   next to the gradient.)
# - **Effective rank** of the penultimate features: how many directions the head can use. A low rank on the atypical
#   data means the backbone maps its images onto few directions, and the head has little to separate the classes with.
#
# What to do with it: where the late blocks look dormant or saturated on your data, re-initializing them
# (`LayerReinitConfig()`, the default, or `AutoReinitConfig()` to let the probe choose) or recycling their dormant
# units (`ReDoConfig`) gives fine-tuning fresh capacity there; on typical data, where the picture looks like
# ImageNet's, plain fine-tuning is usually the right call. The numbers are measured with the new, random head, so
# gradients reflect the downstream loss at the start of fine-tuning.
#
# Next: `01_quickstart.ipynb` restores and fine-tunes, and `report.plot()` there shows the same picture before and
# after the restore; `PlasticityCallback(diagnostics_every=N)` logs these numbers, and the picture, to TensorBoard
# during training.
