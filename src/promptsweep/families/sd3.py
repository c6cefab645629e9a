"""Stable Diffusion 3.5 with its Canny ControlNet (``StableDiffusion3ControlNetPipeline``).

The family's conditioning holds four tensors, for the prompt and for the
negative prompt, exactly as the pipeline's ``encode_prompt`` makes them:
``prompt_embeds`` (1, 77 + 256, 4096), the penultimate hidden states of
CLIP-L and CLIP-G concatenated and zero-padded to T5-XXL's width, followed
along the sequence by T5's 256 positions; and ``pooled_prompt_embeds``
(1, 768 + 1280), the two CLIP encoders' pooled outputs. Doses and mixtures
act on all four. An empty negative prompt is the encoding of the empty text,
as in the pipeline.

compel cannot encode T5, so a text in compel's weight syntax stops the run.
The SD 3.5 Large Canny ControlNet reads no text (its config has no
``joint_attention_dim``): a prompt acts through the base transformer only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from promptsweep.families import Conditioning, PipelineOutput, refuse_weights, register, with_scheduler

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusion3ControlNetPipeline
    from PIL import Image

    from promptsweep.conditions import GenerationInput
    from promptsweep.models import PipelineOptions, ResolvedWeights
    from promptsweep.study import GenerationSettings

# The transformer and T5-XXL are sharded on the hub (an index and numbered
# shards); the single-file checkpoint at the repository's root is not fetched.
BASE_PATTERNS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "tokenizer_2/*",
    "tokenizer_3/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "text_encoder_3/config.json",
    "text_encoder_3/model.safetensors",
    "text_encoder_3/model.safetensors.index.json",
    "text_encoder_3/model-*-of-*.safetensors",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "transformer/diffusion_pytorch_model-*-of-*.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
CONTROLNET_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]
SCHEDULERS = ("flow_match_euler",)
# The pipeline's default: T5 reads 256 positions.
T5_POSITIONS = 256
# The ControlNet encodes the control image through the VAE and samples the
# posterior without a generator, from the global RNG; it is seeded with this
# for every call so that an image does not depend on earlier calls.
CONTROL_ENCODING_SEED = 0


class SD3:
    """Stable Diffusion 3.5 + ControlNet (see the module's docstring)."""

    name = "sd3"
    pipeline_class = "StableDiffusion3ControlNetPipeline"
    reads_weights = False
    # SD 3.5 Large: 1024 px; 28 steps (the pipeline's default); guidance in
    # the 3.5-7 range its card and the pipeline's default (7.0) span.
    defaults = {"resolution": 1024, "steps": 28, "guidance_scale": 4.5, "controlnet_scale": 1.0, "scheduler": "flow_match_euler"}

    def weight_patterns(self, role: str, safety_checker: bool) -> list[str]:
        """SD 3.5 has no safety checker: the flag fetches nothing more."""
        return list(CONTROLNET_PATTERNS if role == "controlnet" else BASE_PATTERNS)

    def load_pipeline(
        self, base: ResolvedWeights, controlnet: ResolvedWeights, options: PipelineOptions
    ) -> StableDiffusion3ControlNetPipeline:
        from diffusers import SD3ControlNetModel, StableDiffusion3ControlNetPipeline

        controlnet_model = SD3ControlNetModel.from_pretrained(
            controlnet.directory, torch_dtype=options.dtype, use_safetensors=True
        )
        return StableDiffusion3ControlNetPipeline.from_pretrained(
            base.directory, controlnet=controlnet_model, torch_dtype=options.dtype, use_safetensors=True
        )

    def encode(self, pipeline: StableDiffusion3ControlNetPipeline, texts: GenerationInput) -> Conditioning:
        import torch

        refuse_weights(self.name, texts.prompt)
        refuse_weights(self.name, texts.negative_prompt)
        with torch.no_grad():
            positive, negative, pooled, negative_pooled = pipeline.encode_prompt(
                texts.prompt,
                None,
                None,
                device=pipeline._execution_device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=True,
                negative_prompt=texts.negative_prompt,
                max_sequence_length=T5_POSITIONS,
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
        self, pipeline: StableDiffusion3ControlNetPipeline, seeds: Sequence[int], height: int, width: int
    ) -> torch.Tensor:
        """Shape (n, transformer input channels, h / s, w / s), ``s`` the VAE's scale."""
        from promptsweep.generation import seeded_noise

        scale = pipeline.vae_scale_factor
        shape = (1, pipeline.transformer.config.in_channels, height // scale, width // scale)
        return seeded_noise(seeds, shape)

    def generate(
        self,
        pipeline: StableDiffusion3ControlNetPipeline,
        control: Image.Image,
        conditioning: Conditioning,
        seeds: Sequence[int],
        settings: GenerationSettings,
    ) -> PipelineOutput:
        """One call; the global RNG the pipeline samples the control image's
        latents from is seeded inside a fork, and restored after."""
        import torch

        from promptsweep.generation import generators

        scheduled = with_scheduler(pipeline, settings.scheduler, SCHEDULERS)
        device = pipeline._execution_device
        dtype = pipeline.transformer.dtype
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(CONTROL_ENCODING_SEED)
            output = scheduled(
                **{name: tensor.to(device=device, dtype=dtype) for name, tensor in conditioning.items()},
                control_image=control,
                height=control.height,
                width=control.width,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance_scale,
                controlnet_conditioning_scale=settings.controlnet_scale,
                generator=generators(list(seeds)),
                latents=self.initial_latents(pipeline, seeds, control.height, control.width).to(
                    device=device, dtype=dtype
                ),
                output_type="np",
            )
        return PipelineOutput(output.images, [False] * len(seeds))

    def write_tiny_model(self, base_dir: Path, controlnet_dir: Path) -> None:
        from promptsweep.families.sd3_tiny import write_tiny_model

        write_tiny_model(base_dir, controlnet_dir)

    def controlnet_mismatch(self, base_dir: Path, controlnet_dir: Path) -> str | None:
        """An ``SD3ControlNetModel`` whose latent channels, patch size and
        pooled width are the transformer's; one that reads text must read
        the transformer's text width, and one that borrows the transformer's
        position embedding (``use_pos_embed: false``) must have its width."""
        transformer = json.loads((Path(base_dir) / "transformer" / "config.json").read_text())
        control = json.loads((Path(controlnet_dir) / "config.json").read_text())
        if control.get("_class_name") != "SD3ControlNetModel":
            return f"it is a {control.get('_class_name')}, not an SD3ControlNetModel for an SD3 transformer"
        for key in ("in_channels", "patch_size", "pooled_projection_dim"):
            if control.get(key) != transformer.get(key):
                return f"its {key} is {control.get(key)}, the base transformer's {transformer.get(key)}"
        if control.get("joint_attention_dim") not in (None, transformer.get("joint_attention_dim")):
            return (
                f"its joint_attention_dim is {control.get('joint_attention_dim')}, "
                f"the base transformer's {transformer.get('joint_attention_dim')}"
            )
        if control.get("use_pos_embed") is False:
            widths = [config["num_attention_heads"] * config["attention_head_dim"] for config in (control, transformer)]
            if widths[0] != widths[1]:
                return f"it shares the transformer's position embedding but is {widths[0]} wide, not {widths[1]}"
        return None

    def uses_negative_prompt(self, settings: GenerationSettings) -> bool:
        """Classifier-free guidance's negative branch runs only when guidance_scale > 1."""
        return settings.guidance_scale > 1.0


FAMILY = register(SD3())
