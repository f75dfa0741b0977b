"""Real documents made in the test: PDFs by reportlab (text, scanned-like image-only, encrypted by pypdf),
DOCX by python-docx, HTML, Markdown and Melange's own transcript JSON."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path


def pdf(path: Path, pages: list[str]) -> Path:
    """A PDF with a real text layer: each string is one page, wrapped at 90 characters."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    for page in pages:
        text = c.beginText(50, 800)
        text.setFont("Helvetica", 10)
        for paragraph in page.split("\n\n"):
            for line in textwrap.wrap(paragraph, 90):
                text.textLine(line)
            text.textLine("")
        c.drawText(text)
        c.showPage()
    c.save()
    return path


def scanned_pdf(path: Path, pages: int = 2) -> Path:
    """What a scanner makes: each page is a picture of text, with no text layer."""
    from PIL import Image, ImageDraw
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    for number in range(pages):
        image = Image.new("L", (600, 800), 255)
        draw = ImageDraw.Draw(image)
        for row in range(20):
            draw.text((40, 40 + row * 30), f"Scanned page {number + 1}, line {row + 1}: the words are only pixels.", fill=0)
        c.drawImage(ImageReader(image), 30, 30, width=535, height=780)
        c.showPage()
    c.save()
    return path


def encrypted_pdf(path: Path, pages: list[str], password: str = "s3cret", user_password: str | None = None) -> Path:
    """``pages`` encrypted with AES-256 by pypdf; ``user_password=""`` makes one that opens without a password."""
    from pypdf import PdfReader, PdfWriter

    plain = pdf(path.with_name(path.stem + "-plain.pdf"), pages)
    writer = PdfWriter()
    for page in PdfReader(plain).pages:
        writer.add_page(page)
    writer.encrypt(user_password=password if user_password is None else user_password, owner_password=password, algorithm="AES-256")
    with path.open("wb") as f:
        writer.write(f)
    plain.unlink()
    return path


def docx(path: Path, title: str, sections: dict[str, list[str]], table: list[list[str]] | None = None) -> Path:
    import docx as python_docx

    document = python_docx.Document()
    document.add_heading(title, level=0)
    for heading, paragraphs in sections.items():
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                t.cell(r, c).text = value
    document.save(str(path))
    return path


def html(path: Path, title: str, sections: dict[str, str]) -> Path:
    body = "".join(f"<h2>{h}</h2>\n<p>{p}</p>\n" for h, p in sections.items())
    path.write_text(
        f"<!doctype html><html><head><title>{title}</title><style>p {{ color: red }}</style>"
        f"<script>var hidden = 'script text is not content';</script></head>"
        f"<body><nav>Home | About</nav><h1>{title}</h1>\n{body}</body></html>",
        encoding="utf-8",
    )
    return path


def transcript_json(path: Path, segments: list[tuple[float, float, str]], speaker: str | None = None) -> Path:
    """The shape ``engines.speech.subtitles.to_dict`` exports."""
    data = {
        "model": "Whisper tiny.en (embedded)",
        "language": "en",
        "language_probability": 1.0,
        "duration": segments[-1][1] if segments else 0.0,
        "options": None,
        "speakers": [speaker] if speaker else [],
        "text": " ".join(t for _, _, t in segments),
        "segments": [{"start": s, "end": e, "text": t, "speaker": speaker, "words": []} for s, e, t in segments],
    }
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path
