"""Discord's payload limits, checked the way the API checks them.

Each validator returns ``FieldError``s (empty when the payload is fine); callers turn them into
a 400 ``Invalid Form Body`` and a recorded violation. Limits live in one frozen ``Limits`` so a
test can tighten or loosen them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import FieldError
from .models import AUTO_ARCHIVE_DURATIONS, FLAG_COMPONENTS_V2, THREAD_TYPES

JSON = dict[str, Any]
Path = tuple[str | int, ...]

MIB = 1024 * 1024

BUTTON = 2
ACTION_ROW = 1
TEXT_INPUT = 4
LABEL = 18
SELECT_TYPES = frozenset({3, 5, 6, 7, 8})
LINK_STYLE = 5
PREMIUM_STYLE = 6

COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")
# USER and MESSAGE command names keep their case and may hold spaces.
CONTEXT_MENU_NAME = re.compile(r"^[-_' \w]{1,32}$")

# Application command types
CHAT_INPUT = 1
USER_COMMAND = 2
MESSAGE_COMMAND = 3
COMMAND_TYPE_NAMES = {CHAT_INPUT: "CHAT_INPUT", USER_COMMAND: "USER", MESSAGE_COMMAND: "MESSAGE"}
CONTEXT_MENU_TYPES = (USER_COMMAND, MESSAGE_COMMAND)


@dataclass(frozen=True)
class Limits:
    """Discord's documented limits; override any of them per emulator."""

    content: int = 2000
    embeds_per_message: int = 10
    embed_title: int = 256
    embed_description: int = 4096
    embed_fields: int = 25
    embed_field_name: int = 256
    embed_field_value: int = 1024
    embed_footer_text: int = 2048
    embed_author_name: int = 256
    embed_total: int = 6000
    action_rows: int = 5
    components_per_row: int = 5
    button_label: int = 80
    custom_id: int = 100
    select_options: int = 25
    select_placeholder: int = 150
    components_v2_total: int = 40
    attachments_per_message: int = 10
    attachment_size: int = 10 * MIB
    modal_title: int = 45
    modal_components: int = 5
    text_input_label: int = 45
    text_input_value: int = 4000
    autocomplete_choices: int = 25
    command_description: int = 100
    command_options: int = 25
    command_choices: int = 25
    commands_per_scope: int = 100
    # USER and MESSAGE commands each; discord.py's CommandTree refuses more than 5 itself.
    context_menu_commands: int = 15
    channel_name: int = 100
    rate_limit_per_user: int = 21600


def _too_long(path: Path, limit: int) -> FieldError:
    return FieldError(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def _bad_length(path: Path, limit: int) -> FieldError:
    return FieldError(path, "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {limit} in length.")


def _check_length(errors: list[FieldError], path: Path, value: Any, limit: int) -> None:
    if isinstance(value, str) and len(value) > limit:
        errors.append(_too_long(path, limit))


def validate_message(payload: JSON, limits: Limits) -> list[FieldError]:
    """Content, embeds and components of a message create or edit body."""
    errors: list[FieldError] = []
    flags = payload.get("flags") or 0
    content = payload.get("content")
    _check_length(errors, ("content",), content, limits.content)
    embeds = payload.get("embeds")
    if embeds:
        errors.extend(validate_embeds(embeds, limits))
    components = payload.get("components")
    if components:
        if flags & FLAG_COMPONENTS_V2:
            errors.extend(_validate_components_v2(components, limits))
        else:
            errors.extend(_validate_action_rows(components, limits))
    if flags & FLAG_COMPONENTS_V2 and (content or embeds):
        errors.append(
            FieldError(
                ("content",),
                "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                "The 'content' and 'embeds' fields cannot be used with components v2.",
            )
        )
    return errors


def validate_embeds(embeds: Sequence[JSON], limits: Limits) -> list[FieldError]:
    errors: list[FieldError] = []
    if len(embeds) > limits.embeds_per_message:
        errors.append(
            FieldError(
                ("embeds",),
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {limits.embeds_per_message} or fewer in length.",
            )
        )
    total = 0
    for index, embed in enumerate(embeds):
        path: Path = ("embeds", index)
        title = embed.get("title") or ""
        description = embed.get("description") or ""
        _check_length(errors, (*path, "title"), title, limits.embed_title)
        _check_length(errors, (*path, "description"), description, limits.embed_description)
        total += len(title) + len(description)
        fields = embed.get("fields") or []
        if len(fields) > limits.embed_fields:
            errors.append(_too_long((*path, "fields"), limits.embed_fields))
        for field_index, item in enumerate(fields):
            field_path: Path = (*path, "fields", field_index)
            name = item.get("name") or ""
            value = item.get("value") or ""
            if not name:
                errors.append(FieldError((*field_path, "name"), "BASE_TYPE_REQUIRED", "Required"))
            if not value:
                errors.append(FieldError((*field_path, "value"), "BASE_TYPE_REQUIRED", "Required"))
            _check_length(errors, (*field_path, "name"), name, limits.embed_field_name)
            _check_length(errors, (*field_path, "value"), value, limits.embed_field_value)
            total += len(name) + len(value)
        footer = (embed.get("footer") or {}).get("text") or ""
        _check_length(errors, (*path, "footer", "text"), footer, limits.embed_footer_text)
        author = (embed.get("author") or {}).get("name") or ""
        _check_length(errors, (*path, "author", "name"), author, limits.embed_author_name)
        total += len(footer) + len(author)
    if total > limits.embed_total:
        errors.append(
            FieldError(
                ("embeds",),
                "MAX_EMBED_SIZE_EXCEEDED",
                f"Embed size exceeds maximum size of {limits.embed_total}",
            )
        )
    return errors


def _validate_interactive(
    errors: list[FieldError], path: Path, component: JSON, limits: Limits, seen: set[str]
) -> None:
    """Rules for one button or select, wherever it sits."""
    kind = component.get("type")
    custom_id = component.get("custom_id")
    if custom_id is not None:
        _check_length(errors, (*path, "custom_id"), custom_id, limits.custom_id)
        if custom_id in seen:
            errors.append(
                FieldError(
                    (*path, "custom_id"),
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            )
        seen.add(custom_id)
    if kind == BUTTON:
        style = component.get("style")
        _check_length(errors, (*path, "label"), component.get("label"), limits.button_label)
        if style == LINK_STYLE:
            if not component.get("url") or custom_id is not None:
                errors.append(
                    FieldError(path, "BUTTON_COMPONENT_INVALID", "A link button needs a url only")
                )
        elif style != PREMIUM_STYLE and not custom_id:
            errors.append(
                FieldError((*path, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
            )
        if not component.get("label") and not component.get("emoji") and style != PREMIUM_STYLE:
            errors.append(
                FieldError(path, "BUTTON_COMPONENT_INVALID", "A button needs a label or emoji")
            )
    elif kind in SELECT_TYPES:
        if not custom_id:
            errors.append(
                FieldError((*path, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
            )
        _check_length(
            errors, (*path, "placeholder"), component.get("placeholder"), limits.select_placeholder
        )
        options = component.get("options") or []
        if len(options) > limits.select_options:
            errors.append(_too_long((*path, "options"), limits.select_options))


def _validate_row(
    errors: list[FieldError], path: Path, row: JSON, limits: Limits, seen: set[str]
) -> None:
    children = row.get("components") or []
    if not children:
        errors.append(
            FieldError((*path, "components"), "BASE_TYPE_MIN_LENGTH", "Must be 1 or more")
        )
    if len(children) > limits.components_per_row:
        errors.append(_too_long((*path, "components"), limits.components_per_row))
    has_select = any(c.get("type") in SELECT_TYPES for c in children)
    if has_select and len(children) > 1:
        errors.append(
            FieldError(
                (*path, "components"),
                "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                "The specified component exceeds the maximum width",
            )
        )
    for index, child in enumerate(children):
        child_path: Path = (*path, "components", index)
        if child.get("type") not in SELECT_TYPES | {BUTTON}:
            errors.append(
                FieldError(
                    (*child_path, "type"),
                    "COMPONENT_TYPE_INVALID",
                    f"Component type {child.get('type')} is not allowed in a message row",
                )
            )
        _validate_interactive(errors, child_path, child, limits, seen)


def _validate_action_rows(components: Sequence[JSON], limits: Limits) -> list[FieldError]:
    errors: list[FieldError] = []
    if len(components) > limits.action_rows:
        errors.append(_too_long(("components",), limits.action_rows))
    seen: set[str] = set()
    for index, row in enumerate(components):
        path: Path = ("components", index)
        if row.get("type") != ACTION_ROW:
            errors.append(
                FieldError(
                    (*path, "type"),
                    "COMPONENT_TYPE_INVALID",
                    "Top-level components must be action rows without the components v2 flag",
                )
            )
            continue
        _validate_row(errors, path, row, limits, seen)
    return errors


def _walk(components: Sequence[JSON], path: Path) -> Iterator[tuple[Path, JSON]]:
    for index, component in enumerate(components):
        here: Path = (*path, index)
        yield here, component
        yield from _walk(component.get("components") or [], (*here, "components"))
        for key in ("accessory", "component"):
            inner = component.get(key)
            if isinstance(inner, dict):
                yield from _walk([inner], (*here, key))


def _validate_components_v2(components: Sequence[JSON], limits: Limits) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    everything = list(_walk(components, ("components",)))
    if len(everything) > limits.components_v2_total:
        errors.append(
            FieldError(
                ("components",),
                "MAX_COMPONENTS_EXCEEDED",
                f"Must be {limits.components_v2_total} or fewer components in total.",
            )
        )
    for path, component in everything:
        if component.get("type") == ACTION_ROW:
            children = component.get("components") or []
            if len(children) > limits.components_per_row:
                errors.append(_too_long((*path, "components"), limits.components_per_row))
        else:
            _validate_interactive(errors, path, component, limits, seen)
    return errors


def validate_modal(data: JSON, limits: Limits) -> list[FieldError]:
    """A modal callback's ``data``: title, custom_id and up to five inputs."""
    errors: list[FieldError] = []
    path: Path = ("data",)
    title = data.get("title") or ""
    if not title:
        errors.append(FieldError((*path, "title"), "BASE_TYPE_REQUIRED", "This field is required"))
    _check_length(errors, (*path, "title"), title, limits.modal_title)
    custom_id = data.get("custom_id") or ""
    if not custom_id:
        errors.append(
            FieldError((*path, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
        )
    _check_length(errors, (*path, "custom_id"), custom_id, limits.custom_id)
    components = data.get("components") or []
    if not components:
        errors.append(
            FieldError((*path, "components"), "BASE_TYPE_MIN_LENGTH", "Must be 1 or more")
        )
    if len(components) > limits.modal_components:
        errors.append(_too_long((*path, "components"), limits.modal_components))
    for item_path, component in _walk(components, (*path, "components")):
        kind = component.get("type")
        if component.get("custom_id") is not None:
            _check_length(
                errors, (*item_path, "custom_id"), component["custom_id"], limits.custom_id
            )
        if kind in (TEXT_INPUT, LABEL):
            _check_length(
                errors, (*item_path, "label"), component.get("label"), limits.text_input_label
            )
        if kind == TEXT_INPUT:
            _check_length(
                errors, (*item_path, "value"), component.get("value"), limits.text_input_value
            )
    return errors


def validate_autocomplete(data: JSON, limits: Limits) -> list[FieldError]:
    choices = data.get("choices") or []
    if len(choices) > limits.autocomplete_choices:
        return [_too_long(("data", "choices"), limits.autocomplete_choices)]
    return []


def _validate_options(
    errors: list[FieldError], path: Path, options: Sequence[JSON], limits: Limits
) -> None:
    if len(options) > limits.command_options:
        errors.append(_too_long(path, limits.command_options))
    names: set[str] = set()
    seen_optional = False
    for index, option in enumerate(options):
        here: Path = (*path, index)
        name = option.get("name") or ""
        if not COMMAND_NAME.match(name) or name != name.lower():
            errors.append(
                FieldError((*here, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Invalid name")
            )
        if name in names:
            errors.append(
                FieldError(
                    (*here, "name"), "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS", "Duplicate"
                )
            )
        names.add(name)
        description = option.get("description") or ""
        if not 1 <= len(description) <= limits.command_description:
            errors.append(_bad_length((*here, "description"), limits.command_description))
        if option.get("required"):
            if seen_optional:
                errors.append(
                    FieldError(
                        (*here, "required"),
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
                )
        elif option.get("type") not in (1, 2):
            seen_optional = True
        choices = option.get("choices") or []
        if len(choices) > limits.command_choices:
            errors.append(_too_long((*here, "choices"), limits.command_choices))
        _validate_options(errors, (*here, "options"), option.get("options") or [], limits)


def validate_commands(commands: Sequence[JSON], limits: Limits) -> list[FieldError]:
    """A bulk-overwrite body: types, names, descriptions, option order and counts.

    Discord has three kinds of command an app registers with a bot: CHAT_INPUT (slash
    commands: lowercase names, a 1-100 character description, options), and the context-menu
    USER and MESSAGE commands ("Apps > name" on a user or a message), whose names may be mixed
    case with spaces and which take neither a description nor options. Names are unique per
    kind, and each kind has its own count limit per scope.
    """
    errors: list[FieldError] = []
    counts = Counter(command.get("type", CHAT_INPUT) for command in commands)
    if counts[CHAT_INPUT] > limits.commands_per_scope:
        errors.append(_too_long((), limits.commands_per_scope))
    for kind in CONTEXT_MENU_TYPES:
        if counts[kind] > limits.context_menu_commands:
            errors.append(
                FieldError(
                    (),
                    "APPLICATION_COMMANDS_MAX_EXCEEDED",
                    f"Must be {limits.context_menu_commands} or fewer "
                    f"{COMMAND_TYPE_NAMES[kind]} commands.",
                )
            )
    seen: set[tuple[int, str]] = set()
    for index, command in enumerate(commands):
        path: Path = (index,)
        kind = command.get("type", CHAT_INPUT)
        if kind not in COMMAND_TYPE_NAMES:
            errors.append(
                FieldError(
                    (*path, "type"),
                    "BASE_TYPE_CHOICES",
                    f"Value must be one of {tuple(COMMAND_TYPE_NAMES)}.",
                )
            )
            continue
        name = command.get("name") or ""
        if not _valid_command_name(kind, name):
            errors.append(
                FieldError((*path, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Invalid name")
            )
        if (kind, name) in seen:
            errors.append(
                FieldError(
                    (*path, "name"),
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    f"Application command names must be unique: {name}",
                )
            )
        seen.add((kind, name))
        if kind == CHAT_INPUT:
            description = command.get("description") or ""
            if not 1 <= len(description) <= limits.command_description:
                errors.append(_bad_length((*path, "description"), limits.command_description))
            _validate_options(errors, (*path, "options"), command.get("options") or [], limits)
        else:
            _validate_context_menu(errors, path, command)
    return errors


def _valid_command_name(kind: int, name: str) -> bool:
    if kind == CHAT_INPUT:
        return bool(COMMAND_NAME.match(name)) and name == name.lower()
    return bool(CONTEXT_MENU_NAME.match(name)) and bool(name.strip())


def _validate_context_menu(errors: list[FieldError], path: Path, command: JSON) -> None:
    """USER and MESSAGE commands: an empty (or absent) description and no options.

    The description error is Discord's own; the options one follows its pattern.
    """
    if command.get("description"):
        errors.append(
            FieldError(
                (*path, "description"),
                "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION_INVALID",
                "Context menu commands cannot have description",
            )
        )
    if command.get("options"):
        errors.append(
            FieldError(
                (*path, "options"),
                "APPLICATION_COMMAND_CONTEXT_MENU_OPTIONS_INVALID",
                "Context menu commands cannot have options",
            )
        )


def _choices(values: Sequence[int]) -> str:
    return "Value must be one of {" + ", ".join(str(v) for v in values) + "}."


def validate_thread(
    body: JSON, limits: Limits, *, creating: bool, with_type: bool = False
) -> list[FieldError]:
    """A Start Thread (``creating``) or Modify Channel body for a thread: ``name`` 1-100
    characters (required to create), ``auto_archive_duration`` one of 60/1440/4320/10080,
    ``rate_limit_per_user`` 0-21600 or null, ``type`` 11 or 12 (``with_type``: a thread
    without a message), booleans for ``invitable``, ``archived`` and ``locked``."""
    errors: list[FieldError] = []
    name = body.get("name")
    if name is None:
        if creating:
            errors.append(FieldError(("name",), "BASE_TYPE_REQUIRED", "This field is required"))
    elif not isinstance(name, str):
        errors.append(
            FieldError(("name",), "STRING_TYPE_CONVERT", "Could not interpret as string.")
        )
    elif not 1 <= len(name) <= limits.channel_name:
        errors.append(_bad_length(("name",), limits.channel_name))
    duration = body.get("auto_archive_duration")
    if duration is not None and (
        isinstance(duration, bool) or duration not in AUTO_ARCHIVE_DURATIONS
    ):
        errors.append(
            FieldError(
                ("auto_archive_duration",), "BASE_TYPE_CHOICES", _choices(AUTO_ARCHIVE_DURATIONS)
            )
        )
    slowmode = body.get("rate_limit_per_user")
    if slowmode is not None and (
        isinstance(slowmode, bool)
        or not isinstance(slowmode, int)
        or not 0 <= slowmode <= limits.rate_limit_per_user
    ):
        errors.append(
            FieldError(
                ("rate_limit_per_user",),
                "NUMBER_TYPE_MAX" if isinstance(slowmode, int) else "NUMBER_TYPE_COERCE",
                f"int value should be between 0 and {limits.rate_limit_per_user}.",
            )
        )
    if with_type:
        kind = body.get("type")
        if kind is not None and (isinstance(kind, bool) or kind not in THREAD_TYPES):
            errors.append(
                FieldError(("type",), "BASE_TYPE_CHOICES", _choices(sorted(THREAD_TYPES)))
            )
    for key in ("invitable", "archived", "locked"):
        if key in body and body[key] is not None and not isinstance(body[key], bool):
            errors.append(FieldError((key,), "BASE_TYPE_BOOLEAN", "Must be either true or false."))
    return errors
