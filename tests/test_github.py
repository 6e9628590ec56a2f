"""Posting the review against a real HTTP server on 127.0.0.1 that plays GitHub's comment API.

The server implements list (paginated with a Link header), create and update, and answers
500, 403/429 with rate-limit headers, or 404 on cue. Time is a test clock: nothing sleeps.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from auditor.report.markdown import MARKER
from auditor.review.github import GitHubClient, GitHubError, Pacer, post_review

TOKEN = "ghp_testTOKEN_0123456789abcdefSECRET"
REPO = "octo/golf"
START = 1_800_000_000.0


class FakeClock:
    def __init__(self, now: float = START):
        self.t = now
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class FakeGitHub:
    """State of one repository's issue comments, and a queue of canned failures."""

    def __init__(self, per_page: int = 2):
        self.comments: dict[int, dict] = {}
        self.next_id = 100
        self.per_page = per_page
        self.cues: list[tuple[int, dict, dict]] = []  # (status, headers, body) answered before real work
        # (status, create anyway) answered to the next POSTs: a failure after the work was done
        self.post_cues: list[tuple[int, bool]] = []
        self.requests: list[tuple[str, str, str]] = []  # (method, path, authorization)
        self.lock = threading.Lock()

    def add_comment(self, pr: int, body: str, login: str = "someone") -> int:
        self.next_id += 1
        self.comments[self.next_id] = {"id": self.next_id, "pr": pr, "body": body, "user": {"login": login},
                                       "html_url": f"https://github.example/c/{self.next_id}"}
        return self.next_id

    def for_pr(self, pr: int) -> list[dict]:
        return [c for c in self.comments.values() if c["pr"] == pr]


def make_handler(state: FakeGitHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _send(self, status: int, body, headers: dict | None = None) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(raw)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length)) if length else None
            with state.lock:
                state.requests.append((method, self.path, self.headers.get("Authorization", "")))
                if state.cues:
                    status, headers, body = state.cues.pop(0)
                    return self._send(status, body, headers)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"message": "Bad credentials"})
                path, _, query = self.path.partition("?")
                listing = re.fullmatch(r"/api/v3/repos/octo/golf/issues/(\d+)/comments", path)
                single = re.fullmatch(r"/api/v3/repos/octo/golf/issues/comments/(\d+)", path)
                if method == "GET" and listing:
                    return self._list(int(listing.group(1)), query)
                if method == "POST" and listing and state.post_cues:
                    status, create_anyway = state.post_cues.pop(0)
                    if create_anyway:
                        state.add_comment(int(listing.group(1)), payload["body"], login="auditor-bot")
                    return self._send(status, {"message": "Server Error"})
                if method == "POST" and listing:
                    new_id = state.add_comment(int(listing.group(1)), payload["body"], login="auditor-bot")
                    return self._send(201, state.comments[new_id])
                if method == "PATCH" and single and int(single.group(1)) in state.comments:
                    comment = state.comments[int(single.group(1))]
                    comment["body"] = payload["body"]
                    return self._send(200, comment)
                return self._send(404, {"message": "Not Found"})

        def _list(self, pr: int, query: str) -> None:
            page = int(dict(p.split("=") for p in query.split("&") if "=" in p).get("page", 1))
            items = state.for_pr(pr)
            chunk = items[(page - 1) * state.per_page: page * state.per_page]
            headers = {}
            if page * state.per_page < len(items):
                base = f"http://127.0.0.1:{self.server.server_port}/api/v3/repos/octo/golf/issues/{pr}/comments"
                headers["Link"] = f'<{base}?per_page=100&page={page + 1}>; rel="next", <{base}?page=9>; rel="last"'
            self._send(200, chunk, headers)

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

        def do_PATCH(self):
            self._handle("PATCH")

    return Handler


@pytest.fixture
def github():
    state = FakeGitHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.api_url = f"http://127.0.0.1:{server.server_port}/api/v3"
    yield state
    server.shutdown()
    server.server_close()


def client_for(state: FakeGitHub, clock: FakeClock | None = None, **kwargs) -> GitHubClient:
    clock = clock or FakeClock()
    return GitHubClient(TOKEN, state.api_url, clock=clock, **kwargs)


BODY = f"{MARKER}\n## review\nfirst version"


def test_creates_once_then_updates_its_own_comment_across_pages(github):
    # Three comments by others first, so ours lands on page 2 of the listing (2 per page).
    for i in range(3):
        github.add_comment(7, f"a human comment {i}")
    clock = FakeClock()
    first = post_review(client_for(github, clock), REPO, 7, BODY)
    assert first.action == "created"
    assert len(github.for_pr(7)) == 4

    second = post_review(client_for(github, clock), REPO, 7, BODY.replace("first", "second"))
    assert second.action == "updated"
    assert second.comment_id == first.comment_id
    bodies = [c["body"] for c in github.for_pr(7)]
    assert len(bodies) == 4  # not duplicated
    assert sum(body.startswith(MARKER) for body in bodies) == 1
    assert github.comments[first.comment_id]["body"].endswith("second version")
    # The listing followed the Link header to page 2 before deciding to update.
    assert any("page=2" in path for method, path, _ in github.requests if method == "GET")
    # The token was sent, as a bearer token, to the API server.
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in github.requests)


def test_same_body_again_changes_nothing(github):
    clock = FakeClock()
    post_review(client_for(github, clock), REPO, 3, BODY)
    posts_before = [r for r in github.requests if r[0] != "GET"]
    again = post_review(client_for(github, clock), REPO, 3, BODY)
    assert again.action == "unchanged"
    assert [r for r in github.requests if r[0] != "GET"] == posts_before


def test_a_comment_by_someone_else_quoting_the_marker_is_not_taken_over(github):
    github.add_comment(5, f"someone pasted our review:\n{MARKER}")
    outcome = post_review(client_for(github), REPO, 5, BODY)
    assert outcome.action == "created"
    assert len(github.for_pr(5)) == 2


def test_retries_through_a_500_with_exponential_backoff(github):
    github.cues = [(500, {}, {"message": "boom"}), (502, {}, {"message": "bad gateway"})]
    clock = FakeClock()
    outcome = post_review(client_for(github, clock), REPO, 9, BODY)
    assert outcome.action == "created"
    assert clock.sleeps[:2] == [1.0, 2.0]
    assert len(github.for_pr(9)) == 1


def test_a_create_that_failed_after_creating_is_not_repeated(github):
    github.post_cues = [(502, True)]  # the comment was made, the answer lost
    clock = FakeClock()
    outcome = post_review(client_for(github, clock), REPO, 16, BODY)
    assert outcome.action == "created"
    assert [c["body"] for c in github.for_pr(16)] == [BODY]
    assert [method for method, _, _ in github.requests] == ["GET", "POST", "GET"]
    assert clock.sleeps == [1.0]


def test_a_create_that_failed_is_tried_again_after_looking(github):
    github.post_cues = [(500, False), (503, False)]
    clock = FakeClock()
    outcome = post_review(client_for(github, clock), REPO, 17, BODY)
    assert outcome.action == "created"
    assert [c["body"] for c in github.for_pr(17)] == [BODY]
    assert [method for method, _, _ in github.requests] == ["GET", "POST", "GET", "POST", "GET", "POST"]
    assert clock.sleeps[:2] == [1.0, 2.0]


def test_waits_until_the_rate_limit_reset(github):
    reset = int(START) + 300
    github.cues = [(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
                    {"message": "API rate limit exceeded"})]
    clock = FakeClock()
    outcome = post_review(client_for(github, clock), REPO, 11, BODY)
    assert outcome.action == "created"
    assert clock.now() >= reset
    assert clock.sleeps[0] == pytest.approx(reset - START + 1)


@pytest.mark.parametrize("status", [403, 429])
def test_honours_retry_after_on_a_secondary_limit(github, status):
    github.cues = [(status, {"Retry-After": "42"}, {"message": "You have exceeded a secondary rate limit"})]
    clock = FakeClock()
    outcome = post_review(client_for(github, clock), REPO, 12, BODY)
    assert outcome.action == "created"
    assert clock.sleeps[0] == 42.0


def test_a_429_with_the_primary_limit_used_up_waits_for_its_reset(github):
    # Headers in GitHub's own spelling: the client must not depend on their case.
    reset = int(START) + 900
    github.cues = [(429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}, {"message": "slow down"})]
    clock = FakeClock()
    post_review(client_for(github, clock), REPO, 14, BODY)
    assert clock.sleeps[0] == pytest.approx(reset - START + 1)
    assert len(github.for_pr(14)) == 1


def test_a_success_that_uses_up_the_limit_waits_before_the_next_request(github):
    reset = int(START) + 120
    github.cues = [(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}, [])]
    clock = FakeClock()
    post_review(client_for(github, clock), REPO, 15, BODY)  # the listing (cued) used the last request
    assert clock.sleeps[0] == pytest.approx(reset - START + 1)
    assert clock.now() >= reset


def test_gives_up_after_a_bounded_number_of_retries(github):
    github.cues = [(503, {}, {"message": "unavailable"})] * 10
    clock = FakeClock()
    with pytest.raises(GitHubError) as raised:
        client_for(github, clock, max_retries=3).list_comments(REPO, 1)
    assert raised.value.status == 503
    assert "after 3 retries" in str(raised.value)
    assert len(github.requests) == 4
    assert clock.sleeps == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("status,words", [(404, "not found"), (401, "bad credentials"), (403, "forbidden")])
def test_clear_errors_without_the_token(github, status, words, caplog, capsys):
    github.cues = [(status, {}, {"message": f"nope, your token {TOKEN} is wrong"})]
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GitHubError) as raised:
        post_review(client_for(github), REPO, 4, BODY)
    text = str(raised.value)
    assert words in text
    assert raised.value.status == status
    out = capsys.readouterr()
    for seen in (text, repr(raised.value), caplog.text, out.out, out.err):
        assert TOKEN not in seen
    assert "***" in text  # the echoed token was redacted, not dropped silently


def test_token_never_in_logs_repr_or_output_of_a_full_run(github, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    github.cues = [(500, {}, {"message": "boom"}),
                   (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(START) + 60)}, {"message": "x"})]
    client = client_for(github)
    post_review(client, REPO, 21, BODY)
    post_review(client, REPO, 21, BODY + "\nmore")
    out = capsys.readouterr()
    assert "waiting" in caplog.text  # the client did log, and the log has no token
    for seen in (caplog.text, out.out, out.err, repr(client), str(vars(client))):
        assert TOKEN not in seen


def test_pagination_links_to_another_host_are_refused(github):
    client = client_for(github)
    with pytest.raises(GitHubError) as raised:
        client.request("GET", "http://evil.example/api/v3/repos/octo/golf/issues/1/comments")
    assert "refusing" in str(raised.value)
    assert github.requests == []


@pytest.fixture
def elsewhere():
    """A second server on another port: another origin, which must never see the token."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def test_a_redirect_to_another_host_is_refused_without_sending_the_token(github, elsewhere):
    other_url, seen = elsewhere
    github.cues = [(302, {"Location": f"{other_url}/api/v3/repos/octo/golf/issues/1/comments"}, {})]
    with pytest.raises(GitHubError) as raised:
        client_for(github).list_comments(REPO, 1)
    assert "refusing to follow a redirect" in str(raised.value)
    assert seen == []
    assert TOKEN not in str(raised.value)


def test_a_redirect_within_the_api_host_is_followed(github):
    github.add_comment(6, "moved")
    github.cues = [(307, {"Location": f"{github.api_url}/repos/octo/golf/issues/6/comments?per_page=100"}, {})]
    comments = client_for(github).list_comments(REPO, 6)
    assert [c["body"] for c in comments] == ["moved"]
    assert [auth for _, _, auth in github.requests] == [f"Bearer {TOKEN}"] * 2


def test_pacer_keeps_content_creation_under_the_secondary_limits():
    clock = FakeClock()
    pacer = Pacer(clock)
    for _ in range(200):
        pacer.wait()
    times = list(pacer.sent)
    for i in range(len(times)):
        assert sum(1 for t in times if times[i] <= t < times[i] + 60) <= 80
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:]))
    hour = Pacer(FakeClock(), per_minute=10_000, min_interval_s=0.0)
    for _ in range(501):
        hour.wait()
    assert hour.sent[-1] - hour.sent[0] >= 3600


def test_missing_token_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    with pytest.raises(GitHubError) as raised:
        GitHubClient.from_env("http://127.0.0.1:9")
    assert "GITHUB_TOKEN" in str(raised.value)


def test_secondary_limit_without_headers_backs_off_at_least_a_minute(github):
    github.cues = [(403, {}, {"message": "You have exceeded a secondary rate limit. Please wait."})] * 2
    clock = FakeClock()
    post_review(client_for(github, clock), REPO, 13, BODY)
    assert clock.sleeps[:2] == [60.0, 120.0]


def test_cli_dry_run_then_post_then_update(github, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from auditor.review.command import review

    app = typer.Typer()
    app.command()(review)
    app.command("other")(lambda: None)
    folder = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "fixtures/classify/record_ngram_enabled")
    args = ["review", folder, "--github-repo", REPO, "--pr", "8", "--api-url", github.api_url]
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    runner = CliRunner()

    dry = runner.invoke(app, args)
    assert dry.exit_code == 1  # flagged
    assert "dry run: would post to octo/golf#8" in dry.output
    assert dry.output.count(MARKER) == 1
    assert github.requests == []

    posted = runner.invoke(app, args + ["--post"])
    again = runner.invoke(app, args + ["--post", "--sha", "a" * 40])
    assert "created comment" in posted.output
    assert "updated comment" in again.output
    assert len(github.for_pr(8)) == 1
    # PATH is in this repository's work tree: the permalink names its path from the root.
    assert "/blob/" + "a" * 40 + "/fixtures/classify/record_ngram_enabled/train_gpt.py#L16)" in github.for_pr(8)[0]["body"]
    for result in (dry, posted, again):
        assert TOKEN not in result.output

    monkeypatch.delenv("GITHUB_TOKEN")
    missing = runner.invoke(app, args + ["--post"])
    assert missing.exit_code == 2
    assert "GITHUB_TOKEN" in missing.output and "Traceback" not in missing.output
    assert MARKER not in missing.output  # refused before reviewing, not after


def test_all_prs_posts_each_new_review_once_paced(github, tmp_path):
    from test_review import make_bare_clone  # a bare clone with two PR heads

    from auditor.review.batch import review_all_prs
    from auditor.review.store import ReviewStore

    clone = make_bare_clone(tmp_path)
    clock = FakeClock()
    client = client_for(github, clock)

    def post(row: dict, markdown: str) -> bool:
        return post_review(client, REPO, row["pr"], markdown).action in ("created", "updated")

    with ReviewStore(tmp_path / "db.sqlite3") as store:
        first = review_all_prs(clone, store, jobs=1, use_cache=False, on_review=post, github_repo=REPO)
        again = review_all_prs(clone, store, jobs=1, use_cache=False, on_review=post, github_repo=REPO, refresh=True)
    assert (first.posted, again.posted) == (2, 0)  # the same bodies again: nothing to update
    assert sorted(len(github.for_pr(pr)) for pr in (1, 2)) == [1, 1]
    writes = [r for r in github.requests if r[0] in ("POST", "PATCH")]
    assert len(writes) == 2
    assert 1.0 in clock.sleeps  # the second comment waited for the pacer, on the test clock


def test_all_prs_post_with_a_refused_token_stops_at_the_first_refusal(github, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from test_review import make_bare_clone

    from auditor.review.command import review

    app = typer.Typer()
    app.command()(review)
    app.command("other")(lambda: None)
    clone = make_bare_clone(tmp_path)
    wrong = "ghp_wrongTOKEN_9876543210"
    monkeypatch.setenv("GITHUB_TOKEN", wrong)
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["review", "--repo-dir", str(clone), "--all-prs", "--jobs", "1", "--post",
                                      "--github-repo", REPO, "--api-url", github.api_url,
                                      "--db", str(tmp_path / "db.sqlite3")])
    assert result.exit_code == 2
    assert result.output.count("bad credentials") == 2  # where posting stopped, and the final error
    assert "posting stopped at PR 1" in result.output
    assert "2 PR heads: 2 reviewed" in result.output  # the reviews themselves were kept
    assert len(github.requests) == 1  # PR 2 was not tried with the refused token
    assert wrong not in result.output and "Traceback" not in result.output
