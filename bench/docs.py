"""Documents benchmark: a corpus with known answers, indexed and asked by the raw engines and by the app.

    python bench/docs.py [--docs 10] [--pages 10] [--facts 40] [--runs 2] [--answers 20]

The bench writes its own corpus: PDFs of ~300-word pages of business prose, with one fact planted on some
pages ("The Vorlane project has a budget of 48,500 euros."), each with a question worded differently ("How
much money is set aside for the Vorlane project?"). Facts come in six shapes, each shared by several facts
that differ only in the made-up name, so retrieval must find the right one. Prints JSON:

- indexing throughput in PDF pages per second: raw (``Indexer.run`` here, model loaded, the app's backend:
  ONNX Runtime int8) and the app (its Documents tab indexing the folder, as the host does, timed by the app's
  own progress line), with raw PyTorch fp32 (the fallback, and the backend before) in the same run, runs
  alternating; pages per CPU-second of each, and parse-only pages per second, to show where the time goes;
- the work per page (tokens, GFLOP of the model's forward pass) and the GFLOP/s each backend reached per
  CPU-second; the int8 vectors' cosine to fp32's on the corpus's passages (mean and min);
- recall@5: how often the passage holding the answer is among the 5 passages handed to the model, for both
  backends;
- answer accuracy of the embedded chat model (SmolLM2-135M, greedy, 48 new tokens): the reply contains the
  answer, raw (``LlamaChatEngine`` with the same grounded prompt) and through the page's own Send.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import find_event, machine, running_app, sse_call  # noqa: E402
from engines.docs import parse as docs_parse, retrieval  # noqa: E402
from engines.base import ChatMessage, ChatParams, RetrievalParams  # noqa: E402
from engines.docs.index import DocsIndex  # noqa: E402
from engines.docs.indexer import Indexer  # noqa: E402
from engines.docs.embedder import Embedder  # noqa: E402
from tests import docs_fixtures as make  # noqa: E402

SYLLABLES = "vor lane quil mere tas ven dro kal bri sen mo thar ul pen gra vik lo sa rin bel cor fen dal ish".split()
CITIES = ["Lisbon", "Tallinn", "Ghent", "Bergen", "Lyon", "Kraków", "Bilbao", "Turku", "Graz", "Malmö", "Cork", "Brno"]
PEOPLE = ["Amara Osei", "Jonas Lindqvist", "Priya Raman", "Mateo Ferrer", "Ines Kowalska", "Tobias Grün", "Leila Haddad",
          "Noah Fitzgerald", "Yuki Tanabe", "Sofia Marchetti", "Emeka Nwosu", "Clara Aubert"]  # fmt: skip
COLOURS = ["turquoise", "crimson", "ochre", "lavender", "olive", "amber", "indigo", "coral", "teal", "magenta"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November"]
# (fact, question, answer) with {x} a made-up name and {v} the value.
TEMPLATES = [
    ("The {x} project has a budget of {v} euros for next year.", "How much money is set aside for the {x} project?", "money"),
    ("The {x} office is located in {v}, close to the railway station.", "In which city can the {x} office be found?", "city"),
    ("{v} has led the {x} team since the reorganisation.", "Who is in charge of the {x} team?", "person"),
    ("The {x} press must be serviced every {v} days by a certified technician.", "How often does the {x} press need maintenance?", "days"),
    ("The password hint for the {x} archive is the colour {v}.", "What is the clue for the {x} archive's password?", "colour"),
    ("The {x} conference will take place on the {v}.", "On what date is the {x} conference held?", "date"),
]
FILLER = [
    "The quarterly review covered staffing, suppliers and the schedule for the coming months.",
    "Several departments asked for clearer guidance on travel and expenses.",
    "The committee noted that the budget process would follow last year's calendar.",
    "Teams were reminded to keep their project documentation up to date.",
    "Our offices will keep their current opening hours during the summer.",
    "Maintenance of shared equipment is planned well ahead to avoid interruptions.",
    "The steering group discussed risks, dependencies and the milestones still open.",
    "Feedback from customers was mostly positive, with a few requests for faster delivery.",
    "Archive access is granted by the records team on request.",
    "Conference attendance should be agreed with line managers in advance.",
    "The new intranet pages describe each team's responsibilities in detail.",
    "Training sessions on safety procedures take place every spring.",
    "A working group is reviewing how meeting notes are stored and shared.",
    "Invoices above the usual threshold need a second signature.",
    "The board thanked everyone for their work during a demanding period.",
]


def value(kind: str, rng: random.Random) -> str:
    if kind == "money":
        return f"{rng.randint(12, 980)},{rng.randint(0, 9)}00"
    if kind == "city":
        return rng.choice(CITIES)
    if kind == "person":
        return rng.choice(PEOPLE)
    if kind == "days":
        return str(rng.randint(7, 120))
    if kind == "colour":
        return rng.choice(COLOURS)
    return f"{rng.randint(2, 27)}th of {rng.choice(MONTHS)}"


def build_corpus(root: Path, docs: int, pages: int, facts: int, seed: int = 13) -> list[dict]:
    """``docs`` PDFs of ``pages`` pages each, ``facts`` of those pages carrying one fact; the questions."""
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < facts:
        names.add("".join(rng.sample(SYLLABLES, 2)).capitalize())
    slots = rng.sample([(d, p) for d in range(docs) for p in range(pages)], facts)
    questions, planted = [], {}
    for i, (name, slot) in enumerate(zip(sorted(names), slots)):
        fact, question, kind = TEMPLATES[i % len(TEMPLATES)]
        answer = value(kind, rng)
        planted[slot] = fact.format(x=name, v=answer)
        questions.append({"question": question.format(x=name), "answer": answer, "file": f"report-{slot[0]:02d}.pdf", "page": slot[1] + 1})
    for d in range(docs):
        texts = []
        for p in range(pages):
            sentences = [rng.choice(FILLER) for _ in range(22)]  # ~300 words
            if (d, p) in planted:
                sentences.insert(rng.randint(3, 18), planted[(d, p)])
            paragraphs = [" ".join(sentences[i : i + 6]) for i in range(0, len(sentences), 6)]
            texts.append(f"Report {d + 1}, page {p + 1}.\n\n" + "\n\n".join(paragraphs))
        make.pdf(root / f"report-{d:02d}.pdf", texts)
    return questions


def normalise(text: str) -> str:
    return re.sub(r"[\s,]", "", text.lower())


def correct(reply: str, answer: str) -> bool:
    return normalise(answer) in normalise(reply)


# ---------------------------------------------------------------- raw


def forward_gflop(embedder: Embedder, texts: list[str]) -> tuple[int, float]:
    """(tokens, GFLOP) of the model's forward pass over ``texts``, each alone as the int8 backend runs them:
    per layer and token, the four attention projections and the two feed-forward matrices (2 FLOP a
    multiply-add), plus the attention scores and their weighted sum over the text's own length."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(embedder.model_dir, local_files_only=True)
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    lengths = [min(len(ids), 256) for ids in embedder._tokenizer(texts)["input_ids"]]
    flop = sum(layers * (n * 2 * (4 * h * h + 2 * h * ffn) + 4 * n * n * h) for n in lengths)
    return sum(lengths), flop / 1e9


def raw_index(corpus: Path, embedder: Embedder, work: Path) -> dict:
    index = DocsIndex(work / f"raw-{uuid.uuid4().hex[:6]}.db")
    collection = index.create_collection("bench", "local", str(corpus))
    started, cpu = time.perf_counter(), time.process_time()
    progress = Indexer(index, embedder).run(collection.id)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return {"index": index, "collection": collection.id, "seconds": seconds, "cpu_seconds": cpu_seconds, "pages": progress.pages,
            "passages": progress.passages, "failed": progress.failed}  # fmt: skip


def parse_only(corpus: Path) -> dict:
    started, cpu = time.perf_counter(), time.process_time()
    pages = passages = 0
    for path in sorted(corpus.glob("*.pdf")):
        document = docs_parse.parse(path)
        pages += document.pages
        passages += len(document.passages)
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu, "pages": pages, "passages": passages}


def recall_at_5(index: DocsIndex, collection: str, embedder: Embedder, questions: list[dict]) -> tuple[float, list]:
    misses = []
    for q in questions:
        hits = retrieval.search(index, embedder, [collection], q["question"], RetrievalParams(k=5))
        if not any(h.file == q["file"] and h.page == q["page"] and q["answer"] in h.text for h in hits):
            misses.append(q["question"])
    return 1 - len(misses) / len(questions), misses


def grounded_prompt(index, collection, embedder, question: str, n_ctx: int, params: ChatParams) -> list[ChatMessage]:
    """What Chat sends the model (ui/documents.Documents.ground, without the page)."""
    hits = retrieval.search(index, embedder, [collection], question)
    budget = retrieval.sources_budget(n_ctx, params.max_tokens, retrieval.grounded_question("", question))
    context, _ = retrieval.pack(hits, budget)
    return [ChatMessage("user", retrieval.grounded_question(context, question))]


# ---------------------------------------------------------------- app


def sse_outputs(http, fn_index: int, data: list, session: str) -> list:
    """One page event through the queue, as the browser sends it; its final outputs."""
    http.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session}).raise_for_status()
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    if not msg.get("success", True):
                        raise RuntimeError(msg.get("output"))
                    return msg["output"]["data"]
    raise RuntimeError("the event stream closed before the event completed")


def app_index(url: str, corpus: Path) -> dict:
    """The host indexes a folder through the Documents tab; polled as the page's timer does."""
    import httpx

    add = find_event(url, elem_id="docs-host-add")[0]
    select = find_event(url, elem_id="docs-collections", trigger="input")[0]
    session = uuid.uuid4().hex
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as http:
        collection = sse_outputs(http, add, [str(corpus)], session)[0]["value"]
        while True:
            html = sse_outputs(http, select, [collection], session)[1]
            if "<progress" not in html:
                break
            time.sleep(0.2)
    wall = time.perf_counter() - started
    last = re.search(r"Last run: ([\d,]+) \(re\)indexed.* in ([\d.]+) s", html)
    if last is None:
        raise RuntimeError(f"no finished run in {html!r}")
    return {"collection": collection, "files": int(last.group(1).replace(",", "")), "seconds": float(last.group(2)), "wall_seconds": wall}


def app_answer(url: str, collection: str, question: str, max_tokens: int) -> str:
    import httpx

    from bench.chat import page_reply

    fn_index, types = find_event(url, elem_id="chat-input", trigger="submit")
    values = iter([question, [collection], "", 0.0, 0.95, 40, 1.1, max_tokens, 1, None])
    data = [None if kind == "state" else next(values) for kind in types]
    refresh = find_event(url, elem_id="chat-documents", trigger="focus")[0]
    reply = {"text": ""}
    session = uuid.uuid4().hex
    with httpx.Client(base_url=url, timeout=300) as http:
        sse_outputs(http, refresh, [], session)  # as the page does: the dropdown learns this person's collections
        sse_call(http, fn_index, data, session, lambda out: reply.update(text=page_reply(out)))
    return reply["text"].split('\n\n<div class="melange-sources">')[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--facts", type=int, default=40)
    parser.add_argument("--runs", type=int, default=2, help="indexing runs on each side, alternating")
    parser.add_argument("--answers", type=int, default=20, help="questions put to the chat model on each side")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()

    from engines import embedded
    from engines.chat.llama import LlamaChatEngine

    work = Path(tempfile.mkdtemp(prefix="melange-bench-docs-"))
    try:
        corpus = work / "corpus-0"
        corpus.mkdir()
        questions = build_corpus(corpus, args.docs, args.pages, args.facts)
        for run in range(1, args.runs):  # the app keeps a folder's collection: each of its runs gets a fresh copy
            shutil.copytree(corpus, work / f"corpus-{run}")
        embedder = Embedder(cache_dir=work / "embedder-cache")  # the app's backend, built here as the app does
        embedder.load()
        fp32 = Embedder(backend="torch")
        fp32.load()
        parsed = parse_only(corpus)
        raw_runs, app_runs, fp32_runs = [], [], []
        warm = work / "warm-up"
        warm.mkdir()
        (warm / "warm.md").write_text("# Warm-up\n\nLoads the embedding model in the app before timing.\n")
        with running_app("--device", "cpu") as url:
            app_index(url, warm)
            for run in range(args.runs):
                raw_runs.append(raw_index(corpus, embedder, work))
                app_runs.append(app_index(url, work / f"corpus-{run}"))
                fp32_runs.append(raw_index(corpus, fp32, work))
            last = raw_runs[-1]
            recall, misses = recall_at_5(last["index"], last["collection"], embedder, questions)
            fp32_recall, fp32_misses = recall_at_5(fp32_runs[-1]["index"], fp32_runs[-1]["collection"], fp32, questions)
            passages = [p.text for path in sorted(corpus.glob("*.pdf")) for p in docs_parse.parse(path).passages]
            cosine = (embedder.embed(passages) * fp32.embed(passages)).sum(axis=1)
            tokens, gflop = forward_gflop(embedder, passages)
            threads = max(1, (os.cpu_count() or 2) - 1)  # the app's own default
            chat = LlamaChatEngine(embedded.smollm2_gguf(), "cpu", display_name=embedded.SMOLLM2_NAME, threads=threads)
            params = ChatParams(temperature=0.0, top_p=0.95, top_k=40, repeat_penalty=1.1, max_tokens=args.max_tokens, seed=1)
            raw_right = app_right = same = 0
            asked = questions[: args.answers]
            if not asked:
                chat = None
            examples = []
            for q in asked if chat is not None else []:
                prompt = grounded_prompt(last["index"], last["collection"], embedder, q["question"], chat.n_ctx, params)
                raw_reply = "".join(d.text for d in chat.stream(prompt, params))
                app_reply = app_answer(url, app_runs[-1]["collection"], q["question"], args.max_tokens)
                raw_right += correct(raw_reply, q["answer"])
                app_right += correct(app_reply, q["answer"])
                same += raw_reply.strip() == app_reply.strip()
                if len(examples) < 3:
                    examples.append({"question": q["question"], "answer": q["answer"], "reply": raw_reply.strip()})
        pages = raw_runs[0]["pages"]
        raw_pps = [r["pages"] / r["seconds"] for r in raw_runs]
        app_pps = [pages / a["seconds"] for a in app_runs]
        fp32_pps = [r["pages"] / r["seconds"] for r in fp32_runs]
        raw_cpu = statistics.median(r["pages"] / r["cpu_seconds"] for r in raw_runs)
        fp32_cpu = statistics.median(r["pages"] / r["cpu_seconds"] for r in fp32_runs)
        parse_cpu_per_page = parsed["cpu_seconds"] / parsed["pages"]
        result = {
            "benchmark": "docs",
            "machine": machine(),
            "corpus": {"pdfs": args.docs, "pages": pages, "passages": raw_runs[0]["passages"], "questions": len(questions),
                       "words_per_page": 300},  # fmt: skip
            "embedder": {"model": embedder.name, "backend": embedder.active, "identity": embedder.identity,
                         "threads_per_call": embedder.threads, "parallel_calls": embedder.parallel,
                         "fp32_backend": fp32.active, "fp32_threads": fp32.threads},  # fmt: skip
            "indexing": {
                "raw_pages_per_second": {"median": statistics.median(raw_pps), "runs": raw_pps},
                "app_pages_per_second": {"median": statistics.median(app_pps), "runs": app_pps},
                "app_over_raw": statistics.median(app_pps) / statistics.median(raw_pps),
                "app_wall_seconds_including_polling": [a["wall_seconds"] for a in app_runs],
                "raw_passages_per_second": statistics.median(r["passages"] / r["seconds"] for r in raw_runs),
                # CPU time the raw run used: on a machine nobody else loads, one embedding thread's wall rate.
                "raw_pages_per_cpu_second": raw_cpu,
                "fp32_raw_pages_per_second": {"median": statistics.median(fp32_pps), "runs": fp32_pps},
                "fp32_raw_pages_per_cpu_second": fp32_cpu,
                "raw_over_fp32_raw": statistics.median(raw_pps) / statistics.median(fp32_pps),
                "raw_over_fp32_raw_per_cpu_second": raw_cpu / fp32_cpu,
                "parse_only_pages_per_second": parsed["pages"] / parsed["seconds"],
                "failed_files": raw_runs[0]["failed"],
            },
            "work_per_page": {
                "tokens": tokens / pages,
                "gflop": gflop / pages,
                # what the embedding alone reached, per CPU-second (parsing's share taken out)
                "int8_gflop_per_cpu_second": gflop / pages / (1 / raw_cpu - parse_cpu_per_page),
                "fp32_gflop_per_cpu_second": gflop / pages / (1 / fp32_cpu - parse_cpu_per_page),
                "parse_cpu_seconds": parse_cpu_per_page,
            },
            "int8_cosine_to_fp32": {"passages": len(passages), "mean": float(cosine.mean()), "min": float(cosine.min())},
            "recall_at_5": recall,
            "recall_misses": misses,
            "fp32_recall_at_5": fp32_recall,
            "fp32_recall_misses": fp32_misses,
            "answer_accuracy": {
                "model": embedded.SMOLLM2_NAME,
                "max_tokens": args.max_tokens,
                "questions": len(asked),
                "raw": raw_right / max(1, len(asked)),
                "app_page_send": app_right / max(1, len(asked)),
                "same_reply_raw_and_app": same / max(1, len(asked)),
                "examples": examples,
            },
        }
        print(json.dumps(result, indent=2, ensure_ascii=False))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
