"""Writes the notebooks of this folder from the cell sources below, with empty outputs.

    python notebooks/_build.py          # rewrite every notebook
    python notebooks/_build.py --check  # exit 1 when a notebook differs from what this script writes

Edit the cells here, not in the .ipynb files. Every notebook starts the same way: a cell that reads
``HF_PLASTICITY_NOTEBOOK_TEST`` (the tests set it to switch to tiny offline models and data), an install cell skipped
in that mode, and a parameters cell whose defaults are the real Hub models and datasets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
# The GitHub repository the Colab badges open and the install cell installs from (the package is not on PyPI yet):
# set it here, and in README.md's Notebooks table, then rerun this script.
GITHUB_REPO = "your-org/hf-plasticity"
INSTALL = f'%pip install -q "hf-plasticity @ git+https://github.com/{GITHUB_REPO}" matplotlib'


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str, tags: list[str] | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def header(name: str, title: str, intro: str, extra_install: str = "") -> list[nbformat.NotebookNode]:
    badge = (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{GITHUB_REPO}/blob/main/notebooks/{name})"
    )
    install = INSTALL + (" " + extra_install if extra_install else "")
    return [
        md(f"# {title}\n\n{badge}\n\n{intro}"),
        code(
            """
# Test mode: the test suite sets HF_PLASTICITY_NOTEBOOK_TEST=1 to run this notebook offline, on CPU, in seconds, with
# tiny models and data that hf-plasticity makes itself (hf_plasticity/notebook_utils.py). Leave it unset.
import os

TEST_MODE = os.environ.get("HF_PLASTICITY_NOTEBOOK_TEST", "").strip().lower() not in ("", "0", "false", "no")
print("test mode (tiny offline models and data)" if TEST_MODE else "real models and datasets from the Hub")
"""
        ),
        code(
            f"""
if not TEST_MODE:  # installs the library in Colab (skip it where it is installed already)
    {install}
"""
        ),
    ]


# Shared by notebooks 1, 3 and 4: Hub dataset -> pixel_values / labels through the model's own image processor.
DATA_CELL = """
import torch
from datasets import load_dataset
from transformers import AutoImageProcessor

if TEST_MODE:
    raw = tiny_image_dataset(DATASET_ID, n_train=MAX_TRAIN, n_test=MAX_TEST)
else:
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
"""

ACCURACY_CELL = """
import numpy as np

# `evaluate.load("accuracy")` downloads the metric from the Hub, so it fails offline: test mode counts with numpy.
if TEST_MODE:
    def accuracy(predictions, references):
        return {"accuracy": float((np.asarray(predictions) == np.asarray(references)).mean())}
else:
    import evaluate

    accuracy = evaluate.load("accuracy").compute


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    return accuracy(predictions=np.argmax(logits, axis=-1), references=labels)
"""


# ------------------------------------------------------------------------------------------------------ 1 quick start
def quickstart() -> nbformat.NotebookNode:
    name = "01_quickstart.ipynb"
    cells = header(
        name,
        "hf-plasticity: quick start",
        "Load an ImageNet-pretrained ViT from the Hub, measure its plasticity on a downstream dataset, restore it "
        "with one call, fine-tune it with the `Trainer` and the `PlasticityCallback`, and compare with plain "
        "fine-tuning.\n\n"
        "In Colab choose *Runtime > Change runtime type > T4 GPU*: the defaults below (2,000 MNIST images, 3 epochs "
        "per arm) take a few minutes there.",
    )
    cells += [
        md(
            "## Parameters\n\n"
            "MNIST is *atypical* for an ImageNet model (grayscale strokes, no natural-image statistics): the kind of "
            "downstream task where a loss of plasticity is expected to show. Any Hub image-classification "
            "dataset works: set its id, its image and label columns and its splits."
        ),
        code(
            """
MODEL_ID = "google/vit-base-patch16-224"
DATASET_ID = "ylecun/mnist"
IMAGE_COLUMN, LABEL_COLUMN = "image", "label"
TRAIN_SPLIT, TEST_SPLIT = "train", "test"
MAX_TRAIN, MAX_TEST = 2000, 1000   # a subset keeps the run short on a free Colab GPU
EPOCHS = 3
BATCH_SIZE = 32
LEARNING_RATE = 5e-5
SEED = 42
""",
            tags=["parameters"],
        ),
        code(
            """
if TEST_MODE:  # a tiny ViT "pretrained" for a few seconds on synthetic shapes, and scikit-learn's digits
    import tempfile

    from hf_plasticity.notebook_utils import tiny_image_dataset, tiny_pretrained_checkpoint

    WORK_DIR = tempfile.mkdtemp()
    MODEL_ID = tiny_pretrained_checkpoint("vit", f"{WORK_DIR}/tiny-vit", pretrain_epochs=1, n_source=320)
    DATASET_ID = "digits"
    MAX_TRAIN, MAX_TEST, EPOCHS, BATCH_SIZE, LEARNING_RATE = 320, 160, 2, 32, 1e-3
"""
        ),
        md("## The data\n\nImages go through the model's own image processor, on the fly."),
        code(DATA_CELL),
        md(
            "## The pretrained model, diagnosed\n\n"
            "`diagnose` runs a few downstream batches through the model, with the new (random) 10-class head "
            "attached, and measures per layer: the share of *dormant* units (normalized activation <= tau), the "
            "mean |gradient| and the share of *insignificant* gradients, and the mean |weight|; plus the effective "
            "rank of the features the head sees. Large weights with tiny gradients are the saturated signature."
        ),
        code(
            """
from torch.utils.data import DataLoader
from transformers import AutoModelForImageClassification

from hf_plasticity import LayerReinitConfig, PlasticityCallback, diagnose, prepare_pretrained


def load_model():
    torch.manual_seed(SEED)  # the same new head in both arms
    return AutoModelForImageClassification.from_pretrained(
        MODEL_ID, num_labels=len(label_names), id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
    )


device = "cuda" if torch.cuda.is_available() else "cpu"
model = load_model().to(device)  # diagnose and restore run where the model is
calibration = DataLoader(train_ds, batch_size=BATCH_SIZE, shuffle=True, collate_fn=collate,
                         generator=torch.Generator().manual_seed(SEED))
before = diagnose(model, calibration, batches=8)
print(before)
"""
        ),
        md(
            "## Restore\n\n"
            "The default strategy re-initializes the last eighth of the backbone's blocks (at least one, plus the "
            "final norm) with the model's own init rule; here we ask for the last block explicitly. On the library's "
            "benchmark re-initializing late blocks was the rule that helped on atypical data. Other strategies "
            "(`selective`, `redo`, `shrink_perturb`, `dash`, `auto`, ...) take a config the same way; data-dependent "
            "ones score weights on `data=`."
        ),
        code(
            """
# With `data=`, the report also carries the overall diagnostics before and after the restore.
report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1), data=calibration)
print(report)
"""
        ),
        md(
            "## Fine-tune: restored vs plain\n\n"
            "Both arms run the same `Trainer` recipe, seed and data order. The `PlasticityCallback` sees that the "
            "model was already restored (it records that in `model.config.plasticity`) and only monitors it: "
            "`diagnostics_every` logs the dormant ratio and friends through `trainer.log`, so they reach TensorBoard "
            "or W&B too. Without the `prepare_pretrained` call above, `PlasticityCallback(LayerReinitConfig())` would "
            "do the restore itself, right before the first optimizer step. The plain arm gets a monitoring-only "
            "callback (`restore=False`)."
        ),
        code(ACCURACY_CELL),
        code(
            """
from transformers import Trainer, TrainingArguments

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
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=test_ds, data_collator=collate,
                      compute_metrics=compute_metrics, callbacks=[callback])
    trainer.train()
    return trainer.state.log_history


monitor_every = max(1, steps_per_epoch // 2)
restored_log = fine_tune(model, PlasticityCallback(diagnostics_every=monitor_every), "restored")
plain_log = fine_tune(load_model(), PlasticityCallback(restore=False, diagnostics_every=monitor_every), "plain")
"""
        ),
        md("## Compare"),
        code(
            """
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
"""
        ),
        md(
            "## What next\n\n"
            "- `02_diagnostics.ipynb`: the per-layer picture for ViT, ConvNeXt and ResNet on typical and atypical "
            "data.\n"
            "- `03_hub.ipynb`: push the restored checkpoint with a model card that says what was re-initialized.\n"
            "- `04_multi_gpu.ipynb`: the same training on several GPUs with Accelerate.\n\n"
            "One run on a small subset is noisy: compare over a few seeds before concluding (the repository's "
            "`docs/BENCHMARKS.md` does that for every strategy)."
        ),
    ]
    return notebook(cells)


# ------------------------------------------------------------------------------------------------------ 2 diagnostics
def diagnostics() -> nbformat.NotebookNode:
    name = "02_diagnostics.ipynb"
    cells = header(
        name,
        "hf-plasticity: the per-layer plasticity picture",
        "How plastic are ImageNet-pretrained ViT, ConvNeXt and ResNet checkpoints on a *typical* downstream dataset "
        "(natural photos, like their pretraining data) and on an *atypical* one (grayscale handwritten digits)? "
        "`diagnose` measures it per layer, without training: a few forward/backward passes each. A free Colab GPU "
        "runs the six diagnoses in a couple of minutes (most of it is downloading).",
    )
    cells += [
        md("## Parameters"),
        code(
            """
MODELS = {
    "ViT-B/16": "google/vit-base-patch16-224",
    "ConvNeXt-T": "facebook/convnext-tiny-224",
    "ResNet-50": "microsoft/resnet-50",
}
DATASETS = {  # name -> Hub id, image column, label column, split
    "typical (CIFAR-10)": ("uoft-cs/cifar10", "img", "label", "train"),
    "atypical (MNIST)": ("ylecun/mnist", "image", "label", "train"),
}
BATCHES, BATCH_SIZE = 8, 32   # diagnose reads BATCHES x BATCH_SIZE images per (model, dataset)
TAU = 0.1                     # a unit is dormant when its normalized mean |activation| <= TAU
SEED = 42
""",
            tags=["parameters"],
        ),
        code(
            """
if TEST_MODE:  # tiny checkpoints pretrained for seconds on synthetic shapes; held-out shapes vs scikit-learn digits
    import tempfile

    from hf_plasticity.notebook_utils import tiny_image_dataset, tiny_pretrained_checkpoint

    WORK_DIR = tempfile.mkdtemp()
    MODELS = {
        name: tiny_pretrained_checkpoint(arch, f"{WORK_DIR}/{arch}", pretrain_epochs=1, n_source=320)
        for name, arch in (("ViT", "vit"), ("ConvNeXt", "convnext"), ("ResNet", "resnet"))
    }
    DATASETS = {"typical (shapes)": ("shapes", "image", "label", "train"),
                "atypical (digits)": ("digits", "image", "label", "train")}
    BATCHES, BATCH_SIZE = 2, 16
"""
        ),
        md(
            "## Diagnose every model on every dataset\n\n"
            "Each model gets a new head for the dataset's classes (as in fine-tuning), and `diagnose` reads "
            "`BATCHES` batches through the model's own image processor. It never changes the weights."
        ),
        code(
            """
import torch
from datasets import load_dataset
from transformers import AutoImageProcessor, AutoModelForImageClassification
from transformers.utils import logging as hf_logging

from hf_plasticity import diagnose

hf_logging.set_verbosity_error()  # silence the "newly initialized head" notice
examples = {}
for data_name, (dataset_id, image_column, label_column, split) in DATASETS.items():
    if TEST_MODE:
        ds = tiny_image_dataset(dataset_id, n_train=BATCHES * BATCH_SIZE, n_test=1)[split]
    else:
        ds = load_dataset(dataset_id, split=split)
    ds = ds.shuffle(seed=SEED).select(range(BATCHES * BATCH_SIZE))
    examples[data_name] = ([image.convert("RGB") for image in ds[image_column]], ds[label_column],
                           ds.features[label_column].num_classes)

reports = {}
for model_name, model_id in MODELS.items():
    processor = AutoImageProcessor.from_pretrained(model_id)
    for data_name, (images, labels, num_classes) in examples.items():
        torch.manual_seed(SEED)
        model = AutoModelForImageClassification.from_pretrained(model_id, num_labels=num_classes,
                                                                ignore_mismatched_sizes=True)
        if torch.cuda.is_available():
            model = model.cuda()
        batches = [
            {"pixel_values": processor(images[i : i + BATCH_SIZE], return_tensors="pt")["pixel_values"],
             "labels": torch.tensor(labels[i : i + BATCH_SIZE])}
            for i in range(0, len(images), BATCH_SIZE)
        ]
        reports[model_name, data_name] = diagnose(model, batches, batches=BATCHES, tau=TAU)
        del model
print(f"{len(reports)} diagnoses")
"""
        ),
        md(
            "## The overall numbers\n\n"
            "One row per (model, dataset): the share of dormant units, the share of insignificant gradients "
            "(|g| <= 1% of the network's mean |g|), the mean |gradient| and |weight|, and the effective rank of the "
            "features the head sees (out of their dimension)."
        ),
        code(
            """
rows = []
for (model_name, data_name), report in reports.items():
    rows.append((model_name, data_name, report.dormant_ratio, report.insignificant_grad_share,
                 report.mean_abs_grad, report.mean_abs_weight, report.effective_rank, report.feature_dim))
print(f"{'model':<12} {'data':<20} {'dormant':>8} {'insig.g':>8} {'mean|g|':>9} {'mean|w|':>9} {'eff.rank':>12}")
for model_name, data_name, dormant, insignificant, grad, weight, rank, dim in rows:
    print(f"{model_name:<12} {data_name:<20} {dormant:>8.1%} {insignificant:>8.1%} {grad:>9.2e} {weight:>9.3f} "
          f"{rank:>7.1f}/{dim:<4}")
"""
        ),
        md(
            "## Per layer, typical vs atypical\n\n"
            "Depth runs from the stem (0) to the last block (1). Each column is one architecture."
        ),
        code(
            """
import matplotlib.pyplot as plt

panels = [("dormant_ratio", "dormant-unit ratio"), ("insignificant_grad_share", "insignificant-gradient share"),
          ("mean_abs_grad", "mean |gradient|"), ("mean_abs_weight", "mean |weight|")]
fig, axes = plt.subplots(len(panels), len(MODELS), figsize=(5 * len(MODELS), 3 * len(panels)), squeeze=False)
for col, model_name in enumerate(MODELS):
    for data_name in DATASETS:
        layers = reports[model_name, data_name].layers
        depth = [i / max(1, len(layers) - 1) for i in range(len(layers))]
        for row, (key, label) in enumerate(panels):
            values = [getattr(layer, key) for layer in layers]
            keep = [(d, v) for d, v in zip(depth, values) if v is not None]  # layers without units have no dormancy
            axes[row, col].plot([d for d, _ in keep], [v for _, v in keep], marker=".", label=data_name)
            axes[row, col].set_ylabel(label)
    axes[0, col].set_title(model_name)
    axes[-1, col].set_xlabel("relative depth")
for ax in axes.flat:
    ax.grid(alpha=0.3)
for row in (2, 3):
    for ax in axes[row]:
        ax.set_yscale("log")
axes[0, 0].legend()
plt.tight_layout()
plt.show()
"""
        ),
        md("`DiagnosticsReport.plot` draws the same four panels for one report, into a PNG file:"),
        code(
            """
from IPython.display import Image, display

first_model, atypical = next(iter(MODELS)), list(DATASETS)[-1]
path = reports[first_model, atypical].plot("diagnostics.png", title=f"{first_model} on {atypical}")
display(Image(path))
print(reports[first_model, atypical])
"""
        ),
        md(
            "## What it means\n\n"
            "- **Dormant units** (normalized mean |activation| <= tau) pass almost nothing downstream and get almost "
            "no gradient: capacity the new task cannot use. A dormant ratio that is higher on the atypical data, "
            "above all in the late blocks, says the late, ImageNet-specific features do not fire on it.\n"
            "- **Insignificant gradients**: the share of weights whose gradient is tiny next to the network's "
            "average. Together with **large weights** this is the *saturated* signature: big weights that the "
            "downstream loss barely moves, so fine-tuning changes them slowly. (The mean |weight| is the same for "
            "both datasets: it is one checkpoint; read it next to the gradient.)\n"
            "- **Effective rank** of the penultimate features: how many directions the head can use. A low rank on "
            "the atypical data means the backbone maps its images onto few directions, and the head has little to "
            "separate the classes with.\n\n"
            "- **Probe accuracy per block** (`report.block_probe_accuracy`): how well each block's output separates "
            "the classes (nearest class mean, leave-one-out). If it peaks before the last block, the blocks after "
            "the peak re-encode the data for the pretraining task; `AutoReinitConfig` re-initializes exactly those.\n\n"
            "What to do with it: where the late blocks look dormant or saturated on your data, re-initializing them "
            "(`LayerReinitConfig()`, the default, or `AutoReinitConfig()` to let the probe choose) or recycling "
            "their dormant units (`ReDoConfig`) gives fine-tuning fresh capacity there; on typical data, where the "
            "picture looks like ImageNet's, plain fine-tuning is usually the right call. The numbers are measured with the new, random head, so "
            "gradients reflect the downstream loss at the start of fine-tuning. In test mode the models are tiny and "
            "trained for seconds: the numbers only show that the code runs.\n\n"
            "Next: `01_quickstart.ipynb` restores and fine-tunes; `PlasticityCallback(diagnostics_every=N)` logs "
            "these numbers during training."
        ),
    ]
    return notebook(cells)


# -------------------------------------------------------------------------------------------------------------- 3 hub
def hub() -> nbformat.NotebookNode:
    name = "03_hub.ipynb"
    cells = header(
        name,
        "hf-plasticity: restored checkpoints on the Hub",
        "Restore a pretrained checkpoint for a downstream task, save it with a model card that says exactly what was "
        "re-initialized, push it to the Hub, and load it back with plain `transformers` (no hf-plasticity needed to "
        "use it). You need a Hub account and a token with write access.",
    )
    cells += [
        md("## Parameters"),
        code(
            """
MODEL_ID = "google/vit-base-patch16-224"
DATASET_ID = "ylecun/mnist"          # the downstream task: its classes become the new head
IMAGE_COLUMN, LABEL_COLUMN = "image", "label"
TRAIN_SPLIT, TEST_SPLIT = "train", "test"
MAX_TRAIN, MAX_TEST = 512, 64        # only calibration batches are needed here
BATCH_SIZE = 32
REPO_ID = "your-username/vit-base-patch16-224-mnist-restored"   # change to your namespace
PRIVATE = True
SEED = 42
PUSH = True
""",
            tags=["parameters"],
        ),
        code(
            """
if TEST_MODE:  # a tiny ViT and scikit-learn's digits; the tests start a local Hub server and set HF_ENDPOINT
    import tempfile

    from hf_plasticity.notebook_utils import tiny_image_dataset, tiny_pretrained_checkpoint

    WORK_DIR = tempfile.mkdtemp()
    MODEL_ID = tiny_pretrained_checkpoint("vit", f"{WORK_DIR}/tiny-vit", pretrain_epochs=1, n_source=320)
    DATASET_ID, MAX_TRAIN, MAX_TEST, BATCH_SIZE = "digits", 64, 16, 16
    REPO_ID = "tester/tiny-vit-digits-restored"
    PUSH = bool(os.environ.get("HF_ENDPOINT"))  # without a (local) Hub to talk to, save and load locally only
    if not PUSH:
        print("No HF_ENDPOINT in test mode: the push is skipped; the checkpoint is saved and loaded locally.")
"""
        ),
        md(
            "## Log in\n\n"
            "Paste a token with write access when asked (or add an `HF_TOKEN` secret in Colab), then run the rest."
        ),
        code(
            """
if PUSH and not TEST_MODE:
    from huggingface_hub import get_token, notebook_login

    if get_token() is None:
        notebook_login()
"""
        ),
        code(DATA_CELL),
        md("## Restore"),
        code(
            """
from torch.utils.data import DataLoader
from transformers import AutoModelForImageClassification

from hf_plasticity import LayerReinitConfig, prepare_pretrained

torch.manual_seed(SEED)
model = AutoModelForImageClassification.from_pretrained(
    MODEL_ID, num_labels=len(label_names), id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
).to("cuda" if torch.cuda.is_available() else "cpu")
calibration = DataLoader(train_ds, batch_size=BATCH_SIZE, collate_fn=collate)
report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1), data=calibration)
print(report)
"""
        ),
        md(
            "## Save with its card\n\n"
            "`save_restored` writes a normal transformers checkpoint (the `plasticity` record rides in "
            "`config.json`), `plasticity_config.json`, the image processor, and a `README.md` model card with "
            "`library_name`, `base_model`, `pipeline_tag` and a section on the restore."
        ),
        code(
            """
import json
from pathlib import Path

from IPython.display import Markdown, display

from hf_plasticity.hub import save_restored

# base_model defaults to the Hub id the model was loaded from (a local path is never written there).
folder = save_restored(model, "restored-checkpoint", report=report, image_processor=processor, repo_id=REPO_ID)
print(sorted(p.name for p in Path(folder).iterdir()))
print(json.dumps(json.loads((Path(folder) / "config.json").read_text())["plasticity"], indent=1)[:800])
display(Markdown((Path(folder) / "README.md").read_text()))
"""
        ),
        md(
            "## Push\n\n"
            "`push_restored` saves the same folder and uploads it in one commit (creating the repository if needed). "
            "Pushing again only replaces the library's section of an existing card: your own text stays."
        ),
        code(
            """
from hf_plasticity.hub import push_restored

if PUSH:
    commit = push_restored(model, REPO_ID, report=report, image_processor=processor, private=PRIVATE)
    print("pushed:", commit.commit_url)
source = REPO_ID if PUSH else str(folder)
"""
        ),
        md(
            "## Load it back with plain transformers\n\n"
            "Anyone can use the checkpoint without hf-plasticity. The weights are the restored ones, bit for bit, and "
            "the card and config say what was re-initialized."
        ),
        code(
            """
from hf_plasticity import PlasticityConfig

reloaded = AutoModelForImageClassification.from_pretrained(source).to(model.device).eval()
restored_weights, loaded_weights = model.state_dict(), reloaded.state_dict()
same_weights = restored_weights.keys() == loaded_weights.keys() and all(
    torch.equal(restored_weights[key], loaded_weights[key]) for key in restored_weights
)
pixel_values = next(iter(calibration))["pixel_values"].to(model.device)
with torch.no_grad():
    same_logits = torch.allclose(model.eval()(pixel_values).logits, reloaded(pixel_values).logits)
print("bitwise-identical weights:", same_weights, "| same logits:", same_logits)
assert same_weights and same_logits
print("what was restored:", reloaded.config.plasticity["strategy"], PlasticityConfig.from_pretrained(source))
"""
        ),
        code(
            """
from huggingface_hub import ModelCard

card = ModelCard.load(source if PUSH else str(Path(folder) / "README.md"))
print(card.data.to_dict())
"""
        ),
        md(
            "Fine-tune the restored checkpoint like any other (`01_quickstart.ipynb`); when you push the "
            "fine-tuned model, `push_restored` keeps the card's hf-plasticity section."
        ),
    ]
    return notebook(cells)


# -------------------------------------------------------------------------------------------------------- 4 multi-GPU
def multi_gpu() -> nbformat.NotebookNode:
    name = "04_multi_gpu.ipynb"
    cells = header(
        name,
        "hf-plasticity on many GPUs",
        "The quick start's training, run data-parallel on every GPU of the machine with Accelerate's "
        "`notebook_launcher`. The `Trainer` is built on Accelerate, so nothing in the training code changes: the "
        "`PlasticityCallback` restores once before the first optimizer step, with rank 0 reading the calibration "
        "batches and planning and every rank applying the same plan, so all processes hold bitwise-identical "
        "weights.\n\n"
        "A free Colab runtime has one GPU (the launcher then simply runs the function); Kaggle's free 2 x T4 runtime "
        "or any multi-GPU machine shows the distributed run. Outside notebooks, use `accelerate launch` (below).",
    )
    cells += [
        md("## Parameters"),
        code(
            """
import torch

MODEL_ID = "google/vit-base-patch16-224"
DATASET_ID = "ylecun/mnist"
IMAGE_COLUMN, LABEL_COLUMN = "image", "label"
TRAIN_SPLIT, TEST_SPLIT = "train", "test"
MAX_TRAIN, MAX_TEST = 2000, 1000
EPOCHS = 3
BATCH_SIZE = 32                   # per device
LEARNING_RATE = 5e-5
SEED = 42
NUM_PROCESSES = max(1, torch.cuda.device_count())  # counts the GPUs without initializing CUDA (fork needs that)
PORT = "29500"
""",
            tags=["parameters"],
        ),
        code(
            """
if TEST_MODE:  # two CPU processes (gloo) on a tiny ViT and scikit-learn's digits
    import socket
    import tempfile

    from hf_plasticity.notebook_utils import tiny_image_dataset, tiny_pretrained_checkpoint

    WORK_DIR = tempfile.mkdtemp()
    MODEL_ID = tiny_pretrained_checkpoint("vit", f"{WORK_DIR}/tiny-vit", pretrain_epochs=1, n_source=320)
    DATASET_ID = "digits"
    MAX_TRAIN, MAX_TEST, EPOCHS, BATCH_SIZE, LEARNING_RATE = 128, 64, 1, 16, 1e-3
    NUM_PROCESSES = 2
    with socket.socket() as s:  # a free port for the process group
        s.bind(("127.0.0.1", 0))
        PORT = str(s.getsockname()[1])
"""
        ),
        md(
            "## The training function\n\n"
            "Everything that touches a device lives inside the function: `notebook_launcher` forks one process per "
            "GPU, and CUDA must not be initialized before the fork. The Hub downloads happen once, here, before "
            "the launch, so the processes read them from the cache."
        ),
        code(
            """
from datasets import load_dataset
from transformers import AutoImageProcessor

if TEST_MODE:
    raw = tiny_image_dataset(DATASET_ID, n_train=MAX_TRAIN, n_test=MAX_TEST)
else:
    raw = load_dataset(DATASET_ID)
train_raw = raw[TRAIN_SPLIT].shuffle(seed=SEED).select(range(min(MAX_TRAIN, len(raw[TRAIN_SPLIT]))))
test_raw = raw[TEST_SPLIT].shuffle(seed=SEED).select(range(min(MAX_TEST, len(raw[TEST_SPLIT]))))
label_names = train_raw.features[LABEL_COLUMN].names
processor = AutoImageProcessor.from_pretrained(MODEL_ID)
"""
        ),
        code(
            """
import json

import numpy as np


def train():
    import torch
    from accelerate.utils import gather_object
    from transformers import AutoModelForImageClassification, Trainer, TrainingArguments

    from hf_plasticity import LayerReinitConfig, PlasticityCallback

    def transform(batch):
        images = [image.convert("RGB") for image in batch[IMAGE_COLUMN]]
        return {"pixel_values": processor(images, return_tensors="pt")["pixel_values"], "labels": batch[LABEL_COLUMN]}

    def collate(rows):
        return {"pixel_values": torch.stack([row["pixel_values"] for row in rows]),
                "labels": torch.tensor([row["labels"] for row in rows])}

    def compute_metrics(eval_pred):  # plain numpy: evaluate.load would fetch from the Hub in every process
        logits, labels = eval_pred
        return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}

    torch.manual_seed(SEED)
    model = AutoModelForImageClassification.from_pretrained(
        MODEL_ID, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)}, ignore_mismatched_sizes=True,
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
    trainer = Trainer(model=model, args=args, train_dataset=train_raw.with_transform(transform),
                      eval_dataset=test_raw.with_transform(transform), data_collator=collate,
                      compute_metrics=compute_metrics, callbacks=[PlasticityCallback(LayerReinitConfig(num_blocks=1))])
    trainer.train()
    # Every process must end with the same weights: compare a checksum of the parameters across processes.
    checksum = sum(p.detach().double().sum().item() for p in trainer.model.parameters())
    checksums = gather_object([checksum])
    if trainer.is_world_process_zero():
        accuracy = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e]
        result = {"processes": trainer.args.world_size, "accuracy": accuracy, "checksums": checksums,
                  "restored": model.config.plasticity["strategy"]}
        with open("multi_gpu_result.json", "w") as f:
            json.dump(result, f)
"""
        ),
        md("## Launch"),
        code(
            """
from accelerate import notebook_launcher

notebook_launcher(train, num_processes=NUM_PROCESSES, use_port=PORT,
                  mixed_precision="fp16" if torch.cuda.is_available() else "no")
"""
        ),
        code(
            """
with open("multi_gpu_result.json") as f:
    result = json.load(f)
print(result)
assert len(set(result["checksums"])) == 1, "the processes ended with different weights"
"""
        ),
        md(
            "## From a script: `accelerate launch`\n\n"
            "Outside a notebook, put the body of `train()` in a script and launch it; the `Trainer` and the callback "
            "need no change:\n\n"
            "```bash\n"
            "accelerate config                                       # once: GPUs, machines, mixed precision\n"
            "accelerate launch --multi_gpu --num_processes 2 train.py # or: torchrun --nproc_per_node 2 train.py\n"
            "```\n\n"
            "Without the `Trainer`, `PlasticityController` drives the same restore and periodic resets in any loop: "
            "[examples/train_accelerate.py](../examples/train_accelerate.py) is a complete Accelerate script, and "
            "[examples/accelerate_configs/](../examples/accelerate_configs/) has one-GPU, multi-GPU and multi-node "
            "configs:\n\n"
            "```bash\n"
            "accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml \\\n"
            "    examples/train_accelerate.py --model facebook/convnext-tiny-224 --dataset cifar10\n"
            "# several machines: run on each node with its own --machine_rank\n"
            "accelerate launch --config_file examples/accelerate_configs/multi_node.yaml --machine_rank 0 \\\n"
            "    examples/train_accelerate.py --model facebook/convnext-tiny-224 --dataset cifar10\n"
            "```\n\n"
            "FSDP, DeepSpeed ZeRO-3 and DTensor shard the parameters, and the callback refuses them: restore the "
            "plain model first (`prepare_pretrained(model, config, data=...)` before building the `Trainer` or "
            "calling `accelerator.prepare`), then wrap it. The README's *Multi-GPU and multi-node* section has the "
            "details."
        ),
    ]
    return notebook(cells)


def notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata = {
        "accelerator": "GPU",
        "colab": {"provenance": []},
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    # Stable cell ids, so rebuilding does not churn the files.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


NOTEBOOKS = {
    "01_quickstart.ipynb": quickstart,
    "02_diagnostics.ipynb": diagnostics,
    "03_hub.ipynb": hub,
    "04_multi_gpu.ipynb": multi_gpu,
}


def render(build) -> str:
    nb = build()
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, build in NOTEBOOKS.items():
        path = HERE / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("out of date (run python notebooks/_build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
