"""A stand-in for Postmark's send API, for deploy drills: emails are written to a folder, never sent.

Why: with DEBUG off PaidUp refuses the console mailer (paidup.E006), so a drill of the real
deploy needs a real anymail backend. This answers `POST /email` the way Postmark does
(https://postmarkapp.com/developer/api/email-api: JSON in, `{"To", "SubmittedAt", "MessageID",
"ErrorCode": 0, "Message": "OK"}` out; a missing or wrong `X-Postmark-Server-Token` gets 401
with ErrorCode 10) and writes each message to `<dir>/<n>.json`. Point anymail's Postmark
backend at it::

    EMAIL_BACKEND=anymail.backends.postmark.EmailBackend
    ANYMAIL='{"POSTMARK_SERVER_TOKEN": "drill", "POSTMARK_API_URL": "http://127.0.0.1:8425/"}'
    python tools/fake_esp.py --port 8425 --dir var/emails --token drill

Dev and drills only; never in production.
"""

import argparse
import itertools
import json
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def make_handler(folder: Path, token: str):
    counter = itertools.count(len(list(folder.glob("*.json"))) + 1)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("X-Postmark-Server-Token") != token:
                return self.answer(401, {"ErrorCode": 10, "Message": "The Server Token you provided was invalid."})
            if self.path.rstrip("/") != "/email":
                return self.answer(404, {"ErrorCode": 404, "Message": f"No route {self.path} in this fake."})
            try:
                message = json.loads(body)
                to = message["To"]
            except (ValueError, KeyError, TypeError):
                return self.answer(422, {"ErrorCode": 300, "Message": "Invalid email request"})
            message_id = str(uuid.uuid4())
            record = json.dumps({"MessageID": message_id, **message}, indent=2)
            (folder / f"{next(counter):04d}.json").write_text(record)
            self.answer(
                200,
                {
                    "To": to,
                    "SubmittedAt": datetime.now(UTC).isoformat(),
                    "MessageID": message_id,
                    "ErrorCode": 0,
                    "Message": "OK",
                },
            )

        def answer(self, status: int, data: dict) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Postmark send API that writes emails to a folder.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8425)
    parser.add_argument("--dir", type=Path, default=Path("var/emails"))
    parser.add_argument("--token", default="drill")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args.dir, args.token))
    print(f"fake Postmark on http://{args.host}:{args.port}/, emails in {args.dir}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
