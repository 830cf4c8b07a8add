"""Input rules shared by the batch CLI and the HTTP service: one place says what an acceptable essay is."""

from __future__ import annotations

import re
import unicodedata

from essayscore.settings import get_settings

_LETTER = re.compile(r"[^\W\d_]")


class InputError(ValueError):
    """A request problem the caller can fix; ``code`` is stable and documented, ``message`` names the problem."""

    def __init__(self, code: str, message: str, field: str = "essay"):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "field": self.field}


def _control_characters(text: str) -> list[str]:
    return sorted({f"U+{ord(ch):04X}" for ch in text
                   if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t"})


def check_text(text: object, field: str, max_chars: int, required: bool) -> str | None:
    if text is None or (isinstance(text, str) and not text and not required):
        if required:
            raise InputError("missing", f"'{field}' is required", field)
        return None
    if not isinstance(text, str):
        raise InputError("wrong_type", f"'{field}' must be a string, got {type(text).__name__}", field)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        raise InputError("invalid_utf8", f"'{field}' is not valid UTF-8 text", field)
    if not text.strip():
        if required:
            raise InputError("empty", f"'{field}' is empty or only whitespace", field)
        return None
    if len(text) > max_chars:
        raise InputError("too_long", f"'{field}' has {len(text)} characters; the limit is {max_chars}", field)
    bad = _control_characters(text)
    if bad:
        raise InputError("control_characters", f"'{field}' contains control characters {', '.join(bad[:5])}", field)
    if required and not _LETTER.search(text):
        raise InputError("no_letters", f"'{field}' contains no letters", field)
    return text


def check_essay(essay: object, prompt: object = None) -> tuple[str, str | None]:
    """Return (essay, prompt-or-None) or raise InputError naming the first problem."""
    settings = get_settings()
    essay_text = check_text(essay, "essay", settings.max_essay_chars, required=True)
    prompt_text = check_text(prompt, "prompt", settings.max_prompt_chars, required=False)
    assert essay_text is not None  # required=True raises instead of returning None
    return essay_text, prompt_text
