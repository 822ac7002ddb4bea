"""``python main.py eval --ckpt_path X``: score a checkpoint on a benchmark (HellaSwag), on any number of devices."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Literal, Optional, Union

from lit_gpt_mini.errors import ConfigError
from lit_gpt_mini.evals.hellaswag import HellaSwag, evaluate_batch, score
from lit_gpt_mini.log import get_logger

log = get_logger(__name__)


def evaluate(
    ckpt_path: str,
    task: Literal["hellaswag"] = "hellaswag",
    hellaswag: Optional[HellaSwag] = None,
    accelerator: str = "auto",
    devices: Union[int, str] = 1,
    precision: Optional[str] = None,
    out: Optional[str] = None,
) -> dict[str, float]:
    """Score the model of ``ckpt_path`` (a run's ``.ckpt`` or an exported ``.pth``, read once per process).

    Args:
        ckpt_path: The model to score; its tokenizer must be GPT-2's for HellaSwag.
        task: The benchmark.
        hellaswag: Which HellaSwag examples (file, split, limit, batch size).
        accelerator: As Lightning's: ``auto``, ``cpu``, ``cuda``...
        devices: As Lightning's: ``2`` scores on two processes, each example once.
        precision: ``bf16-mixed`` or ``32-true``; ``None``: bf16-mixed on a GPU, 32-true elsewhere.
        out: Also write the figures to this JSON file.
    """
    from lightning.fabric import Fabric

    from lit_gpt_mini.checkpoint import load_model

    data = hellaswag or HellaSwag()
    fabric = Fabric(accelerator=accelerator, devices=devices, precision=precision or "32-true")
    if precision is None and fabric.device.type == "cuda":
        fabric = Fabric(accelerator=accelerator, devices=devices, precision="bf16-mixed")
    fabric.launch()
    loaded = load_model(ckpt_path)
    model, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer.kind != "gpt2":
        raise ConfigError(f"{ckpt_path} has a {tokenizer.kind} tokenizer: {task} is scored with GPT-2's vocabulary, so "
                          f"only a model trained on GPT-2 tokens (data.tokenizer.kind: gpt2) can be scored on it")
    if fabric.local_rank == 0:  # each node its own copy, as the training data
        data.prepare()
    fabric.barrier()
    model = model.to(fabric.device).eval()
    batches = data.batches(model.config.block_size, fabric.global_rank, fabric.world_size,
                           pin_memory=fabric.device.type == "cuda")
    figures = score(batches, lambda batch: evaluate_batch(model, batch), fabric.device, fabric.autocast,
                    lambda counts: fabric.all_reduce(counts, reduce_op="sum"))
    if fabric.global_rank == 0:
        log.info(f"{task}: acc {figures['acc']:.4f}, acc_norm {figures['acc_norm']:.4f} over {figures['examples']:,} "
                 f"examples of {data.file} ({ckpt_path}, {fabric.world_size} device(s), {fabric.strategy.precision.precision})")
        if out:
            Path(out).write_text(json.dumps({"task": task, "ckpt_path": str(ckpt_path), **figures}) + "\n")
    fabric.strategy.teardown()  # (with several processes: leaves the process group, or each aborts at its exit)
    return figures


def main(args: Optional[list[str]] = None) -> dict[str, float]:
    """``main.py eval``: the arguments of :func:`evaluate` through jsonargparse (``--hellaswag.path`` ...)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False, allow_abbrev=False, prog="main.py eval", description=__doc__)
    parser.add_function_arguments(evaluate, as_positional=False, skip={"hellaswag"})
    parser.add_class_arguments(HellaSwag, "hellaswag", help="Which HellaSwag examples.")
    init = parser.instantiate_classes(parser.parse_args(args))
    return evaluate(**{name: init[name] for name in inspect.signature(evaluate).parameters})
