"""Where the app can be reached: this machine's names and LAN addresses, the URLs to share, a QR code.

The same list decides which ``Host`` headers the app answers (anything else is a DNS-rebinding attempt
or a misdirected request) and which origins may call it from a browser.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "[::]")


def lan_addresses() -> list[str]:
    """IPv4 addresses of this machine's network interfaces, loopback and link-local left out."""
    import psutil

    found: list[str] = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family != socket.AF_INET:
                continue
            ip = ipaddress.ip_address(address.address)
            if ip.is_loopback or ip.is_link_local or ip.is_unspecified:
                continue
            if address.address not in found:
                found.append(address.address)
    return found


def machine_names() -> list[str]:
    names = []
    for name in (socket.gethostname(), socket.getfqdn()):
        name = name.strip().lower()
        if name and name not in names and not name.startswith("localhost"):
            names.append(name)
    if names and "." not in names[0]:
        names.append(names[0] + ".local")  # mDNS: how macOS, Windows and most Linux desktops see the machine
    return names


@dataclass(frozen=True)
class Reach:
    """How the server can be addressed, from its bind address, port and scheme."""

    bind: str
    port: int
    scheme: str  # "http" or "https"
    extra_hosts: tuple[str, ...] = ()

    @property
    def lan(self) -> bool:
        return not is_loopback(self.bind)

    def addresses(self) -> list[str]:
        if not self.lan:
            return []
        return lan_addresses() if is_wildcard(self.bind) else [self.bind]

    def hosts(self) -> set[str]:
        """Every name a request's Host header may carry (without the port)."""
        hosts = set(LOOPBACK_NAMES) | {self.bind.strip("[]").lower()}
        if self.lan:
            hosts |= set(machine_names()) | set(self.addresses())
        hosts |= {h.strip().lower() for h in self.extra_hosts if h.strip()}
        hosts.discard("0.0.0.0")
        hosts.discard("::")
        return hosts

    def origins(self) -> set[str]:
        """The browser origins of the app's own pages."""
        default_port = 443 if self.scheme == "https" else 80
        suffix = "" if self.port == default_port else f":{self.port}"
        return {f"{self.scheme}://{'[' + h + ']' if ':' in h else h}{suffix}" for h in self.hosts()}

    def urls(self) -> list[str]:
        """The URLs to give colleagues: LAN addresses first (they work without name resolution)."""
        targets = self.addresses() + machine_names() if self.lan else ["127.0.0.1"]
        return [f"{self.scheme}://{t}:{self.port}/" for t in targets]


def split_host(header: str) -> tuple[str, int | None]:
    """'example:8000' -> ('example', 8000); '[::1]:7860' -> ('::1', 7860)."""
    header = header.strip().lower()
    if header.startswith("["):
        host, _, rest = header[1:].partition("]")
        port = rest.removeprefix(":")
    elif header.count(":") == 1:
        host, _, port = header.partition(":")
    else:
        host, port = header, ""
    return host, int(port) if port.isdigit() else None


def qr_svg(url: str) -> str:
    """The URL as an inline SVG QR code (segno), for the Share panel."""
    import io

    import segno

    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="svg", scale=5, border=2, xmldecl=False, svgns=True)
    return buffer.getvalue().decode()


def qr_terminal(url: str) -> str:
    """The URL as a QR code made of text blocks, for the terminal."""
    import io

    import segno

    out = io.StringIO()
    segno.make(url, error="l").terminal(out=out, compact=True, border=2)
    return out.getvalue()
