"""A real SMTP server for tests/alertmanager_smtp_server.rs, built on aiosmtpd
(Debian package python3-aiosmtpd): STARTTLS required before anything else,
AUTH required, offering CRAM-MD5 (implemented here) besides aiosmtpd's own
PLAIN and LOGIN (checked by `authenticate`).

Usage: aiosmtpd_server.py PORT CERT KEY USER PASSWORD

Prints "ready" once it listens, then one JSON line per message received:
the AUTH mechanism and user, whether the session was under TLS, the envelope
and the message text.
"""

import hashlib
import hmac
import json
import os
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword


class Handler:
    def __init__(self, user, password):
        self.user = user
        self.password = password

    async def auth_CRAM__MD5(self, server, args):
        challenge = f"<{os.getpid()}.{time.time_ns()}@smtp.test>".encode()
        response = await server.challenge_auth(challenge)
        if response is MISSING:
            return AuthResult(success=False, handled=True)
        user, _, digest = response.decode("utf-8", "replace").partition(" ")
        want = hmac.new(self.password.encode(), challenge, hashlib.md5).hexdigest()
        ok = user == self.user and hmac.compare_digest(digest, want)
        # handled=False: aiosmtpd answers 235 or 535 itself.
        return AuthResult(
            success=ok, handled=False, auth_data={"mechanism": "CRAM-MD5", "user": user}
        )

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        """PLAIN and LOGIN: the same user and password."""
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.user
            and auth_data.password.decode() == self.password
        )
        user = auth_data.login.decode() if ok else None
        return AuthResult(success=ok, auth_data={"mechanism": mechanism, "user": user})

    async def handle_DATA(self, server, session, envelope):
        record = {
            "auth": session.auth_data,
            "tls": server._tls_protocol is not None,
            "from": envelope.mail_from,
            "rcpt": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        print(json.dumps(record), flush=True)
        return "250 OK"


def main():
    port, cert, key, user, password = sys.argv[1:6]
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    handler = Handler(user, password)
    controller = Controller(
        handler,
        authenticator=handler.authenticate,
        hostname="127.0.0.1",
        port=int(port),
        tls_context=tls,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()  # runs until the test closes stdin or kills it
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
