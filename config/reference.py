"""The configuration reference table in the README, generated from the settings tree."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from config.settings import Settings


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.get_default(call_default_factory=True)
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "unset"
    if field.annotation is not None and "SecretStr" in str(field.annotation):
        return "unset"
    return f"`{value}`" if value != "" else '`""`'


def reference_rows() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting."""
    rows: list[tuple[str, str, str]] = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub_name, sub in annotation.model_fields.items():
                env = f"ATELIER_{name}_{sub_name}".upper()
                rows.append((env, _default(sub), sub.description or ""))
        else:
            rows.append((f"ATELIER_{name}".upper(), _default(field), field.description or ""))
    return rows


def reference_markdown() -> str:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{env}` | {default} | {text} |" for env, default, text in reference_rows()]
    return "\n".join(lines)


START = "<!-- config-reference:start"
END = "<!-- config-reference:end -->"


def with_reference(readme: str) -> str:
    """``readme`` with the table between the config-reference markers regenerated."""
    head, _, rest = readme.partition(START)
    marker_line, _, _ = rest.partition("\n")
    _, _, tail = rest.partition(END)
    return f"{head}{START}{marker_line}\n{reference_markdown()}\n{END}{tail}"


if __name__ == "__main__":
    import sys
    from pathlib import Path

    if sys.argv[1:2] == ["--write"]:
        target = Path(sys.argv[2] if len(sys.argv) > 2 else "README.md")
        target.write_text(with_reference(target.read_text()))
    else:
        print(reference_markdown())  # noqa: T201
