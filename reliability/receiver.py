"""A webhook receiver for the fault run: a real HTTP server on 127.0.0.1, in threads of the run's
own process, that checks each message's Standard Webhooks signature and notes what it heard.

It answers 200 at once (the run measures the sender, not a slow receiver), or 401 to a message
whose signature does not verify, as a real receiver would; such a message is counted, not
heard. The signatures are checked with the `standardwebhooks` package, not contactbase's own
signing code, so that the two are held to each other.

A request whose body ends before its Content-Length is not a message: its sender died while
sending it (the run kills the server), and a real receiver would never see it whole either. It
is noted, not checked, and not answered.
"""

import sys
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.exceptions import WebhookVerificationError

EXAMPLES = 5  # examples kept of each problem


@dataclass
class Heard:
    """What the receiver was sent, by Space: each event's `seq`, how often, under which
    `webhook-id`s, and its `data`; the problems (a bad signature, a malformed message), which
    fail the run; and notes (requests cut off, connections lost), which do not."""

    times: dict[int, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    message_ids: dict[int, dict[int, set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    data: dict[int, dict[int, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    problems: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notes: Counter[str] = field(default_factory=Counter)

    def problem(self, kind: str, example: str) -> None:
        self.problems[kind] += 1
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(example)


class Listener(ThreadingHTTPServer):
    """A thread per connection; a connection's failure is noted instead of printed."""

    daemon_threads = True  # a kept-alive connection must not hold up the exit
    request_queue_size = 128  # the sender opens connections in bursts

    def __init__(self, receiver: "Receiver", handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.receiver = receiver

    def handle_error(self, request: object, client_address: object) -> None:
        """A connection that failed (most often: its sender was killed): noted by type."""
        failure = type(sys.exc_info()[1]).__name__
        with self.receiver.lock:
            self.receiver.heard.notes[f"connection failed: {failure}"] += 1


class Receiver:
    """Listens on 127.0.0.1 (a free port) once started; `url_for` gives each Space its own path
    and takes the secret its endpoint signs with."""

    def __init__(self) -> None:
        self.heard = Heard()
        self.lock = threading.Lock()
        self.verifiers: dict[str, tuple[int, Webhook]] = {}  # path -> Space, verifier
        self.server = Listener(self, self._handler())
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="webhook receiver", daemon=True
        )

    def url_for(self, space_id: int) -> str:
        """The URL a Space's endpoint is created with."""
        return f"http://127.0.0.1:{self.port}/hooks/space-{space_id}"

    def expect(self, space_id: int, secret: str) -> None:
        """From now on, verify the Space's messages with `secret`."""
        self.verifiers[f"/hooks/space-{space_id}"] = (space_id, Webhook(secret))

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop listening (idempotent; connections kept alive die with their daemon threads)."""
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> Heard:
        """A copy of what was heard so far, safe to read while messages still arrive."""
        with self.lock:
            heard = self.heard
            return Heard(
                times={space: Counter(seqs) for space, seqs in heard.times.items()},
                message_ids={
                    space: {seq: set(ids) for seq, ids in by_seq.items()}
                    for space, by_seq in heard.message_ids.items()
                },
                data={space: dict(by_seq) for space, by_seq in heard.data.items()},
                problems=Counter(heard.problems),
                examples={kind: list(found) for kind, found in heard.examples.items()},
                notes=Counter(heard.notes),
            )

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> int:
        """Check and note one whole message; the status to answer with."""
        known = self.verifiers.get(path)
        if known is None:
            with self.lock:
                self.heard.problem("message to an unknown path", path)
            return 404
        space_id, verifier = known
        try:
            message = verifier.verify(body, headers)
            data = message["data"]
            seq = int(data["seq"])
        except WebhookVerificationError as exc:
            example = f"{headers.get('webhook-id')} ({len(body)} bytes: {body[:300]!r}): {exc}"
            with self.lock:
                self.heard.problem("bad signature", example)
            return 401
        except (ValueError, KeyError, TypeError) as exc:
            with self.lock:
                self.heard.problem("malformed message", f"{body[:80]!r}: {exc!r}")
            return 400
        with self.lock:
            if message.get("type") != data.get("type"):
                self.heard.problem("type differs from data.type", f"seq {seq}: {message}")
            self.heard.times[space_id][seq] += 1
            self.heard.message_ids[space_id][seq].add(headers.get("webhook-id", ""))
            self.heard.data[space_id][seq] = data
        return 200

    def cut_off(self) -> None:
        with self.lock:
            self.heard.notes["request cut off before the end of its body"] += 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the sender's pool expects

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    receiver.cut_off()
                    self.close_connection = True
                    return
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = receiver.receive(self.path, headers, body)
                answer = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: thousands of messages would bury the run's report."""

        return Handler
