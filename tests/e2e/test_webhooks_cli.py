"""`hypertrack-gateway webhooks set|show|remove`, the real command on a real database: SQLite
files and PostgreSQL, as an operator runs it to subscribe a partner."""

from __future__ import annotations

import datetime
import re
import stat
import subprocess
from pathlib import Path

import pytest

from gateway.assembly import open_store
from gateway.store.events import Webhook
from tests.processes import executable

URL = "https://hooks.partner.example/hypertrack?source=gateway"
OTHER_URL = "http://127.0.0.1:9000/events"
SECRET = re.compile(r"^whsec_[A-Za-z0-9_-]{43}$")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [executable(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of each kind, with the account `acme` made by the command line."""
    url: str = (
        f"sqlite:///{tmp_path / 'orders.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_database")
    )
    created = run("accounts", "create", "--database", url, "acme", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    return url


def webhooks(command: str, database: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run("webhooks", command, "--database", database, *args, cwd=cwd)


def one_error_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, result
    assert result.stdout == "" and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("hypertrack-gateway") and ": error: " in line
    return line


async def stored(database: str, account: str) -> Webhook | None:
    store = await open_store(database)
    try:
        return await store.webhook(account)
    finally:
        await store.close()


def set_webhook(database: str, url: str, *, cwd: Path) -> tuple[str, str]:
    """`webhooks set`: the secret it printed, and what it said on stderr."""
    result = webhooks("set", database, "--account", "acme", "--url", url, cwd=cwd)
    assert result.returncode == 0, result.stderr
    [secret] = result.stdout.splitlines()
    assert SECRET.match(secret), secret
    assert secret not in result.stderr
    return secret, result.stderr


async def test_set_prints_the_secret_once_and_show_says_the_url_but_never_the_secret(
    database: str, tmp_path: Path
) -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    secret, said = set_webhook(database, URL, cwd=tmp_path)
    after = datetime.datetime.now(datetime.UTC)
    assert "shown this once" in said

    shown = webhooks("show", database, "--account", "acme", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    url, set_at = shown.stdout.splitlines()
    assert url == URL
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", set_at), set_at
    assert before <= datetime.datetime.fromisoformat(set_at) <= after
    assert secret not in shown.stdout + shown.stderr and "whsec_" not in shown.stdout + shown.stderr

    # What delivery signs with is the secret that was printed, kept whole.
    webhook = await stored(database, "acme")
    assert webhook is not None and (webhook.url, webhook.secret) == (URL, secret)


async def test_set_again_replaces_the_url_and_the_secret(database: str, tmp_path: Path) -> None:
    first, said = set_webhook(database, URL, cwd=tmp_path)
    assert "replacing" not in said
    second, said = set_webhook(database, OTHER_URL, cwd=tmp_path)
    assert second != first and "replacing" in said

    shown = webhooks("show", database, "--account", "acme", cwd=tmp_path)
    assert shown.stdout.splitlines()[0] == OTHER_URL
    webhook = await stored(database, "acme")
    assert webhook is not None and (webhook.url, webhook.secret) == (OTHER_URL, second)


async def test_remove_says_whether_there_was_a_webhook(database: str, tmp_path: Path) -> None:
    set_webhook(database, URL, cwd=tmp_path)
    removed = webhooks("remove", database, "--account", "acme", cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "removed the webhook of account 'acme'\n"
    assert await stored(database, "acme") is None

    shown = webhooks("show", database, "--account", "acme", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout == ""
    assert shown.stderr == "hypertrack-gateway: account 'acme' has no webhook\n"
    again = webhooks("remove", database, "--account", "acme", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == "account 'acme' had no webhook\n"


BAD_URLS = {
    "ftp://hooks.partner.example/in": "not ftp:",
    "https:///hypertrack": "must name a host",
    "javascript:alert(document.cookie)": "not javascript:",
    "https://partner:hunter2@hooks.partner.example/in": "user name or password",
    "https://hooks.partner.example/" + "x" * 4970: "at most 2048 characters, not 5000",
}


async def test_a_bad_url_is_refused_in_one_line_naming_url_and_nothing_is_written(
    database: str, tmp_path: Path
) -> None:
    secret, _ = set_webhook(database, URL, cwd=tmp_path)
    for bad, why in BAD_URLS.items():
        result = webhooks("set", database, "--account", "acme", "--url", bad, cwd=tmp_path)
        line = one_error_line(result, 2)
        assert "argument --url: " in line and why in line, line
        assert "hunter2" not in line and len(line) < 300
    webhook = await stored(database, "acme")
    assert webhook is not None and (webhook.url, webhook.secret) == (URL, secret)


def test_a_bad_url_is_refused_before_the_database_is_opened(tmp_path: Path) -> None:
    database = tmp_path / "never.db"
    result = webhooks("set", f"sqlite:///{database}", "--account", "acme", "--url", "ftp://x/", cwd=tmp_path)
    one_error_line(result, 2)
    assert not database.exists()


@pytest.mark.parametrize("command", ["set", "show", "remove"])
async def test_an_unknown_account_is_one_line_and_exit_1(database: str, tmp_path: Path, command: str) -> None:
    url_args = ("--url", URL) if command == "set" else ()
    result = webhooks(command, database, "--account", "nobody", *url_args, cwd=tmp_path)
    line = one_error_line(result, 1)
    assert "no account 'nobody'" in line and "accounts create" in line
    assert await stored(database, "nobody") is None


def test_the_database_file_stays_private(tmp_path: Path) -> None:
    path = tmp_path / "orders.db"
    database = f"sqlite:///{path}"
    assert run("accounts", "create", "--database", database, "acme", cwd=tmp_path).returncode == 0
    set_webhook(database, URL, cwd=tmp_path)
    files = sorted(tmp_path.glob("orders.db*"))
    assert path in files
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_help_names_the_options_and_their_variables(tmp_path: Path) -> None:
    help_text = " ".join(run("webhooks", "set", "--help", cwd=tmp_path).stdout.split())
    assert "--url URL" in help_text and "[env HYPERTRACK_GATEWAY_URL; required]" in help_text
    assert "--account ACCOUNT" in help_text and "--database DATABASE" in help_text
    missing = run("webhooks", "set", "--account", "acme", cwd=tmp_path)
    assert "--url" in one_error_line(missing, 2)
