"""FLUX.1 with an InstantX-style Canny ControlNet (``FluxControlNetPipeline``).

The family's conditioning holds four tensors, for the prompt and for the
negative prompt, as the pipeline's ``encode_prompt`` makes them:
``prompt_embeds`` (1, 512, 4096), T5-XXL's hidden states, and
``pooled_prompt_embeds`` (1, 768), CLIP-L's pooled output. Doses and
mixtures act on all four. (The text position ids are zeros; the pipeline
makes them.)

FLUX.1-dev's guidance is distilled: ``guidance_scale`` is an input of the
model, and there is no negative branch. A negative prompt acts only through
"true" classifier-free guidance, a second forward pass per step, when
``generation.true_cfg_scale`` > 1 (:meth:`Flux.uses_negative_prompt`); at 1
the negative tensors are passed and ignored.

compel cannot encode T5, so a text in compel's weight syntax stops the run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from promptsweep.families import Conditioning, PipelineOutput, refuse_weights, register, with_scheduler

if TYPE_CHECKING:
    import torch
    from diffusers import FluxControlNetPipeline
    from PIL import Image

    from promptsweep.conditions import GenerationInput
    from promptsweep.models import PipelineOptions, ResolvedWeights
    from promptsweep.study import GenerationSettings

# The transformer and T5-XXL are sharded on the hub; the single-file
# checkpoints at the repository's root (flux1-dev.safetensors, ae.safetensors)
# are not fetched.
BASE_PATTERNS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "tokenizer_2/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "text_encoder_2/model.safetensors.index.json",
    "text_encoder_2/model-*-of-*.safetensors",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "transformer/diffusion_pytorch_model-*-of-*.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
CONTROLNET_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]
SCHEDULERS = ("flow_match_euler",)
# The pipeline's default: T5 reads 512 positions.
T5_POSITIONS = 512


class Flux:
    """FLUX.1 + ControlNet (see the module's docstring)."""

    name = "flux"
    pipeline_class = "FluxControlNetPipeline"
    reads_weights = False
    # FLUX.1-dev: 1024 px, distilled guidance 3.5 (its card); 28 steps (the pipeline's default).
    defaults = {"resolution": 1024, "steps": 28, "guidance_scale": 3.5, "controlnet_scale": 1.0, "scheduler": "flow_match_euler"}

    def weight_patterns(self, role: str, safety_checker: bool) -> list[str]:
        """FLUX.1 has no safety checker: the flag fetches nothing more."""
        return list(CONTROLNET_PATTERNS if role == "controlnet" else BASE_PATTERNS)

    def load_pipeline(
        self, base: ResolvedWeights, controlnet: ResolvedWeights, options: PipelineOptions
    ) -> FluxControlNetPipeline:
        from diffusers import FluxControlNetModel, FluxControlNetPipeline

        controlnet_model = FluxControlNetModel.from_pretrained(
            controlnet.directory, torch_dtype=options.dtype, use_safetensors=True
        )
        return FluxControlNetPipeline.from_pretrained(
            base.directory, controlnet=controlnet_model, torch_dtype=options.dtype, use_safetensors=True
        )

    def encode(self, pipeline: FluxControlNetPipeline, texts: GenerationInput) -> Conditioning:
        """Both texts as the pipeline encodes a prompt; the negative one always,
        whether true CFG will use it or not."""
        import torch

        refuse_weights(self.name, texts.prompt)
        refuse_weights(self.name, texts.negative_prompt)
        device = pipeline._execution_device
        with torch.no_grad():
            positive, pooled, _ = pipeline.encode_prompt(
                texts.prompt, None, device=device, num_images_per_prompt=1, max_sequence_length=T5_POSITIONS
            )
            negative, negative_pooled, _ = pipeline.encode_prompt(
                texts.negative_prompt, None, device=device, num_images_per_prompt=1, max_sequence_length=T5_POSITIONS
            )
        return Conditioning(
            {
                "prompt_embeds": positive,
                "negative_prompt_embeds": negative,
                "pooled_prompt_embeds": pooled,
                "negative_pooled_prompt_embeds": negative_pooled,
            }
        )

    def initial_latents(
        self, pipeline: FluxControlNetPipeline, seeds: Sequence[int], height: int, width: int
    ) -> torch.Tensor:
        """Each seed's (latent channels, h / s, w / s) noise, packed as the
        pipeline packs it: 2x2 patches, shape (n, h w / (4 s^2), 4 channels),
        with the transformer's input channels = 4 latent channels."""
        from promptsweep.generation import seeded_noise

        scale = pipeline.vae_scale_factor
        patch = 2 * scale
        if height % patch or width % patch:
            raise ValueError(
                f"generation.resolution: a {width}x{height} image cannot be packed into FLUX's latent patches; "
                f"both sides must be multiples of {patch}"
            )
        channels = pipeline.transformer.config.in_channels // 4
        shape = (1, channels, height // scale, width // scale)
        noise = seeded_noise(seeds, shape)
        return pipeline._pack_latents(noise, len(seeds), channels, height // scale, width // scale)

    def generate(
        self,
        pipeline: FluxControlNetPipeline,
        control: Image.Image,
        conditioning: Conditioning,
        seeds: Sequence[int],
        settings: GenerationSettings,
    ) -> PipelineOutput:
        """One call. Each image's control latents are sampled from its own
        seed's generator, after its starting noise was drawn from another
        generator of the same seed."""
        from promptsweep.generation import generators

        scheduled = with_scheduler(pipeline, settings.scheduler, SCHEDULERS)
        device = pipeline._execution_device
        dtype = pipeline.transformer.dtype
        output = scheduled(
            **{name: tensor.to(device=device, dtype=dtype) for name, tensor in conditioning.items()},
            control_image=control,
            height=control.height,
            width=control.width,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            true_cfg_scale=settings.true_cfg_scale,
            controlnet_conditioning_scale=settings.controlnet_scale,
            generator=generators(list(seeds)),
            latents=self.initial_latents(pipeline, seeds, control.height, control.width).to(device=device, dtype=dtype),
            output_type="np",
        )
        return PipelineOutput(output.images, [False] * len(seeds))

    def write_tiny_model(self, base_dir: Path, controlnet_dir: Path) -> None:
        from promptsweep.families.flux_tiny import write_tiny_model

        write_tiny_model(base_dir, controlnet_dir)

    def controlnet_mismatch(self, base_dir: Path, controlnet_dir: Path) -> str | None:
        """A ``FluxControlNetModel`` with the transformer's packed input
        channels, text and pooled widths, attention width and rotary axes."""
        transformer = json.loads((Path(base_dir) / "transformer" / "config.json").read_text())
        control = json.loads((Path(controlnet_dir) / "config.json").read_text())
        if control.get("_class_name") != "FluxControlNetModel":
            return f"it is a {control.get('_class_name')}, not a FluxControlNetModel for a FLUX transformer"
        for key in (
            "in_channels",
            "joint_attention_dim",
            "pooled_projection_dim",
            "num_attention_heads",
            "attention_head_dim",
            "axes_dims_rope",
        ):
            if control.get(key) != transformer.get(key):
                return f"its {key} is {control.get(key)}, the base transformer's {transformer.get(key)}"
        return None

    def uses_negative_prompt(self, settings: GenerationSettings) -> bool:
        """Only true classifier-free guidance reads the negative prompt:
        ``true_cfg_scale`` > 1 (``guidance_scale`` is FLUX.1-dev's distilled
        guidance input, not CFG)."""
        return settings.true_cfg_scale > 1.0


FAMILY = register(Flux())
