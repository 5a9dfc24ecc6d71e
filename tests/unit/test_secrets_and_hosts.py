from worker.adapters.hosts import HostAllowList
from worker.domain.secrets import Secret, redact


def test_secret_never_prints():
    s = Secret("sv=2024&sig=abc")
    assert "abc" not in str(s) and "abc" not in repr(s) and "abc" not in f"{s}"
    assert s.reveal() == "sv=2024&sig=abc"


def test_redact_sas_bearer_and_keys():
    text = (
        "GET https://a.blob.core.windows.net/c/x.tif?se=2030-01-01&sp=rl&sig=SECRETSIG "
        "Authorization: Bearer SECRETBEARER Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=SECRETKEY"
    )
    out = redact(text)
    for secret in ("SECRETSIG", "SECRETBEARER", "SECRETKEY", "2030-01-01"):
        assert secret not in out
    assert "a.blob.core.windows.net/c/x.tif" in out


def test_redact_finds_each_kind_without_its_usual_neighbours():
    # the shortcut for text that cannot hold a secret must not skip one: a JWT has no "=", a bearer token
    # needs none either, whatever the case of "Bearer"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    assert jwt not in redact(f"token {jwt} in a path")
    assert "abcdefgh" not in redact("header: BEARER abcdefgh")
    assert redact("https://acct.blob.core.windows.net/c/a.tif") == "https://acct.blob.core.windows.net/c/a.tif"
    assert "s3cr3t" not in redact("x;AccountKey=s3cr3t;y")


def test_allow_list_wildcards_and_lookalikes():
    allow = HostAllowList(["*.blob.core.windows.net", "127.0.0.1:10000"])
    assert allow.allows_url("https://acct.blob.core.windows.net/c/x.tif")
    assert not allow.allows_url("https://blob.core.windows.net/c/x.tif")
    assert not allow.allows_url("https://acct.blob.core.windows.net.evil.com/c/x.tif")
    assert not allow.allows_url("https://evil.com/acct.blob.core.windows.net")
    assert not allow.allows_url("https://user@acct.blob.core.windows.net/c")
    assert not allow.allows_url("ftp://acct.blob.core.windows.net/c")
    assert allow.allows_url("http://127.0.0.1:10000/acct/c/x.tif")
    assert not allow.allows_url("http://127.0.0.1:10001/acct/c/x.tif")


def test_envvar_names_for_options_and_flag_pairs():
    from worker.options import envvar

    assert envvar("--request-queue") == "GCW_REQUEST_QUEUE"
    assert envvar("--sessions/--no-sessions") == "GCW_SESSIONS"


def test_plain_http_needs_an_exact_host_pattern():
    allow = HostAllowList(["*.blob.core.windows.net", "devstore.local"])
    assert allow.allows_url("https://acct.blob.core.windows.net/c/x.tif")
    assert not allow.allows_url("http://acct.blob.core.windows.net/c/x.tif")  # a token would travel in clear
    assert allow.allows_url("http://devstore.local/acct/c/x.tif")
