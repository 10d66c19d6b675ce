"""Submitting over the web app's JSON API (``[submit] kind = "http"``): the bridge host needs the server's URL and
an API token, no database credentials.

Each scan is POSTed to ``/api/v1/jobs/`` with an ``Idempotency-Key`` made from its journalled dedup key (beamline,
scan number, data file), so a retry after a crash, a timeout or a lost answer gets the job the first attempt
created (the server answers 200 instead of 201) and never a second one. What the answer means for the scan:

- 200/201: queued (the job id is journalled);
- 400, 413, 422 and other 4xx: refused for this scan for good (:class:`SubmitRejected`, with the server's full
  reason and every parameter problem it named);
- 3xx (a redirect, e.g. http:// to https://: not followed), 401/403 (token), 404/405 (URL), 408/409/425/429,
  every 5xx and every network error:
  :class:`SubmitUnavailable`; the scan stays in the journal and is retried with back-off, since none of these is
  the scan's fault (a wrong token or URL is fixed in the configuration, and the waiting scans then go through).

The bridge's state (its heartbeat, the dashboard's data) goes to ``/api/v1/bridges/status/``.
The token is sent only in the ``Authorization`` header; it is in no log line, message or ``repr``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from .submit import SubmitRejected, SubmitRequest

JOBS_PATH = "api/v1/jobs/"
STATUS_PATH = "api/v1/bridges/status/"
MAX_KEY_CHARS = 200  # the server's limit (webapp.api.idempotency)
#: 4xx answers that say nothing about the scan (token, URL, rate, a transient conflict): retried
RETRIED_CLIENT_ERRORS = {401: "the server refused the API token: check [submit] token / token_file",
                         403: "the token's user may not do this: create it with manage.py create_token USER "
                              "--bridge",
                         404: "no ptychopy API at this URL: check [submit] url",
                         405: "no ptychopy API at this URL: check [submit] url",
                         408: "", 409: "", 425: "", 429: ""}
MAX_REASON_CHARS = 4000


class SubmitUnavailable(Exception):
    """The server could not take the job now (network, 5xx, token or URL): the scan stays journalled and is
    submitted again after the back-off."""


def idempotency_key(dedup_key: str) -> str:
    """The ``Idempotency-Key`` of a scan: its dedup key (``beamline:scan:file``) when it is printable ASCII of at
    most 200 characters, else a readable start and the SHA-256 of the whole key (the same key every time)."""
    if len(dedup_key) <= MAX_KEY_CHARS and all(" " <= ch <= "~" for ch in dedup_key) and dedup_key.strip():
        return dedup_key
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()
    start = "".join(ch if " " <= ch <= "~" else "?" for ch in dedup_key)[:MAX_KEY_CHARS - len(digest) - 8]
    return f"{start}~sha256:{digest}"


class HttpSubmitter:
    """POSTs jobs and the bridge's state to a ptychopy server with a token (``Authorization: Token ...``)."""

    def __init__(self, url: str, token: str, timeout_s: float = 10.0, state_timeout_s: float = 2.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the web app's URL must start with http:// or https://, got {url!r}")
        if not token:
            raise ValueError("an API token is required to submit over HTTP")
        self.url = url.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self.state_timeout_s = min(state_timeout_s, timeout_s)  # a best-effort heartbeat must not stall the bridge
        self.__token = token
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __repr__(self) -> str:
        return f"HttpSubmitter({self.url!r})"

    def submit(self, request: SubmitRequest) -> str:
        """Create the job (or get the one this scan's key created before); its id."""
        body = {"parameters": request.params.to_dict(), "label": request.label, "source": request.source,
                "provenance": request.provenance}
        status, answer = self._post(JOBS_PATH, body, self.timeout_s,
                                    {"Idempotency-Key": idempotency_key(request.dedup_key)})
        if status in (200, 201) and isinstance(answer, dict) and "id" in answer:
            return str(answer["id"])
        reason = self._reason(JOBS_PATH, status, answer)
        if status < 400 or status in RETRIED_CLIENT_ERRORS or status >= 500:
            raise SubmitUnavailable(reason)
        raise SubmitRejected(reason)

    def job_state(self, job_id: str) -> dict[str, Any] | None:
        """``GET /api/v1/jobs/<id>/``: the job's ``status``, ``message`` and ``live``; None for a 404; raises
        :class:`SubmitUnavailable` otherwise (asked again later). Times out after the state's short timeout: the
        bridge's worker thread waits for it."""
        path = f"{JOBS_PATH.rstrip('/')}/{int(job_id)}/"
        req = urllib.request.Request(self.url + path, method="GET", headers={
            "Accept": "application/json", "Authorization": f"Token {self.__token}"})
        try:
            with self._opener.open(req, timeout=self.state_timeout_s) as resp:
                answer = _json_or_text(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                if err.code == 404:
                    return None
                raise SubmitUnavailable(self._reason(path, err.code, _json_or_text(err.read()))) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise SubmitUnavailable(f"GET {self.url}{path}: {type(exc).__name__}: {exc}") from None
        if not isinstance(answer, dict):
            raise SubmitUnavailable(f"GET {self.url}{path}: not a JSON object")
        return {k: answer.get(k) for k in ("status", "message", "live")}

    def publish_state(self, state: dict[str, Any]) -> None:
        """Report the bridge's state for the dashboard; raises :class:`SubmitUnavailable` when not stored."""
        status, answer = self._post(STATUS_PATH, state, self.state_timeout_s, {})
        if status != 200:
            raise SubmitUnavailable(self._reason(STATUS_PATH, status, answer))

    def _post(self, path: str, body: dict[str, Any], timeout_s: float,
              headers: dict[str, str]) -> tuple[int, Any]:
        data = json.dumps(body, default=str).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json",
            "Authorization": f"Token {self.__token}", **headers})
        try:
            with self._opener.open(req, timeout=timeout_s) as resp:
                return resp.status, _json_or_text(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                if 300 <= err.code < 400:  # a POST is not followed to another URL: the configuration is wrong
                    return err.code, (f"the server redirects to {err.headers.get('Location')}: set [submit] url "
                                      "to the address it redirects to (e.g. https://)")
                return err.code, _json_or_text(err.read())
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            # refused, reset, timed out, a broken answer: the server is not there for now
            why = getattr(exc, "reason", exc)
            raise SubmitUnavailable(f"POST {self.url}{path}: {type(why).__name__}: {why}") from None

    def _reason(self, path: str, status: int, answer: Any) -> str:
        """The server's whole answer as one line: status, error, every parameter problem, and a hint."""
        parts = [f"HTTP {status} from POST {self.url}{path}"]
        if isinstance(answer, dict):
            parts.append(str(answer.get("error") or json.dumps(answer)[:500]))
            for p in answer.get("problems") or ():
                if isinstance(p, dict):
                    parts.append(f"{p.get('path')}: {p.get('message')}")
            if answer.get("more_problems"):
                parts.append(f"and {answer['more_problems']} more problem(s)")
        elif answer:
            parts.append(str(answer)[:500])
        hint = RETRIED_CLIENT_ERRORS.get(status)
        if hint:
            parts.append(hint)
        text = "; ".join(parts)
        if len(self.__token) >= 8:  # a server that echoes the header back must not put it in the journal
            text = text.replace(self.__token, "<token>")
        return text[:MAX_REASON_CHARS]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are reported, not followed (urllib would resend a POST as a GET without its body)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip()
