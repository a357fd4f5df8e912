"""Planted secrets of real formats, one line each, for the redaction tests.

The formats follow the providers' documentation and the public rule sets of gitleaks and
detect-secrets; every value is random (seeded), built at import time from pieces so that no
complete credential-shaped literal sits in the source (secret scanners would flag the file).

`CORPUS` maps a kind to `(line, secrets)`: the line as it would appear in a trajectory, and
the substrings that must not survive redaction. `BENIGN` holds lines that must survive unchanged.
"""

from __future__ import annotations

import base64
import random
import string

_rnd = random.Random(20261129)
ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"


def r(n: int, alphabet: str = ALNUM) -> str:
    """`n` random characters, always with at least one digit and one letter when possible."""
    body = "".join(_rnd.choice(alphabet) for _ in range(n))
    if n >= 4 and any(c.isdigit() for c in alphabet) and not any(c.isdigit() for c in body):
        body = "7" + body[1:]
    if n >= 4 and any(c.isalpha() for c in alphabet) and not any(c.isalpha() for c in body):
        body = body[:-1] + next(c for c in alphabet if c.isalpha())
    return body


def _p(*parts: str) -> str:
    return "".join(parts)


def _one(kind: str, template: str, secret: str) -> tuple[str, tuple[str, str | tuple[str, ...]]]:
    return kind, (template.replace("{S}", secret), (secret,))


def _corpus() -> dict[str, tuple[str, tuple[str, ...]]]:
    pem_body = "\\n".join(r(64, B64) for _ in range(4))
    basic = base64.b64encode(f"admin:{r(14)}".encode()).decode()
    sts_secret, sts_token = r(40, B64), _p("IQoJb3JpZ2luX2Vj", r(200, B64))
    entries = [
        _one("openai-key", "echo {S}", _p("sk-", "proj-", r(48))),
        _one("anthropic-key", "key was {S} in the log", _p("sk-", "ant-api03-", r(80, ALNUM + "_-"))),
        _one("stripe-secret-key", "stripe.api_key = get() or '{S}'", _p("sk_", "live_", r(24))),
        _one("stripe-restricted-key", "using {S}", _p("rk_", "live_", r(24))),
        _one("stripe-webhook-secret", "endpoint secret {S}", _p("whsec_", r(32))),
        _one("aws-access-key-id", "aws configure set aws_access_key_id {S}", _p("AKIA", r(16, string.ascii_uppercase + "234567"))),
        _one("aws-sts-access-key-id", "AccessKeyId {S}", _p("ASIA", r(16, string.ascii_uppercase + "234567"))),
        _one("aws-secret-access-key", "aws_secret_access_key = {S}", r(40, B64)),
        ("aws-sts-credentials", (f'{{"Credentials": {{"SecretAccessKey": "{sts_secret}", "SessionToken": "{sts_token}"}}}}',
                                 (sts_secret, sts_token[:60]))),
        _one("github-pat", "git clone https://x:{S}@github.com/o/r", _p("ghp_", r(36))),
        _one("github-oauth-token", "token {S}", _p("gho_", r(36))),
        _one("github-fine-grained-pat", "GH {S}", _p("github_", "pat_", r(22), "_", r(59))),
        _one("gitlab-pat", "PRIVATE-TOKEN {S}", _p("gl", "pat-", r(20))),
        _one("gitlab-deploy-token", "deploy with {S}", _p("gl", "dt-", r(20))),
        _one("gitlab-runner-token", "runner {S}", _p("gl", "rt-", r(20))),
        _one("slack-bot-token", "slack {S}", _p("xo", "xb-", r(12, string.digits), "-", r(12, string.digits), "-", r(24))),
        _one("slack-user-token", "slack {S}", _p("xo", "xp-", r(12, string.digits), "-", r(12, string.digits), "-", r(32))),
        _one("slack-webhook-url", "curl -X POST https://{S}", _p("hooks.", "slack.com/services/T", r(8, string.ascii_uppercase),
                                                                 "/B", r(10, string.ascii_uppercase), "/", r(24))),
        _one("discord-webhook-url", "post to https://{S}", _p("discord.com/api/", "webhooks/", r(18, string.digits), "/", r(68, ALNUM + "_-"))),
        _one("google-api-key", "?key={S}", _p("AI", "za", r(35, ALNUM + "_-"))),
        _one("google-oauth-client-secret", "client {S}", _p("GOC", "SPX-", r(28, ALNUM + "_-"))),
        _one("google-oauth-access-token", "token {S}", _p("ya", "29.", r(80, ALNUM + "_-"))),
        _one("gcp-private-key-id", '  "private_key_id": "{S}",', r(40, HEX)),
        ("gcp-service-account-private-key", (f'  "private_key": "-----BEGIN PRIVATE KEY-----\\n{pem_body}\\n-----END PRIVATE KEY-----\\n",',
                                             (pem_body[:40],))),
        _one("jwt", "cookie session={S}", _p("eyJhbGciOiJIUzI1NiJ9.", "eyJ", r(30, ALNUM + "_-"), ".", r(43, ALNUM + "_-"))),
        _one("npm-token", "npm token {S}", _p("np", "m_", r(36))),
        _one("npmrc-auth-token", "//registry.npmjs.org/:_authToken={S}", r(36, HEX + "-")),
        _one("huggingface-token", "huggingface-cli login --token {S}", _p("hf", "_", r(34, string.ascii_letters))),
        _one("pypi-upload-token", "twine upload -p {S}", _p("pypi-", "AgEIcHlwaS5vcmc", r(80, ALNUM + "_-"))),
        _one("sendgrid-api-key", "SENDGRID {S}", _p("SG", ".", r(22, ALNUM + "_-"), ".", r(43, ALNUM + "_-"))),
        _one("twilio-api-key", "twilio {S}", _p("S", "K", r(32, HEX))),
        _one("twilio-auth-token", "TWILIO_AUTH_TOKEN={S}", r(32, HEX)),
        _one("azure-storage-connection-string", "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={S};EndpointSuffix=core.windows.net",
             r(86, B64) + "=="),
        _one("azure-sas-token", "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&sig={S}", r(43, B64) + "%3D"),
        _one("azure-ad-client-secret", "client_secret {S}", _p(r(3), "8Q", "~", r(34, ALNUM + "_~.-"))),
        _one("azure-openai-api-key", "api-key: {S}", r(32, HEX)),
        _one("x-api-key-header", 'curl -H "x-api-key: {S}" https://api.example.com/v1', r(40)),
        _one("authorization-basic", "Authorization: Basic {S}", basic),
        _one("bearer-token-short", "curl -H 'Authorization: Bearer {S}' https://api", r(10)),
        _one("bearer-token", "Bearer {S}", r(40)),
        _one("url-password", "DATABASE_URL=postgres://app:{S}@db.internal:5432/app", r(16)),
        _one("mysql-p", "mysql -u root -p{S} appdb < dump.sql", r(12)),
        _one("curl-user", "curl -u admin:{S} https://jenkins.internal/api", r(12)),
        _one("sshpass", "sshpass -p {S} ssh deploy@host", r(12)),
        _one("dotenv-database-password", "DATABASE_PASSWORD={S}", r(12)),
        _one("dotenv-secret-key", "SECRET_KEY={S}", r(50, ALNUM + "!@#%^&*-_")),
        _one("dotenv-api-token", "export API_TOKEN={S}", r(24)),
        _one("yaml-password", "      POSTGRES_PASSWORD: {S}", r(14)),
        _one("python-password-kwarg", 'connect(host="db", password="{S}")', r(12)),
        _one("json-client-secret", '{"client_id": "abc", "client_secret": "{S}"}', r(32)),
        _one("cli-token-flag", "deploy --token {S} --env prod", r(32)),
        _one("shopify-access-token", "X-Shopify-Access-Token {S}", _p("shp", "at_", r(32, HEX))),
        _one("digitalocean-token", "doctl auth init -t {S}", _p("do", "p_v1_", r(64, HEX))),
        _one("linear-api-key", "linear {S}", _p("lin_", "api_", r(40))),
        _one("databricks-token", "databricks {S}", _p("da", "pi", r(32, HEX))),
        _one("postman-api-key", "postman {S}", _p("PM", "AK-", r(24, HEX), "-", r(34, HEX))),
        _one("pulumi-token", "pulumi {S}", _p("pu", "l-", r(40, HEX))),
        _one("doppler-token", "doppler {S}", _p("dp", ".pt.", r(43))),
        _one("newrelic-user-key", "newrelic {S}", _p("NR", "AK-", r(27, string.ascii_uppercase + string.digits))),
        _one("grafana-service-account-token", "grafana {S}", _p("gl", "sa_", r(32), "_", r(8, HEX))),
        _one("vault-token", "VAULT {S}", _p("hv", "s.", r(95, ALNUM + "_-"))),
        _one("age-secret-key", "age {S}", _p("AGE-SECRET", "-KEY-1", r(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"))),
        _one("sentry-user-token", "sentry {S}", _p("sntr", "yu_", r(64, HEX))),
        _one("replicate-token", "replicate {S}", _p("r8", "_", r(37))),
        _one("groq-api-key", "groq {S}", _p("gs", "k_", r(52))),
        _one("perplexity-api-key", "pplx {S}", _p("pp", "lx-", r(48))),
        _one("xai-api-key", "grok {S}", _p("xa", "i-", r(80))),
        _one("notion-token", "notion {S}", _p("nt", "n_", r(46))),
        _one("supabase-token", "supabase {S}", _p("sb", "p_", r(40, HEX))),
        _one("square-access-token", "square {S}", _p("sq0", "atp-", r(22, ALNUM + "_-"))),
        _one("telegram-bot-token", "bot {S}", _p(r(10, string.digits), ":AA", r(33, ALNUM + "_-"))),
        _one("mailgun-api-key", "mailgun {S}", _p("ke", "y-", r(32, HEX))),
        _one("heroku-api-key", "heroku {S}", _p("HR", "KU-AA", r(58, ALNUM + "_-"))),
        _one("terraform-cloud-token", "terraform {S}", _p(r(14), ".atlas", "v1.", r(67, ALNUM + "_-"))),
        _one("mapbox-secret-token", "mapbox {S}", _p("sk", ".eyJ", r(60), ".", r(22))),
        _one("openshift-token", "oc login --token={S}", _p("sha256", "~", r(43, ALNUM + "_-"))),
        _one("rubygems-api-key", "gem {S}", _p("rubygems", "_", r(48, HEX))),
    ]
    return dict(entries)


CORPUS = _corpus()

BENIGN = [
    "settings.configure(SECRET_KEY='secret', DEBUG=True)",
    "password = self.cleaned_data.get('password')",
    "def login(self, username, password=None):",
    "token = tokenizer.next_token()",
    "TOKENIZERS_PARALLELISM=false",
    "PWD=/testbed",
    "PASS: tests/test_basic.py::test_one",
    "max_tokens: 4096, prompt_tokens: 1234",
    "the basic idea is simple",
    "Authorization: Bearer $TOKEN",
    "headers = {'Authorization': f'Bearer {token}'}",
    "mysql -u root -p appdb",
    "see https://example.com:8080/path and git@github.com:org/repo.git",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "commit 3f9a1c2b7e4d5a6b8c9d0e1f2a3b4c5d6e7f8a9b",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "env = {'MYSQL_PWD': password}",
    "if password_hash.startswith('pbkdf2_sha256$'):",
    "--password-file /run/secrets/db",
    "api_key: Optional[str] = None",
]
