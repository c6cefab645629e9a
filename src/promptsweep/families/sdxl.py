"""Stable Diffusion XL with a Canny ControlNet (``StableDiffusionXLControlNetPipeline``).

The family's conditioning holds four tensors: for the prompt and for the
negative prompt, the penultimate hidden states of both CLIP text encoders
concatenated along the width, (1, 77, 768 + 1280), and the pooled, projected
output of the second encoder, (1, 1280). Doses and mixtures act on all four.

The negative prompt is always encoded as a text, whatever it is: an empty
negative prompt is the encoding of the empty text ``E("")``, never the
zeros that ``force_zeros_for_empty_prompt`` puts in its place when a
pipeline is called without one. So a dose of 0 or 1 gives exactly the
conditioning of the baseline or of the word variant, and the empty
negative of the baseline is the same tensors in every condition.

Texts in compel's weight syntax go through compel with both encoders
(penultimate hidden states, not normalised, as SDXL reads them); their pooled
vector, which cannot carry per-token weights, is that of their words without
the weights. Every other text is encoded exactly as the pipeline's
``encode_prompt`` encodes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptsweep.families import Conditioning, PipelineOutput, register, with_scheduler

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionXLControlNetPipeline
    from PIL import Image

    from promptsweep.conditions import GenerationInput
    from promptsweep.models import PipelineOptions, ResolvedWeights
    from promptsweep.study import GenerationSettings

# The components the pipeline loads, each in safetensors: the hub repository
# also holds fp16 variants, ONNX/OpenVINO exports, a second VAE (vae_1_0) and
# a single-file checkpoint, none of which is fetched.
BASE_PATTERNS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "tokenizer_2/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
CONTROLNET_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]
# UNet samplers; the flow-matching one does not fit an epsilon-predicting UNet.
SCHEDULERS = ("unipc", "ddim")


def _words(text: str) -> str:
    """``text`` without compel's weight syntax: its fragments' words, in order."""
    from compel import Compel
    from compel.prompt_parser import FlattenedPrompt

    prompts = Compel.parse_prompt_string(text).prompts
    if len(prompts) != 1 or not isinstance(prompts[0], FlattenedPrompt):
        raise ValueError(
            f"text {text!r} is a compel conjunction or blend; write one plain or weighted text"
        )
    return " ".join(" ".join(fragment.text for fragment in prompts[0].children).split())


def _compel_encode(pipeline: Any, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``text`` in compel syntax: the hidden states of both encoders through
    compel (one compel per encoder: compel's list form of the two is
    deprecated), truncated to 77 positions as the pipeline truncates. A pooled
    vector carries no per-token weights, and compel would pool the raw text,
    brackets and numbers included; it is the pipeline's pooled output of the
    text's words instead."""
    import torch
    from compel import Compel, ReturnedEmbeddingsType

    def hidden_states(tokenizer: Any, text_encoder: Any) -> torch.Tensor:
        compel = Compel(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            truncate_long_prompts=True,
            padding_attention_mask_value=1,
            returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
        )
        return compel(text)

    with torch.no_grad():
        embeds = torch.cat(
            [
                hidden_states(pipeline.tokenizer, pipeline.text_encoder),
                hidden_states(pipeline.tokenizer_2, pipeline.text_encoder_2),
            ],
            dim=-1,
        )
    if embeds.shape[1] != pipeline.tokenizer.model_max_length:
        raise ValueError(
            f"text {text!r} encodes to {embeds.shape[1]} positions, not {pipeline.tokenizer.model_max_length}: "
            "compel's .and() conjunctions concatenate windows; write one plain or weighted text"
        )
    _, pooled = _pipeline_encode(pipeline, _words(text))
    return embeds, pooled


def _pipeline_encode(pipeline: Any, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    with torch.no_grad():
        embeds, _, pooled, _ = pipeline.encode_prompt(
            text, device=pipeline._execution_device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
    return embeds, pooled


def encode_text(pipeline: Any, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states of both encoders, pooled output) of one text: through
    compel when it has weights (``emphasis.has_weights``), otherwise as the
    pipeline's ``encode_prompt`` encodes a prompt."""
    from promptsweep.emphasis import has_weights

    return _compel_encode(pipeline, text) if has_weights(text) else _pipeline_encode(pipeline, text)


class SDXL:
    """Stable Diffusion XL + ControlNet (see the module's docstring)."""

    name = "sdxl"
    pipeline_class = "StableDiffusionXLControlNetPipeline"
    reads_weights = True
    # SDXL's native 1024 px and the pipeline's guidance 5.0; 30 UniPC steps
    # (the pipeline's 50 default to SDXL's own Euler sampler, UniPC needs fewer).
    defaults = {"resolution": 1024, "steps": 30, "guidance_scale": 5.0, "controlnet_scale": 1.0, "scheduler": "unipc"}

    def weight_patterns(self, role: str, safety_checker: bool) -> list[str]:
        """SDXL has no safety checker: the flag fetches nothing more."""
        return list(CONTROLNET_PATTERNS if role == "controlnet" else BASE_PATTERNS)

    def load_pipeline(
        self, base: ResolvedWeights, controlnet: ResolvedWeights, options: PipelineOptions
    ) -> StableDiffusionXLControlNetPipeline:
        """Safetensors only. No invisible watermark: it would change the
        pixels every metric compares."""
        from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

        controlnet_model = ControlNetModel.from_pretrained(
            controlnet.directory, torch_dtype=options.dtype, use_safetensors=True
        )
        return StableDiffusionXLControlNetPipeline.from_pretrained(
            base.directory,
            controlnet=controlnet_model,
            torch_dtype=options.dtype,
            use_safetensors=True,
            add_watermarker=False,
        )

    def encode(self, pipeline: StableDiffusionXLControlNetPipeline, texts: GenerationInput) -> Conditioning:
        """Both texts encoded as texts (an empty negative is ``E("")``; see the
        module's docstring)."""
        positive, positive_pooled = encode_text(pipeline, texts.prompt)
        negative, negative_pooled = encode_text(pipeline, texts.negative_prompt)
        return Conditioning(
            {
                "prompt_embeds": positive,
                "negative_prompt_embeds": negative,
                "pooled_prompt_embeds": positive_pooled,
                "negative_pooled_prompt_embeds": negative_pooled,
            }
        )

    def initial_latents(
        self, pipeline: StableDiffusionXLControlNetPipeline, seeds: Sequence[int], height: int, width: int
    ) -> torch.Tensor:
        """Shape (n, UNet input channels, h / s, w / s), ``s`` the VAE's scale."""
        from promptsweep.generation import seeded_noise

        scale = pipeline.vae_scale_factor
        shape = (1, pipeline.unet.config.in_channels, height // scale, width // scale)
        return seeded_noise(seeds, shape)

    def generate(
        self,
        pipeline: StableDiffusionXLControlNetPipeline,
        control: Image.Image,
        conditioning: Conditioning,
        seeds: Sequence[int],
        settings: GenerationSettings,
    ) -> PipelineOutput:
        """Original and target size are the image's own (the pipeline's
        default), crop corner (0, 0)."""
        from promptsweep.generation import generators

        scheduled = with_scheduler(pipeline, settings.scheduler, SCHEDULERS, add_watermarker=False)
        device = pipeline._execution_device
        dtype = pipeline.unet.dtype
        output = scheduled(
            **{name: tensor.to(device=device, dtype=dtype) for name, tensor in conditioning.items()},
            image=control,
            height=control.height,
            width=control.width,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            controlnet_conditioning_scale=settings.controlnet_scale,
            guess_mode=settings.guess_mode,
            eta=settings.eta,
            generator=generators(list(seeds)),
            latents=self.initial_latents(pipeline, seeds, control.height, control.width).to(device=device, dtype=dtype),
            output_type="np",
        )
        return PipelineOutput(output.images, [False] * len(seeds))

    def write_tiny_model(self, base_dir: Path, controlnet_dir: Path) -> None:
        from promptsweep.families.sdxl_tiny import write_tiny_model

        write_tiny_model(base_dir, controlnet_dir)

    def controlnet_mismatch(self, base_dir: Path, controlnet_dir: Path) -> str | None:
        """A UNet ``ControlNetModel`` with the UNet's cross-attention width
        (SDXL: 2048, SD 1.5: 768) and its added text-and-time embedding."""
        unet = json.loads((Path(base_dir) / "unet" / "config.json").read_text())
        control = json.loads((Path(controlnet_dir) / "config.json").read_text())
        if control.get("_class_name") != "ControlNetModel":
            return f"it is a {control.get('_class_name')}, not a ControlNetModel for a UNet"
        for key in ("cross_attention_dim", "addition_embed_type", "projection_class_embeddings_input_dim"):
            if control.get(key) != unet.get(key):
                return f"its {key} is {control.get(key)}, the base UNet's {unet.get(key)}"
        return None

    def uses_negative_prompt(self, settings: GenerationSettings) -> bool:
        """Classifier-free guidance's negative branch runs only when guidance_scale > 1."""
        return settings.guidance_scale > 1.0


FAMILY = register(SDXL())
