"""Send one e-mail over SMTP (notices to the sites' contacts), with errors that say what to do.

Settings come from the environment first (through :mod:`lpse_ops.settings`: ``LPSE_OPS_SMTP_HOST``,
``LPSE_OPS_SMTP_PORT``, ``LPSE_OPS_SMTP_FROM``, ``LPSE_OPS_SMTP_CA``, ``LPSE_OPS_SMTP_STARTTLS`` = auto|require|off,
``LPSE_OPS_SMTP_USER``, ``LPSE_OPS_SMTP_PASSWORD``), else from the inventory's ``lpse_smtp_host``,
``lpse_smtp_port``, ``lpse_smtp_from``, ``lpse_smtp_ca_cert`` and ``lpse_smtp_starttls``. The
password is read from the environment only, never from the inventory, a log or a report.

STARTTLS is used whenever the server offers it (``auto``), verifying its certificate against
``LPSE_OPS_SMTP_CA`` (else the system's CAs) and its name; ``require`` refuses a server that
does not offer it. A login is only ever sent over TLS.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from lpse_ops import settings as app_settings

STARTTLS_MODES = app_settings.STARTTLS_MODES
ENV_PREFIX = "LPSE_OPS_SMTP_"
TIMEOUT_S = 30.0


class SmtpError(Exception):
    """Sending failed; the message says what happened and what to do."""


class SmtpSettingsError(SmtpError):
    """The SMTP settings are missing or wrong (nothing was sent)."""


class SmtpConnectionError(SmtpError):
    """The SMTP server could not be reached, or it hung up."""


class SmtpTlsError(SmtpError):
    """STARTTLS was required but not offered, or the server's certificate is not trusted."""


class SmtpAuthError(SmtpError):
    """The server refused the login (or offers none while credentials are set)."""


class SmtpRefusedError(SmtpError):
    """The server refused the sender, every recipient, or the message; ``refused`` maps address -> reply."""

    def __init__(self, message: str, refused: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.refused = dict(refused or {})


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send: server, sender, TLS and the optional login."""

    host: str
    port: int
    sender: str
    starttls: str = "auto"
    ca_cert: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = TIMEOUT_S

    def describe(self) -> dict:
        """Return the settings without the password (for plans, runs and logs)."""
        return {"host": self.host, "port": self.port, "sender": self.sender, "starttls": self.starttls,
                "ca_cert": self.ca_cert, "user": self.user}


def settings(inventory_vars: Mapping | None = None, environ: Mapping[str, str] | None = None) -> SmtpSettings:
    """Return the SMTP settings: the environment first, else *inventory_vars* (``lpse_smtp_*``).

    The environment is read through :mod:`lpse_ops.settings` (*environ*, default the process's own).
    Raises SmtpSettingsError naming every missing or bad setting.
    """
    env_problems: dict[str, str] = {}
    try:
        env = app_settings.current() if environ is None else app_settings.load(environ)
    except app_settings.SettingsError as error:
        env = error.partial
        env_problems = {name: problem for name, problem in error.problems.items() if name.startswith(ENV_PREFIX)}
    problems = [f"{name}: {problem}" for name, problem in env_problems.items()]
    variables = inventory_vars or {}

    def from_inventory(var_name: str) -> str | None:
        value = variables.get(var_name)
        return str(value) if value not in (None, "") else None

    host = env.smtp_host or from_inventory("lpse_smtp_host")
    port = env.smtp_port
    if port is None and f"{ENV_PREFIX}PORT" not in env_problems:
        port_text = from_inventory("lpse_smtp_port") or "25"
        try:
            port = int(port_text)
            if not 1 <= port <= 65535:
                raise ValueError
        except ValueError:
            problems.append(f"bad SMTP port {port_text!r}: lpse_smtp_port (or LPSE_OPS_SMTP_PORT) must be 1-65535")
    sender = env.smtp_from or from_inventory("lpse_smtp_from")
    starttls = env.smtp_starttls or (from_inventory("lpse_smtp_starttls") or "auto").lower()
    if not host:
        problems.append("no SMTP server: set LPSE_OPS_SMTP_HOST or the inventory variable lpse_smtp_host")
    if not sender or "@" not in sender:
        problems.append("no sender address: set LPSE_OPS_SMTP_FROM or the inventory variable lpse_smtp_from "
                        "(e.g. lpse-ops@lkpp.go.id)")
    if starttls not in STARTTLS_MODES:
        problems.append(f"lpse_smtp_starttls (or LPSE_OPS_SMTP_STARTTLS) must be one of {', '.join(STARTTLS_MODES)}, "
                        f"not {starttls!r}")
    user, password = env.smtp_user, env.smtp_password
    if bool(user) != bool(password):
        problems.append("set both LPSE_OPS_SMTP_USER and LPSE_OPS_SMTP_PASSWORD, or neither")
    if problems:
        raise SmtpSettingsError("; ".join(problems))
    ca_cert = str(env.smtp_ca) if env.smtp_ca else from_inventory("lpse_smtp_ca_cert")
    return SmtpSettings(host=host or "", port=port or 0, sender=sender or "", starttls=starttls,
                        ca_cert=ca_cert, user=user, password=password)


@dataclass(frozen=True)
class SentMessage:
    """What the server accepted: the Message-ID, the recipients it took, those it refused, and when."""

    message_id: str
    accepted: list[str]
    refused: dict[str, str]
    sent_at: datetime


def build_message(sender: str, recipients: list[tuple[str, str]], subject: str, text: str, html: str | None = None,
                  headers: Mapping[str, str] | None = None) -> EmailMessage:
    """Return a UTF-8 message from *sender* to *recipients* ((name, address) pairs) with a plain-text
    body and, when given, its HTML alternative; a fresh Message-ID and Date are set."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = [Address(display_name=name, addr_spec=address) for name, address in recipients]
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    domain = sender.rsplit("@", 1)[-1].strip(" >") or "localhost"
    message["Message-ID"] = make_msgid(idstring="lpse-ops", domain=domain)
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(text, charset="utf-8")
    if html is not None:
        message.add_alternative(html, subtype="html", charset="utf-8")
    return message


def _reply(code: int, reply: bytes | str) -> str:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {text}".strip()


def send(config: SmtpSettings, message: EmailMessage) -> SentMessage:
    """Send *message* to its To/Cc addresses through *config*'s server; return what was accepted.

    Recipients refused while others were accepted are returned in ``refused`` (the message went to
    the others). Raises SmtpConnectionError, SmtpTlsError, SmtpAuthError or SmtpRefusedError (the
    sender, every recipient or the message refused), each saying what to do.
    """
    where = f"{config.host}:{config.port}"
    recipients = [address.addr_spec for header in ("To", "Cc") for address in
                  (message[header].addresses if message[header] else ())]
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as client:
            client.ehlo()
            encrypted = False
            if config.starttls != "off" and client.has_extn("starttls"):
                context = ssl.create_default_context(cafile=config.ca_cert) if config.ca_cert \
                    else ssl.create_default_context()
                client.starttls(context=context)
                client.ehlo()
                encrypted = True
            elif config.starttls == "require":
                raise SmtpTlsError(f"the SMTP server {where} does not offer STARTTLS and LPSE_OPS_SMTP_STARTTLS="
                                   "require: use a server that encrypts, or set it to auto")
            if config.user:
                if not encrypted:
                    raise SmtpAuthError(f"the SMTP server {where} does not offer STARTTLS: refusing to send the "
                                        "password of LPSE_OPS_SMTP_USER unencrypted; use a server that offers it")
                if not client.has_extn("auth"):
                    raise SmtpAuthError(f"the SMTP server {where} offers no login (AUTH) but LPSE_OPS_SMTP_USER "
                                        "is set: unset LPSE_OPS_SMTP_USER/PASSWORD or use the right server")
                client.login(config.user, config.password or "")
            refused_raw = client.send_message(message)
    except SmtpError:
        raise
    except smtplib.SMTPAuthenticationError as error:
        raise SmtpAuthError(f"the SMTP server {where} refused the login of {config.user} "
                            f"({_reply(error.smtp_code, error.smtp_error)}): check LPSE_OPS_SMTP_USER and "
                            "LPSE_OPS_SMTP_PASSWORD") from error
    except smtplib.SMTPRecipientsRefused as error:
        refused = {address: _reply(code, reply) for address, (code, reply) in error.recipients.items()}
        listing = "; ".join(f"{address}: {reply}" for address, reply in refused.items())
        raise SmtpRefusedError(f"the SMTP server {where} refused every recipient ({listing}): correct the "
                               "addresses in the site's site_contacts in the inventory", refused) from error
    except smtplib.SMTPSenderRefused as error:
        raise SmtpRefusedError(f"the SMTP server {where} refused the sender {error.sender} "
                               f"({_reply(error.smtp_code, error.smtp_error)}): set LPSE_OPS_SMTP_FROM "
                               "(or lpse_smtp_from) to an address this server accepts") from error
    except smtplib.SMTPDataError as error:
        raise SmtpRefusedError(f"the SMTP server {where} refused the message "
                               f"({_reply(error.smtp_code, error.smtp_error)}): see its log") from error
    except ssl.SSLCertVerificationError as error:
        raise SmtpTlsError(f"the SMTP server {where}'s certificate is not trusted ({error.verify_message}): set "
                           "LPSE_OPS_SMTP_CA (or lpse_smtp_ca_cert) to the CA that signed it") from error
    except ssl.SSLError as error:
        raise SmtpTlsError(f"STARTTLS with the SMTP server {where} failed ({error}): check its TLS "
                           "configuration, or set LPSE_OPS_SMTP_STARTTLS=off for a server on a trusted network") \
            from error
    except smtplib.SMTPServerDisconnected as error:
        raise SmtpConnectionError(f"the SMTP server {where} closed the connection ({error}): "
                                  "check that it is an SMTP server and see its log") from error
    except smtplib.SMTPException as error:
        raise SmtpError(f"sending through the SMTP server {where} failed: {error}") from error
    except OSError as error:  # refused, timed out, no route, unknown host
        reason = "connection refused" if isinstance(error, ConnectionRefusedError) else \
            "timed out" if isinstance(error, TimeoutError) else str(error)
        raise SmtpConnectionError(f"cannot reach the SMTP server {where} ({reason}): check LPSE_OPS_SMTP_HOST and "
                                  "LPSE_OPS_SMTP_PORT (or the inventory's lpse_smtp_host/lpse_smtp_port); "
                                  "in the lab, run `lpse-ops lab up`") from error
    refused = {address: _reply(code, reply) for address, (code, reply) in refused_raw.items()}
    return SentMessage(message_id=str(message["Message-ID"]), accepted=[r for r in recipients if r not in refused],
                       refused=refused, sent_at=datetime.now(UTC))
