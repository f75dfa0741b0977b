"""LAN mode in a real browser: two colleagues sign in over https (the self-signed certificate accepted as a
person would click through it), each chats and draws, neither sees the other's work, one's Cancel leaves the
other's run alone, and the microphone works over https."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests import fixtures
from tests.app_server import ADMIN_PASSWORD, AppServer
from tests.browser.conftest import ARTIFACTS, launch_chromium

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lan_app(tmp_path_factory):
    server = AppServer.lan(tmp_path_factory.mktemp("lan-browser"), "--no-loopback-is-host")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mic")
    out = directory / "microphone.wav"
    fixtures._run("sox", str(fixtures.speech_wav(directory, name="speech_src.wav")), str(out), "pad", "1.0", "3.0")
    return out


@pytest.fixture(scope="module")
def lan_browser(playwright, microphone_wav):
    browser = launch_chromium(
        playwright,
        "--ignore-certificate-errors",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone_wav}%noloop",
    )
    yield browser
    browser.close()


def signed_in(browser, server: AppServer, name: str, password: str):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, ignore_https_errors=True, permissions=["microphone"])
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server.url)
    expect(page).to_have_url(f"{server.url}/login?next=%2F")
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("#sign-in")
    shown = "the host" if name == "admin" else name
    expect(page.locator("#account-line")).to_contain_text(f"Signed in as {shown}", timeout=60_000)
    return page


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"lan-{name}.png"), full_page=True)


def chat(page, message: str) -> None:
    page.get_by_role("tab", name="Chat").click()
    page.fill("#chat-input textarea", message)
    page.press("#chat-input textarea", "Enter")
    expect(page.locator("#chat-stats")).to_contain_text("tok/s", timeout=120_000)


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_two_guests_work_side_by_side_and_never_see_each_other(lan_app, lan_browser):
    passcode = lan_app.passcode
    alice = signed_in(lan_browser, lan_app, "Alice", passcode)
    bob = signed_in(lan_browser, lan_app, "Bob", passcode)
    try:
        # Guests see the panels but not the host's controls.
        expect(alice.locator("#share-tab")).to_have_count(0)
        expect(alice.locator("#unload-chat")).to_be_hidden()
        chat(alice, "What is the capital of France?")
        chat(bob, "Name one fruit.")
        expect(alice.locator("#chat-history")).to_contain_text("What is the capital of France?")
        expect(bob.locator("#chat-history")).to_contain_text("Name one fruit.")
        bob.reload()
        expect(bob.locator("#chat-history")).to_contain_text("Name one fruit.", timeout=60_000)
        expect(bob.locator("#chat-history")).not_to_contain_text("capital of France")

        # Each draws; each gallery holds only its own.
        for page, seed in ((alice, "111"), (bob, "222")):
            page.get_by_role("tab", name="Image").click()
            page.fill("#image-prompt textarea", f"a lighthouse {seed}")
            page.fill("#image-seed input", seed)
            page.click("#image-generate")
        for page, seed in ((alice, "111"), (bob, "222")):
            expect(page.locator("#image-info")).to_contain_text(f"Seed {seed}", timeout=120_000)
            expect(page.locator("#image-gallery img")).to_have_count(1)
        alice_image = alice.locator("#image-result img").get_attribute("src")
        assert bob.request.get(alice_image).status == 404, "Bob cannot fetch Alice's image by its address"

        # Bob starts a long run; Alice's run waits behind it, she sees where it stands and cancels it:
        # her Cancel stops her own run only, and Bob's finishes.
        bob.get_by_label("512²").check()
        set_number(bob, "image-steps", 40)
        bob.fill("#image-seed input", "333")
        bob.click("#image-generate")
        expect(bob.locator("#image-preview img")).to_be_visible(timeout=120_000)
        alice.fill("#image-seed input", "444")
        alice.click("#image-generate")
        expect(alice.locator("#melange-queue")).to_contain_text("1st in line for Image", timeout=30_000)
        shot(alice, "alice-waiting")
        alice.click("#image-cancel")
        expect(alice.locator("#image-info")).to_contain_text("Cancelled", timeout=180_000)
        expect(bob.locator("#image-info")).to_contain_text("Seed 333", timeout=300_000)
        expect(alice.locator("#image-gallery img")).to_have_count(1)
        shot(bob, "bob-finished")
    finally:
        alice.context.close()
        bob.context.close()


def test_the_microphone_works_over_https(lan_app, lan_browser):
    guest = signed_in(lan_browser, lan_app, "Carol", lan_app.passcode)
    try:
        guest.get_by_role("tab", name="Transcribe").click()
        guest.get_by_role("tab", name="Live microphone").click()
        guest.locator("#live-captions button", has_text="Record").click()
        # The browser gives an https page the microphone: words of the played speech come back as captions.
        spoken = {w.strip(".,").lower() for w in fixtures.SPEECH_TEXT.split()}
        expect(guest.locator("#live-captions .confirmed")).to_contain_text("Monday", timeout=90_000)
        heard = {w.strip(".,").lower() for w in guest.locator("#live-captions .confirmed").inner_text().split()}
        assert len(heard & spoken) >= 3, heard
        guest.locator("#live-captions button", has_text="Stop").click()
        expect(guest.locator("#transcribe-info")).to_contain_text("done in", timeout=120_000)
        recordings = list((lan_app.data_dir / "recordings" / "guests" / "carol").glob("*.wav"))
        assert len(recordings) == 1, "the recording is kept with its owner"
    finally:
        guest.context.close()


def test_the_host_shares_from_the_share_tab(lan_app, lan_browser):  # last: it rotates the passcode
    host = signed_in(lan_browser, lan_app, "admin", ADMIN_PASSWORD)
    try:
        host.get_by_role("tab", name="Share").click()
        expect(host.locator("#share-qr svg")).to_be_visible()
        expect(host.locator("#share-urls")).to_contain_text(lan_app.url)
        fingerprint = lan_app.printed(r"fingerprint[^\n]*\n\s+([0-9A-F:]{95})")
        expect(host.locator("#share-urls")).to_contain_text(fingerprint)
        old = lan_app.passcode
        expect(host.locator("#share-passcode")).to_contain_text(old)
        host.click("#share-rotate")
        expect(host.locator("#share-passcode")).not_to_contain_text(old, timeout=30_000)
        shot(host, "host-share")
    finally:
        host.context.close()
