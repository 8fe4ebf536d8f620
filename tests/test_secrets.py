"""No secret in any output: malformed values of every secret-bearing key, fuzzed.

Each secret-bearing key (api_secret, api_key, password, their *_file contents; the web
config's basic_auth_users and inline or file private key) gets malformed values carrying a
marker: wrong types, YAML syntax errors on the secret's own line, undecodable or unusable file
contents. The marker must appear in none of: stderr and stdout of `run` at start, the structlog
events of a reload, the reply of `POST /-/reload`, `/status.json` and `/metrics` after it;
and the error must still name the key at fault.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from exporter.cli import main
from exporter.config import load_settings
from exporter.errors import ConfigError
from exporter.logs import configure_logging
from exporter.reload import ConfigReloader
from exporter.server import build_app
from exporter.service import Exporter
from exporter.webgate import WebGate
from tests.certs import issue, make_ca, require_openssl
from tests.test_webgate import auth

SECRET = "Zq7-s3cr3t-Wx9"
HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
PEM = f"-----BEGIN PRIVATE KEY-----\\n{SECRET}\\n-----END PRIVATE KEY-----"

#: Main config lines (the rest of the file is good), and the key the error must name.
MAIN = {
    "api_secret as a list": ("api_secret: [{s}]", "api_secret"),
    "api_secret as a mapping": ("api_secret: {{x: {s}}}", "api_secret"),
    "api_secret as a boolean-looking list": ("api_secret: [true, {s}]", "api_secret"),
    "api_secret unclosed quote": ("api_secret: '{s}", "config"),
    "api_secret unclosed double quote": ('api_secret: "{s}', "config"),
    "api_secret nested mapping on one line": ("api_secret: {s}: x", "config"),
    "api_secret unclosed flow list": ("api_secret: [{s}", "config"),
    "api_secret undefined alias": ("api_secret: *{s}", "config"),
    "api_secret unknown tag": ("api_secret: !{s} x", "config"),
    "api_secret reserved character": ("api_secret: @{s}", "config"),
    "api_secret backquote": ("api_secret: `{s}", "config"),
    "api_secret tab in plain scalar": ("api_secret: \t{s}\t:", "config"),
    "api_key as a list": ("api_key: [{s}]", "api_key"),
    "password as a list": ("password: [{s}]\nusername: u", "password"),
    "password unclosed quote": ("password: '{s}\nusername: u", "config"),
    "cluster api_secret as a list": (
        "clusters: [{{name: a, emqx_url: 'http://127.0.0.1:9', api_key: k, "
        "api_secret: [{s}]}}]", "api_secret"),
    "api_secret_file not UTF-8": ("api_secret_file: {binary}", "api_secret_file"),
    "password_file not UTF-8": ("password_file: {binary}\nusername: u", "password_file"),
}

#: Web config files, and the key the error must name.
WEB = {
    "user hash as a list": ("basic_auth_users: {{u: [{s}]}}", "basic_auth_users"),
    "user hash not bcrypt": ("basic_auth_users: {{u: {s}}}", "basic_auth_users.u"),
    "user hash bcrypt-shaped": ("basic_auth_users: {{u: $2y$10${s}}}", "basic_auth_users.u"),
    "users as a string": ("basic_auth_users: {s}", "basic_auth_users"),
    "users as a list": ("basic_auth_users: [{s}]", "basic_auth_users"),
    "user hash unclosed quote": ("basic_auth_users:\n  u: '{s}", "web_config"),
    "user hash reserved character": ("basic_auth_users:\n  u: @{s}", "web_config"),
    "inline key as a list": ("tls_server_config: {{cert_file: {cert}, key: [{s}]}}", "key"),
    "inline key as a mapping": ("tls_server_config: {{cert_file: {cert}, key: {{k: {s}}}}}",
                                "key"),
    "inline key not a key": ('tls_server_config: {{cert_file: {cert}, key: "{pem}"}}', "key"),
    "inline key unclosed quote": ('tls_server_config:\n  cert_file: {cert}\n  key: "{pem}',
                                  "web_config"),
    "key_file not a key": ("tls_server_config: {{cert_file: {cert}, key_file: {badkey}}}",
                           "key_file"),
    "key_file not PEM": ("tls_server_config: {{cert_file: {cert}, key_file: {rawkey}}}",
                         "key_file"),
}


@dataclass(frozen=True)
class Files:
    dir: Path

    def fill(self, template: str) -> str:
        return template.format(s=SECRET, pem=PEM, cert=self.dir / "server.pem",
                               binary=self.dir / "binary", badkey=self.dir / "bad.key",
                               rawkey=self.dir / "raw.key")

    def good_web(self) -> str:
        return (f"tls_server_config: {{cert_file: {self.dir / 'server.pem'}, "
                f"key_file: {self.dir / 'server.key'}}}\nbasic_auth_users: {{u: '{HASH}'}}\n")

    def main(self, line: str = "") -> str:
        base = {"emqx_url": "emqx_url: http://127.0.0.1:9", "api_key": "api_key: k",
                "api_secret": "api_secret: s"}
        if "username" in line or "password" in line or "clusters" in line:
            base = {"emqx_url": base["emqx_url"]}
        if line.startswith("api_key") or line.startswith("api_secret"):
            base.pop(line.split(":")[0].removesuffix("_file"), None)
        web = f"web_config: {self.dir / 'web.yml'}"
        return "\n".join([*base.values(), "reload_endpoint: true", web, self.fill(line)]) + "\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    require_openssl()
    d = tmp_path_factory.mktemp("secrets")
    make_ca(d)
    issue(d, "server", "/CN=exporter.test", "subjectAltName=IP:127.0.0.1\n")
    (d / "binary").write_bytes(b"\xff\xfe" + SECRET.encode() + b"\x80")
    (d / "bad.key").write_text(PEM.replace("\\n", "\n"))
    (d / "raw.key").write_text(SECRET)
    f = Files(d)
    (d / "web.yml").write_text(f.good_web())
    return f


@pytest.fixture(autouse=True)
def _logs_to_the_real_stderr() -> Iterator[None]:
    """`main` routes structlog to the sys.stderr of its moment (capsys' then): route it back."""
    yield
    configure_logging()


def assert_clean(*outputs: str) -> None:
    for output in outputs:
        assert SECRET not in output, output
        assert SECRET[:8] not in output and SECRET[-8:] not in output, output


@pytest.mark.parametrize("name", list(MAIN))
def test_start_with_a_bad_main_config(files: Files, tmp_path: Path, name: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    line, key = MAIN[name]
    path = tmp_path / "exporter.yml"
    path.write_text(files.main(line))
    assert main(["run", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert_clean(out, err)
    assert f"configuration error: {key}" in err or f".{key}" in err, err


@pytest.mark.parametrize("name", list(WEB))
def test_start_with_a_bad_web_config(files: Files, tmp_path: Path, name: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    template, key = WEB[name]
    web = tmp_path / "web.yml"
    web.write_text(files.fill(template) + "\n")
    path = tmp_path / "exporter.yml"
    path.write_text(files.main().replace(str(files.dir / "web.yml"), str(web)))
    assert main(["run", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert_clean(out, err)
    assert key in err, err


@dataclass
class Running:
    path: Path
    web: Path
    session: aiohttp.ClientSession
    url: str

    async def get(self, route: str) -> str:
        async with self.session.get(self.url + route) as response:
            return await response.text()

    async def reload(self) -> tuple[int, str]:
        async with self.session.post(self.url + "/-/reload") as response:
            return response.status, await response.text()


@asynccontextmanager
async def running(files: Files, tmp_path: Path) -> AsyncIterator[Running]:
    web = tmp_path / "web.yml"
    web.write_text(files.good_web())
    path = tmp_path / "exporter.yml"
    path.write_text(files.main().replace(str(files.dir / "web.yml"), str(web)))
    settings = load_settings({}, {}, str(path))
    gate = WebGate(settings.web_config, settings.open_paths)
    exporter = Exporter(settings)
    reloader = ConfigReloader(exporter, lambda: load_settings({}, {}, str(path)), gate)
    server = TestServer(build_app(exporter, poll=False, gate=gate, reloader=reloader),
                        host="127.0.0.1")
    await server.start_server(ssl=gate.ssl_context)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False),
                                    headers=auth("u", "pw"))
    try:
        yield Running(path, web, session, f"https://127.0.0.1:{server.port}")
    finally:
        await session.close()
        await server.close()
        await exporter.stop()


async def test_reloads_of_bad_files_show_no_secret(files: Files, tmp_path: Path) -> None:
    async with running(files, tmp_path) as r:
        good_main = r.path.read_text()
        for name, (line, key) in MAIN.items():
            r.path.write_text(files.main(line).replace(str(files.dir / "web.yml"), str(r.web)))
            with capture_logs() as logs:
                status, reply = await r.reload()
            assert status == 500, name
            assert key in reply, (name, reply)
            assert any(e["event"] == "config_reload_failed" for e in logs), name
            assert_clean(reply, repr(logs), await r.get("/status.json"), await r.get("/metrics"))
        r.path.write_text(good_main)
        for name, (template, key) in WEB.items():
            r.web.write_text(files.fill(template) + "\n")
            with capture_logs() as logs:
                status, reply = await r.reload()  # looks at the web config too
            assert status == 200, name  # the main config is good
            failed = [e for e in logs if e["event"] == "web_config_reload_failed"]
            assert failed and key in failed[0]["error"], (name, logs)
            assert_clean(reply, repr(logs), await r.get("/status.json"), await r.get("/metrics"))
            r.web.write_text(files.good_web())
            await r.reload()


@pytest.mark.parametrize("url", ["http://admin:hunter2hunter2@127.0.0.1:18083",
                                 "ftp://admin:hunter2hunter2@127.0.0.1:18083"])
@pytest.mark.parametrize("key", ["emqx_url", "dashboard_url"])
def test_a_password_in_a_url_is_refused_without_being_repeated(url: str, key: str) -> None:
    """A URL's user:password@ would be echoed by the error and, accepted, would name the
    cluster in every log line: refused at start, the error naming the key, not the secret."""
    config = {"emqx_url": "http://127.0.0.1:18083", "api_key": "k", "api_secret": "s", key: url}
    with pytest.raises(ConfigError) as refused:
        load_settings(config, {}, None)
    assert refused.value.key == key and "hunter2" not in str(refused.value)
