"""Stable Diffusion 1.5 with a ControlNet 1.0/1.1 (``StableDiffusionControlNetPipeline``).

The family's conditioning is CLIP-L's last hidden state for the prompt and for
the negative prompt, each (1, 77, D). Texts in compel's weight syntax
(``(words)1.4``, ``words+``) are encoded through compel; every other text
exactly as the pipeline's own ``encode_prompt`` encodes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptsweep.families import Conditioning, PipelineOutput, register
from promptsweep.families import with_scheduler as scheduled_pipeline

# torch, diffusers and compel are imported where they are used: a family is
# looked up by workflow steps that never load a model.
if TYPE_CHECKING:
    import torch
    from compel import Compel
    from diffusers import StableDiffusionControlNetPipeline
    from PIL import Image

    from promptsweep.conditions import GenerationInput
    from promptsweep.models import PipelineOptions, ResolvedWeights
    from promptsweep.study import GenerationSettings

# Only what the pipeline needs, in safetensors: the hub repositories also hold
# multi-GB single-file checkpoints and pickled .bin weights that must not load.
BASE_PATTERNS = [
    "model_index.json",
    "*/config.json",
    "*/*_config.json",
    "*/preprocessor_config.json",
    "tokenizer/*",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
]
SAFETY_CHECKER_PATTERNS = ["safety_checker/model.safetensors", "feature_extractor/*"]
CONTROLNET_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]
SCHEDULERS = ("unipc", "ddim")


# --- Text encoding ----------------------------------------------------------


def _compel(pipeline: Any) -> Compel:
    # compel's defaults are the ones that reproduce diffusers' encode_prompt
    # for SD 1.x/2.x: truncation to the tokenizer's 77 positions, the text
    # encoder's last hidden state (already layer-normed), attention mask
    # value 1 on padding. They are spelled out so a changed default shows.
    from compel import Compel, ReturnedEmbeddingsType

    return Compel(
        tokenizer=pipeline.tokenizer,
        text_encoder=pipeline.text_encoder,
        truncate_long_prompts=True,
        padding_attention_mask_value=1,
        returned_embeddings_type=ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED,
    )


def _check_one_window(text: str, embedding: torch.Tensor, pipeline: Any) -> torch.Tensor:
    positions = pipeline.tokenizer.model_max_length
    if embedding.shape[:2] != (1, positions):
        raise ValueError(
            f"text {text!r} encodes to shape {tuple(embedding.shape)}, not (1, {positions}, D): "
            "compel's .and() conjunctions concatenate windows; write one plain or weighted text"
        )
    return embedding


def encode_text(pipeline: Any, text: str) -> torch.Tensor:
    """``E(text)``: the (1, 77, D) text-encoder output for ``text`` in compel syntax.

    ``(words)1.4`` weights words by 1.4, ``words+`` by 1.1 and ``words++`` by
    1.1^2; compel scales a weighted token's embedding away from the empty
    text's, ``E("") + w (E(text) - E(""))`` per token. Since compel 2.2.0 a
    text without weights bypasses that arithmetic, so for a text without
    compel syntax this is ``torch.equal`` to ``pipeline.encode_prompt``'s
    embedding of it. Parentheses and double quotes are compel syntax even
    without a weight (``"(a)"`` encodes ``"a"``); use
    :func:`encode_literal_text` for texts that are meant as written.

    Only the pipeline's tokenizer and text encoder are used; the result is
    on the text encoder's device, in its dtype.
    """
    import torch

    with torch.no_grad():
        embedding = _compel(pipeline)(text)
    return _check_one_window(text, embedding, pipeline)


def encode_literal_text(pipeline: Any, text: str) -> torch.Tensor:
    """``E(text)`` for ``text`` read as written, as the pipeline reads a prompt.

    The text goes to compel's embeddings provider as one fragment of weight
    1, skipping compel's parser, so parentheses, quotes, ``+`` and ``-`` keep
    their literal meaning. The result is ``torch.equal`` to
    ``pipeline.encode_prompt``'s for every text.
    """
    import torch

    compel = _compel(pipeline)
    with torch.no_grad():
        embedding = compel.conditioning_provider.get_embeddings_for_weighted_prompt_fragments(
            text_batch=[[text]], fragment_weights_batch=[[1.0]], device=compel.device
        )
    return _check_one_window(text, embedding, pipeline)


def encode_sheet_text(pipeline: Any, text: str) -> torch.Tensor:
    """``E(text)`` of a sheet text: through compel's weights when it has
    them (``emphasis.has_weights``), read as written otherwise."""
    from promptsweep.emphasis import has_weights

    return encode_text(pipeline, text) if has_weights(text) else encode_literal_text(pipeline, text)


def conditioning(prompt_embeds: torch.Tensor, negative_prompt_embeds: torch.Tensor) -> Conditioning:
    """The family's conditioning from its two (1, 77, D) embeddings."""
    return Conditioning({"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds})


# --- The family -----------------------------------------------------------------


def with_scheduler(pipeline: StableDiffusionControlNetPipeline, scheduler: str) -> StableDiffusionControlNetPipeline:
    """A pipeline sharing the loaded modules but with its own scheduler
    (``families.with_scheduler``): a fresh one per call, since schedulers keep
    per-call state. The flow-matching sampler does not fit SD 1.5's UNet."""
    return scheduled_pipeline(
        pipeline, scheduler, SCHEDULERS, requires_safety_checker=pipeline.config.requires_safety_checker
    )


class SD15:
    """Stable Diffusion 1.5 + ControlNet (see the module's docstring)."""

    name = "sd15"
    pipeline_class = "StableDiffusionControlNetPipeline"
    reads_weights = True
    # ControlNet's own: 512 px, guidance 9 (its gradio demos); diffusers' UniPC at 20 steps.
    defaults = {"resolution": 512, "steps": 20, "guidance_scale": 9.0, "controlnet_scale": 1.0, "scheduler": "unipc"}

    def weight_patterns(self, role: str, safety_checker: bool) -> list[str]:
        if role == "controlnet":
            return list(CONTROLNET_PATTERNS)
        # The safety checker's files are fetched only for runs that use it.
        return BASE_PATTERNS + (SAFETY_CHECKER_PATTERNS if safety_checker else [])

    def load_pipeline(
        self, base: ResolvedWeights, controlnet: ResolvedWeights, options: PipelineOptions
    ) -> StableDiffusionControlNetPipeline:
        """``use_safetensors=True`` makes diffusers refuse pickled weights, and
        no remote code is ever trusted."""
        from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

        controlnet_model = ControlNetModel.from_pretrained(
            controlnet.directory, torch_dtype=options.dtype, use_safetensors=True
        )
        safety: dict[str, Any] = {}
        if not options.safety_checker:
            safety = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        return StableDiffusionControlNetPipeline.from_pretrained(
            base.directory, controlnet=controlnet_model, torch_dtype=options.dtype, use_safetensors=True, **safety
        )

    def encode(self, pipeline: StableDiffusionControlNetPipeline, texts: GenerationInput) -> Conditioning:
        """Texts with compel weights through compel, one text at a time
        (:func:`encode_sheet_text`); otherwise both as the pipeline encodes
        them for each call (``encode_prompt``; CLIP reads 77 positions, the
        rest is cut)."""
        import torch

        from promptsweep.emphasis import has_weights

        if has_weights(texts.prompt) or has_weights(texts.negative_prompt):
            return conditioning(
                encode_sheet_text(pipeline, texts.prompt), encode_sheet_text(pipeline, texts.negative_prompt)
            )
        with torch.no_grad():
            positive, negative = pipeline.encode_prompt(
                texts.prompt, pipeline._execution_device, 1, True, texts.negative_prompt
            )
        return conditioning(positive, negative)

    def initial_latents(
        self, pipeline: StableDiffusionControlNetPipeline, seeds: Sequence[int], height: int, width: int
    ) -> torch.Tensor:
        """Shape (n, latent channels, h / s, w / s), with the VAE's latent
        channels and its scale ``s`` (``vae_scale_factor``) from the loaded model."""
        from promptsweep.generation import seeded_noise

        scale = pipeline.vae_scale_factor
        shape = (1, pipeline.vae.config.latent_channels, height // scale, width // scale)
        return seeded_noise(seeds, shape)

    def generate(
        self,
        pipeline: StableDiffusionControlNetPipeline,
        control: Image.Image,
        conditioning: Conditioning,
        seeds: Sequence[int],
        settings: GenerationSettings,
    ) -> PipelineOutput:
        from promptsweep.generation import generators

        scheduled = with_scheduler(pipeline, settings.scheduler)
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
        return PipelineOutput(output.images, output.nsfw_content_detected or [False] * len(seeds))

    def differentiable_images(
        self,
        pipeline: StableDiffusionControlNetPipeline,
        control: Image.Image,
        conditioning: Conditioning,
        seeds: Sequence[int],
        settings: GenerationSettings,
        backprop_steps: int,
    ) -> torch.Tensor:
        """The pipeline's denoising loop written out, since its ``__call__``
        runs without gradients: the same scheduler, starting latents,
        guidance and ControlNet arguments, so the images are :meth:`generate`'s
        to float precision. Gradients flow back through the last
        ``backprop_steps`` steps and the decoder only (truncated
        backpropagation, as in DRaFT-K, Clark et al. 2024), each of those
        steps recomputed in the backward pass (gradient checkpointing), so
        memory holds one step's activations at a time. No safety checker runs
        (the plan refuses the gradient search with one on)."""
        import torch
        from torch.utils.checkpoint import checkpoint

        from promptsweep.generation import generators

        if not 1 <= backprop_steps <= settings.steps:
            raise ValueError(f"backprop_steps must be between 1 and the {settings.steps} steps, not {backprop_steps}")
        # Gradients go to the conditioning only: none of the model's weights
        # needs one, and each would cost its own size in memory.
        for module in (pipeline.unet, pipeline.controlnet, pipeline.vae):
            module.requires_grad_(False)
        scheduled = with_scheduler(pipeline, settings.scheduler)
        scheduler = scheduled.scheduler
        device, dtype = pipeline._execution_device, pipeline.unet.dtype
        count = len(seeds)
        guided = settings.guidance_scale > 1.0
        # As the pipeline reads them: guess mode changes the ControlNet's
        # residual scales whatever the guidance; only with guidance does the
        # ControlNet see the conditional half of the batch alone.
        guess_mode = settings.guess_mode or bool(pipeline.controlnet.config.global_pool_conditions)
        conditional_only = guess_mode and guided

        def rows(name: str) -> torch.Tensor:
            return conditioning[name].to(device=device, dtype=dtype).expand(count, -1, -1)

        text = torch.cat([rows("negative_prompt_embeds"), rows("prompt_embeds")]) if guided else rows("prompt_embeds")
        image = scheduled.prepare_image(
            control, control.width, control.height, count, 1, device, dtype, guided, conditional_only
        )
        scheduler.set_timesteps(settings.steps, device=device)
        latents = self.initial_latents(pipeline, seeds, control.height, control.width).to(device=device, dtype=dtype)
        latents = latents * scheduler.init_noise_sigma
        step_arguments = scheduled.prepare_extra_step_kwargs(generators(list(seeds)), settings.eta)

        def noise_prediction(
            model_input: torch.Tensor, control_input: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor
        ) -> torch.Tensor:
            control_text = text.chunk(2)[1] if conditional_only else text
            down, middle = pipeline.controlnet(
                control_input,
                timestep,
                encoder_hidden_states=control_text,
                controlnet_cond=image,
                conditioning_scale=settings.controlnet_scale,
                guess_mode=guess_mode,
                return_dict=False,
            )
            if conditional_only:
                down = [torch.cat([torch.zeros_like(residual), residual]) for residual in down]
                middle = torch.cat([torch.zeros_like(middle), middle])
            noise = pipeline.unet(
                model_input,
                timestep,
                encoder_hidden_states=text,
                down_block_additional_residuals=down,
                mid_block_additional_residual=middle,
                return_dict=False,
            )[0]
            if not guided:
                return noise
            unconditional, conditional = noise.chunk(2)
            return unconditional + settings.guidance_scale * (conditional - unconditional)

        tracked_from = len(scheduler.timesteps) - backprop_steps
        for index, timestep in enumerate(scheduler.timesteps):
            # The scheduler's calls stay outside the checkpointed function,
            # which the backward pass runs again: a scheduler that counts its
            # steps would otherwise count one twice.
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, timestep)
            control_input = scheduler.scale_model_input(latents, timestep) if conditional_only else model_input
            if index < tracked_from:
                with torch.no_grad():
                    noise = noise_prediction(model_input, control_input, timestep, text)
            else:
                noise = checkpoint(noise_prediction, model_input, control_input, timestep, text, use_reentrant=False)
            latents = scheduler.step(noise, timestep, latents, **step_arguments, return_dict=False)[0]
        decoded = pipeline.vae.decode(latents / pipeline.vae.config.scaling_factor, return_dict=False)[0]
        return (decoded / 2 + 0.5).clamp(0, 1).float()

    def vocabulary(self, pipeline: StableDiffusionControlNetPipeline) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP's token embeddings, without its start, end and padding
        tokens, and without the byte tokens that are no text on their own
        (part of a character's UTF-8 bytes): projected words must be words
        a person can type."""
        import torch

        tokenizer = pipeline.tokenizer
        special = set(tokenizer.all_special_ids)
        texts = tokenizer.batch_decode([[index] for index in range(len(tokenizer))])
        ids = torch.tensor(
            [index for index, text in enumerate(texts) if index not in special and "\ufffd" not in text and text.strip()]
        )
        table = pipeline.text_encoder.get_input_embeddings().weight.detach()
        return ids, table[ids].float().cpu()

    def soft_prompt_conditioning(
        self, pipeline: StableDiffusionControlNetPipeline, texts: GenerationInput, tokens: torch.Tensor
    ) -> Conditioning:
        """The prompt's tokens, a comma, then ``tokens`` (n, D) at the next n
        positions: the text encoder reads placeholders there, whose input
        embeddings a forward hook replaces. With the embeddings of words'
        tokens this is :meth:`encode`'s embedding of ``"prompt, words"``,
        exactly; the prompt is cut to leave the tokens room in CLIP's 77
        positions. The negative prompt is encoded as :meth:`encode` does."""
        import torch

        tokenizer, encoder = pipeline.tokenizer, pipeline.text_encoder
        count, positions = len(tokens), tokenizer.model_max_length
        body = self.token_ids(pipeline, f"{texts.prompt},")[: positions - 2 - count]
        start = 1 + len(body)
        ids = [tokenizer.bos_token_id, *body, *[tokenizer.eos_token_id] * count, tokenizer.eos_token_id]
        ids += [tokenizer.pad_token_id] * (positions - len(ids))
        device = pipeline._execution_device

        def with_tokens(module: Any, inputs: Any, embedded: torch.Tensor) -> torch.Tensor:
            soft = tokens.to(device=embedded.device, dtype=embedded.dtype)[None]
            return torch.cat([embedded[:, :start], soft, embedded[:, start + count :]], dim=1)

        encoder.requires_grad_(False)
        hook = encoder.get_input_embeddings().register_forward_hook(with_tokens)
        try:
            positive = encoder(torch.tensor([ids], device=device))[0]
        finally:
            hook.remove()
        return conditioning(positive, self.encode(pipeline, texts)["negative_prompt_embeds"])

    def token_words(self, pipeline: StableDiffusionControlNetPipeline, token_ids: Sequence[int]) -> str:
        return pipeline.tokenizer.decode(list(token_ids)).strip()

    def token_ids(self, pipeline: StableDiffusionControlNetPipeline, text: str) -> list[int]:
        return list(pipeline.tokenizer(text, add_special_tokens=False).input_ids)

    def write_tiny_model(self, base_dir: Path, controlnet_dir: Path) -> None:
        from promptsweep.families.sd15_tiny import write_tiny_model

        write_tiny_model(base_dir, controlnet_dir)

    def controlnet_mismatch(self, base_dir: Path, controlnet_dir: Path) -> str | None:
        """The ControlNet's ``cross_attention_dim`` must be the UNet's and its
        class a ``ControlNetModel`` (a UNet ControlNet, not a transformer one)."""
        unet = json.loads((Path(base_dir) / "unet" / "config.json").read_text())
        control = json.loads((Path(controlnet_dir) / "config.json").read_text())
        if control.get("_class_name") != "ControlNetModel":
            return f"it is a {control.get('_class_name')}, not a ControlNetModel for a UNet"
        if control.get("cross_attention_dim") != unet.get("cross_attention_dim"):
            return (
                f"its cross_attention_dim is {control.get('cross_attention_dim')}, "
                f"the base UNet's {unet.get('cross_attention_dim')}"
            )
        return None

    def uses_negative_prompt(self, settings: GenerationSettings) -> bool:
        """Classifier-free guidance's negative branch runs only when guidance_scale > 1."""
        return settings.guidance_scale > 1.0


FAMILY = register(SD15())
