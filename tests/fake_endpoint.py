"""A fault-injecting OpenAI-compatible /v1/chat/completions on 127.0.0.1, for the endpoint tests.

It answers query, judge and topic prompts with valid JSON in the form the request asks for (a tool call when
the request has `tools`, a ```json fence when it has neither `tools` nor `response_format`, as md_json asks,
plain JSON otherwise). On a scripted schedule it fails instead. A prompt (its first user message; instructor's
re-asks keep it) gets the faults of `plan(prompt)` on its 1st, 2nd, ... request, then answers well:

    "429"      429 with Retry-After and retry-after-ms (`retry_after` seconds)    "500", "503"  a server error
    "400"      a client error (never worth a retry)       "hang"  no answer for `hang_s`, then the socket closes
    "drop"     the connection closes with no answer        "html"  a 200 whose body is an HTML error page
    "schema"   a 200 whose JSON violates the schema        "slow"  a good answer after 0.15 s
    "plain"    a 200 whose content is "Grade: 2" (not JSON, but readable)
    "echo401"  a 401 whose body echoes the request's Authorization header (as some gateways do)

`latency_s` delays every answer (faults included) by that many seconds, as a remote model's generation time
would; `arrivals` keeps each prompt's request times (time.monotonic), so a test can see how long a 429 was waited.

The default plan reads the prompt: "faults=429+html" means a 429, then an HTML page, then a good answer;
a trailing "*" repeats the last fault for ever ("faults=hang*"). `requests` counts requests per prompt and
`accepted` the good answers each prompt was given, so a test can assert that none was paid for twice.
"""
from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("429", "500", "503", "400", "hang", "drop", "html", "schema", "slow", "plain", "echo401")
HTML_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>nginx</body></html>"
_FAULTS_RE = re.compile(r"faults=([a-z0-9+]+\*?)")


def faults_in_prompt(prompt: str) -> list[str]:
    """The schedule written into a prompt: "faults=429+html" -> ["429", "html"]; "faults=hang*" -> 100 hangs."""
    match = _FAULTS_RE.search(prompt)
    if not match:
        return []
    spec = match.group(1)
    forever = spec.endswith("*")
    faults = spec.rstrip("*").split("+")
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)} in a prompt: use {', '.join(FAULTS)}")
    return faults + [faults[-1]] * 100 if forever else faults


def default_queries(passage: str, n: int) -> list[str]:
    """ "query <i> about <the passage's second word>": easy to assert on."""
    words = passage.split()
    subject = words[1] if len(words) > 1 else "it"
    return [f"query {i} about {subject}" for i in range(n)]


def default_grade(query: str, passage: str) -> int:
    return 3


class LoopbackServer:
    """A JSON-over-POST server on 127.0.0.1 in a daemon thread, for the fake endpoints. It counts requests in
    flight (a request stops counting as its answer starts, before the client can read it and send the next one);
    a subclass records what it wants in `_received` (under the lock) and answers in `_handle`."""

    def _start(self) -> None:
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def leave(self):
                """The request stops counting as in flight, once."""
                if getattr(self, "_counted", False):
                    self._counted = False
                    with endpoint.lock:
                        endpoint.in_flight -= 1

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint._received(self, body)
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                self._counted = True
                try:
                    endpoint._handle(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout)
                finally:
                    self.leave()

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default backlog of 5 refuses connections from a wide client pool

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _received(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        """Record a request as it arrives (called under the lock)."""

    def _handle(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_fault(handler: BaseHTTPRequestHandler, fault: str, retry_after: float, hang_s: float) -> bool:
    """Serve one of the faults the fake endpoints share instead of an answer; False when `fault` is not one
    of them ("slow" waits 0.15 s and is then answered)."""
    if fault in ("429", "500", "503", "400"):
        headers = {"Retry-After": str(math.ceil(retry_after)),
                   "retry-after-ms": str(int(1000 * retry_after))} if fault == "429" else {}
        _send(handler, int(fault), {"error": {"message": f"fake {fault}", "type": "fake", "code": fault}}, headers)
    elif fault == "echo401":
        auth = handler.headers.get("Authorization", "")
        _send(handler, 401, {"error": {"message": f"invalid credentials: {auth}", "type": "auth"}})
    elif fault in ("hang", "drop"):
        if fault == "hang":
            time.sleep(hang_s)
        handler.close_connection = True
        handler.leave()
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    elif fault == "html":
        data = HTML_PAGE.encode()
        handler.leave()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    else:
        if fault == "slow":
            time.sleep(0.15)
        return False
    return True


class FaultyChatEndpoint(LoopbackServer):
    """See the module docstring. `queries(passage, n)` and `grade(query, passage)` write the good answers."""

    def __init__(self, plan: Callable[[str], list[str]] = faults_in_prompt,
                 queries: Callable[[str, int], list[str]] = default_queries,
                 grade: Callable[[str, str], int] = default_grade, hang_s: float = 1.0, retry_after: float = 1.0,
                 latency_s: float = 0.0):
        self.plan, self.write_queries, self.grade = plan, queries, grade
        self.hang_s, self.retry_after, self.latency_s = hang_s, retry_after, latency_s
        self.arrivals: dict[str, list[float]] = {}  # prompt -> monotonic times of its requests
        self.bodies: list[dict] = []                # every request body, in arrival order
        self.headers: list[dict] = []
        self.requests: Counter = Counter()          # prompt -> requests received
        self.accepted: Counter = Counter()          # prompt -> good answers sent
        self.served: Counter = Counter()            # fault (or "ok") -> times served
        self._start()

    def _received(self, handler, body):
        self.bodies.append(body)
        self.headers.append({k.lower(): v for k, v in handler.headers.items()})

    # -- what tests read
    def requests_with(self, text: str) -> int:
        """Requests whose prompt contains `text`."""
        return sum(n for prompt, n in self.requests.items() if text in prompt)

    def accepted_with(self, text: str) -> int:
        return sum(n for prompt, n in self.accepted.items() if text in prompt)

    def paid_twice(self) -> list[str]:
        """Prompts that were given a good answer more than once."""
        return [prompt for prompt, n in self.accepted.items() if n > 1]

    # -- serving
    def _handle(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")  # ours, not a re-ask
        with self.lock:
            self.requests[prompt] += 1
            nth = self.requests[prompt]
            self.arrivals.setdefault(prompt, []).append(time.monotonic())
        if self.latency_s:
            time.sleep(self.latency_s)
        schedule = self.plan(prompt)
        fault = schedule[nth - 1] if nth <= len(schedule) else "ok"
        with self.lock:
            self.served[fault] += 1
        if serve_fault(handler, fault, self.retry_after, self.hang_s):
            return
        kind = _kind(body)
        if fault == "schema":
            answer = {"query": {"answer": "relevant"}, "judge": {"verdict": "relevant"}, "topic": {"title": 5}}[kind]
        elif fault == "plain":
            return _send(handler, 200, _completion(body, "Grade: 2"))
        else:
            answer = self._answer(kind, prompt)
        if fault in ("ok", "slow"):   # counted before it is sent: a client that has it sees it counted
            with self.lock:
                self.accepted[prompt] += 1
        _send(handler, 200, _completion(body, answer))

    def _answer(self, kind: str, prompt: str) -> dict:
        if kind == "query":
            n = int(prompt.split()[1])  # "Write <n> ..."
            passage = prompt.split("Passage:\n", 1)[1].split("\n\nReal queries", 1)[0]
            return {"queries": self.write_queries(passage, n)}
        if kind == "judge":
            query = prompt.split("Query: ", 1)[1].split("\n\nPassage:\n", 1)[0]
            return {"grade": self.grade(query, prompt.split("\n\nPassage:\n", 1)[1]), "reason": "fake"}
        return {"name": f"  about {prompt.splitlines()[-1][2:]}. "}


def _kind(body: dict) -> str:
    system = body["messages"][0]["content"]
    if '"queries"' in system:
        return "query"
    return "topic" if '"name"' in system else "judge"


def _completion(body: dict, answer: dict | str) -> dict:
    """A chat.completion answering `answer` in the form the request asked for."""
    text = answer if isinstance(answer, str) else json.dumps(answer)
    message: dict = {"role": "assistant", "content": text}
    finish = "stop"
    if body.get("tools") and not isinstance(answer, str):
        name = body["tools"][0]["function"]["name"]
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_fake", "type": "function", "function": {"name": name, "arguments": text}}]}
        finish = "tool_calls"
    elif "response_format" not in body and not isinstance(answer, str):
        message["content"] = f"Here it is:\n```json\n{text}\n```"  # what md_json asks for
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}


def _send(handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
    data = json.dumps(payload).encode()
    handler.leave()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
