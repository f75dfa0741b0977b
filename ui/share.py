"""LAN mode on the page: who is signed in (and a way out), the host's Share tab (addresses, QR code,
certificate fingerprint, guest passcode, guest accounts) and everyone's API keys."""

from __future__ import annotations

import html

import gradio as gr

from server.lan import Sharing
from ui.access import principal_of, require_host

NO_AUTH_BANNER = (
    '<div id="no-auth-banner" style="background:#b00020;color:white;padding:.6rem 1rem;border-radius:6px;font-weight:600">'
    "Started with --no-auth: anyone on your network can use Melange and see everything on it, with no login."
    "</div>"
)


def account_html(who: str, is_host: bool, signed_in: bool) -> str:
    role = "host" if is_host else "guest"
    out = (
        '<form method="post" action="/logout" style="display:inline;margin:0">'
        '<button type="submit" id="sign-out" style="margin-left:.6rem">Sign out</button></form>'
        if signed_in
        else ""
    )
    return f'<div id="account" style="text-align:right">Signed in as <b>{html.escape(who)}</b> ({role}){out}</div>'


def share_markdown(sharing: Sharing) -> str:
    urls = "\n".join(f"- <{u}>" for u in sharing.reach.urls())
    lines = [f"**Colleagues open** (or scan the code):\n\n{urls}"]
    if sharing.certificate is not None:
        lines.append(
            "**Certificate** (self-signed: each browser warns once; check the fingerprint it shows matches):\n\n"
            f"`{sharing.certificate.fingerprint}`"
        )
    elif sharing.reach.scheme == "http":
        lines.append("⚠️ Plain http (`--http`): browsers will not give colleagues' pages the microphone.")
    return "\n\n".join(lines)


def passcode_markdown(sharing: Sharing) -> str:
    return f"**Guest passcode:** `{sharing.passcode}` — guests sign in with their own name and this."


def guest_rows(sharing: Sharing) -> list[list]:
    if sharing.accounts is None:
        return []
    return [[g.name, "account" if g.has_password else "passcode", g.sessions] for g in sharing.accounts.guests()]


def header(blocks: gr.Blocks, sharing: Sharing) -> None:
    """Above the tabs: the --no-auth banner, and who is signed in with a way to sign out."""
    if sharing.open_to_all:
        gr.HTML(NO_AUTH_BANNER)
    if sharing.accounts is None:
        return
    account = gr.HTML(elem_id="account-line")

    def on_load(request: gr.Request):
        principal = principal_of(request)
        who = "the host" if principal.is_host else principal.name
        cookies = getattr(request, "cookies", None) or {}
        return account_html(who, principal.is_host, bool(cookies.get("melange_session")))

    blocks.load(on_load, None, account, api_visibility="private")


def tabs(blocks: gr.Blocks, sharing: Sharing) -> None:
    """After the panels: the host's Share tab, and everyone's API keys."""
    if sharing.accounts is None:
        return
    accounts = sharing.accounts
    with gr.Tab("Share", id="share", elem_id="share-tab", visible=False) as share_tab:
        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown(share_markdown(sharing), elem_id="share-urls")
                passcode = gr.Markdown(elem_id="share-passcode")
                rotate = gr.Button("New passcode", size="sm", elem_id="share-rotate")
            with gr.Column(scale=1):
                qr = gr.HTML(elem_id="share-qr", label="Scan to join")
        gr.Markdown("**Guests**: passcode guests appear when they first sign in; accounts you make have their own password.")
        guests = gr.Dataframe(headers=["Name", "Signs in with", "Signed in now"], interactive=False, elem_id="share-guests")
        with gr.Row():
            new_name = gr.Textbox(label="Name", max_lines=1, elem_id="share-guest-name")
            new_password = gr.Textbox(label="Password (8+ characters)", type="password", max_lines=1, elem_id="share-guest-password")
            create = gr.Button("Make account", elem_id="share-guest-create")
            remove = gr.Button("Remove guest", variant="stop", elem_id="share-guest-remove")

    with gr.Tab("API keys", id="api-keys", elem_id="api-keys-tab"):
        gr.Markdown("Scripts and OpenAI-compatible clients sign in with a key: `Authorization: Bearer <key>`.")
        keys = gr.Markdown(elem_id="api-keys-list")
        with gr.Row():
            make_key = gr.Button("Make a new key", size="sm", elem_id="api-key-new")
            revoke = gr.Button("Revoke my keys", size="sm", variant="stop", elem_id="api-key-revoke")
        shown_key = gr.Textbox(label="Your new key (shown once: copy it now)", interactive=False, buttons=["copy"], elem_id="api-key-shown")

    def keys_line(principal) -> str:
        return "Your keys: " + (", ".join(accounts.api_keys(principal)) or "none yet")

    def on_load(request: gr.Request):
        principal = principal_of(request)
        if not principal.is_host:  # the passcode and its QR code are the host's to show
            return gr.update(visible=False), [], "", "", keys_line(principal)
        return gr.update(visible=True), guest_rows(sharing), passcode_markdown(sharing), sharing.qr_svg(), keys_line(principal)

    def on_rotate(request: gr.Request):
        require_host(principal_of(request), "change the passcode")
        accounts.rotate_passcode()
        return passcode_markdown(sharing), sharing.qr_svg()

    def on_create(request: gr.Request, name: str, password: str):
        require_host(principal_of(request), "make guest accounts")
        try:
            made = accounts.create_guest(name, password)
        except ValueError as e:
            raise gr.Error(str(e), title="Check your input") from None
        gr.Info(f"Made an account for {made}.")
        return guest_rows(sharing), "", ""

    def on_remove(request: gr.Request, name: str):
        require_host(principal_of(request), "remove guests")
        try:
            accounts.remove_guest((name or "").strip())
        except ValueError as e:
            raise gr.Error(str(e), title="Check your input") from None
        return guest_rows(sharing), ""

    def on_make_key(request: gr.Request):
        principal = principal_of(request)
        key = accounts.new_api_key(principal)
        return key, keys_line(principal)

    def on_revoke(request: gr.Request):
        principal = principal_of(request)
        accounts.revoke_api_keys(principal)
        return "", keys_line(principal)

    private = {"api_visibility": "private"}
    rotate.click(on_rotate, None, [passcode, qr], **private)
    create.click(on_create, [new_name, new_password], [guests, new_name, new_password], **private)
    remove.click(on_remove, new_name, [guests, new_name], **private)
    make_key.click(on_make_key, None, [shown_key, keys], **private)
    revoke.click(on_revoke, None, [shown_key, keys], **private)
    blocks.load(on_load, None, [share_tab, guests, passcode, qr, keys], **private)
