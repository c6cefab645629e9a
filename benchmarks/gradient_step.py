"""Time and peak memory of one gradient step of the latent search, with
Stable Diffusion 1.5's and ControlNet's real shapes.

    python benchmarks/gradient_step.py [--resolution 512] [--steps 20] [--backprop-steps 1 5]

For each k of ``--backprop-steps``, one image (one seed) is generated with
gradients flowing through the last k denoising steps and the decoder
(``SD15.differentiable_images``, checkpointed), its sharpness backpropagated to
the weight of one prompt direction, as a gradient trial of the search does;
then the same with four learnable tokens in the prompt (the ``tokens``
space: gradients also flow back through the text encoder); and, for
comparison, the same image without gradients (``SD15.generate``).
Prints seconds (median of ``--repeats`` after one warm-up), on CUDA the peak
memory allocated, and the gradient, which must be finite and non-zero in the
dtype measured. Weights are random (built from the published
configurations, as in ``gpu_check.py``): the compute and memory are the real
model's, the pictures mean nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gpu_check import edge_control, sd15_shaped_pipeline
from promptsweep import differentiable
from promptsweep.conditions import GenerationInput
from promptsweep.families.sd15 import FAMILY as SD15
from promptsweep.study import GenerationSettings


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measured(device: str, repeats: int, run) -> tuple[float, float | None]:
    """Median seconds of ``run`` over ``repeats`` calls after a warm-up, and the
    peak memory in GiB allocated during them (CUDA only)."""
    run()
    synchronise(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronise(device)
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return statistics.median(seconds), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backprop-steps", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None)
    arguments = parser.parse_args()
    device = arguments.device
    dtype = getattr(torch, arguments.dtype or ("float16" if device.startswith("cuda") else "float32"))
    pipeline = sd15_shaped_pipeline(dtype, device)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(f"# {name}, {dtype}, {arguments.resolution} px, {arguments.steps} UniPC steps, guidance 9, one image")
    control = edge_control(arguments.resolution)
    settings = GenerationSettings(steps=arguments.steps, guidance_scale=9.0, controlnet_scale=1.0, scheduler="unipc")
    baseline = SD15.encode(pipeline, GenerationInput("a house", ""))
    word = SD15.encode(pipeline, GenerationInput("a house, best quality", ""))
    _, vocabulary = SD15.vocabulary(pipeline)

    def without_gradients() -> None:
        SD15.generate(pipeline, control, word, [0], settings)

    seconds, peak = measured(device, arguments.repeats, without_gradients)
    print(f"no gradients: {seconds:.2f} s" + (f", peak {peak:.2f} GiB" if peak is not None else ""))
    for backprop_steps in arguments.backprop_steps:

        gradients: list[float] = []

        def gradient_step() -> None:
            weight = torch.ones((), device=baseline["prompt_embeds"].device, requires_grad=True)
            conditioning = baseline + (word - baseline).scale(weight)
            pictures = SD15.differentiable_images(pipeline, control, conditioning, [0], settings, backprop_steps)
            differentiable.sharpness(pictures).mean().backward()
            gradients.append(float(weight.grad))

        seconds, peak = measured(device, arguments.repeats, gradient_step)
        print(
            f"gradient through the last {backprop_steps} steps: {seconds:.2f} s"
            + (f", peak {peak:.2f} GiB" if peak is not None else "")
            # A gradient that is 0 or not finite in fp16 would stall the search without a word.
            + f", d sharpness / d weight {gradients[-1]:.4g}"
        )

        def tokens_step() -> None:
            soft = vocabulary[:4].clone().to(device).requires_grad_(True)
            conditioning = SD15.soft_prompt_conditioning(pipeline, GenerationInput("a house", ""), soft)
            pictures = SD15.differentiable_images(pipeline, control, conditioning, [0], settings, backprop_steps)
            differentiable.sharpness(pictures).mean().backward()
            gradients.append(float(soft.grad.float().norm()))

        seconds, peak = measured(device, arguments.repeats, tokens_step)
        print(
            f"four learnable tokens, through the last {backprop_steps} steps: {seconds:.2f} s"
            + (f", peak {peak:.2f} GiB" if peak is not None else "")
            + f", |d sharpness / d tokens| {gradients[-1]:.4g}"
        )


if __name__ == "__main__":
    main()
