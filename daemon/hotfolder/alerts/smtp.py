"""The email channel: each alert is one plain-text message over SMTP (the standard library's smtplib).

``security``: ``starttls`` (port 587 by default) upgrades the connection before anything else is
said, and a server that does not offer STARTTLS is an attempt that failed, never a fallback to clear
text; ``tls`` (port 465) speaks TLS from the first byte; ``none`` (port 25) is for a relay on the
same machine, and cannot be given a password. The message carries the alert's id as its Message-ID
and as ``X-Hotfolder-Alert-Id``, so a repeat after a lost answer is recognisable.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from hotfolder.alerts.channels import DeliveryError, tls_context
from hotfolder.alerts.messages import email_subject, email_text
from hotfolder.alerts.options import EmailSettings
from hotfolder.alerts.outbox import Delivery
from hotfolder.logsetup import redact


class EmailChannel:
    name = "email"

    def __init__(self, settings: EmailSettings) -> None:
        self.settings = settings
        self.verifies_tls = settings.verify_tls
        self._context = tls_context(settings.verify_tls, settings.ca_file)

    def describe(self) -> str:
        return f"email via {self.settings.host}:{self.settings.port} ({self.settings.security})"

    def message(self, delivery: Delivery) -> EmailMessage:
        document = json.loads(delivery.body)
        message = EmailMessage()
        message["Subject"] = email_subject(document)
        message["From"] = self.settings.sender
        message["To"] = ", ".join(self.settings.recipients)
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = f"<{delivery.alert_id}@hotfolder.invalid>"
        message["X-Hotfolder-Alert-Id"] = delivery.alert_id
        message.set_content(email_text(document))
        return message

    def send(self, delivery: Delivery) -> None:
        message = self.message(delivery)
        settings = self.settings
        try:
            if settings.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout,
                                                      context=self._context)
            else:
                smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
            with smtp:
                if settings.security == "starttls":
                    smtp.starttls(context=self._context)  # raises if the server does not offer it
                if settings.username is not None and settings.password is not None:
                    smtp.login(settings.username, settings.password)
                smtp.send_message(message)
        except (smtplib.SMTPException, ssl.SSLError, OSError) as error:
            raise DeliveryError(redact(f"{type(error).__name__}: {error}")) from None

    def close(self) -> None:
        return None  # a connection per message: alerts are rare, and an idle SMTP session is closed by servers
