"""Documents to passages: one reader per format, then one chunker for all of them.

Readers turn a file into blocks of text that keep their anchor (PDF page, transcript time, nearest heading);
``chunk`` packs the blocks into passages of about ``TARGET_WORDS`` words, cut at sentence ends, that never
straddle two anchors. Anything wrong with a file raises ``DocumentError`` with a sentence a person can act on;
the indexer shows it beside the file and goes on with the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from engines.base import DOCUMENT_SUFFIXES, InputError, ParsedDocument, Passage

MAX_FILE_BYTES = 100 * 1024 * 1024  # a 500-page text PDF is ~5 MB; larger files are scans, archives or mistakes
TARGET_WORDS = 120  # all-MiniLM-L6-v2 was trained on 128 word pieces: longer passages blur its embedding
TRANSCRIPT_WORDS = 60  # about 20-30 s of speech: a citation's time span points close to the words
OVERLAP_WORDS = 20  # the last sentence(s) of a passage start the next one, so a fact cut in two is still whole once
MIN_TEXT_CHARS_PER_PAGE = 8  # a page with less text than this is a scanned image (or blank)
SNIFF_BYTES = 8192
SENTENCE_END = re.compile(r"(?<=[.!?…])[\"”’)\]]*\s+")
MARKDOWN_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")


class DocumentError(InputError):
    """The file cannot be indexed; the message says why, for the person who added it."""


@dataclass(frozen=True)
class Block:
    """A run of text with one anchor: a paragraph, a page, a transcript segment."""

    text: str
    page: int | None = None
    start: float | None = None
    end: float | None = None
    section: str = ""


def supported(path: str | Path) -> bool:
    return Path(path).suffix.lower() in DOCUMENT_SUFFIXES


def parse(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> ParsedDocument:
    """Read one file into passages. Raises ``DocumentError`` (bad file) or ``FileNotFoundError`` (gone)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DOCUMENT_SUFFIXES:
        raise DocumentError(
            f"Not a supported type ({suffix or 'no extension'}): add PDF, DOCX, Markdown, TXT, HTML or a Melange transcript (.json)."
        )
    size = path.stat().st_size
    if size > max_bytes:
        raise DocumentError(f"Too large: {size / 2**20:,.0f} MB; the limit is {max_bytes / 2**20:,.0f} MB per file.")
    if size == 0:
        raise DocumentError("The file is empty.")
    if suffix == ".pdf":
        blocks, pages, note = read_pdf(path)
        return _document("pdf", blocks, pages, note)
    if suffix == ".docx":
        return _document("docx", read_docx(path))
    if suffix in (".html", ".htm"):
        return _document("html", read_html(path))
    if suffix == ".json":
        return _document("transcript", read_transcript(path), chunk_words=TRANSCRIPT_WORDS)
    text = read_text(path)
    if suffix in (".md", ".markdown"):
        return _document("markdown", markdown_blocks(text))
    return _document("text", [Block(p) for p in paragraphs(text)])


def _document(kind: str, blocks: list[Block], pages: int = 0, note: str = "", chunk_words: int = TARGET_WORDS) -> ParsedDocument:
    passages = list(chunk(blocks, chunk_words))
    if not passages:
        raise DocumentError("No text found in the file.")
    return ParsedDocument(kind, passages, pages, note)


# ---------------------------------------------------------------- readers


def read_text(path: Path) -> str:
    """UTF-8 (with or without BOM), else Windows-1252; a file with NUL bytes or many control characters is
    binary whatever its name says."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
        if b"\x00" in head:
            raise DocumentError("This is a binary file, not text (it only has a text file's name).")
        data = head + f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    controls = sum(1 for c in text[:SNIFF_BYTES] if ord(c) < 32 and c not in "\t\n\r\f")
    if controls > max(8, len(text[:SNIFF_BYTES]) // 100):
        raise DocumentError("This is a binary file, not text (it only has a text file's name).")
    return text


def read_pdf(path: Path) -> tuple[list[Block], int, str]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            # Many PDFs are encrypted with an empty password only to set permissions; those open.
            try:
                opened = reader.decrypt("")
            except (NotImplementedError, DependencyError) as e:
                raise DocumentError(f"Encrypted with a method this reader does not support ({e}).") from e
            if not opened:
                raise DocumentError("The PDF is encrypted with a password: save an unprotected copy and add that.")
        blocks: list[Block] = []
        empty = 0
        pages = len(reader.pages)
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            if len(text.strip()) < MIN_TEXT_CHARS_PER_PAGE:
                empty += 1
                continue
            blocks.extend(Block(p, page=number) for p in paragraphs(text, pdf=True))
    except FileNotDecryptedError as e:
        raise DocumentError("The PDF is encrypted with a password: save an unprotected copy and add that.") from e
    except PdfReadError as e:
        raise DocumentError(f"Not a readable PDF ({e}).") from e
    if pages and empty == pages:
        raise DocumentError(
            f"No text in any of its {pages} page(s): a scanned PDF is pictures of pages. Run it through OCR "
            "(e.g. ocrmypdf) and add the result."
        )
    note = f"{empty} of {pages} pages had no text (scanned?) and were skipped." if empty else ""
    return blocks, pages, note


def read_docx(path: Path) -> list[Block]:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as e:
        raise DocumentError(f"Not a readable DOCX file ({e}).") from e
    blocks: list[Block] = []
    section = ""
    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if style.startswith("Heading") or style == "Title":
            section = text
        blocks.append(Block(text, section=section))
    for table in document.tables:  # tables hold facts too; one line per row
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells]
            line = " | ".join(dict.fromkeys(c for c in cells if c))  # merged cells repeat their text
            if line:
                blocks.append(Block(line, section=section))
    return blocks


def read_html(path: Path) -> list[Block]:
    from bs4 import BeautifulSoup

    text = read_text(path)
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg", "head"]):
        tag.decompose()
    for level in range(1, 7):  # headings become Markdown ones, so passages know their section
        for heading in soup.find_all(f"h{level}"):
            heading.replace_with(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    lines = soup.get_text("\n").splitlines()
    return markdown_blocks("\n".join(line.strip() for line in lines))


def read_transcript(path: Path) -> list[Block]:
    """Melange's own JSON export (``engines/speech/subtitles.to_dict``): one block per segment, with its times."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DocumentError(f"Not valid JSON ({e.msg} at line {e.lineno}).") from e
    segments = data.get("segments") if isinstance(data, dict) else None
    if not isinstance(segments, list) or "duration" not in data:
        raise DocumentError("A JSON file that is not a Melange transcript (export one from the Transcribe panel).")
    blocks = []
    for s in segments:
        try:
            text = " ".join(str(s["text"]).split())
            start, end = float(s["start"]), float(s["end"])
        except (KeyError, TypeError, ValueError) as e:
            raise DocumentError(f"A transcript segment is malformed ({e!r}).") from e
        if text:
            speaker = s.get("speaker")
            blocks.append(Block(f"{speaker}: {text}" if speaker else text, start=start, end=end))
    return blocks


# ---------------------------------------------------------------- text to blocks


def paragraphs(text: str, pdf: bool = False) -> list[str]:
    """Paragraphs, split at blank lines. A PDF's text has a line break at every line of the page: those are
    joined (a hyphen at a line's end joins the word)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = re.split(r"\n\s*\n", text)
    out = []
    for part in parts:
        if pdf:
            part = re.sub(r"(\w)-\n(\w)", r"\1\2", part)
        joined = " ".join(part.split())
        if joined:
            out.append(joined)
    return out


def markdown_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    section = ""
    for para in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = para.strip().splitlines()
        if not lines:
            continue
        body = []
        for line in lines:
            heading = MARKDOWN_HEADING.match(line)
            if heading:
                if body:
                    blocks.append(Block(" ".join(" ".join(body).split()), section=section))
                    body = []
                section = heading.group(2).strip()
                blocks.append(Block(section, section=section))
            else:
                body.append(line)
        if body:
            joined = " ".join(" ".join(body).split())
            if joined:
                blocks.append(Block(joined, section=section))
    return blocks


# ---------------------------------------------------------------- chunking


def sentences(text: str) -> list[str]:
    parts = [p.strip() for p in SENTENCE_END.split(text) if p.strip()]
    out: list[str] = []
    for part in parts:  # a "sentence" without a full stop in sight (a table, a list) is cut by words
        words = part.split()
        for i in range(0, len(words), TARGET_WORDS):
            out.append(" ".join(words[i : i + TARGET_WORDS]))
    return out


def _anchor(block: Block) -> tuple:
    return (block.page, block.section) if block.start is None else ("transcript",)


def chunk(blocks: Iterable[Block], target_words: int = TARGET_WORDS, overlap_words: int = OVERLAP_WORDS) -> Iterator[Passage]:
    """Pack blocks into passages of about ``target_words``, cut at sentence ends; a passage never spans two
    pages or two sections. Transcript segments are kept whole and the passage spans their times."""
    pieces: list[tuple[str, Block]] = []  # (sentence, the block it came from)
    anchor: tuple | None = None

    def flush() -> Iterator[Passage]:
        if not pieces:
            return
        text = " ".join(s for s, _ in pieces)
        first, last = pieces[0][1], pieces[-1][1]
        yield Passage(text, page=first.page, start=first.start, end=last.end, section=first.section)

    for block in blocks:
        if _anchor(block) != anchor:
            yield from flush()
            pieces, anchor = [], _anchor(block)
        units = [block.text] if block.start is not None else sentences(block.text)
        for unit in units:
            words = len(unit.split())
            current = sum(len(s.split()) for s, _ in pieces)
            if pieces and current + words > target_words:
                yield from flush()
                kept: list[tuple[str, Block]] = []  # the tail that starts the next passage
                for sentence, source in reversed(pieces):
                    if sum(len(s.split()) for s, _ in kept) + len(sentence.split()) > overlap_words:
                        break
                    kept.insert(0, (sentence, source))
                pieces = kept
            pieces.append((unit, block if block.start is None else replace(block, text="")))
    yield from flush()
