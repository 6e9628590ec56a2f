"""Posting the review as a PR comment: the only module of auditor that touches the network.

GitHub REST, issue comments endpoint: list (paginated by the Link header), create, update.
The comment carries a hidden marker, so a second post updates the earlier comment instead
of adding another. The token comes from the GITHUB_TOKEN environment variable only; it is
never logged, never part of an exception message or a repr, and never sent to a host other
than the API's (pagination links and redirects to another host are refused).

Rate limits (docs.github.com, "Rate limits for the REST API"): on 403/429 honour
`retry-after`; when `x-ratelimit-remaining` is 0 wait until `x-ratelimit-reset`; otherwise
(a secondary limit) wait at least a minute, backing off exponentially; 5xx and connection
errors back off exponentially too; all with a bounded number of retries. Content-creating
requests (POST, PATCH) are paced under the secondary limits: 80 a minute, 500 an hour, and
one a second. Time goes through a Clock, so tests never sleep for real.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from auditor.report.markdown import MARKER

log = logging.getLogger("auditor.review.github")

DEFAULT_API_URL = "https://api.github.com"
TOKEN_ENV = "GITHUB_TOKEN"
PER_MINUTE, PER_HOUR, MIN_INTERVAL_S = 80, 500, 1.0
SECONDARY_WAIT_S = 60.0
MAX_WAIT_S = 3600.0  # never wait longer than this for one limit


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (the unit of x-ratelimit-reset)."""

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class GitHubError(Exception):
    """A request failed; the message says why in words, and never holds the token."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable  # a 5xx or a rate limit that outlasted the retries


class _Token:
    """Holds the token; shows up as *** wherever it is printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


class Pacer:
    """Spaces content-creating requests under GitHub's secondary limits."""

    def __init__(self, clock: Clock, per_minute: int = PER_MINUTE, per_hour: int = PER_HOUR,
                 min_interval_s: float = MIN_INTERVAL_S):
        self.clock, self.per_minute, self.per_hour, self.min_interval_s = clock, per_minute, per_hour, min_interval_s
        self.sent: deque[float] = deque()

    def wait(self) -> None:
        now = self.clock.now()
        while self.sent and now - self.sent[0] >= 3600:
            self.sent.popleft()
        delay = 0.0
        if self.sent:
            delay = max(delay, self.sent[-1] + self.min_interval_s - now)
        last_minute = [t for t in self.sent if now - t < 60]
        if len(last_minute) >= self.per_minute:
            delay = max(delay, last_minute[-self.per_minute] + 60 - now)
        if len(self.sent) >= self.per_hour:
            delay = max(delay, self.sent[-self.per_hour] + 3600 - now)
        if delay > 0:
            log.info("pacing content-creating requests: waiting %.1fs", delay)
            self.clock.sleep(delay)
        self.sent.append(self.clock.now())


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only within the API's origin: urllib would send the Authorization
    header along to wherever the Location points."""

    def __init__(self, origin: tuple[str, str]):
        self.origin = origin

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl)[:2] != self.origin:
            raise GitHubError(f"refusing to follow a redirect to {urlsplit(newurl).netloc}: not the API host", code)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any


class GitHubClient:
    def __init__(self, token: str, api_url: str = DEFAULT_API_URL, clock: Clock | None = None,
                 max_retries: int = 5, timeout_s: float = 30.0, pacer: Pacer | None = None):
        if not token:
            raise GitHubError(f"no token: set {TOKEN_ENV} in the environment")
        self._token = _Token(token)
        self.api_url = api_url.rstrip("/")
        self.clock = clock or SystemClock()
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.pacer = pacer or Pacer(self.clock)
        self._api_origin = urlsplit(self.api_url)[:2]
        self._opener = urllib.request.build_opener(_SameOriginRedirects(self._api_origin))
        self._not_before = 0.0  # set when the primary limit is used up

    @classmethod
    def from_env(cls, api_url: str = DEFAULT_API_URL, **kwargs) -> "GitHubClient":
        return cls(os.environ.get(TOKEN_ENV, ""), api_url, **kwargs)

    def __repr__(self) -> str:
        return f"GitHubClient(api_url={self.api_url!r}, token=***)"

    # --- one request, with retries -------------------------------------------------------

    def _redact(self, text: str) -> str:
        secret = self._token.reveal()
        return text.replace(secret, "***") if secret else text

    def _open(self, method: str, url: str, payload: Any) -> Response:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self._token.reveal()}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "auditor-review",
            **({"Content-Type": "application/json"} if data is not None else {}),
        })
        try:
            with self._opener.open(request, timeout=self.timeout_s) as handle:
                status, headers, raw = handle.status, handle.headers, handle.read()
        except urllib.error.HTTPError as exc:
            status, headers, raw = exc.code, exc.headers, exc.read() if exc.fp is not None else b""
        lowered = {k.lower(): v for k, v in (headers.items() if headers else [])}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        return Response(status, lowered, body)

    def _wait(self, seconds: float, why: str) -> None:
        seconds = min(max(seconds, 0.0), MAX_WAIT_S)
        log.warning("GitHub %s: waiting %.0fs", why, seconds)
        self.clock.sleep(seconds)

    def _limit_wait(self, response: Response, attempt: int) -> float | None:
        """Seconds to wait before retrying a 403/429, or None when it is not a rate limit."""
        headers = response.headers
        if "retry-after" in headers:
            try:
                return float(headers["retry-after"])
            except ValueError:
                return SECONDARY_WAIT_S
        if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
            try:
                return float(headers["x-ratelimit-reset"]) - self.clock.now() + 1
            except ValueError:
                return SECONDARY_WAIT_S
        message = str(response.body.get("message", "") if isinstance(response.body, dict) else response.body)
        if response.status == 429 or "rate limit" in message.lower():
            return SECONDARY_WAIT_S * (2 ** attempt)
        return None

    def request(self, method: str, path_or_url: str, payload: Any = None) -> Response:
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.api_url + path_or_url
        if urlsplit(url)[:2] != self._api_origin:
            raise GitHubError(f"refusing to send the token to {urlsplit(url).netloc}: not the API host")
        where = f"{method} {urlsplit(url).path}"
        if method in ("POST", "PATCH", "PUT", "DELETE"):
            self.pacer.wait()
        # A POST that failed on the server's side or on the way may still have created its comment:
        # it is not repeated here; post_review looks whether it was created before posting again.
        repeatable = method != "POST"
        for attempt in range(self.max_retries + 1):
            if self._not_before > self.clock.now():
                self._wait(self._not_before - self.clock.now(), "rate limit used up, until its reset")
            try:
                response = self._open(method, url, payload)
            except (urllib.error.URLError, OSError) as exc:
                reason = self._redact(str(getattr(exc, "reason", exc)))
                if attempt == self.max_retries or not repeatable:
                    raise GitHubError(f"{where}: cannot reach {self.api_url}: {reason}", retryable=True) from None
                self.backoff(attempt, f"{where} connection error ({reason})")
                continue
            self._note_limits(response)
            if response.status < 300:
                return response
            wait_s = self._retry_wait(response, attempt)
            if wait_s is None or attempt == self.max_retries or (response.status >= 500 and not repeatable):
                raise self._error(where, response, retried=attempt)
            self._wait(wait_s, f"{where} answered {response.status}")
        raise GitHubError(f"{where}: gave up")  # not reached

    def backoff(self, attempt: int, why: str) -> None:
        """The exponential wait before try number attempt + 2 (1 s, 2 s, 4 s, ...)."""
        self._wait(2 ** attempt, why)

    def _note_limits(self, response: Response) -> None:
        if response.status < 300 and response.headers.get("x-ratelimit-remaining") == "0":
            try:
                self._not_before = float(response.headers.get("x-ratelimit-reset", "0")) + 1
            except ValueError:
                pass

    def _retry_wait(self, response: Response, attempt: int) -> float | None:
        if response.status >= 500:
            retry_after = response.headers.get("retry-after")
            return float(retry_after) if retry_after and retry_after.isdigit() else float(2 ** attempt)
        if response.status in (403, 429):
            return self._limit_wait(response, attempt)
        return None

    def _error(self, where: str, response: Response, retried: int) -> GitHubError:
        detail = response.body.get("message", "") if isinstance(response.body, dict) else str(response.body or "")
        detail = self._redact(" ".join(str(detail).split())[:300])
        hint = {
            401: f"bad credentials: {TOKEN_ENV} is invalid or expired",
            403: f"forbidden: the token in {TOKEN_ENV} may lack permission to comment on this repository",
            404: f"not found: the repository or PR does not exist, or the token in {TOKEN_ENV} cannot see it",
            429: "rate limited",
        }.get(response.status, f"HTTP {response.status}")
        retryable = response.status >= 500 or (response.status in (403, 429)
                                                and self._limit_wait(response, 0) is not None)
        if retryable:
            hint = f"HTTP {response.status}" + (f", still failing after {retried} retries" if retried else "")
        return GitHubError(f"{where}: {hint}" + (f" ({detail})" if detail else ""), response.status, retryable)

    # --- comments -----------------------------------------------------------------------

    def list_comments(self, repo: str, pr: int) -> list[dict]:
        url: str | None = f"/repos/{repo}/issues/{pr}/comments?per_page=100"
        comments: list[dict] = []
        pages = 0
        while url and pages < 100:
            response = self.request("GET", url)
            if isinstance(response.body, list):
                comments.extend(c for c in response.body if isinstance(c, dict))
            url = _next_link(response.headers.get("link", ""))
            pages += 1
        return comments

    def create_comment(self, repo: str, pr: int, body: str) -> dict:
        return self.request("POST", f"/repos/{repo}/issues/{pr}/comments", {"body": body}).body or {}

    def update_comment(self, repo: str, comment_id: int, body: str) -> dict:
        return self.request("PATCH", f"/repos/{repo}/issues/comments/{comment_id}", {"body": body}).body or {}


def _next_link(header: str) -> str | None:
    for part in header.split(","):
        section = part.split(";")
        if len(section) < 2:
            continue
        target = section[0].strip()
        if any(p.strip().replace(" ", "") in ('rel="next"', "rel=next") for p in section[1:]):
            return target.strip("<>")
    return None


@dataclass
class PostOutcome:
    action: str  # created | updated | unchanged | dry-run
    comment_id: int | None = None
    url: str | None = None


def _is_ours(comment: dict, login: str | None) -> bool:
    body = comment.get("body") or ""
    if not body.startswith(MARKER):
        return False
    return login is None or (comment.get("user") or {}).get("login") == login


def post_review(client: GitHubClient, repo: str, pr: int, body: str, login: str | None = None) -> PostOutcome:
    """Create the review comment, or update the one posted earlier (found by the marker).

    A create that failed on the server's side may have taken effect: before trying again, the
    comments are listed once more, so a retry never leaves two.
    """
    if not body.startswith(MARKER):
        body = f"{MARKER}\n{body}"
    for attempt in range(client.max_retries + 1):
        ours = [c for c in client.list_comments(repo, pr) if _is_ours(c, login)]
        if ours:
            earlier = ours[-1]
            if (earlier.get("body") or "") == body:
                # After a failed create, our identical comment is the one that create made.
                return PostOutcome("created" if attempt else "unchanged", earlier.get("id"), earlier.get("html_url"))
            updated = client.update_comment(repo, int(earlier["id"]), body)
            return PostOutcome("updated", updated.get("id", earlier.get("id")), updated.get("html_url"))
        try:
            created = client.create_comment(repo, pr, body)
        except GitHubError as exc:
            server_side = exc.retryable and (exc.status is None or exc.status >= 500)  # not a rate limit
            if not server_side or attempt == client.max_retries:
                raise
            client.backoff(attempt, f"creating the comment failed ({exc}); looking whether it was created")
            continue
        return PostOutcome("created", created.get("id"), created.get("html_url"))
    raise GitHubError("creating the comment: gave up")  # not reached
