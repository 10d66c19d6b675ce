"""A small real-HTTP client (urllib) for the app: session login with CSRF, forms, the token API."""

from __future__ import annotations

import functools
import http.client
import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from tests.support import openapi_check

_CSRF_INPUT = re.compile(r'name=["\']csrfmiddlewaretoken["\']\s+value=["\']([^"\']+)["\']'
                         r'|value=["\']([^"\']+)["\']\s+name=["\']csrfmiddlewaretoken["\']')


class _FormParser(HTMLParser):
    """The fields a browser would submit for one form, with their default values."""

    def __init__(self, action: str) -> None:
        super().__init__(convert_charrefs=True)
        self.action = action
        self.inside = False
        self.done = False
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._select_value: str | None = None
        self._first_option: str | None = None
        self._option_value: str | None = None
        self._option_text = ""
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if (tag == "form" and not self.done and a.get("action", "") == self.action
                and a.get("method", "get").lower() == "post"):
            self.inside = True
        if not self.inside:
            return
        name = a.get("name", "")
        if tag == "input" and name and "disabled" not in a:
            kind = a.get("type", "text").lower()
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.append((name, a.get("value", "on")))
            elif kind not in ("file", "submit", "button", "image", "reset"):
                self.fields.append((name, a.get("value", "")))
        elif tag == "select" and name:
            self._select, self._select_value, self._first_option = name, None, None
        elif tag == "option" and self._select is not None:
            self._option_value = a.get("value")
            self._option_text = ""
            if "selected" in a:
                self._select_value = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea, self._text = name, ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text += data
        if self._select is not None and self._option_value is None:
            self._option_text += data

    def handle_endtag(self, tag: str) -> None:
        if not self.inside:
            return
        if tag == "option" and self._select is not None:
            option = self._option_value if self._option_value is not None else self._option_text.strip()
            if self._first_option is None:
                self._first_option = option
            self._option_value = None
        elif tag == "select" and self._select is not None:
            value = self._select_value if self._select_value is not None else self._first_option
            if value is not None:
                self.fields.append((self._select, value))
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self.fields.append((self._textarea, self._text.lstrip("\n")))
            self._textarea = None
        elif tag == "form":
            self.inside, self.done = False, True


def form_defaults(html: str, action: str) -> dict[str, str]:
    """What a browser submits for the POST form to ``action`` if the user changes nothing."""
    parser = _FormParser(action)
    parser.feed(html)
    if not parser.done and not parser.fields:
        raise AssertionError(f"no form with action={action!r} in the page")
    return dict(parser.fields)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str
    seconds: float
    set_cookies: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def location(self) -> str:
        return self.headers.get("location", "")

    def form(self, action: str) -> dict[str, str]:
        return form_defaults(self.text, action)

    def field_errors(self) -> list[str]:
        """The text of the page's inline field errors (``class="field-error"``)."""
        return [re.sub(r"<[^>]+>", "", m).strip()
                for m in re.findall(r'class="field-error"[^>]*>(.*?)</p>', self.text, re.S)]

    def csrf_token(self) -> str:
        m = _CSRF_INPUT.search(self.text)
        if not m:
            raise AssertionError(f"no csrfmiddlewaretoken in the page {self.url} (status {self.status})")
        return m.group(1) or m.group(2)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.url} {self.body[:300]!r}>"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class _FromAddress(urllib.request.HTTPHandler):
    """Plain http connections from a given local address (another loopback address: another client)."""

    def __init__(self, source_ip: str) -> None:
        super().__init__()
        self.source_ip = source_ip

    def http_open(self, req):  # type: ignore[no-untyped-def]
        return self.do_open(functools.partial(http.client.HTTPConnection, source_address=(self.source_ip, 0)), req)


class WebClient:
    """One browser-like user agent: keeps cookies, never follows redirects, never uses a proxy.

    ``source_ip``: the local address it connects from (e.g. ``127.0.0.2``), so a server sees another client.
    """

    def __init__(self, base_url: str, timeout: float = 30.0, source_ip: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.cookies = http.cookiejar.CookieJar()
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect()]
        if source_ip:
            handlers.append(_FromAddress(source_ip))
        self._opener = urllib.request.build_opener(*handlers)

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}{path}"

    def request(self, method: str, path: str, *, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        req = urllib.request.Request(self.url(path), data=data, method=method, headers=headers or {})
        t0 = time.perf_counter()
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                body = resp.read()
                status = resp.status
                hdrs = {k.lower(): v for k, v in resp.headers.items()}
                cookies = list(resp.headers.get_all("Set-Cookie") or [])
        except urllib.error.HTTPError as err:
            body = err.read()
            status = err.code
            hdrs = {k.lower(): v for k, v in (err.headers or {}).items()}
            cookies = list(err.headers.get_all("Set-Cookie") or []) if err.headers else []
        url = urllib.parse.urlsplit(self.url(path))
        if url.path.startswith(openapi_check.API_PREFIX) and status < 500:  # 5xx: a fault test's broken stack
            openapi_check.check_api_answer(method, url.path, dict(urllib.parse.parse_qsl(url.query)), status,
                                           hdrs.get("content-type", ""), body, f"{url.scheme}://{url.netloc}")
        return Response(status, hdrs, body, self.url(path), time.perf_counter() - t0, cookies)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return self.request("GET", path, headers=headers)

    def post_form(self, path: str, fields: dict[str, str] | list[tuple[str, str]], *,
                  csrf: bool = True, headers: dict[str, str] | None = None) -> Response:
        """POST an urlencoded form; with ``csrf`` the cookie's token is added (as a browser form would)."""
        items = list(fields.items()) if isinstance(fields, dict) else list(fields)
        if csrf and not any(k == "csrfmiddlewaretoken" for k, _ in items):
            token = self.cookie("csrftoken")
            if token:
                items.append(("csrfmiddlewaretoken", token))
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", "Referer": self.url("/")}
        hdrs.update(headers or {})
        return self.request("POST", path, data=urllib.parse.urlencode(items).encode(), headers=hdrs)

    def post_multipart(self, path: str, fields: dict[str, str],
                       files: dict[str, tuple[str, bytes]]) -> Response:
        """POST multipart/form-data (a browser form with file inputs); ``files``: name -> (filename, content).

        The filename goes on the wire exactly as given, ``../`` included, as a hostile client would send it.
        """
        boundary = f"----ptychopy-test-{uuid.uuid4().hex}"
        items = dict(fields)
        token = self.cookie("csrftoken")
        if token and "csrfmiddlewaretoken" not in items:
            items["csrfmiddlewaretoken"] = token
        body = bytearray()
        for name, value in items.items():
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                     f"{value}\r\n").encode()
        for name, (filename, content) in files.items():
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                     f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
            body += content + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        hdrs = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Referer": self.url("/")}
        return self.request("POST", path, data=bytes(body), headers=hdrs)

    def cookie(self, name: str) -> str | None:
        for c in self.cookies:
            if c.name == name:
                return c.value
        return None

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.cookies)

    def login(self, username: str, password: str) -> None:
        page = self.get("/accounts/login/")
        assert page.status == 200, f"login page: {page!r}"
        token = page.csrf_token()
        resp = self.post_form("/accounts/login/", {"username": username, "password": password,
                                                   "csrfmiddlewaretoken": token, "next": "/"})
        assert resp.status in (302, 303), f"login as {username} did not redirect: {resp!r}"
        assert self.cookie("sessionid"), (
            "login set no sessionid cookie readable over http (is PTYCHOPY_INSECURE_COOKIES=1 honoured?)"
        )


class ApiClient:
    """The JSON API with ``Authorization: Token <key>``."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        self.web = WebClient(base_url, timeout=timeout)
        self.token = token

    def _headers(self) -> dict[str, str]:
        hdrs = {"Accept": "application/json"}
        if self.token:
            hdrs["Authorization"] = f"Token {self.token}"
        return hdrs

    def get(self, path: str) -> Response:
        return self.web.get(path, headers=self._headers())

    def post(self, path: str, payload: Any = None) -> Response:
        hdrs = self._headers()
        hdrs["Content-Type"] = "application/json"
        data = json.dumps(payload if payload is not None else {}).encode()
        return self.web.request("POST", path, data=data, headers=hdrs)

    def submit(self, cmdstr: str, label: str = "") -> dict[str, Any]:
        payload: dict[str, Any] = {"cmdstr": cmdstr}
        if label:
            payload["label"] = label
        resp = self.post("/api/v1/jobs/", payload)
        assert resp.status in (200, 201, 202), f"submit failed: {resp!r}"
        job = resp.json()
        assert "id" in job, f"the API's job has no id: {job}"
        return dict(job)

    def job(self, job_id: int | str) -> dict[str, Any]:
        resp = self.get(f"/api/v1/jobs/{job_id}/")
        assert resp.status == 200, f"job {job_id}: {resp!r}"
        return dict(resp.json())

    def wait_status(self, job_id: int | str, statuses: set[str] | frozenset[str],
                    timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job.get("status") in statuses:
                return job
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} not in {sorted(statuses)} within {timeout:.0f} s: {job}")
