"""The toy model's parts: Stable Diffusion 1.5's architecture, scaled down.

The same classes as SD 1.5 + ControlNet (a CLIP tokenizer and text encoder,
an ``AutoencoderKL``, a ``UNet2DConditionModel`` and a
``ControlNetModel`` made from it), small enough to generate a 128 px picture
on a CPU in a fraction of a second.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from promptsweep.families.sd15_tiny import CLIP_MAX_LENGTH, byte_level_vocabulary, byte_symbol, sd15_scheduler
from promptsweep.toy import world

TEXT_WIDTH = 64


def word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges that join the bytes of each of ``words``.

    Each word's bytes are merged left to right, its last byte carrying CLIP's
    end-of-word mark. Where two words' merges compete, a word stays in a few
    pieces (as many words do in real CLIP); any other word falls apart into
    bytes, so every text still tokenises.
    """
    merges: list[tuple[str, str]] = []
    for word in words:
        symbols = [byte_symbol(byte) for byte in word.encode()]
        symbols[-1] += "</w>"
        merged = symbols[0]
        for symbol in symbols[1:]:
            if (merged, symbol) not in merges:
                merges.append((merged, symbol))
            merged += symbol
    return merges


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is the 512 byte symbols plus the toy world's words."""
    vocabulary = byte_level_vocabulary()
    merges = word_merges(world.vocabulary())
    for first, second in merges:
        vocabulary.setdefault(first + second, len(vocabulary))
    return CLIPTokenizer(
        vocab=vocabulary, merges=merges, model_max_length=CLIP_MAX_LENGTH
    )


def build_text_encoder(vocabulary_size: int) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocabulary_size,
            hidden_size=TEXT_WIDTH,
            intermediate_size=2 * TEXT_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=CLIP_MAX_LENGTH,
            bos_token_id=len(byte_level_vocabulary()) - 2,
            eos_token_id=len(byte_level_vocabulary()) - 1,
            pad_token_id=len(byte_level_vocabulary()) - 1,
        )
    )


def build_vae() -> AutoencoderKL:
    # Three blocks downsample 4x, not SD's 8x: a 128 px picture is a 32 x 32
    # latent. At 8x this small decoder could not place edges: the Canny edge F1
    # of its reconstructions stayed under 0.05, against 0.17 at 4x, after the same 300 steps.
    return AutoencoderKL(
        block_out_channels=(16, 32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        # One group: a group norm of one or two channels maps a flat colour to
        # zero, and the toy world is flat colours. With 16 groups the decoder
        # still returned grey after 300 steps, where one group had the colours.
        norm_num_groups=1,
        sample_size=world.SIZE,
        # Convolutions only: trained on crops, it then works at any size. With
        # the mid-block's attention, a model trained on 64 px crops shifted the
        # colours of 128 px pictures.
        mid_block_add_attention=False,
    )


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=world.SIZE // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        # Text is read at 16 x 16 and 8 x 8 only: attention over the 32 x 32
        # latent would cost more than the rest of a step on a CPU.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        # Eight or more channels per group, for the autoencoder's reason.
        norm_num_groups=4,
    )


def build_controlnet(unet: UNet2DConditionModel) -> ControlNetModel:
    # The edge map's encoder runs at full resolution every step: narrowing it
    # from (16, 32, 64) channels cut a ControlNet step from 25 ms to 15 ms
    # (batch 2, 2 threads, random weights).
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 32))


def build_noise_scheduler() -> DDPMScheduler:
    """Stable Diffusion 1.5's betas, rescaled to zero terminal SNR, with
    v-prediction and trailing timesteps (Lin et al. 2024, "Common Diffusion
    Noise Schedules and Sample Steps are Flawed").

    SD's own schedule leaves some of the picture in its last training step,
    so its models keep the starting noise's mean colour: grey. The toy
    world's pictures are mostly one flat colour, and with SD's schedule the
    trained model drew every ground grey-beige whatever colour the prompt
    named. The pipeline saves this scheduler, so every sampler built from its
    config inherits the three settings."""
    return DDPMScheduler.from_config(
        sd15_scheduler().config,
        rescale_betas_zero_snr=True,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
