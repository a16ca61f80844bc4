"""Passwords never shown: storage URLs and any text with the passwords replaced by ``***``.

:func:`redact` hides the password of a URL in every form: the userinfo's (any characters, an
unencoded ``@`` included: the host never holds one, so the password runs to the last), a
``?password=``/``&password=`` query parameter, and libpq keyword or ``PGPASSWORD``-style
``password=`` values. :func:`redact_text` does it for any text (log lines, errors, tracebacks,
command lines), and also replaces every password of a storage URL this process opened
(:func:`remember_secrets`) wherever it appears, percent-decoded too. Once a URL has been
remembered, every log record of archsearch and Optuna passes through :func:`redact_text`.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
#: ``password=VALUE`` as a URL query parameter, a libpq keyword or an environment variable.
_PARAM = re.compile(
    r"""(?ix) (?:^|(?<=[?&;,\s]))
    (?:pg)?(?:password|passwd|pwd|pass) \s*=\s*
    ('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^&\s]*)"""
)
_USER = re.compile(r"[^:@/?#]*:")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_SECRETS: set[str] = set()
#: Shorter passwords are hidden in URLs and ``password=`` values only, not replaced in any text.
MIN_SECRET = 4
MASK = "***"


def _param_spans(text: str) -> list[tuple[int, int]]:
    return [m.span(1) for m in _PARAM.finditer(text) if m.end(1) > m.start(1)]


def secret_spans(url: str) -> list[tuple[int, int]]:
    """Where the passwords of ``url`` are: ``password=`` values, and the userinfo's password
    (after ``user:``), which ends at the last ``@``: the host never holds one. When that ``@``
    is inside a ``password=`` value the two are hidden as one, and a non-password query value
    with an ``@`` hides the host as well: a URL may show too little, never a password."""
    spans = _param_spans(url)
    scheme = _SCHEME.match(url)
    user = _USER.match(url, scheme.end()) if scheme else None
    if user is None:
        return spans
    last = url.rfind("@", user.end())
    if last == -1:
        return spans
    end = next((b for a, b in spans if a <= last < b), last)
    return [*spans, (user.end(), end)] if end > user.end() else spans


def _masked(text: str, spans: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for a, b in sorted(spans):
        if b <= pos:
            continue
        out += [text[pos : max(a, pos)], MASK]
        pos = b
    return "".join(out) + text[pos:]


def redact(url: str) -> str:
    """A storage URL with every password replaced by ``***``."""
    return _masked(url, secret_spans(url))


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it, every ``password=`` value and every
    remembered password (:func:`remember_secrets`) replaced by ``***``."""
    text = _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)
    text = _masked(text, _param_spans(text))
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def remember_secrets(text: str) -> None:
    """Note the passwords in ``text`` (a URL or a command-line word; also percent-decoded), so
    that :func:`redact_text` replaces them wherever they appear, and redact every log record of
    archsearch and Optuna from now on."""
    for a, b in secret_spans(text):
        value = text[a:b].strip("'\"")
        for form in (value, unquote(value)):
            if len(form) >= MIN_SECRET:
                _SECRETS.add(form)
    _install_log_filter()


def encode_at_in_password(url: str) -> str:
    """``scheme://user:p@ss@host/db`` as ``scheme://user:p%40ss@host/db``: the password runs to
    the last ``@`` (SQLAlchemy would end it at the first and take ``ss@host`` for the host)."""
    scheme = _SCHEME.match(url)
    if scheme is None or "?" in url:
        return url
    spans = [s for s in secret_spans(url) if s[0] > scheme.end()]
    if len(spans) != 1 or "@" not in url[spans[0][0] : spans[0][1]]:
        return url
    a, b = spans[0]
    return url[:a] + url[a:b].replace("@", "%40") + url[b:]


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = _RedactingFilter()


def _install_log_filter() -> None:
    targets: list[logging.Filterer] = [logging.getLogger("archsearch"), logging.getLogger("optuna")]
    targets += logging.getLogger("optuna").handlers
    for target in targets:
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
