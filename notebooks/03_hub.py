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
# # hf-plasticity: restored checkpoints on the Hub
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/your-org/hf-plasticity/blob/main/notebooks/03_hub.ipynb)
#
# Restore a pretrained checkpoint for a downstream task, save it with a model card that says exactly what was
# re-initialized, push it to the Hub, and load it back with plain `transformers` (no hf-plasticity needed to use it).
# You need a Hub account and a token with write access.

# %% tags=["skip-execution"]
# `your-org/hf-plasticity` (here and in the badge above) is a placeholder: put the GitHub owner/name of the
# repository you got hf-plasticity from. From a local checkout instead (a local Jupyter):
# `%pip install -q -e "/path/to/hf-plasticity[plot]"`.
# %pip install -q "hf-plasticity[plot] @ git+https://github.com/your-org/hf-plasticity"

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
MODEL_ID = "google/vit-base-patch16-224"
DATASET_ID = "ylecun/mnist"  # the downstream task: its classes become the new head
IMAGE_COLUMN, LABEL_COLUMN = "image", "label"
TRAIN_SPLIT = "train"
MAX_TRAIN = 512  # only calibration batches are needed here
BATCH_SIZE = 32
REPO_ID = "your-username/vit-base-patch16-224-mnist-restored"  # change to your namespace
PRIVATE = True
PUSH = True  # False: save and load locally only
SEED = 42

# %% [markdown]
# ## Log in
#
# Paste a token with write access when asked (or add an `HF_TOKEN` secret in Colab), then run the rest.

# %%
from huggingface_hub import get_token, notebook_login

if PUSH and get_token() is None:
    notebook_login()

# %% [markdown]
# ## The calibration data
#
# A few batches of the downstream data, through the model's own image processor: the restore measures the diagnostics
# before and after on them (and data-dependent strategies score on them).

# %%
import torch
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoImageProcessor

train_raw = load_dataset(DATASET_ID, split=TRAIN_SPLIT).shuffle(seed=SEED)
train_raw = train_raw.select(range(min(MAX_TRAIN, len(train_raw))))
label_names = train_raw.features[LABEL_COLUMN].names
processor = AutoImageProcessor.from_pretrained(MODEL_ID)


def transform(batch):
    images = [image.convert("RGB") for image in batch[IMAGE_COLUMN]]
    return {"pixel_values": processor(images, return_tensors="pt")["pixel_values"], "labels": batch[LABEL_COLUMN]}


def collate(rows):
    return {
        "pixel_values": torch.stack([row["pixel_values"] for row in rows]),
        "labels": torch.tensor([row["labels"] for row in rows]),
    }


calibration = DataLoader(train_raw.with_transform(transform), batch_size=BATCH_SIZE, collate_fn=collate)

# %% [markdown]
# ## Restore

# %%
from transformers import AutoModelForImageClassification

from hf_plasticity import LayerReinitConfig, prepare_pretrained

torch.manual_seed(SEED)
model = AutoModelForImageClassification.from_pretrained(
    MODEL_ID,
    num_labels=len(label_names),
    id2label=dict(enumerate(label_names)),
    label2id={name: i for i, name in enumerate(label_names)},
    ignore_mismatched_sizes=True,
).to("cuda" if torch.cuda.is_available() else "cpu")
report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1), data=calibration)
print(report)

# %% [markdown]
# ## Save with its card
#
# `save_restored` writes a normal transformers checkpoint (the `plasticity` record rides in `config.json`),
# `plasticity_config.json`, the image processor, `plasticity.png` (the diagnostics before and after, per block) and a
# `README.md` model card with `library_name`, `base_model`, `pipeline_tag` and a section on the restore that shows
# the figure.

# %%
import json
from pathlib import Path

from IPython.display import Markdown, display

from hf_plasticity import save_restored

# base_model defaults to the Hub id the model was loaded from (a local path is never written there).
folder = save_restored(model, "restored-checkpoint", report=report, image_processor=processor, repo_id=REPO_ID)
print(sorted(p.name for p in Path(folder).iterdir()))
print(json.dumps(json.loads((Path(folder) / "config.json").read_text())["plasticity"], indent=1)[:800])
display(Markdown((Path(folder) / "README.md").read_text().replace("](plasticity.png)", f"]({folder}/plasticity.png)")))

# %% [markdown]
# ## Push
#
# `push_restored` saves the same folder and uploads it in one commit (creating the repository if needed). Pushing
# again only replaces the library's section of an existing card: your own text stays.

# %%
from hf_plasticity import push_restored

if PUSH:
    commit = push_restored(model, REPO_ID, report=report, image_processor=processor, private=PRIVATE)
    print("pushed:", commit.commit_url)
source = REPO_ID if PUSH else str(folder)

# %% [markdown]
# ## Load it back with plain transformers
#
# Anyone can use the checkpoint without hf-plasticity. The weights are the restored ones, bit for bit, and the card
# and config say what was re-initialized.

# %%
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

# %%
from huggingface_hub import ModelCard

card = ModelCard.load(source if PUSH else str(Path(folder) / "README.md"))
print(card.data.to_dict())

# %% [markdown]
# Fine-tune the restored checkpoint like any other (`01_quickstart.ipynb`). With the `PlasticityCallback` in a
# `PlasticityTrainer`, the `Trainer`'s own output folder and the repository `trainer.push_to_hub()` writes carry the card's hf-plasticity
# section and `plasticity_config.json` too.
