"""How every client of the engine connects to Kafka: TLS, SASL (PLAIN, SCRAM) and mutual TLS,
from the environment.

===========================  ==============  ================================================
variable                     default         what
===========================  ==============  ================================================
``KAFKA_SECURITY_PROTOCOL``  ``PLAINTEXT``   ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or
                                             ``SASL_SSL``
``KAFKA_SASL_MECHANISM``     (none)          ``PLAIN``, ``SCRAM-SHA-256`` or
                                             ``SCRAM-SHA-512``; required with ``SASL_*``
``KAFKA_SASL_USERNAME``      (none)          required with ``SASL_*``
``KAFKA_SASL_PASSWORD``      (none)          the password, or:
``KAFKA_SASL_PASSWORD_FILE`` (none)          a file holding it (one trailing newline is
                                             dropped); one of the two with ``SASL_*``
``KAFKA_SSL_CAFILE``         system CAs      PEM file of the CAs that sign the brokers'
                                             certificates (``SSL``, ``SASL_SSL``)
``KAFKA_SSL_CERTFILE``       (none)          PEM client certificate, for mutual TLS
``KAFKA_SSL_KEYFILE``        in CERTFILE     PEM private key of that certificate (not
                                             encrypted)
===========================  ==============  ================================================

A combination that cannot work (a SASL protocol without a mechanism, user or password; a
username, or a TLS file, with a protocol that does not use it; a key without a certificate; a
file that is missing or is not PEM) is refused when the settings are read, with the variable's
name. The TLS context is built once then, so a bad file stops the start, not the first
connection. Brokers' certificates are checked against the CAs and their host names.

The password is kept out of ``repr`` and ``str``, and :func:`streams.redact.install` replaces it
(and anything else secret) in every log record of the process with ``***``: the worker's
start-up line shows the settings, and no library's message or traceback can show the secret.

:meth:`KafkaSecurity.client_options` gives aiokafka's keyword arguments (producers, consumers,
admin clients); :meth:`KafkaSecurity.faust_credentials` gives faust's ``broker_credentials``.
This module needs nothing but the standard library (faust is imported only for its
credentials), so the examples and the tests use it as well.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from streams.redact import MASK

__all__ = ["VARIABLES", "KafkaSecurity", "SecurityError"]

PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SASL_VARIABLES: Final = (
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_PASSWORD_FILE",
)
_TLS_VARIABLES: Final = ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE")
#: Every variable this module reads.
VARIABLES: Final = ("KAFKA_SECURITY_PROTOCOL", *_SASL_VARIABLES, *_TLS_VARIABLES)


class SecurityError(ValueError):
    """A security variable is missing, invalid or does not fit the others; the message names
    it and never holds a secret."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def _value(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _file(env: Mapping[str, str], name: str) -> Path | None:
    value = _value(env, name)
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise SecurityError(name, f"{value}: no such file")
    if not os.access(path, os.R_OK):
        raise SecurityError(name, f"{value}: not readable by this user")
    return path


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How to connect to the brokers. Build it with :meth:`from_env`."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        """Read and check the ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and
        ``KAFKA_SSL_*`` variables of ``env`` (``os.environ`` by default).

        Raises:
            SecurityError: a value is invalid or does not fit the others.
        """
        env = os.environ if env is None else env
        protocol = (_value(env, "KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
        if protocol not in PROTOCOLS:
            raise SecurityError(
                "KAFKA_SECURITY_PROTOCOL", f"{protocol!r} is not one of {', '.join(PROTOCOLS)}"
            )
        sasl = protocol.startswith("SASL_")
        tls = protocol in ("SSL", "SASL_SSL")
        if not sasl:
            for name in _SASL_VARIABLES:
                if _value(env, name) is not None:
                    raise SecurityError(
                        name, f"set, but KAFKA_SECURITY_PROTOCOL is {protocol}, which has no SASL"
                    )
        if not tls:
            for name in _TLS_VARIABLES:
                if _value(env, name) is not None:
                    raise SecurityError(
                        name, f"set, but KAFKA_SECURITY_PROTOCOL is {protocol}, which has no TLS"
                    )
        security = cls(
            protocol=protocol,
            cafile=_file(env, "KAFKA_SSL_CAFILE"),
            certfile=_file(env, "KAFKA_SSL_CERTFILE"),
            keyfile=_file(env, "KAFKA_SSL_KEYFILE"),
            **(_sasl(env, protocol) if sasl else {}),
        )
        if security.keyfile is not None and security.certfile is None:
            raise SecurityError(
                "KAFKA_SSL_KEYFILE", "set without KAFKA_SSL_CERTFILE, the certificate it is for"
            )
        if tls:
            security.ssl_context()  # a bad file stops the start, with its variable
        return security

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def secrets(self) -> tuple[str, ...]:
        """What must never be logged or shown."""
        return (self.password,) if self.password else ()

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS client context (``None`` without TLS): the brokers' certificates checked
        against ``KAFKA_SSL_CAFILE`` (or the system's CAs) and their host names; the client
        certificate loaded for mutual TLS.

        Raises:
            SecurityError: a file is not what its variable says it is.
        """
        if not self.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.cafile is not None:
            try:
                context.load_verify_locations(cafile=str(self.cafile))
            except (ssl.SSLError, ValueError) as exc:
                raise SecurityError(
                    "KAFKA_SSL_CAFILE", f"{self.cafile}: no PEM certificate in it ({exc})"
                ) from None
        if self.certfile is not None:
            keyfile = str(self.keyfile) if self.keyfile is not None else None
            try:
                # The password callback refuses an encrypted key at once instead of prompting.
                context.load_cert_chain(str(self.certfile), keyfile, password=_no_password)
            except (ssl.SSLError, ValueError, TypeError) as exc:
                variable = "KAFKA_SSL_KEYFILE" if self.keyfile else "KAFKA_SSL_CERTFILE"
                raise SecurityError(
                    variable,
                    f"cannot load the client certificate {self.certfile} with its key "
                    f"{self.keyfile or '(in the same file)'}: {exc}; the key must be PEM, "
                    "not encrypted",
                ) from None
        return context

    def client_options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments (``AIOKafkaProducer``, ``AIOKafkaConsumer``,
        ``AIOKafkaAdminClient``). Each call builds a new TLS context."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            options["sasl_mechanism"] = self.mechanism
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = self.password
        return options

    def faust_credentials(self) -> Any:
        """faust's ``broker_credentials`` (``None`` for ``PLAINTEXT``): faust turns them
        into the same aiokafka arguments for its consumer, producers and topic creation."""
        if self.protocol == "PLAINTEXT":
            return None
        from faust.auth import SASLCredentials, SSLCredentials

        if not self.sasl:
            return SSLCredentials(self.ssl_context())
        return SASLCredentials(
            username=self.username,
            password=self.password,
            ssl_context=self.ssl_context(),
            mechanism=self.mechanism,
        )

    def __str__(self) -> str:
        parts = [self.protocol]
        if self.sasl:
            parts.append(f"{self.mechanism} as {self.username!r} (password {MASK})")
        if self.tls:
            parts.append(f"CA {self.cafile or 'the system CAs'}")
            if self.certfile is not None:
                parts.append(f"client certificate {self.certfile}")
        return ", ".join(parts)


def _sasl(env: Mapping[str, str], protocol: str) -> dict[str, Any]:
    mechanism = _value(env, "KAFKA_SASL_MECHANISM")
    if mechanism is None:
        raise SecurityError(
            "KAFKA_SASL_MECHANISM", f"required with {protocol}: one of {', '.join(MECHANISMS)}"
        )
    mechanism = mechanism.upper()
    if mechanism not in MECHANISMS:
        raise SecurityError(
            "KAFKA_SASL_MECHANISM", f"{mechanism!r} is not one of {', '.join(MECHANISMS)}"
        )
    username = _value(env, "KAFKA_SASL_USERNAME")
    if username is None:
        raise SecurityError("KAFKA_SASL_USERNAME", f"required with {protocol}")
    given = env.get("KAFKA_SASL_PASSWORD") or None
    path = _file(env, "KAFKA_SASL_PASSWORD_FILE")
    if given is not None and path is not None:
        raise SecurityError(
            "KAFKA_SASL_PASSWORD_FILE", "set together with KAFKA_SASL_PASSWORD: use one of them"
        )
    if path is not None:
        try:
            given = path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecurityError(
                "KAFKA_SASL_PASSWORD_FILE", f"{path}: cannot read it ({type(exc).__name__})"
            ) from None
        if not given:
            raise SecurityError("KAFKA_SASL_PASSWORD_FILE", f"{path} is empty")
    if given is None:
        raise SecurityError(
            "KAFKA_SASL_PASSWORD", f"required with {protocol} (or KAFKA_SASL_PASSWORD_FILE)"
        )
    return {"mechanism": mechanism, "username": username, "password": given}


def _no_password() -> str:
    raise ValueError("the key is encrypted")
