"""No secret in any error or log line: which variables hold secrets, and how they are masked.

A variable of the environment holds a secret when a segment of its name (split at ``_``) says
so: ``CREDENTIALS``, ``PASSWORD``, ``SECRET``, ``TOKEN``, ``SASL``, ``AUTH``, ``HEADERS``
(``OTEL_EXPORTER_OTLP_HEADERS`` carries API keys), ``COOKIE``, ``PRIVATE``, ``JAAS`` and the
like, or its last segment is ``KEY`` (``API_KEY``, ``SSL_KEY``).
:func:`is_secret` says which; :func:`shown` is how an error message names such a value.

Two layers keep secrets out of what the worker prints:

- Where the code shows a value (an error about a setting, the start-up line of settings), it
  shows ``***`` for a secret's value (:func:`shown`, :func:`mask_settings`).
- :func:`install` masks what nobody chose to show: every log record (its message, its
  traceback) and the traceback of an exception that ends the process have each secret
  value of the environment (and each part of one, split at ``:``, ``=``, ``,``, ``;`` or
  white space, such as the password of ``user:password``) replaced by ``***``, and the
  password of any URL (``scheme://user:password@host``) too. Values and parts shorter than
  ``MIN_MASKED`` characters are not searched for in free text (masking every ``1`` would
  mask every number); the first layer never shows them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Final

__all__ = ["MASK", "MIN_MASKED", "Redactor", "install", "is_secret", "mask_settings", "shown"]

MASK: Final = "***"
#: Shortest secret value (or part of one) searched for and masked in free text.
MIN_MASKED: Final = 4

_SECRET_SEGMENTS: Final = frozenset(
    {
        "AUTH",
        "AUTHORIZATION",
        "BEARER",
        "COOKIE",
        "CREDENTIAL",
        "CREDENTIALS",
        "HEADERS",
        "JAAS",
        "PASS",
        "PASSPHRASE",
        "PASSWD",
        "PASSWORD",
        "PRIVATE",
        "SASL",
        "SECRET",
        "SECRETS",
        "SIGNATURE",
        "TOKEN",
        "TOKENS",
    }
)
_KEY_SEGMENTS: Final = frozenset({"KEY", "APIKEY", "KEYS"})
_PARTS: Final = re.compile(r"[:=,;\s]+")
_URL_PASSWORD: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*):[^\s/@]*@")


def is_secret(name: str) -> bool:
    """Whether a variable (or setting) of this name holds a secret, by its name alone."""
    segments = [s for s in re.split(r"[_.\-\s]+", name.upper()) if s]
    if not segments:
        return False
    return segments[-1] in _KEY_SEGMENTS or any(s in _SECRET_SEGMENTS for s in segments)


def shown(name: str, value: str) -> str:
    """How an error message shows the value of ``name``: quoted, or ``***`` for a secret."""
    return MASK if is_secret(name) else repr(value)


def mask_settings(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` with the value of every secret name as ``***``."""
    return {name: MASK if is_secret(name) else value for name, value in values.items()}


class Redactor:
    """Replaces given secret values, and URL passwords, in text by ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        found: set[str] = set()
        for secret in secrets:
            for piece in (secret, secret.strip(), *_PARTS.split(secret)):
                if len(piece) >= MIN_MASKED:
                    found.add(piece)
        # Longest first: a value is masked whole before any of its parts is.
        ordered = sorted(found, key=lambda s: (-len(s), s))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> Redactor:
        """A redactor of every secret-named variable's value in ``env`` (``os.environ``),
        and of each of ``extra``."""
        env = os.environ if env is None else env
        found = [value for name, value in env.items() if is_secret(name) and value]
        return cls([*found, *(secret for secret in extra if secret)])

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
        return text

    def scrub(self, record: logging.LogRecord) -> None:
        """Mask a log record in place: its message, its traceback and its stack."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep both parts, masked
            # (logging's own report of the error would print the message and arguments raw)
            message = f"{record.msg} (arguments: {record.args!r})"
            record.msg, record.args = message, ()
        clean = self(message)
        if clean != message:
            record.msg = clean
            record.args = ()  # () and not None: mode's formatter turns None into (None,)
        if record.exc_info and record.exc_info[1] is not None:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self(record.exc_text)
        elif record.exc_text:
            record.exc_text = self(record.exc_text)
        if record.stack_info:
            record.stack_info = self(record.stack_info)


def install(env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> Redactor:
    """Mask the environment's secrets, and ``extra`` (secrets read from files, such as the
    Kafka password), in every log record made from now on, and in the traceback of an
    exception that ends the process. Idempotent: a second call replaces the first's
    redactor (the environment may have changed)."""
    redactor = Redactor.from_env(env, extra)
    base = getattr(logging.getLogRecordFactory(), "_failover_base", None)
    base = base or logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = base(*args, **kwargs)
        redactor.scrub(record)
        return record

    factory._failover_base = base  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)

    hook = getattr(sys.excepthook, "_failover_base", None) or sys.excepthook

    def excepthook(
        kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        text = "".join(traceback.format_exception(kind, error, trace))
        sys.stderr.write(redactor(text))
        sys.stderr.flush()

    excepthook._failover_base = hook  # type: ignore[attr-defined]
    sys.excepthook = excepthook
    return redactor
