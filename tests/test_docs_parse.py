"""Reading each document format into passages, on real files made here, and the bad files the issue names."""

from __future__ import annotations

import os

import pytest

from engines.docs import parse as docs_parse
from engines.docs.parse import Block, DocumentError, chunk, parse
from tests import docs_fixtures as make

LOREM = (
    "The committee met on a grey Tuesday to review the harbour plans. Several members asked for more time. "
    "The chair noted that the tide tables had changed since the last survey. "
)


def test_pdf_passages_keep_their_page(tmp_path):
    path = make.pdf(tmp_path / "report.pdf", [
        "Introduction. The Kerr Point lighthouse stands on a basalt cliff.",
        "History. It was built in 1871 by the engineer Alan Stevenson, whose family built many lights.",
        "Budget. The annual maintenance budget is 42,000 pounds.",
    ])  # fmt: skip
    document = parse(path)
    assert document.kind == "pdf" and document.pages == 3 and not document.note
    by_page = {p.page: p.text for p in document.passages}
    assert set(by_page) == {1, 2, 3}
    assert "1871" in by_page[2] and "Alan Stevenson" in by_page[2]
    assert "42,000" in by_page[3]


def test_a_long_pdf_is_cut_into_passages_that_never_straddle_pages(tmp_path):
    pages = [f"Page {n} begins here. " + LOREM * 6 + f"Page {n} ends with the code P{n:03d}." for n in range(1, 31)]
    document = parse(make.pdf(tmp_path / "long.pdf", pages))
    assert document.pages == 30
    assert len(document.passages) >= 60, "about 130 words a page over several passages each"
    import re

    for p in document.passages:
        assert len(p.text.split()) <= docs_parse.TARGET_WORDS + 40, "a passage is about the target size"
        marks = {int(n) for n in re.findall(r"Page (\d+) begins|code P(\d+)", p.text) for n in n if n}
        assert marks <= {p.page}, f"a passage from page {p.page} holds text of pages {marks}"
    assert {p.page for p in document.passages} == set(range(1, 31))
    last = [p for p in document.passages if p.page == 30][-1]
    assert last.text.endswith("P030.")


def test_consecutive_passages_overlap_so_a_cut_fact_is_whole_once():
    sentences = [f"Sentence number {i} says that item {i} costs {i * 3} euros." for i in range(60)]
    passages = list(chunk([Block(" ".join(sentences))]))
    assert len(passages) >= 4
    for a, b in zip(passages, passages[1:]):
        last_sentence = a.text.rsplit("Sentence number", 1)[1]
        assert last_sentence in b.text, "the next passage starts with the end of the previous one"
    for s in sentences:
        assert any(s in p.text for p in passages), "no sentence is cut in half"


def test_a_pdf_with_some_scanned_pages_indexes_the_rest_and_says_so(tmp_path):
    from pypdf import PdfReader, PdfWriter

    text = make.pdf(tmp_path / "text.pdf", ["A page with words about otters.", "Another page about beavers."])
    scan = make.scanned_pdf(tmp_path / "scan.pdf", pages=1)
    writer = PdfWriter()
    for source in (text, scan):
        for page in PdfReader(source).pages:
            writer.add_page(page)
    mixed = tmp_path / "mixed.pdf"
    with mixed.open("wb") as f:
        writer.write(f)
    document = parse(mixed)
    assert {p.page for p in document.passages} == {1, 2}
    assert document.note == "1 of 3 pages had no text (scanned?) and were skipped."


def test_a_scanned_pdf_without_text_says_it_needs_ocr(tmp_path):
    with pytest.raises(DocumentError, match=r"No text in any of its 2 page\(s\): a scanned PDF.*OCR"):
        parse(make.scanned_pdf(tmp_path / "scan.pdf", pages=2))


def test_a_password_protected_pdf_says_so(tmp_path):
    path = make.encrypted_pdf(tmp_path / "locked.pdf", ["Secret salaries."])
    with pytest.raises(DocumentError, match="encrypted with a password"):
        parse(path)


def test_a_pdf_encrypted_without_a_user_password_opens(tmp_path):
    path = make.encrypted_pdf(tmp_path / "permissions.pdf", ["Readable by anyone, printable by none."], user_password="")
    assert "Readable by anyone" in parse(path).passages[0].text


def test_a_damaged_pdf_is_named_as_such(tmp_path):
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nthis is not a pdf body" * 10)
    with pytest.raises(DocumentError, match="Not a readable PDF|No text"):
        parse(path)


def test_docx_paragraphs_headings_and_tables(tmp_path):
    path = make.docx(
        tmp_path / "handbook.docx",
        "Staff handbook",
        {"Holidays": ["Every employee has 27 days of paid leave a year."], "Expenses": ["Receipts go to Priya in finance."]},
        table=[["Office", "Opens"], ["Leeds", "08:30"], ["Porto", "09:00"]],
    )
    document = parse(path)
    assert document.kind == "docx"
    sections = {p.section: p.text for p in document.passages}
    assert "27 days" in sections["Holidays"]
    assert "Priya" in sections["Expenses"]
    assert any("Porto | 09:00" in p.text for p in document.passages), "table rows are text too"


def test_a_file_named_docx_that_is_not_one(tmp_path):
    path = tmp_path / "fake.docx"
    path.write_text("just words")
    with pytest.raises(DocumentError, match="Not a readable DOCX"):
        parse(path)


def test_html_text_without_scripts_or_styles(tmp_path):
    path = make.html(tmp_path / "page.html", "Bee keeping", {"Swarms": "Swarms leave the hive in late spring.", "Honey": "Harvest honey in August."})
    document = parse(path)
    text = " ".join(p.text for p in document.passages)
    assert "Swarms leave the hive" in text and "Harvest honey in August" in text
    assert "script text" not in text and "color" not in text
    assert {p.section for p in document.passages} >= {"Swarms", "Honey"}


def test_markdown_sections(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Garden\n\nWater the tomatoes every second morning.\n\n## Pests\n\nSlugs hate copper tape.\n", encoding="utf-8")
    sections = {p.section: p.text for p in parse(path).passages}
    assert "tomatoes" in sections["Garden"] and "copper" in sections["Pests"]


def test_text_in_utf8_and_in_windows_1252(tmp_path):
    utf8 = tmp_path / "utf8.txt"
    utf8.write_text("Crème brûlée for the café, naïvely.", encoding="utf-8")
    legacy = tmp_path / "legacy.txt"
    legacy.write_bytes("Crème brûlée for the café.".encode("cp1252"))
    assert "Crème brûlée" in parse(utf8).passages[0].text
    assert "Crème brûlée" in parse(legacy).passages[0].text


@pytest.mark.parametrize(
    "content",
    [
        os.urandom(4096),  # random bytes
        bytes.fromhex("89504e470d0a1a0a0000000d49484452") + os.urandom(2000),  # a PNG header
        b"MZ\x90\x00\x03\x00\x00\x00" + os.urandom(3000),  # a Windows executable
    ],
    ids=["random", "png", "exe"],
)
def test_a_binary_file_named_txt_is_refused(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(DocumentError, match="binary file, not text"):
        parse(path)


def test_a_500_mb_file_is_refused_by_its_size_without_reading_it(tmp_path):
    path = tmp_path / "huge.txt"
    with path.open("wb") as f:  # sparse: takes no disk space and no time
        f.truncate(500 * 1024 * 1024)
    with pytest.raises(DocumentError, match=r"Too large: 500 MB; the limit is 100 MB"):
        parse(path)


def test_empty_and_unsupported_files(tmp_path):
    empty = tmp_path / "empty.md"
    empty.write_text("")
    with pytest.raises(DocumentError, match="empty"):
        parse(empty)
    blank = tmp_path / "blank.txt"
    blank.write_text("   \n\n  \t\n")
    with pytest.raises(DocumentError, match="No text found"):
        parse(blank)
    archive = tmp_path / "photos.zip"
    archive.write_bytes(b"PK\x03\x04")
    with pytest.raises(DocumentError, match=r"Not a supported type \(\.zip\)"):
        parse(archive)


def test_a_deleted_file_is_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        parse(tmp_path / "gone.pdf")


def test_a_melange_transcript_keeps_segment_times(tmp_path):
    from engines.speech import subtitles
    from engines.base import Segment, Transcript, TranscriptInfo

    segments = [Segment(i * 4.0, i * 4.0 + 3.5, f"Segment {i} talks about topic {i}.") for i in range(80)]
    segments[50] = Segment(200.0, 203.5, "The launch date moved to the ninth of March.", speaker="Speaker 2")
    transcript = Transcript(TranscriptInfo("en", 1.0, 320.0, "tiny.en"), segments)
    path = tmp_path / "meeting.json"
    path.write_text(subtitles.to_json(transcript, {"Speaker 2": "Ana"}), encoding="utf-8")
    document = parse(path)
    assert document.kind == "transcript"
    assert all(p.start is not None and p.end is not None and p.start < p.end for p in document.passages)
    launch = next(p for p in document.passages if "ninth of March" in p.text)
    assert launch.start <= 200.0 and launch.end >= 203.5
    assert "Ana: The launch date" in launch.text, "renamed speakers carry into the passage"
    starts = [p.start for p in document.passages]
    assert starts == sorted(starts)


def test_json_that_is_not_a_transcript(tmp_path):
    other = tmp_path / "config.json"
    other.write_text('{"name": "x"}')
    with pytest.raises(DocumentError, match="not a Melange transcript"):
        parse(other)
    broken = tmp_path / "broken.json"
    broken.write_text('{"segments": [')
    with pytest.raises(DocumentError, match="Not valid JSON"):
        parse(broken)
