"""A HyperTrack webhook receiver, standard library only. Run it with the secret `webhooks set` printed:
HYPERTRACK_WEBHOOK_SECRET=whsec_... python3 webhook_receiver.py  (listens on 127.0.0.1:8000)"""

import hashlib
import hmac
import json
import os
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE_S = 300  # a signature older than 5 minutes is a replayed request: refused


def verify(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    """Whether `header` (X-HyperTrack-Signature: t=...,v1=...) signs `body` with `secret`, recently."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp, signature = int(fields["t"]), fields["v1"].encode()
    except (KeyError, ValueError):  # malformed: not signed
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(int(time.time() if now is None else now) - timestamp) <= TOLERANCE_S
    return fresh and hmac.compare_digest(expected.encode(), signature)  # constant time


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        signed = self.headers.get("X-HyperTrack-Signature", "")
        if not verify(os.environ["HYPERTRACK_WEBHOOK_SECRET"], signed, body):
            self.send_response(401)  # a 4xx ends the delivery: the gateway does not send it again
        else:
            delivery = self.headers["X-HyperTrack-Delivery-Id"]  # the same on a retry: dedupe on it
            for event in json.loads(body):  # oldest first
                print(delivery, event["data"]["order_handle"], event["data"]["value"], event["recorded_at"])
            self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", 8000), Receiver).serve_forever()
