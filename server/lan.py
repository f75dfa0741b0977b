"""Sharing on the LAN, put together: the binding rule, accounts, the certificate, and the gate in front.

``prepare(settings)`` decides and makes what a start needs (refusing a binding that would expose the app
without a login); ``install(app, sharing, …)`` puts the guard and the sign-in routes on the FastAPI app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.middleware.cors import CORSMiddleware

from server.accounts import Accounts
from server.gradio_rules import GradioRules
from server.guard import PRINCIPAL_KEY, Guard, Policy
from server.login import login_router
from server.network import Reach, is_loopback, qr_svg, qr_terminal
from server.ratelimit import LoginLimiter
from server.tls import Certificate, self_signed
from server.uploads import Uploads


class BindingRefused(SystemExit):
    pass


@dataclass
class Sharing:
    """What one start of the server shares, and how."""

    reach: Reach
    login_required: bool
    lan: bool = False  # --lan: shared, even when bound to loopback (tests, or behind a local proxy)
    accounts: Accounts | None = None
    certificate: Certificate | None = None
    admin_password_made: str | None = None  # printed once, on the first LAN start
    loopback_is_host: bool = True
    uploads: Uploads = field(default_factory=Uploads)
    policy: Policy | None = None

    @property
    def open_to_all(self) -> bool:
        """--lan --no-auth: anyone on the network is the host."""
        return self.lan and not self.login_required

    @property
    def passcode(self) -> str | None:
        return self.accounts.passcode if self.accounts else None

    def join_url(self) -> str | None:
        """The link a colleague opens (the QR code): the first LAN address, passcode in the fragment."""
        urls = self.reach.urls()
        if not urls:
            return None
        if self.passcode is None:
            return urls[0]
        return f"{urls[0]}login#code={self.passcode}"

    def qr_svg(self) -> str:
        url = self.join_url()
        return qr_svg(url) if url else ""

    def announcement(self) -> str:
        """What the terminal prints at start."""
        lines = []
        if not self.lan:
            lines.append(f"Melange on {self.reach.scheme}://127.0.0.1:{self.reach.port} (this machine only; --lan shares it)")
            return "\n".join(lines)
        lines.append("Melange is shared on your network at:")
        lines += [f"  {url}" for url in self.reach.urls()]
        if self.open_to_all:
            lines.append("WARNING: --no-auth: anyone on the network can use it and see everything, with no login.")
        if self.reach.scheme == "http":
            lines.append("WARNING: --http: browsers allow the microphone only over https, so colleagues cannot use live captions.")
        if self.certificate is not None:
            lines.append(f"Certificate SHA-256 fingerprint (browsers warn about a self-signed one; check it matches):\n  {self.certificate.fingerprint}")
        if self.passcode:
            lines.append(f"Guest passcode: {self.passcode}   (guests sign in with their name and this; rotate it in the Share tab)")
        if self.admin_password_made:
            lines.append(f"Admin password (shown this once; sign in as 'admin'): {self.admin_password_made}")
        url = self.join_url()
        if url:
            lines.append("Scan to join:")
            lines.append(qr_terminal(url))
        return "\n".join(lines)


def read_admin_password(settings) -> str | None:
    if settings.admin_password is not None:
        return settings.admin_password.get_secret_value()
    if settings.admin_password_file is not None:
        try:
            return settings.admin_password_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise SystemExit(f"--admin-password-file: cannot read {settings.admin_password_file}: {e.strerror or e}") from e
    return None


def prepare(settings, database: Path) -> Sharing:
    """Check the binding rule and make what this start needs; SystemExit with the reason otherwise."""
    bind = settings.bind
    if not settings.lan:
        if not is_loopback(bind):
            raise BindingRefused(
                f"--host {bind} would share Melange with your network without a login. "
                "Use --lan instead: it listens on every interface with login, per-visitor data and https."
            )
        if not settings.auth or settings.http:
            raise BindingRefused("--no-auth and --http only go with --lan.")
        return Sharing(Reach(bind, settings.port, "http", tuple(settings.allowed_hosts)), login_required=False)

    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise BindingRefused("--ssl-certfile and --ssl-keyfile go together.")
    scheme = "http" if settings.http else "https"
    reach = Reach(bind, settings.port, scheme, tuple(settings.allowed_hosts))
    certificate = None
    if scheme == "https":
        if settings.ssl_certfile is not None:
            from server.tls import fingerprint

            for path in (settings.ssl_certfile, settings.ssl_keyfile):
                if not Path(path).is_file():
                    raise BindingRefused(f"TLS file not found: {path}")
            certificate = Certificate(Path(settings.ssl_certfile), Path(settings.ssl_keyfile), fingerprint(Path(settings.ssl_certfile)))
        else:
            names = sorted(reach.hosts() - {"::1"}, key=lambda h: (h[0].isdigit(), h))
            certificate = self_signed(settings.data_dir / "tls", names)
    if not settings.auth:
        return Sharing(reach, login_required=False, lan=True, certificate=certificate)
    accounts = Accounts(database, session_hours=settings.session_hours)
    try:
        made = accounts.ensure_admin(read_admin_password(settings))
    except ValueError as e:
        raise BindingRefused(str(e)) from e
    return Sharing(
        reach, login_required=True, lan=True, accounts=accounts, certificate=certificate, admin_password_made=made,
        loopback_is_host=settings.loopback_is_host,
    )  # fmt: skip


def gradio_user(request: Request) -> str | None:
    """Gradio's ``auth_dependency``: the guard already decided who this is."""
    principal = request.scope.get(PRINCIPAL_KEY)
    return principal.encode() if principal is not None else None


def routes(app: FastAPI, sharing: Sharing) -> None:
    """The sign-in routes; before the UI is mounted at '/', so they take precedence."""
    if sharing.accounts is not None:
        app.include_router(login_router(sharing.accounts, LoginLimiter(), secure_cookies=sharing.reach.scheme == "https"))


def install(
    app: FastAPI, sharing: Sharing, blocks, owned_areas: list[Path], guest_jobs_per_panel: int = 1, remote_images: bool = False
) -> None:
    """The guard around everything, and CORS for the app's own origins only (Gradio's own CORS then stays off)."""
    origins = sorted(sharing.reach.origins())
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=True, allow_methods=["*"], allow_headers=["*"])
    sharing.policy = Policy(
        hosts=sharing.reach.hosts(),
        origins=set(origins),
        login_required=sharing.login_required,
        accounts=sharing.accounts,
        loopback_is_host=sharing.loopback_is_host,
        secure_cookies=sharing.reach.scheme == "https",
        gradio_rules=GradioRules(blocks, sharing.uploads, owned_areas, guest_jobs_per_panel),
        page_csp=None if remote_images else Policy.page_csp,
    )
    app.add_middleware(Guard, policy=sharing.policy)
