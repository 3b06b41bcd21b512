"""Prompt weights: Midjourney multi-prompts and A1111 emphasis, translated into compel syntax.

Torch-free, so the option parser can reject a malformed prompt before anything is queued.

Two syntaxes are understood:

* Midjourney multi-prompts split a prompt into parts with ``::`` and weigh each part:
  ``hot dog::1.5 animal::-0.5``. Parts are encoded separately and blended by weight
  (compel's ``("hot dog", "animal").blend(1.5, -0.5)``); each weight is within
  ±``MAX_PART_WEIGHT`` and they must add up to more than 0.
* A1111 emphasis inside a part: ``(word:1.3)`` sets a weight, ``(word)`` multiplies by 1.1,
  ``[word]`` divides by 1.1, nesting multiplies (the product may be at most
  ``MAX_TOKEN_WEIGHT``; at most ``MAX_NESTING`` levels), and ``\\(`` is a literal parenthesis.

Everything else is literal text: characters compel would read as its own syntax (quotes,
parentheses, a ``+``/``-`` run after a word) are escaped or spaced so they stay text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from generation.errors import OptionError

#: ``(word)`` and ``[word]`` multiply or divide by this, as in A1111.
EMPHASIS = 1.1
#: Largest explicit ``(word:w)``, and largest product of nested groups (``((word:2):2)`` is 4);
#: above about 2 images fall apart, above this it is surely a typo.
MAX_TOKEN_WEIGHT = 5.0
#: Largest ``::`` weight either way (``a::10 b::-10``); compel blends the parts by these.
MAX_PART_WEIGHT = 10.0
#: Deepest nesting of ``(...)``/``[...]`` groups; A1111 prompts rarely go past 5.
MAX_NESTING = 20

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_NUMBERISH = "0123456789+-."
# compel reads a +/- run glued to the end of a word ("cat++", "dog-") as up/down-weighting.
_TRAILING_SIGNS = re.compile(r"(?<=[^\s+\-])([+\-]+)(?=\W|$)")
_GROUP_UNSAFE = re.compile(r"([+\-=]+)")
_METHOD_BEFORE_GROUP = re.compile(r"\.(?=[A-Za-z_]+\s*$)")


@dataclass(frozen=True)
class Fragment:
    """A run of literal text with one effective weight."""

    text: str
    weight: float


@dataclass(frozen=True)
class Segment:
    """One ``::`` part of a prompt: its weighted fragments and its blend weight."""

    fragments: tuple[Fragment, ...]
    weight: float

    @property
    def plain_text(self) -> str:
        """The part's text with every weight mark removed."""
        return "".join(fragment.text for fragment in self.fragments)


@dataclass
class _Group:
    opener: str
    position: int
    children: list[str | _Group] = field(default_factory=list)
    weight: float = 1.0


def parse_weighted_prompt(prompt: str) -> list[Segment]:
    """Split ``prompt`` into weighted parts and fragments; raise OptionError naming any problem."""
    segments = [
        Segment(fragments=tuple(_parse_emphasis(text, start)), weight=weight)
        for text, start, weight in _split_multiprompt(prompt)
    ]
    if len(segments) > 1 or "::" in prompt:
        total = sum(segment.weight for segment in segments)
        if not total > 0:
            shown = " + ".join(_format_weight(segment.weight) for segment in segments)
            raise OptionError(
                f"the multi-prompt weights add up to {shown} = {_format_weight(total)}; "
                "they must add up to more than 0 (e.g. `castle::2 fog::-0.5`)"
            )
    return segments


def check_prompt_syntax(prompt: str) -> None:
    """Raise OptionError if ``prompt``'s weight syntax is malformed (see the module docstring)."""
    parse_weighted_prompt(prompt)


def to_compel(prompt: str) -> str:
    """Translate Midjourney/A1111 weights in ``prompt`` into an equivalent compel prompt."""
    segments = parse_weighted_prompt(prompt)
    if len(segments) == 1:
        return _compel_fragments(segments[0].fragments)
    parts = ", ".join(f'"{_compel_fragments(segment.fragments)}"' for segment in segments)
    weights = ", ".join(_format_weight(segment.weight) for segment in segments)
    return f"({parts}).blend({weights})"


def encoder_text(prompt: str) -> str:
    """The words the text encoders receive from ``prompt``: escapes resolved, weight marks and
    backslashes gone (:func:`to_compel` drops them), ``::`` parts joined by spaces. A filter
    reads this, so ``n\\sfw`` is seen as the ``nsfw`` the model gets."""
    return " ".join(
        segment.plain_text.replace("\\", "") for segment in parse_weighted_prompt(prompt)
    )


def plain_prompt(prompt: str) -> str:
    """The prompt's words without any weight syntax (multi-prompt parts joined by spaces)."""
    return " ".join(segment.plain_text.strip() for segment in parse_weighted_prompt(prompt)).strip()


def _split_multiprompt(prompt: str) -> list[tuple[str, int, float]]:
    """``(text, offset of text in prompt, weight)`` for each ``::`` part."""
    parts: list[tuple[str, int, float]] = []
    start = 0
    for match in re.finditer("::", prompt):
        if match.start() < start:  # inside the weight token of a previous "::"
            continue
        text, text_start = prompt[start : match.start()], start
        token_match = re.match(r"[^\s:]*", prompt[match.end() :])
        token = token_match.group() if token_match else ""
        weight = 1.0
        start = match.end()
        if token and token[0] in _NUMBERISH:
            if not _NUMBER.fullmatch(token):
                raise OptionError(
                    f"bad multi-prompt weight `::{token}` at character {match.start() + 1}: "
                    "write a number right after `::`, e.g. `castle::2 fog::-0.5`"
                )
            weight = float(token)
            if not -MAX_PART_WEIGHT <= weight <= MAX_PART_WEIGHT:
                raise OptionError(
                    f"multi-prompt weight `::{_shorten(token)}` at character {match.start() + 1} "
                    f"is out of range: use {_format_weight(-MAX_PART_WEIGHT)} to "
                    f"{_format_weight(MAX_PART_WEIGHT)}"
                )
            start = match.end() + len(token)
        if not text.strip():
            raise OptionError(
                f"empty prompt part before `::` at character {match.start() + 1}: "
                "each `::` ends a part of the prompt, e.g. `castle::2 fog::1`"
            )
        parts.append((text, text_start, weight))
    tail = prompt[start:]
    if tail.strip() or not parts:
        parts.append((tail, start, 1.0))
    return parts


def _parse_emphasis(text: str, offset: int) -> list[Fragment]:
    root = _Group(opener="", position=offset)
    stack = [root]
    literal: list[str] = []

    def flush() -> None:
        if literal:
            stack[-1].children.append("".join(literal))
            literal.clear()

    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            # A1111 escape: the next character is literal; a trailing backslash means nothing.
            if index + 1 < len(text):
                literal.append(text[index + 1])
            index += 2
            continue
        if char in "([":
            flush()
            if len(stack) > MAX_NESTING:
                raise OptionError(
                    f"the group at character {offset + index + 1} is nested more than "
                    f"{MAX_NESTING} deep; nest `(` and `[` at most {MAX_NESTING} deep"
                )
            group = _Group(opener=char, position=offset + index)
            stack[-1].children.append(group)
            stack.append(group)
        elif char in ")]":
            flush()
            expected = "(" if char == ")" else "["
            if stack[-1].opener != expected:
                where = f"character {offset + index + 1}"
                if stack[-1].opener:
                    raise OptionError(
                        f"unbalanced parentheses: `{char}` at {where} does not close "
                        f"`{stack[-1].opener}` at character {stack[-1].position + 1}"
                    )
                raise OptionError(
                    f"unbalanced parentheses: `{char}` at {where} has no opening `{expected}` "
                    "(write `\\(` for a literal parenthesis)"
                )
            _close_group(stack.pop())
        else:
            literal.append(char)
        index += 1
    flush()
    if len(stack) > 1:
        group = stack[-1]
        closer = ")" if group.opener == "(" else "]"
        raise OptionError(
            f"unbalanced parentheses: `{group.opener}` at character {group.position + 1} "
            f"is never closed with `{closer}`"
        )
    fragments: list[Fragment] = []
    _flatten(root, 1.0, fragments)
    return fragments


def _close_group(group: _Group) -> None:
    if group.opener == "[":
        group.weight = 1 / EMPHASIS
        return
    group.weight = EMPHASIS
    last = group.children[-1] if group.children else None
    if not isinstance(last, str) or ":" not in last:
        return
    text, candidate = last.rsplit(":", 1)
    candidate = candidate.strip()
    if not candidate or candidate[0] not in _NUMBERISH:
        return  # "(note: hello)" is emphasised text, as in A1111
    if not _NUMBER.fullmatch(candidate):
        raise OptionError(
            f"bad weight `{candidate}` in the group at character {group.position + 1}: "
            "write `(words:1.3)` with a number"
        )
    weight = float(candidate)
    if not 0 <= weight <= MAX_TOKEN_WEIGHT:
        raise OptionError(
            f"weight {_shorten(candidate)} in the group at character {group.position + 1} "
            f"is out of range: use 0 to {_format_weight(MAX_TOKEN_WEIGHT)}"
        )
    group.weight = weight
    group.children[-1] = text


def _flatten(group: _Group, weight: float, out: list[Fragment]) -> None:
    weight *= group.weight
    if weight > MAX_TOKEN_WEIGHT * (1 + 1e-9):
        raise OptionError(
            f"nested weights multiply to {_format_weight(weight)} in the group at character "
            f"{group.position + 1}; the product of nested weights may be at most "
            f"{_format_weight(MAX_TOKEN_WEIGHT)}"
        )
    for child in group.children:
        if isinstance(child, _Group):
            _flatten(child, weight, out)
        elif out and math.isclose(out[-1].weight, weight):
            out[-1] = Fragment(out[-1].text + child, out[-1].weight)
        else:
            out.append(Fragment(child, weight))


def _escape(text: str) -> str:
    text = text.replace("\\", "").replace('"', '\\"')
    text = text.replace("(", "\\(").replace(")", "\\)")
    return _TRAILING_SIGNS.sub(r" \1", text)


def _compel_fragments(fragments: tuple[Fragment, ...]) -> str:
    # Runs that stay unweighted are merged first, so escaping sees the text as compel will
    # ("0" then "-" must become "0 -", not "0-", which compel reads as a down-weight).
    runs: list[tuple[str, float | None]] = []
    for fragment in fragments:
        if math.isclose(fragment.weight, 1.0):
            pieces: list[tuple[str, float | None]] = [(fragment.text, None)]
        else:
            # compel parses no group holding bare punctuation, "=" or a +/- before a space
            # ("(-)0.9", "(a - b)1.1", "(a=b)1.1"); such pieces go outside the group, where
            # weighting them would have meant nothing anyway.
            pieces = [
                (piece, fragment.weight if any(c.isalnum() for c in piece) else None)
                for piece in _GROUP_UNSAFE.split(fragment.text)
                if piece
            ]
        for text, weight in pieces:
            if runs and weight is None and runs[-1][1] is None:
                runs[-1] = (runs[-1][0] + text, None)
            else:
                runs.append((text, weight))
    out = ""
    after_group = False
    for text, weight in runs:
        escaped = _escape(text)
        if weight is None:
            if after_group and not escaped[:1].isspace():
                # "(cat)1.2" followed by "5 dogs" or "+" would read as another weight.
                out += " "
            out += escaped
            after_group = False
            continue
        after_group = True
        # compel reads a group glued to a word as text, and "x.swap (...)" as its operator.
        out = _METHOD_BEFORE_GROUP.sub(". ", out)
        if out and not out[-1].isspace():
            out += " "
        out += f"({escaped}){_format_weight(weight)}"
    return out


def _shorten(token: str) -> str:
    return token if len(token) <= 12 else token[:12] + "…"


def _format_weight(weight: float) -> str:
    text = f"{weight:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
