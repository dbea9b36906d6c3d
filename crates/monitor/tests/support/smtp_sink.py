"""A throwaway SMTP server for the email notifier's tests, built on aiosmtpd.

Usage: smtp_sink.py OUTDIR [USER:PASSWORD]

Listens on 127.0.0.1 on a free port and prints `PORT <n>` once it accepts connections. Each
message it accepts is written to OUTDIR/NNNN.json ({"mail_from", "rcpt_tos", "content"}),
atomically (written to a temp name, then renamed). Recipients starting with `reject` get a
permanent 550, those starting with `busy` a transient 451. With USER:PASSWORD, AUTH is required
(over plain text: it is a local test server) and other credentials get 535.
Exits with status 3 and `MISSING aiosmtpd` when the package is not installed.
"""

import asyncio
import json
import os
import sys

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:
    print("MISSING aiosmtpd", flush=True)
    sys.exit(3)


class Sink:
    def __init__(self, out):
        self.out = out
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 no such user"
        if address.startswith("busy"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.out, "%04d.json" % self.count)
        content = envelope.original_content or envelope.content
        if isinstance(content, bytes):
            content = content.decode("utf-8", "replace")
        with open(path + ".tmp", "w") as f:
            json.dump(
                {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos, "content": content},
                f,
            )
        os.rename(path + ".tmp", path)
        return "250 Message accepted"


def authenticator(expected):
    user, password = expected.split(":", 1)

    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        # handled=False: aiosmtpd answers a failure with its own 535.
        return AuthResult(success=ok, handled=False)

    return check


async def main():
    out = sys.argv[1]
    creds = sys.argv[2] if len(sys.argv) > 2 else None
    handler = Sink(out)

    def factory():
        if creds:
            return SMTP(
                handler,
                authenticator=authenticator(creds),
                auth_required=True,
                auth_require_tls=False,
            )
        return SMTP(handler)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main())
