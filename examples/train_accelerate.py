"""Fine-tune an image classifier with a plain Accelerate loop, restoring plasticity with hf-plasticity.

One GPU, several GPUs, several nodes (the same script; see examples/accelerate_configs/):

    accelerate launch --config_file examples/accelerate_configs/single_gpu.yaml examples/train_accelerate.py \
        --model facebook/convnext-tiny-224 --dataset cifar10 --image-column img --strategy redo --every-n-steps 1000
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/train_accelerate.py ...
    # on every node, with its own --machine_rank:
    accelerate launch --config_file examples/accelerate_configs/multi_node.yaml --machine_rank 0 \
        examples/train_accelerate.py ...

Offline smoke run (a tiny random ConvNeXt on synthetic data, CPU, about 10 s):

    python examples/train_accelerate.py --tiny --max-steps 20

The rules that keep every process bitwise identical: call `controller.restore` on every process *before*
`accelerator.prepare` (FSDP / ZeRO-3 shard the parameters there), and `controller.step` on every process after
every optimizer step. Only rank 0 reads the calibration batches and plans; every process applies the same plan.

The optimizer is built after the restore, from `plasticity_param_groups`: the re-drawn blocks train at `--reinit-lr`
(a from-scratch rate), the pretrained backbone at `--lr`. On a resume the restore runs again (it is deterministic), so
the optimizer has the same groups when `accelerator.load_state` puts the checkpoint's weights and state back.
"""

from __future__ import annotations

import argparse
import os

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from hf_plasticity import PlasticityController, get_config_class, plasticity_param_groups


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="facebook/convnext-tiny-224", help="Hub id or local folder.")
    parser.add_argument("--dataset", default="cifar10", help="datasets name or local folder.")
    parser.add_argument("--image-column", default="img")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--tiny", action="store_true", help="Tiny random ConvNeXt and synthetic data (offline).")
    parser.add_argument("--cpu", action="store_true", help="Run on CPU (gloo between processes); implied by --tiny.")
    parser.add_argument("--strategy", default="redo", help="hf-plasticity strategy name.")
    parser.add_argument("--every-n-steps", type=int, default=None, help="Period of a periodic strategy.")
    parser.add_argument("--diagnostics-every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32, help="Per process.")
    parser.add_argument("--lr", type=float, default=1e-4, help="Learning rate of the pretrained backbone.")
    parser.add_argument("--reinit-lr", type=float, default=None, help="Re-drawn blocks' and head's lr (default: lr).")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--resume", default=None, help="A folder written by accelerator.save_state.")
    parser.add_argument("--output-dir", default="plasticity-run")
    parser.add_argument("--report-to", default="tensorboard", help="Accelerate tracker, or 'none'.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def build(args: argparse.Namespace):
    """The model and a dataset of {"pixel_values", "labels"} rows."""
    if args.tiny:
        from datasets import Dataset
        from transformers import ConvNextConfig, ConvNextForImageClassification

        model = ConvNextForImageClassification(
            ConvNextConfig(hidden_sizes=[16, 32], depths=[2, 2], num_stages=2, num_labels=3)
        )
        generator = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 3, (512,), generator=generator)
        pixels = 0.3 * torch.randn(512, 3, 32, 32, generator=generator)
        pixels[torch.arange(512), labels] += 1.0
        data = Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()}).with_format("torch")
        return model, data

    from datasets import load_dataset
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    data = load_dataset(args.dataset, split="train")
    names = data.features[args.label_column].names
    model = AutoModelForImageClassification.from_pretrained(
        args.model,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,
    )
    processor = AutoImageProcessor.from_pretrained(args.model)

    def transform(rows):
        images = [image.convert("RGB") for image in rows[args.image_column]]
        pixels = processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": torch.tensor(rows[args.label_column])}

    return model, data.with_transform(transform)


def collate(rows):
    return {
        "pixel_values": torch.stack([torch.as_tensor(r["pixel_values"]) for r in rows]),
        "labels": torch.tensor([int(r["labels"]) for r in rows]),
    }


def main() -> None:
    args = parse_args()
    report_to = None if args.report_to == "none" else args.report_to
    accelerator = Accelerator(log_with=report_to, project_dir=args.output_dir, cpu=args.cpu or args.tiny)
    set_seed(args.seed)
    model, data = build(args)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, collate_fn=collate, drop_last=True)
    # Calibration / probe batches: a plain, unsharded loader (only rank 0 reads it).
    calibration = DataLoader(data, batch_size=args.batch_size, shuffle=False, collate_fn=collate)

    periodic = {} if args.every_n_steps is None else {"every_n_steps": args.every_n_steps}
    config = get_config_class(args.strategy)(**periodic)
    controller = PlasticityController(config, data=calibration, diagnostics_every=args.diagnostics_every)
    report = controller.restore(model)  # every process, before `prepare` and before the optimizer exists
    if report is not None and accelerator.is_main_process and args.resume is None:
        print(report)
    groups = plasticity_param_groups(model, lr=args.lr, reinit_lr=args.reinit_lr, weight_decay=args.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(controller)  # its state (schedules, "restored") goes with save_state
    if args.resume is not None:
        accelerator.load_state(args.resume)
    controller.attach(accelerator.unwrap_model(model))
    accelerator.init_trackers("hf-plasticity", config={"strategy": args.strategy, "lr": args.lr})
    if controller.restore_summary is not None:
        accelerator.log({"plasticity/restore/reinitialized": controller.restore_summary.total_reinitialized}, step=0)

    step = controller.last_step
    model.train()
    while step < args.max_steps:
        epoch_loader = accelerator.skip_first_batches(loader, step % len(loader)) if step % len(loader) else loader
        for batch in epoch_loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            metrics = controller.step(step, epoch=step / len(loader), optimizer=optimizer)
            accelerator.log({"train/loss": loss.item(), **metrics}, step=step)  # written by the main process only
            if step % args.save_every == 0:
                accelerator.save_state(os.path.join(args.output_dir, f"checkpoint-{step}"))
            if step >= args.max_steps:
                break
    controller.detach()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(os.path.join(args.output_dir, "final"))
        print(
            f"{accelerator.num_processes} process(es), step {step}: loss {loss.item():.4f}; "
            f"{controller.total_resets} periodic resets"
        )
    accelerator.end_training()  # last: it also ends the process group


if __name__ == "__main__":
    main()
