"""The Midjourney-style option parser: prompt text in, validated frozen requests out.

Torch-free, so the bot validates at the edge before anything is queued or charged. Every bound
comes from settings; a value out of range is an OptionError naming the option and the allowed
range, never a silent clamp.

Grammar: ``<prompt text> [--option [value]]...``. Options go after the prompt. ``{a, b}`` anywhere
expands into one job per alternative (nesting allowed), ``--repeat N`` runs each job N times.
"""

from __future__ import annotations

import difflib
import math
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from config.settings import GenerationSettings
from generation.errors import ModelLoadError, OptionError
from generation.presets import ModelPreset, resolve_preset
from generation.request import GRID_SIZE, MAX_SEED, GenerationRequest, Mode
from generation.weights import check_prompt_syntax

SeedSource = Callable[[], int]


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True)
class _Option:
    name: str
    takes_value: bool
    help: str


_OPTIONS: tuple[_Option, ...] = (
    _Option("ar", True, "aspect ratio W:H"),
    _Option("no", True, "what to leave out (negative prompt)"),
    _Option("seed", True, "seed 0..4294967295"),
    _Option("steps", True, "denoising steps"),
    _Option("cfg", True, "guidance scale"),
    _Option("chaos", True, "how different the four images are, 0..100"),
    _Option("fast", False, "fast draft mode"),
    _Option("quality", False, "quality mode"),
    _Option("tile", False, "seamless tiling"),
    _Option("stop", True, "stop at this percent of the steps, 10..100"),
    _Option("repeat", True, "run the prompt N times"),
    _Option("model", True, "model name"),
    _Option("stealth", False, "only you and the server's moderators can find it"),
    _Option("public", False, "the server's members can find, like and remix it"),
)
_BY_NAME = {opt.name: opt for opt in _OPTIONS}
_ALIASES = {"aspect": "ar", "guidance": "cfg", "c": "chaos", "r": "repeat", "s": "seed"}
ALLOWED_FLAGS = ", ".join(f"--{opt.name}" for opt in _OPTIONS)


def options_help(settings: GenerationSettings) -> list[str]:
    """One line per option, with the bounds these settings allow (for /help)."""
    bounds = {
        "ar": f"long side at most {settings.max_aspect_ratio:g}x the short side",
        "steps": f"{settings.min_steps}..{settings.max_steps}",
        "cfg": f"{settings.min_guidance:g}..{settings.max_guidance:g}",
        "repeat": f"1..{settings.max_repeat}",
        "model": ", ".join(settings.enabled_models) or "only the default",
    }
    aliases: dict[str, list[str]] = {}
    for alias, name in _ALIASES.items():
        aliases.setdefault(name, []).append(f"--{alias}")
    lines = []
    for option in _OPTIONS:
        spelled = " ".join([f"--{option.name}", *aliases.get(option.name, [])])
        extra = f" ({bounds[option.name]})" if option.name in bounds else ""
        lines.append(f"`{spelled}`: {option.help}{extra}")
    lines.append(
        f"`{{a, b}}`: one job per alternative; at most {settings.max_jobs_per_prompt} jobs "
        "per prompt"
    )
    lines.append("`a::2 b::1`, `(word:1.3)`: prompt weights")
    return lines


# Phones turn "--" into an em or en dash; accept those where an option starts.
_DASHES = re.compile(r"(?:(?<=\s)|^)(?:\u2014|\u2013|--)(?=[A-Za-z])")
_FLAG = re.compile(r"(?:(?<=\s)|^)--([A-Za-z][A-Za-z0-9_-]*)")
_ASPECT = re.compile(r"^([0-9]{1,4}):([0-9]{1,4})$")
# Python's int() and float() also read other scripts' digits ("٣٠") and underscores ("1_0").
_ASCII_INT = re.compile(r"[+-]?[0-9]+")
_ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class CommandOptions:
    """A command's native options (/imagine's ``negative``, ``aspect``...), typed as Discord
    delivers them. They are checked by the same rules as the flags they stand for, and giving an
    option both ways is an error."""

    negative: str | None = None
    aspect: str | None = None
    seed: int | None = None
    mode: Mode | None = None
    steps: int | None = None
    guidance: float | None = None
    chaos: int | None = None
    #: "public" or "stealth" (the flags of the same names).
    visibility: str | None = None

    def given(self) -> dict[str, str]:
        """The options that were given, as ``flag name -> text`` (flags without a value: "")."""
        values: dict[str, object] = {
            "no": self.negative,
            "ar": self.aspect,
            "seed": self.seed,
            "steps": self.steps,
            "cfg": self.guidance,
            "chaos": self.chaos,
        }
        given = {name: str(value) for name, value in values.items() if value is not None}
        if self.mode is not None:
            given[self.mode.value] = ""
        if self.visibility is not None:
            given[self.visibility] = ""
        return given


#: How a native option of the command is named in messages, by the flag it stands for.
_COMMAND_OPTION_NAMES = {
    "no": "negative",
    "ar": "aspect",
    "seed": "seed",
    "steps": "steps",
    "cfg": "guidance",
    "chaos": "chaos",
}


@dataclass(frozen=True)
class PromptDefaults:
    """Per-user defaults from /settings me; options in the prompt win over them."""

    mode: Mode | None = None
    aspect: str | None = None


def parse_imagine_prompt(
    text: str,
    *,
    settings: GenerationSettings,
    model: str,
    options: CommandOptions | None = None,
    defaults: PromptDefaults | None = None,
    seed_source: SeedSource = random_seed,
) -> list[GenerationRequest]:
    """Parse one /imagine prompt into the jobs it asks for.

    ``model`` is the operator's default model; ``--model`` may pick one of
    ``settings.enabled_models``. ``options`` are the slash command's native options
    (named like the flags: ``ar``, ``no``, ``seed``, ``steps``, ``cfg``, ``chaos``,
    ``fast``...); giving the same option both ways is an error.
    """
    given = (options or CommandOptions()).given()
    return _parse_with(text, settings, model, given, defaults, seed_source)


def _parse_with(
    text: str,
    settings: GenerationSettings,
    model: str,
    given: Mapping[str, str],
    defaults: PromptDefaults | None,
    seed_source: SeedSource,
) -> list[GenerationRequest]:
    """The parser, with options given apart from the text as ``flag name -> text``."""
    text = clean_text(text).text
    _check_length(text, "the prompt", settings)
    extra = {name: clean_text(value).text for name, value in given.items()}
    for name, value in extra.items():
        _check_length(value, f"the {_COMMAND_OPTION_NAMES.get(name, name)} option", settings)
    expansions = expand_permutations(_DASHES.sub("--", text), settings.max_jobs_per_prompt)
    parsed = [
        _parse_one(variant, settings=settings, model=model, extra=extra, defaults=defaults)
        for variant in expansions
    ]
    total = sum(repeat for _, repeat in parsed)
    if total > settings.max_jobs_per_prompt:
        raise OptionError(
            f"this prompt makes {total} jobs ({len(expansions)} prompt variant(s) with --repeat); "
            f"at most {settings.max_jobs_per_prompt} are allowed per prompt"
        )
    requests: list[GenerationRequest] = []
    for fields, repeat in parsed:
        explicit_seed = fields.pop("seed", None)
        for k in range(repeat):
            seed = seed_source() if explicit_seed is None else explicit_seed + GRID_SIZE * k
            requests.append(GenerationRequest(**fields, seed=seed % (MAX_SEED + 1)))
    return requests


def check_stored_request(
    request: GenerationRequest, *, settings: GenerationSettings, model: str
) -> None:
    """Refuse a request that did not come from :func:`parse_imagine_prompt` here (one read back
    from a file, say) if a typed command with the same options would be refused.

    Its options go back through the parser, so the rules and messages are the ones /imagine
    uses. Its size must be the one its ``--ar`` gives, or that doubled by upscales within
    ``max_output_pixels``. Raises OptionError.
    """
    options = {
        "ar": request.aspect,
        "seed": str(request.seed),
        "steps": str(request.steps),
        "cfg": repr(request.guidance),
        "chaos": str(request.chaos),
        "stop": str(request.stop),
        "model": request.model,
        request.mode.value: "",
    }
    if request.negative_prompt:
        options["no"] = request.negative_prompt
    if request.tile:
        options["tile"] = ""
    parsed = _parse_with(request.prompt, settings, model, options, None, random_seed)
    if len(parsed) != 1:
        raise OptionError(f"the prompt makes {len(parsed)} jobs; a stored request is one job")
    base = parsed[0]
    scale = request.width // base.width
    upscaled = scale > 1 and request.width * request.height <= settings.max_output_pixels
    if (
        (scale != 1 and not upscaled)
        or scale & (scale - 1)
        or (request.width, request.height) != (base.width * scale, base.height * scale)
    ):
        raise OptionError(
            f"{request.width}x{request.height} is not a size --ar {request.aspect} gives: "
            f"{base.width}x{base.height}, or that upscaled 2x, 4x... within "
            f"{settings.max_output_pixels:,} pixels"
        )


def check_prompt_text(text: str, settings: GenerationSettings, what: str = "prompt") -> str:
    """``text`` (a prompt, negative prompt or remixed prompt) cleaned (see :func:`clean_text`)
    and with its whitespace collapsed; OptionError if it is too long or its weight syntax is
    malformed."""
    cleaned = " ".join(clean_text(text).text.split())
    _check_length(cleaned, f"the {what}", settings)
    check_prompt_syntax(cleaned)
    return cleaned


@dataclass(frozen=True)
class CleanText:
    """Text with the characters :func:`clean_text` removes gone, and how many of each kind."""

    text: str
    removed: tuple[tuple[str, int], ...] = ()

    @property
    def note(self) -> str:
        """e.g. ``"removed 2 control characters and 1 zero-width character"``; "" if none."""
        return _removed_note(dict(self.removed))


#: Invisible characters that reorder or hide text, letting a posted prompt read as something else.
_BIDI_CONTROLS = frozenset([0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
_ZERO_WIDTH = frozenset([0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF])
_LINE_BREAKS = frozenset("\t\n\v\f\r\x1c\x1d\x1e\x1f\x85\u2028\u2029")


def clean_text(text: str) -> CleanText:
    """Remove what no prompt needs: NUL and the other C0/C1 control characters (tabs and line
    breaks become spaces), bidirectional overrides, isolates and marks, zero-width characters and
    lone surrogates. PostgreSQL's JSONB refuses NUL, and the others can make a posted prompt read
    differently from what the model gets."""
    kept: list[str] = []
    removed: dict[str, int] = {}
    for char in text:
        if char in _LINE_BREAKS:
            kept.append(" ")
            continue
        code = ord(char)
        if code in _BIDI_CONTROLS:
            kind = "bidirectional control character"
        elif code in _ZERO_WIDTH:
            kind = "zero-width character"
        elif unicodedata.category(char) == "Cc":
            kind = "control character"
        elif unicodedata.category(char) == "Cs":
            kind = "invalid character"
        else:
            kept.append(char)
            continue
        removed[kind] = removed.get(kind, 0) + 1
    if not removed:
        return CleanText(text)
    return CleanText("".join(kept), tuple(removed.items()))


def cleaning_note(text: str, options: CommandOptions | None = None) -> str:
    """What :func:`parse_imagine_prompt` removed from ``text`` and ``options``, for the
    acknowledgement ("removed 1 control character"); "" when nothing."""
    removed: dict[str, int] = {}
    for value in [text, *(options or CommandOptions()).given().values()]:
        for kind, count in clean_text(value).removed:
            removed[kind] = removed.get(kind, 0) + count
    return _removed_note(removed)


def _removed_note(removed: Mapping[str, int]) -> str:
    if not removed:
        return ""
    parts = [f"{count} {kind}{'' if count == 1 else 's'}" for kind, count in removed.items()]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"removed {listed}"


def _check_length(text: str, what: str, settings: GenerationSettings) -> None:
    if len(text) > settings.max_prompt_chars:
        raise OptionError(
            f"{what} is {len(text)} characters long; at most {settings.max_prompt_chars} "
            "are allowed"
        )


def expand_permutations(text: str, limit: int) -> list[str]:
    """Expand ``{a, b}`` groups (nesting allowed) into every combination, at most ``limit``."""
    results: list[str] = []
    # A stack, not recursion: thousands of nested braces must be an error, not a RecursionError.
    pending: list[tuple[str, str]] = [("", text)]
    while pending:
        prefix, rest = pending.pop()
        start = rest.find("{")
        if start < 0:
            if "}" in rest:
                raise OptionError("the prompt has a '}' without a matching '{'")
            results.append(prefix + rest)
            if len(results) > limit:
                raise OptionError(
                    f"the {{a, b}} permutations make more than {limit} prompts; "
                    f"at most {limit} are allowed per prompt"
                )
            continue
        if "}" in rest[:start]:
            raise OptionError("the prompt has a '}' without a matching '{'")
        end = _matching_brace(rest, start)
        alternatives = _split_top_level(rest[start + 1 : end])
        pending.extend(
            (prefix + rest[:start], alternative + rest[end + 1 :])
            for alternative in reversed(alternatives)
        )
    return results


def _matching_brace(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise OptionError("the prompt has a '{' without a matching '}'; write {a, b} permutations")


def _split_top_level(inner: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        depth += ch == "{"
        depth -= ch == "}"
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def _split_flags(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Split into the prompt and ``(canonical name, as typed, raw value)`` per option."""
    matches = list(_FLAG.finditer(text))
    prompt = text[: matches[0].start()] if matches else text
    flags: list[tuple[str, str, str]] = []
    for i, match in enumerate(matches):
        typed = match.group(1)
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[match.end() : end].strip()
        name = _ALIASES.get(typed.lower(), typed.lower())
        if name not in _BY_NAME:
            close = difflib.get_close_matches(name, [*_BY_NAME, *_ALIASES], n=1)
            hint = f" (did you mean --{_ALIASES.get(close[0], close[0])}?)" if close else ""
            raise OptionError(f"unknown option --{typed}{hint}; allowed: {ALLOWED_FLAGS}")
        flags.append((name, typed, value))
    return " ".join(prompt.split()), flags


def _collect(
    flags: list[tuple[str, str, str]], extra: Mapping[str, str]
) -> dict[str, tuple[str, str]]:
    values: dict[str, tuple[str, str]] = {}
    for name, typed, value in flags:
        if name in values:
            raise OptionError(f"--{name} is given twice; give each option once")
        values[name] = (typed, value)
    for name, value in extra.items():
        if name in values:
            raise OptionError(
                f"--{name} is given both as a command option and in the prompt; give it once"
            )
        values[name] = (name, value)
    return values


def _parse_one(
    text: str,
    *,
    settings: GenerationSettings,
    model: str,
    extra: Mapping[str, str],
    defaults: PromptDefaults | None,
) -> tuple[dict[str, Any], int]:
    prompt, flags = _split_flags(text)
    values = _collect(flags, extra)
    for name, (typed, value) in values.items():
        takes = _BY_NAME[name].takes_value
        if not takes and value:
            raise OptionError(
                f"--{typed} takes no value, but '{value}' follows it; options go after the prompt"
            )
        if takes and not value:
            raise OptionError(f"--{typed} needs a value ({_BY_NAME[name].help})")
        if takes and name != "no" and len(value.split()) > 1:
            raise OptionError(
                f"unexpected text '{value.split(maxsplit=1)[1]}' after --{typed} "
                f"{value.split()[0]}; put the prompt before the options"
            )
    if not prompt:
        raise OptionError("the prompt is empty; describe the image before any --options")
    check_prompt_text(prompt, settings)
    negative = (
        check_prompt_text(values["no"][1], settings, "negative prompt") if "no" in values else ""
    )

    preset = _pick_model(values, settings, model)
    mode = _pick_mode(values, settings, preset, defaults)
    if mode is Mode.FAST and preset.fast_lora is None:
        raise OptionError(f"fast mode is not available for model {preset.name}; use --quality")
    fast = mode is Mode.FAST
    aspect_text = values["ar"][1] if "ar" in values else (defaults and defaults.aspect) or "1:1"
    width, height = aspect_size(aspect_text, preset, settings.max_aspect_ratio)
    steps = _int(values, "steps", settings.min_steps, settings.max_steps)
    guidance = _float(values, "cfg", settings.min_guidance, settings.max_guidance)
    fields: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": negative,
        "aspect": aspect_text,
        "width": width,
        "height": height,
        "steps": steps
        if steps is not None
        else (preset.fast_steps if fast else preset.quality_steps),
        "guidance": guidance
        if guidance is not None
        else (preset.fast_guidance if fast else preset.quality_guidance),
        "chaos": _int(values, "chaos", 0, 100) or 0,
        "mode": mode,
        "tile": "tile" in values,
        "stop": _int(values, "stop", 10, 100) or 100,
        "model": preset.name,
        "stealth": _pick_stealth(values),
    }
    seed = _int(values, "seed", 0, MAX_SEED)
    if seed is not None:
        fields["seed"] = seed
    repeat = _int(values, "repeat", 1, settings.max_repeat) or 1
    return fields, repeat


def _pick_model(
    values: dict[str, tuple[str, str]], settings: GenerationSettings, default: str
) -> ModelPreset:
    if "model" not in values:
        return resolve_preset(default, settings.fast_lora)
    wanted = values["model"][1]
    allowed = [default, *(m for m in settings.enabled_models if m != default)]
    if wanted not in allowed:
        raise OptionError(f"--model {wanted} is not enabled here; allowed: {', '.join(allowed)}")
    try:
        return resolve_preset(wanted, settings.fast_lora if wanted == default else None)
    except ModelLoadError as exc:
        raise OptionError(str(exc)) from None


def _pick_stealth(values: dict[str, tuple[str, str]]) -> bool | None:
    """``--stealth`` True, ``--public`` False, neither None (the member's or server's default)."""
    if "stealth" in values and "public" in values:
        raise OptionError("--stealth and --public contradict each other; choose one")
    if "stealth" in values:
        return True
    if "public" in values:
        return False
    return None


def _pick_mode(
    values: dict[str, tuple[str, str]],
    settings: GenerationSettings,
    preset: ModelPreset,
    defaults: PromptDefaults | None,
) -> Mode:
    if "fast" in values and "quality" in values:
        raise OptionError("--fast and --quality contradict each other; choose one")
    if "fast" in values:
        return Mode.FAST
    if "quality" in values:
        return Mode.QUALITY
    if defaults and defaults.mode:
        return defaults.mode
    return Mode(settings.default_mode or preset.default_mode)


def aspect_size(aspect: str, preset: ModelPreset, max_ratio: float) -> tuple[int, int]:
    """Width and height for ``W:H`` at the preset's native pixel count, snapped to its multiple."""
    match = _ASPECT.match(aspect.strip())
    if not match:
        raise OptionError(
            f"--ar must be two whole numbers like 3:2 or 16:9; got '{_shown(aspect)}'"
        )
    w, h = int(match.group(1)), int(match.group(2))
    if w == 0 or h == 0:
        raise OptionError(f"--ar sides must be at least 1; got '{aspect}'")
    ratio = w / h
    if max(ratio, 1 / ratio) > max_ratio + 1e-9:
        limit = f"{max_ratio:g}"
        raise OptionError(
            f"--ar {aspect} is too extreme; the long side may be at most {limit} times the short "
            f"side (from 1:{limit} to {limit}:1)"
        )
    return snap_size(ratio, preset.native_resolution**2, preset.size_multiple)


def snap_size(ratio: float, area: int, multiple: int) -> tuple[int, int]:
    """The multiple-of-``multiple`` size closest to ``ratio`` at roughly ``area`` pixels.

    Ties in ratio go to the size that does not exceed ``area`` (so 3:2 on SDXL is the familiar
    1216x832 bucket, not 1280x832, which needs more memory).
    """
    m = multiple
    candidates: list[tuple[float, bool, int, int, int]] = []
    for h in range(m, int(math.sqrt(area / ratio) * 1.5) + 2 * m, m):
        for w in {max(m, math.floor(h * ratio / m) * m), max(m, math.ceil(h * ratio / m) * m)}:
            pixels = w * h
            if 0.9 * area <= pixels <= 1.1 * area:
                error = round(abs(math.log(w / h / ratio)), 2)
                candidates.append((error, pixels > area, abs(pixels - area), w, h))
    if not candidates:
        width = max(m, round(math.sqrt(area * ratio) / m) * m)
        return width, max(m, round(math.sqrt(area / ratio) / m) * m)
    best = min(candidates)
    return best[3], best[4]


def _int(values: dict[str, tuple[str, str]], name: str, low: int, high: int) -> int | None:
    item = values.get(name)
    if item is None:
        return None
    typed, raw = item
    if not _ASCII_INT.fullmatch(raw):
        raise OptionError(
            f"--{typed} must be a whole number from {low} to {high}, written with the digits "
            f"0-9; got '{_shown(raw)}'"
        )
    value = int(raw)
    if not low <= value <= high:
        raise OptionError(f"--{typed} must be from {low} to {high}; got {_shown(str(value))}")
    return value


def _float(values: dict[str, tuple[str, str]], name: str, low: float, high: float) -> float | None:
    item = values.get(name)
    if item is None:
        return None
    typed, raw = item
    value = float(raw) if _ASCII_FLOAT.fullmatch(raw) else math.nan
    if not math.isfinite(value):
        raise OptionError(
            f"--{typed} must be a number from {low:g} to {high:g}, written with the digits 0-9; "
            f"got '{_shown(raw)}'"
        )
    if not low <= value <= high:
        raise OptionError(f"--{typed} must be from {low:g} to {high:g}; got {value:g}")
    return value


#: How much of a refused value a message repeats: enough to recognise it, never a wall of text.
_SHOWN_CHARS = 40


def _shown(value: str) -> str:
    return value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 1] + "\u2026"
