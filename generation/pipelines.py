"""Loading a model once and keeping it warm: txt2img and img2img pipelines, both modes' schedulers.

:func:`load_model` turns a :class:`~generation.presets.ModelPreset` into a :class:`LoadedModel`.
Every way loading can fail (unknown name, missing files, offline hub, no GPU for a full-size model,
out of memory) becomes one :class:`~generation.errors.ModelLoadError` whose message names the model
and how to fix it.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from config.settings import GenerationSettings
from generation.errors import ModelLoadError
from generation.presets import PRESETS, SDXL_BASE, TINY, ModelPreset
from generation.request import Mode
from generation.tiny import build_tiny_model, quiet_progress_bars, tiny_lora_path

log = logging.getLogger(__name__)


class _KnownNoise(logging.Filter):
    """Drops library warnings that fire on every normal load or job and mean nothing here.

    diffusers 0.42 warns about "modules that should be kept in float32: []" on every ``.to(dtype)``
    (the img2img pipeline upcasts its VAE per call), and a UNet-only LoRA such as LCM-LoRA warns
    that the text encoders got no LoRA keys. transformers 5 warns that CLIP's image processor
    falls back to PIL without torchvision; SDXL never uses an image processor.
    """

    _FRAGMENTS = (
        "There are modules in ",
        "No LoRA keys associated to ",
        "requires torchvision (not installed)",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self._FRAGMENTS)


for _name in (
    "diffusers.models.modeling_utils",
    "diffusers.loaders.lora_base",
    "transformers.utils.import_utils",
):
    logging.getLogger(_name).addFilter(_KnownNoise())

#: The peft adapter name fast mode's LoRA is loaded under.
FAST_ADAPTER = "fast"
CPU_DEMO_HINT = "set ATELIER_MODEL=tiny for a CPU demo"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
#: What diffusers' SDXL conversion cannot do without: the UNet's text_time embedding and the
#: second (OpenCLIP) text encoder. SD 1.x/2.x checkpoints and LoRA files have neither.
_SDXL_SINGLE_FILE_KEYS = (
    "model.diffusion_model.label_emb.0.0.weight",
    "conditioner.embedders.1.model.positional_embedding",
)


class SourceKind(Enum):
    """Where a model's weights come from."""

    TINY = "tiny"
    HUB = "hub"
    DIRECTORY = "directory"
    SINGLE_FILE = "single_file"


def classify_source(source: str) -> SourceKind:
    """Tell a preset's source apart; raise ModelLoadError for a name that is none of them."""
    if source == TINY:
        return SourceKind.TINY
    path = Path(source).expanduser()
    if path.is_file() and path.suffix in _SINGLE_FILE_SUFFIXES:
        return SourceKind.SINGLE_FILE
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"model directory {source!r} is not a diffusers pipeline (it has no "
                "model_index.json); point ATELIER_MODEL at a directory saved with "
                f"save_pretrained, a .safetensors file, or a hub id; or {CPU_DEMO_HINT}"
            )
        return SourceKind.DIRECTORY
    if path.suffix in _SINGLE_FILE_SUFFIXES:
        raise ModelLoadError(
            f"model file {source!r} does not exist; check ATELIER_MODEL, or {CPU_DEMO_HINT}"
        )
    if source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source:
        raise ModelLoadError(
            f"model directory {source!r} does not exist; check ATELIER_MODEL, or {CPU_DEMO_HINT}"
        )
    if _HUB_ID.match(source):
        return SourceKind.HUB
    raise ModelLoadError(
        f"unknown model {source!r}: set ATELIER_MODEL to one of {', '.join(sorted(PRESETS))}, "
        "a hub id (owner/name), a local diffusers directory or a .safetensors file"
    )


def resolve_device(settings: GenerationSettings) -> tuple[torch.device, torch.dtype]:
    """The device and weights dtype the settings ask for (``auto``: CUDA+fp16, else CPU+fp32)."""
    name = settings.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            "ATELIER_GENERATION_DEVICE=cuda but no CUDA GPU is visible to torch; "
            "use device auto or cpu"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("ATELIER_GENERATION_DEVICE=mps but MPS is not available here")
    device = torch.device(name)
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if settings.dtype == "auto":
        dtype = torch.float32 if device.type == "cpu" else torch.float16
    else:
        dtype = dtypes[settings.dtype]
    if device.type == "cpu" and dtype is torch.float16:
        raise ModelLoadError(
            "ATELIER_GENERATION_DTYPE=float16 does not work on CPU; use float32 or bfloat16"
        )
    return device, dtype


@dataclass
class LoadedModel:
    """A warm model: txt2img and img2img pipelines sharing one set of modules.

    Both modes stay loaded: quality mode runs the checkpoint's own scheduler with the LoRA
    disabled, fast mode enables the LoRA adapter and swaps in an LCM scheduler. Switching is a
    flag and an attribute assignment, never a reload.
    """

    preset: ModelPreset
    txt2img: Any
    img2img: Any
    device: torch.device
    dtype: torch.dtype
    quality_scheduler: Any
    fast_scheduler: Any | None
    #: Why fast mode is unavailable (no LoRA configured, or it failed to load); None if it works.
    fast_unavailable: str | None
    load_seconds: float

    @property
    def fast_available(self) -> bool:
        return self.fast_unavailable is None

    def use_mode(self, pipe: Any, mode: Mode) -> None:
        """Put the shared UNet and ``pipe``'s scheduler into ``mode`` before a call."""
        if mode is Mode.FAST:
            if self.fast_unavailable is not None:
                raise ModelLoadError(self.fast_unavailable)
            set_lora_enabled(pipe, True)
            pipe.scheduler = self.fast_scheduler
        else:
            if self.fast_scheduler is not None:
                set_lora_enabled(pipe, False)
            pipe.scheduler = self.quality_scheduler

    @property
    def tokenizer(self) -> Any:
        return self.txt2img.tokenizer

    def lora_module_count(self) -> int:
        """How many UNet layers the fast-mode adapter patches (0 when none is loaded)."""
        return count_lora_modules(self.txt2img.unet, FAST_ADAPTER)


def set_lora_enabled(pipe: Any, enabled: bool) -> None:
    """Switch the loaded LoRA adapters of ``pipe``'s UNet (and text encoders, if any) on or off.

    Not ``pipe.enable_lora()``: it skips a ``torch.compile``d UNet (an OptimizedModule is no
    ModelMixin) without a word, which would leave the LoRA on in quality mode.
    """
    from diffusers.loaders.lora_base import (
        disable_lora_for_text_encoder,
        enable_lora_for_text_encoder,
    )

    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
    if enabled:
        unet.enable_lora()
    else:
        unet.disable_lora()
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        if encoder is not None and getattr(encoder, "peft_config", None):
            switch = enable_lora_for_text_encoder if enabled else disable_lora_for_text_encoder
            switch(encoder)


def count_lora_modules(module: torch.nn.Module, adapter: str) -> int:
    """Count the peft LoRA layers in ``module`` that carry ``adapter``."""
    return sum(1 for m in module.modules() if adapter in getattr(m, "lora_A", {}))


def load_model(preset: ModelPreset, settings: GenerationSettings, data_dir: Path) -> LoadedModel:
    """Load ``preset`` onto the configured device, with its fast-mode LoRA, and keep it warm.

    The tiny model is built into ``data_dir/models/tiny`` first (once) and then loaded with the
    very same ``from_pretrained`` code as any other diffusers directory.
    """
    started = time.perf_counter()
    kind = classify_source(preset.source)
    device, dtype = resolve_device(settings)
    if preset.full_size and device.type == "cpu" and not settings.allow_large_on_cpu:
        raise ModelLoadError(
            f"model {preset.name!r} is a full-size model and this machine has no GPU; "
            f"{CPU_DEMO_HINT}, or set ATELIER_GENERATION_ALLOW_LARGE_ON_CPU=true to load it "
            "anyway (minutes per image)"
        )
    with quiet_progress_bars():
        try:
            txt2img = _load_pipeline(preset, kind, device, dtype, data_dir, settings)
            return assemble_model(preset, txt2img, settings, data_dir, started=started)
        except ModelLoadError:
            raise
        except torch.OutOfMemoryError as exc:
            free_memory()
            raise ModelLoadError(
                f"out of memory loading model {preset.name!r} onto {device} in {dtype}: free "
                f"memory or use a smaller model; {CPU_DEMO_HINT}",
                out_of_memory=True,
            ) from exc
        except Exception as exc:
            # Every library error (missing files, no network, bad checkpoint) ends here, so
            # the operator sees one sentence instead of a stack trace from deep in the hub.
            raise ModelLoadError(
                _describe_load_failure(preset, kind, exc, settings.single_file_config)
            ) from exc


def assemble_model(
    preset: ModelPreset,
    txt2img: Any,
    settings: GenerationSettings,
    data_dir: Path,
    started: float | None = None,
) -> LoadedModel:
    """Finish a loaded txt2img pipeline: fast-mode LoRA, optional compile, img2img sibling.

    ``txt2img`` must already be on its device. ``started`` (a ``time.perf_counter()`` value)
    makes ``load_seconds`` include whatever the caller did before.
    """
    from diffusers import StableDiffusionXLImg2ImgPipeline

    started = time.perf_counter() if started is None else started
    txt2img.set_progress_bar_config(disable=True)
    quality_scheduler = txt2img.scheduler
    fast_scheduler, fast_unavailable = _load_fast_mode(txt2img, preset, data_dir)
    device = txt2img.unet.device
    if settings.compile:
        _compile_unet(txt2img, device)
    # from_pipe casts the modules it shares to its own dtype argument, float32 unless told:
    # without this, a float16 or bfloat16 model silently becomes float32 (twice the memory).
    img2img = StableDiffusionXLImg2ImgPipeline.from_pipe(txt2img, dtype=txt2img.unet.dtype)
    img2img.set_progress_bar_config(disable=True)
    return LoadedModel(
        preset=preset,
        txt2img=txt2img,
        img2img=img2img,
        device=device,
        dtype=txt2img.unet.dtype,
        quality_scheduler=quality_scheduler,
        fast_scheduler=fast_scheduler,
        fast_unavailable=fast_unavailable,
        load_seconds=time.perf_counter() - started,
    )


def _load_pipeline(
    preset: ModelPreset,
    kind: SourceKind,
    device: torch.device,
    dtype: torch.dtype,
    data_dir: Path,
    settings: GenerationSettings,
) -> Any:
    from diffusers import StableDiffusionXLPipeline

    if kind is SourceKind.SINGLE_FILE:
        path = Path(preset.source).expanduser()
        _check_sdxl_single_file(path)
        options: dict[str, Any] = {"dtype": dtype}
        if settings.single_file_config is not None:
            options["config"] = _single_file_config(settings.single_file_config)
        pipe = StableDiffusionXLPipeline.from_single_file(str(path), **options)
        _check_all_weights_loaded(pipe, path)
        return pipe.to(device)
    source = preset.source
    if kind is SourceKind.TINY:
        source = str(build_tiny_model(data_dir / "models" / TINY))
    elif kind is SourceKind.DIRECTORY:
        source = str(Path(source).expanduser())
    if dtype is torch.float16:
        # Hub SDXL ships an fp16 variant: half the download and no cast at load.
        try:
            pipe = StableDiffusionXLPipeline.from_pretrained(
                source, dtype=dtype, variant="fp16", use_safetensors=True
            )
            return pipe.to(device)
        except (OSError, ValueError) as exc:
            if "variant" not in str(exc):
                raise
            log.info("model %s has no fp16 variant; loading the default weights", preset.name)
    pipe = StableDiffusionXLPipeline.from_pretrained(source, dtype=dtype)
    return pipe.to(device)


def _check_sdxl_single_file(path: Path) -> None:
    """Refuse a ``.safetensors`` file that is unreadable or no original-layout SDXL checkpoint.

    Reads only the file's header. Without this check an SD 1.x checkpoint or a LoRA file fails
    deep in diffusers' converters with a bare ``KeyError``, and a truncated file with a message
    that hides safetensors' reason. A ``.ckpt`` is a pickle, so it is left to diffusers.
    """
    if path.suffix != ".safetensors":
        return
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as checkpoint:
            keys = set(checkpoint.keys())
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(
            f"model file {str(path)!r} is not a readable .safetensors file ({_first_line(exc)}); "
            f"download it again, or {CPU_DEMO_HINT}"
        ) from exc
    missing = next((key for key in _SDXL_SINGLE_FILE_KEYS if key not in keys), None)
    if missing is not None:
        raise ModelLoadError(
            f"model file {str(path)!r} is not an SDXL checkpoint in the original single-file "
            f"layout (it has no {missing!r}; SD 1.x/2.x checkpoints, refiners and LoRA files "
            f"cannot be the model): point ATELIER_MODEL at an SDXL checkpoint, or {CPU_DEMO_HINT}"
        )


def _check_all_weights_loaded(pipe: Any, path: Path) -> None:
    """Name the first weight a single file lacked.

    diffusers builds each module on the meta device and fills in what the file holds, so a
    missing weight stays behind silently and only ``.to(device)`` fails, with "Cannot copy out
    of meta tensor".
    """
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        tensors = itertools.chain(module.named_parameters(), module.named_buffers())
        missing = [key for key, tensor in tensors if tensor.is_meta]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ModelLoadError(
                f"model file {str(path)!r} is not a complete SDXL checkpoint: its {name} lacks "
                f"{missing[0]}{more}; download it again, or {CPU_DEMO_HINT}"
            )


def _single_file_config(value: str) -> str:
    """ATELIER_GENERATION_SINGLE_FILE_CONFIG as from_single_file takes it: a directory or hub id."""
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"ATELIER_GENERATION_SINGLE_FILE_CONFIG={value!r} is not a diffusers pipeline "
                "directory (it has no model_index.json)"
            )
        return str(path)
    if not _HUB_ID.match(value):
        raise ModelLoadError(
            f"ATELIER_GENERATION_SINGLE_FILE_CONFIG={value!r} is neither an existing directory "
            "nor a hub id (owner/name)"
        )
    return value


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, without a closing full stop (messages add their own)."""
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def _describe_load_failure(
    preset: ModelPreset, kind: SourceKind, exc: Exception, single_file_config: str | None = None
) -> str:
    reason = _first_line(exc)
    if kind is SourceKind.HUB:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        why = "the hub is offline (HF_HUB_OFFLINE)" if offline else "it could not be downloaded"
        return (
            f"model {preset.name!r} ({preset.source}) is not in the local Hugging Face cache and "
            f"{why}: {reason}. Download it once with `huggingface-cli download {preset.source}`, "
            f"point ATELIER_MODEL at a local directory or .safetensors file, or {CPU_DEMO_HINT}"
        )
    if kind is SourceKind.SINGLE_FILE and single_file_config is not None:
        return (
            f"cannot load single-file model {preset.source!r} with the configs of "
            f"ATELIER_GENERATION_SINGLE_FILE_CONFIG={single_file_config!r}: {reason}. That must be "
            f"a diffusers pipeline of the file's architecture (SDXL); or {CPU_DEMO_HINT}"
        )
    if kind is SourceKind.SINGLE_FILE:
        # A single file holds only weights: diffusers takes every config (and the tokenizers)
        # from the matching hub repository, which offline must already be in the cache.
        return (
            f"cannot load single-file model {preset.source!r}: {reason}. A single file needs "
            f"the configs of {SDXL_BASE}: set ATELIER_GENERATION_SINGLE_FILE_CONFIG to a local "
            "diffusers SDXL directory to load it offline, or fetch them into the hub cache once "
            f"with `huggingface-cli download {SDXL_BASE} --include '*.json' '*.txt'`; or "
            f"{CPU_DEMO_HINT}"
        )
    return f"cannot load model {preset.name!r} from {preset.source!r}: {reason}; {CPU_DEMO_HINT}"


def _load_fast_mode(
    pipe: Any, preset: ModelPreset, data_dir: Path
) -> tuple[Any | None, str | None]:
    """Load the fast-mode LoRA as a peft adapter and make its LCM scheduler.

    A LoRA that cannot be loaded only disables fast mode (quality keeps working), unless fast is
    the model's default mode, in which case the model is unusable and loading fails.
    """
    if preset.fast_lora is None:
        return None, f"model {preset.name!r} has no fast-mode LoRA; use --quality"
    from diffusers import LCMScheduler

    source = preset.fast_lora
    try:
        if source == TINY:
            source = str(tiny_lora_path(data_dir / "models" / TINY))
        path = Path(source).expanduser()
        if path.is_file():
            pipe.load_lora_weights(
                str(path.parent), weight_name=path.name, adapter_name=FAST_ADAPTER
            )
        else:
            pipe.load_lora_weights(source, adapter_name=FAST_ADAPTER)
    except torch.OutOfMemoryError:
        free_memory()
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = (
            f"fast mode is unavailable: LoRA {preset.fast_lora!r} for model {preset.name!r} "
            f"could not be loaded ({reason}); download it with `huggingface-cli download "
            f"{preset.fast_lora}` or set ATELIER_GENERATION_FAST_LORA to a local LoRA file"
        )
        if preset.default_mode == Mode.FAST.value:
            raise ModelLoadError(message) from exc
        log.warning("%s", message)
        return None, message
    set_lora_enabled(pipe, False)
    return LCMScheduler.from_config(pipe.scheduler.config), None


def _compile_unet(pipe: Any, device: torch.device) -> None:
    if device.type != "cuda":
        log.info("ATELIER_GENERATION_COMPILE is ignored without a CUDA GPU")
        return
    pipe.unet = compile_unet(pipe.unet)


def compile_unet(unet: Any, **options: Any) -> Any:
    """``torch.compile`` the UNet; ``options`` override the defaults (tests use backend eager).

    CUDA graphs ("reduce-overhead") remove the per-layer launch cost that dominates small
    batches. Not fullgraph: peft's enable/disable of the fast LoRA is a Python branch.
    """
    return torch.compile(unet, **{"mode": "reduce-overhead", "fullgraph": False, **options})


def free_memory() -> None:
    """Return cached allocator memory after an out-of-memory error or when unloading."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
