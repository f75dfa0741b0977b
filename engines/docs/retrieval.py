"""Hybrid retrieval over the documents index, and packing what it finds into a chat prompt.

Two searches rank the passages of the chosen collections — FTS5's BM25 on the question's words, and cosine
similarity of all-MiniLM-L6-v2 embeddings — and reciprocal rank fusion (score = Σ 1/(k + rank)) merges them:
words catch names, codes and numbers the embedding blurs; the embedding catches paraphrases. A passage is
kept only when its embedding is at least ``min_similarity`` close to the question, so a question the
documents do not cover finds nothing (and the chat says so) instead of the least bad passages.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from engines.base import Hit, RetrievalParams
from engines.docs.index import DocsIndex

STOPWORDS = frozenset(
    """a about above after again all am an and any are as at be because been before being below between both but by
    can could did do does doing down during each few for from further had has have having he her here hers him his
    how i if in into is it its itself just me more most my no nor not now of off on once only or other our ours out
    over own same she should so some such than that the their theirs them then there these they this those through
    to too under until up very was we were what when where which while who whom why will with would you your yours
    tell say said please know give find show""".split()
)
WORD = re.compile(r"\w+", re.UNICODE)
TEMPLATE_MARGIN = 64  # tokens the chat template's role markers take around the messages


def fts_query(question: str) -> str:
    """The question's content words as an FTS5 OR query (each quoted, so no word is read as an operator)."""
    words = [w for w in WORD.findall(question.lower()) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


def search(
    index: DocsIndex, embedder, collection_ids: list[str], question: str, params: RetrievalParams = RetrievalParams()
) -> list[Hit]:
    """The ``params.k`` best passages about ``question`` in these collections, best first; [] when none is close."""
    params.check()
    if not collection_ids or not question.strip():
        return []
    ids, matrix = index.vectors(collection_ids)
    if not len(ids):
        return []
    query = embedder.embed([question])[0]
    similarities = matrix @ query
    n = min(params.candidates, len(ids))
    top = np.argpartition(-similarities, n - 1)[:n]
    top = top[np.argsort(-similarities[top], kind="stable")]
    vector_ranked = [int(i) for i in ids[top]]
    lexical_ranked = index.lexical(collection_ids, fts_query(question), params.candidates)

    fused: dict[int, float] = {}
    for ranking in (vector_ranked, lexical_ranked):
        for rank, passage_id in enumerate(ranking, start=1):
            fused[passage_id] = fused.get(passage_id, 0.0) + 1.0 / (params.rrf_k + rank)
    similarity = {int(ids[i]): float(similarities[i]) for i in top}
    lexical_only = [pid for pid in lexical_ranked if pid not in similarity]
    if lexical_only:
        for i in np.nonzero(np.isin(ids, lexical_only))[0]:
            similarity[int(ids[i])] = float(similarities[i])
    relevant = [pid for pid in fused if similarity.get(pid, -1.0) >= params.min_similarity]
    best = sorted(relevant, key=lambda pid: (-fused[pid], -similarity[pid]))[: params.k]
    stored = index.passages(best)
    vector_rank = {pid: r for r, pid in enumerate(vector_ranked, start=1)}
    lexical_rank = {pid: r for r, pid in enumerate(lexical_ranked, start=1)}
    return [
        Hit(
            pid, stored[pid].collection, stored[pid].file, stored[pid].text, stored[pid].page, stored[pid].start,
            stored[pid].end, stored[pid].section, fused[pid], similarity[pid], lexical_rank.get(pid), vector_rank.get(pid),
        )  # fmt: skip
        for pid in best
        if pid in stored
    ]


# ---------------------------------------------------------------- the prompt


def approx_tokens(text: str) -> int:
    """An over-estimate of a text's tokens (about 4 characters a token in English for the models Melange
    runs; 3 leaves room for other languages and numbers). Over-estimating only drops a passage."""
    return len(text) // 3 + 1


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def label(hit) -> str:
    """Where a passage is: "report.pdf, page 3", "meeting.json, 01:23–01:54", "notes.md, Budget"."""
    if hit.page is not None:
        return f"{hit.file}, page {hit.page}"
    if hit.start is not None:
        end = f"–{clock(hit.end)}" if hit.end is not None else ""
        return f"{hit.file}, {clock(hit.start)}{end}"
    if hit.section:
        return f"{hit.file}, “{hit.section}”"
    return hit.file


def sources_budget(n_ctx: int, max_tokens: int, other_text: str) -> int:
    """Tokens the passages may take: what the engine leaves the prompt (``chat.llama`` keeps
    min(max_tokens, n_ctx/2) for the reply), less the rest of the prompt, and at most two thirds of it so the
    latest turns of the conversation still fit."""
    prompt = n_ctx - min(max_tokens, n_ctx // 2) - TEMPLATE_MARGIN
    return max(0, min(prompt - approx_tokens(other_text), prompt * 2 // 3))


def pack(hits: list[Hit], budget: int, count: Callable[[str], int] = approx_tokens) -> tuple[str, list[Hit]]:
    """Numbered passages, best first, as many as fit ``budget`` tokens; and the hits that went in."""
    blocks: list[str] = []
    used: list[Hit] = []
    spent = 0
    for hit in hits:
        block = f"[{len(used) + 1}] {label(hit)}\n{hit.text}"
        cost = count(block) + 1
        if spent + cost > budget:
            continue  # a long passage may not fit where a shorter one further down does
        blocks.append(block)
        used.append(hit)
        spent += cost
    return "\n\n".join(blocks), used


def grounded_question(context: str, question: str) -> str:
    """The user's message as the model gets it: the passages first, the question last (small models answer the
    last thing they read)."""
    return (
        "Sources:\n\n"
        f"{context}\n\n"
        "Answer the question using only these sources, and cite them like [1]. If they do not contain the "
        "answer, say that the documents do not say.\n\n"
        f"Question: {question}"
    )
