"""Real reverse proxies from Debian's packages (nginx, Caddy, Apache), each
started in the foreground on a loopback port with a configuration written
here: the same server blocks the README shows, wrapped in the least a
stand-alone process needs (pid file, logs, temp folders)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from harness import accepting, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]

# The test run's own certificate authority and a certificate for 127.0.0.1
# (see `self_signed`); conftest makes them and points SSL_CERT_FILE at the
# authority before any client starts: the client reads it once per process.
TEST_CA = Path(tempfile.gettempdir()) / f"leitner-test-ca-{os.getpid()}"


class Proxy:
    name = ""
    binary = ""

    def __init__(self, upstream: int, subpath: bool = False, tls: Path | None = None):
        """`upstream`: the sync server's port. `subpath`: serve it under
        /anki/ instead of the whole host. `tls`: a folder with cert.pem and
        key.pem: serve HTTPS."""
        # Not under pytest's folders (0700): workers that drop root to
        # nobody or www-data write temp files here.
        self.work = Path(tempfile.mkdtemp(prefix=f"leitner-{self.name}-"))
        os.chmod(self.work, 0o777)
        self.upstream = upstream
        self.subpath = subpath
        self.tls = tls
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.binary) is not None or Path(cls.binary).exists()

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/" + ("anki/" if self.subpath else "")

    def site(self) -> str:
        """The part a user writes (and the README shows)."""
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    def start(self) -> "Proxy":
        self.write_config()
        self.proc = subprocess.Popen(self.argv(), env=self.env(), stdout=subprocess.DEVNULL,
                                     stderr=open(self.work / "stderr.log", "w"), cwd=self.work)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()}")
            return accepting(self.port)

        if not wait_for(up, timeout=30):
            raise RuntimeError(f"{self.name} did not start:\n{self.log()}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.work.glob("*.log")))


class Nginx(Proxy):
    name = "nginx"
    binary = "nginx"

    def site(self) -> str:
        listen = f"127.0.0.1:{self.port}"
        if self.tls:
            tls = (f"    listen {listen} ssl;\n"
                   f"    ssl_certificate {self.tls}/cert.pem;\n"
                   f"    ssl_certificate_key {self.tls}/key.pem;\n"
                   "    ssl_protocols TLSv1.2 TLSv1.3;\n")
        else:
            tls = f"    listen {listen};\n"
        # The one setting a sync server needs: nginx refuses bodies over 1 MB.
        body = "    client_max_body_size 500m;\n"
        # The address the browser used (for the welcome page) and the
        # client's (for throttling and the log), and no Forwarded header a
        # client wrote. (Headers set in a location replace all of the
        # server's, so they go here.)
        headers = ("        proxy_set_header X-Forwarded-Host $http_host;\n"
                   "        proxy_set_header X-Forwarded-Proto $scheme;\n"
                   "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
                   "        proxy_set_header Forwarded \"\";\n")
        if self.subpath:
            location = (f"    location /anki/ {{\n        proxy_pass http://127.0.0.1:{self.upstream}/;\n"
                        + headers + "        proxy_set_header X-Forwarded-Prefix /anki;\n    }\n")
        else:
            location = f"    location / {{\n        proxy_pass http://127.0.0.1:{self.upstream};\n" + headers + "    }\n"
        return "server {\n" + tls + body + location + "}\n"

    def write_config(self) -> None:
        w = self.work
        temps = "".join(f"    {kind}_temp_path {w}/{kind};\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (w / "nginx.conf").write_text(
            f"pid {w}/nginx.pid;\nerror_log {w}/error.log;\nworker_processes 1;\n"
            "events {}\nhttp {\n"
            f"    access_log {w}/access.log;\n{temps}"
            + self.site() + "}\n")

    def argv(self) -> list[str]:
        return ["nginx", "-p", str(self.work), "-c", str(self.work / "nginx.conf"), "-g", "daemon off;"]


class Caddy(Proxy):
    name = "caddy"
    binary = "caddy"

    def site(self) -> str:
        if self.tls:
            head = f"https://127.0.0.1:{self.port} {{\n    tls {self.tls}/cert.pem {self.tls}/key.pem\n"
        else:
            head = f"http://127.0.0.1:{self.port} {{\n"
        # Caddy writes X-Forwarded-For, -Proto and -Host itself; a client's
        # own Forwarded goes.
        if self.subpath:
            # handle_path takes /anki off before passing the request on; the
            # prefix header tells the welcome page it was there.
            body = (f"    handle_path /anki/* {{\n        reverse_proxy 127.0.0.1:{self.upstream} {{\n"
                    "            header_up -Forwarded\n"
                    "            header_up X-Forwarded-Prefix /anki\n        }\n    }\n")
        else:
            body = (f"    reverse_proxy 127.0.0.1:{self.upstream} {{\n"
                    "        header_up -Forwarded\n    }\n")
        return head + body + "}\n"

    def write_config(self) -> None:
        (self.work / "Caddyfile").write_text(
            "{\n    admin off\n    auto_https disable_redirects\n"
            f"    storage file_system {self.work}/storage\n"
            f"    log {{\n        output file {self.work}/caddy.log\n    }}\n}}\n" + self.site())

    def env(self) -> dict:
        return dict(os.environ, HOME=str(self.work), XDG_DATA_HOME=str(self.work), XDG_CONFIG_HOME=str(self.work))

    def argv(self) -> list[str]:
        return ["caddy", "run", "--config", str(self.work / "Caddyfile"), "--adapter", "caddyfile"]


class Apache(Proxy):
    name = "apache"
    binary = "/usr/sbin/apache2"
    modules = "/usr/lib/apache2/modules"

    def site(self) -> str:
        prefix = "/anki/" if self.subpath else "/"
        lines = [f"<VirtualHost 127.0.0.1:{self.port}>"]
        if self.tls:
            lines += ["    SSLEngine on",
                      f"    SSLCertificateFile {self.tls}/cert.pem",
                      f"    SSLCertificateKeyFile {self.tls}/key.pem",
                      "    SSLProtocol -all +TLSv1.2 +TLSv1.3"]
        # Apache sends X-Forwarded-For and -Host itself; a client's own
        # Forwarded goes; the rest is for the welcome page.
        lines += ["    RequestHeader unset Forwarded"]
        if self.tls:
            lines += ["    RequestHeader set X-Forwarded-Proto https"]
        if self.subpath:
            lines += ["    RequestHeader set X-Forwarded-Prefix /anki"]
        lines += [f"    ProxyPass {prefix} http://127.0.0.1:{self.upstream}/",
                  # Apache's default (1 GiB since 2.4.54); named so it can be found.
                  "    LimitRequestBody 524288000",
                  "</VirtualHost>"]
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        w = self.work
        mods = ["mpm_event", "authz_core", "proxy", "proxy_http", "headers"] + (["ssl", "socache_shmcb"] if self.tls else [])
        loads = "".join(f"LoadModule {m}_module {self.modules}/mod_{m}.so\n" for m in mods)
        user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
        (w / "apache2.conf").write_text(
            f"ServerRoot {w}\nServerName localhost\nPidFile {w}/apache2.pid\nDefaultRuntimeDir {w}\n"
            f"ErrorLog {w}/error.log\nLogLevel warn\n{loads}{user}"
            f"Listen 127.0.0.1:{self.port}\n" + self.site())

    def argv(self) -> list[str]:
        return [self.binary, "-f", str(self.work / "apache2.conf"), "-DFOREGROUND"]


PROXIES = [Nginx, Caddy, Apache]


def self_signed(folder: Path) -> Path:
    """A certificate authority of our own (ca.pem) and, signed by it, a
    certificate for 127.0.0.1 with its key (cert.pem, key.pem), in `folder`.
    (rustls refuses a lone self-signed certificate, marked as a CA, as the
    server's own.)"""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, cwd=folder)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=leitner test CA",
            "-keyout", "ca-key.pem", "-out", "ca.pem")
    openssl("req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "leaf.csr")
    (folder / "leaf.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n"
                                     "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-days", "2", "-extfile", "leaf.ext", "-out", "cert.pem")
    os.chmod(folder / "key.pem", 0o644)
    os.chmod(folder, 0o755)
    return folder
