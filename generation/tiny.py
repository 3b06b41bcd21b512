"""The ``tiny`` model: an SDXL-architecture pipeline with random weights, built offline.

It has every part a real SDXL checkpoint has (two CLIP text encoders and tokenizers, a ``text_time``
UNet, an 8x VAE, an Euler scheduler) and a matching LCM-style LoRA, all small enough that a 2x2 grid
of 128 px images takes about a second on two CPU cores. It exists so the whole stack (loading,
fast mode, img2img, the bot end to end) runs and is tested without downloading anything; its
images are coloured noise, not pictures.

Everything is generated deterministically (fixed seeds, an embedded word list for the tokenizer)
and saved with ``save_pretrained`` so it loads through the same ``from_pretrained`` code as the
real model.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

#: Bump when anything below changes what is built; a stale build is then rebuilt.
TINY_FORMAT = 1
MARKER = "atelier-tiny.json"
LORA_DIR = "lcm-lora"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
MODEL_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words that become single tokens, so token counts of ordinary prompts look like real CLIP's
# (roughly one token per word). Anything else still tokenizes, into byte-level pieces.
_WORDS = """
a an the and or of in on at to with without from by for over under above below behind near into
through between beside inside outside around across along is are was be being made cat dog bird
horse fox wolf bear lion tiger owl fish dragon unicorn rabbit deer whale shark snake frog bee
butterfly robot knight wizard witch king queen princess prince warrior samurai ninja astronaut
pirate soldier monk angel demon ghost skeleton zombie alien monster creature man woman boy girl
child person people portrait face eyes hair hand hands smile old young city town village castle
tower house cabin temple church bridge road street market garden park forest jungle desert
mountain mountains hill valley river lake ocean sea beach island cave waterfall field meadow
sky clouds cloud sun moon stars star night day sunset sunrise dawn dusk rain snow storm fog
mist fire water ice stone rock wood metal glass gold silver crystal light shadow shadows smoke
flowers flower tree trees leaves grass roses rose space planet galaxy nebula car ship boat
train airplane spaceship bicycle book lamp candle window door chair table sword shield crown
mask armor cloak dress hat red orange yellow green blue purple pink brown black white gray grey
teal cyan magenta golden dark bright colorful vibrant pastel neon muted warm cold soft hard
sharp blurry glowing shiny big small tiny huge giant little tall long short wide ancient
futuristic modern medieval vintage retro rustic cozy cute beautiful epic dramatic mysterious
magical peaceful serene calm happy sad angry lonely haunted abandoned ruined overgrown flying
floating sleeping running standing sitting walking dancing fighting reading playing wearing
holding looking photo photograph painting drawing sketch illustration render art artwork poster
concept style oil watercolor acrylic ink pencil charcoal pixel anime manga cartoon comic
realistic photorealistic hyperrealistic surreal abstract minimalist detailed intricate highly
ultra quality resolution masterpiece best professional cinematic lighting studio volumetric
ambient rim bokeh depth focus lens wide angle close closeup shot view aerial macro landscape
cityscape background foreground scene composition symmetrical centered unreal engine octane
blender digital fantasy scifi cyberpunk steampunk gothic baroque renaissance impressionist
expressionist cubist pop nouveau deco ukiyo film grain analog kodak polaroid camera canon nikon
sony mm hdr trending artstation behance by greg rutkowski alphonse mucha studio ghibli
pixar disney van gogh monet picasso ugly deformed blurry lowres bad anatomy extra fingers
mutated watermark text signature cropped worst low jpeg artifacts duplicate morbid disfigured noise
noisy grainy
""".split()  # noqa: SIM905 - a word list reads better as text


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table used by byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _train_merges(words: list[str]) -> list[tuple[str, str]]:
    """Plain BPE training until every word is one symbol; ties break lexicographically.

    Training to completion guarantees each listed word encodes to a single token, because
    applying the learned merges in rank order replays exactly this training run.
    """
    byte_char = _bytes_to_unicode()
    corpus: list[list[str]] = []
    for word in dict.fromkeys(words):  # de-duplicated, order kept
        chars = [byte_char[b] for b in word.encode("utf-8")]
        chars[-1] += "</w>"
        corpus.append(chars)
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols in corpus:
            pairs.update(itertools.pairwise(symbols))
        if not pairs:
            return merges
        best_count = max(pairs.values())
        best = min(pair for pair, count in pairs.items() if count == best_count)
        merges.append(best)
        joined = best[0] + best[1]
        for index, symbols in enumerate(corpus):
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            corpus[index] = out


def build_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The tiny tokenizer's vocabulary and merges, laid out like CLIP's: bytes, merges, specials."""
    byte_chars = list(_bytes_to_unicode().values())
    merges = _train_merges(_WORDS)
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + [a + b for a, b in merges]
    vocab: dict[str, int] = {}
    for token in [*tokens, BOS, EOS]:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


#: Widths of the two text encoders. They differ, as SDXL's do (768 and 1280): diffusers tells the
#: encoders of a single-file checkpoint apart by width.
TEXT_ENCODER_WIDTHS = (32, 48)


def text_encoder_config(
    vocab: dict[str, int], width: int = TEXT_ENCODER_WIDTHS[0]
) -> dict[str, Any]:
    """A tiny CLIP text encoder's config for ``vocab``, ``width`` features wide."""
    return {
        "vocab_size": len(vocab),
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": MODEL_MAX_LENGTH,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": width,
        "bos_token_id": vocab[BOS],
        "eos_token_id": vocab[EOS],
        "pad_token_id": vocab[EOS],
    }


#: Two UNet levels: one 2x downsample, so latents must be even and images multiples of 16.
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (2, 4),
    "transformer_layers_per_block": (1, 1),
    "use_linear_projection": True,
    "norm_num_groups": 8,
    # SDXL conditioning: both encoders' hidden states side by side (32 + 48), and the second
    # encoder's pooled projection (48) plus six micro-conditioning numbers of 8 features each.
    "cross_attention_dim": sum(TEXT_ENCODER_WIDTHS),
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 6 * 8 + TEXT_ENCODER_WIDTHS[1],
}

#: Four levels like SDXL's VAE, so the VAE scale factor is 8.
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (8, 16, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 128,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}

#: SDXL base's scheduler settings.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
}

LORA_RANK = 4
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def make_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Any:
    """A CLIP tokenizer over ``vocab``/``merges`` with CLIP's 77-token window."""
    from transformers import CLIPTokenizer

    # The tokenizers backend takes merges as pairs (its type hints say strings).
    pairs: Any = list(merges)
    return CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=MODEL_MAX_LENGTH)


def _fingerprint() -> str:
    blob = json.dumps(
        [
            TINY_FORMAT,
            TEXT_ENCODER_WIDTHS,
            UNET_CONFIG,
            VAE_CONFIG,
            SCHEDULER_CONFIG,
            _WORDS,
            LORA_RANK,
            LORA_TARGETS,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tiny_lora_path(path: Path) -> Path:
    """Where :func:`build_tiny_model` puts the tiny model's fast-mode LoRA."""
    return path / LORA_DIR


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Silence diffusers' and transformers' tqdm bars (loading, saving) for the block.

    In a bot's log, or around the CLI's own output, they are noise.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # Restore what was there before, so a nested block does not turn the bars back on for
    # the rest of its enclosing block.
    diffusers_was = diffusers_logging.is_progress_bar_enabled()
    transformers_was = transformers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if diffusers_was:
            diffusers_logging.enable_progress_bar()
        if transformers_was:
            transformers_logging.enable_progress_bar()


def is_built(path: Path) -> bool:
    """True when ``path`` holds a complete build of the current tiny model."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("fingerprint") == _fingerprint()


def build_tiny_model(path: Path) -> Path:
    """Build the tiny pipeline and its LoRA into ``path`` (idempotent) and return ``path``.

    The build goes to a temporary sibling directory that is renamed into place only when complete,
    so a crash or a concurrent builder never leaves a half-written model that looks finished.
    """
    return build_once(Path(path), is_built, _build_into, what="the tiny model")


def build_once(
    path: Path, is_built: Callable[[Path], bool], build_into: Callable[[Path], None], *, what: str
) -> Path:
    """Run ``build_into`` on a temporary sibling of ``path`` and rename it into place, unless
    ``is_built(path)`` already: a crash or a concurrent builder never leaves a half-written
    model that looks finished (a builder that loses the race keeps the winner's)."""
    if is_built(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-build-", dir=path.parent))
    try:
        with quiet_progress_bars():
            build_into(staging)
        # mkdtemp makes the directory private (0700); the model is not a secret.
        staging.chmod(0o755)
        if path.exists():
            if is_built(path):  # another process finished first
                return path
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("built %s in %s", what, path)
    return path


def _build_into(target: Path) -> None:
    # Imported here: building is rare, and these imports are slow.
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    vocab, merges = build_vocab()
    tokenizer_files = target / "tokenizer-src"
    tokenizer_files.mkdir(parents=True)
    (tokenizer_files / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (tokenizer_files / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    )
    tokenizer = make_tokenizer(vocab, merges)

    # A fixed seed before each component, like diffusers' get_dummy_components, so each part's
    # weights do not depend on how the others were built.
    first, second = (CLIPTextConfig(**text_encoder_config(vocab, w)) for w in TEXT_ENCODER_WIDTHS)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(first)
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(second)
    torch.manual_seed(2)
    unet: Any = UNet2DConditionModel(**UNET_CONFIG)
    torch.manual_seed(3)
    vae = AutoencoderKL(**VAE_CONFIG)
    scheduler = EulerDiscreteScheduler(**SCHEDULER_CONFIG)

    pipe: Any = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(target, safe_serialization=True)
    shutil.rmtree(tokenizer_files)
    for name in ("tokenizer", "tokenizer_2"):
        # The plain-text sources too, so the tokenizer is inspectable like real CLIP's.
        (target / name / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (target / name / "merges.txt").write_text(
            "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
        )

    # The fast-mode adapter: a real peft LoRA on the attention projections, saved in diffusers'
    # LoRA format so loading goes through load_lora_weights like LCM-LoRA does. peft's default
    # init makes B zero (a no-op adapter); random A and B make the adapter visibly change output.
    torch.manual_seed(4)
    unet.add_adapter(
        LoraConfig(
            r=LORA_RANK,
            lora_alpha=LORA_RANK,
            target_modules=LORA_TARGETS,
            init_lora_weights=False,
        )
    )
    lora_state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionXLPipeline.save_lora_weights(
        save_directory=target / LORA_DIR,
        unet_lora_layers=lora_state,
        weight_name=LORA_WEIGHT_NAME,
        safe_serialization=True,
    )
    (target / MARKER).write_text(
        json.dumps({"fingerprint": _fingerprint(), "format": TINY_FORMAT}, indent=2) + "\n"
    )
