"""``gr.skip()`` costs nothing: an output a handler leaves as it is goes to the page as it came.

Gradio treats a skip like any other property update: it builds the output component anew from its
constructor arguments and works out its config (its API schema included) twice, for an update that
changes nothing. The page's Generate leaves four of its five outputs alone at every step preview, and the
API's ``/generate`` yields two skips every quarter second so that a client that went away closes the run:
about a millisecond a skip on the event loop's thread (a Gallery, a File, a JSON; measured with
``tests/test_skips.py``'s blocks), taken from the engine's cores on a small machine. Here a bare skip
(no property in it) is answered as Gradio would answer it, ``{"__type__": "update"}``, and only the other
outputs go through Gradio's ``postprocess_data``. A skip that sets a property, and a ``gr.State`` output
(whose value Gradio keeps on the server, not on the page), still take Gradio's own path.
"""

from __future__ import annotations

import copy
import functools

BARE_SKIP = {"__type__": "update"}


def _is_bare_skip(value) -> bool:
    # A dict first: comparing a value such as a DataFrame with a dict is not a plain True or False.
    return isinstance(value, dict) and value == BARE_SKIP


def install(blocks) -> None:
    """Wraps this Blocks' ``postprocess_data`` (an attribute of the instance, so other apps are untouched)."""
    original = blocks.postprocess_data

    @functools.wraps(original)
    async def postprocess_data(block_fn, predictions, state):
        outputs = block_fn.outputs
        if _is_bare_skip(predictions) and len(outputs) > 1:  # one skip for every output, as Gradio allows
            predictions = [BARE_SKIP] * len(outputs)
        # One output: Gradio takes the prediction itself as its value (a list is a value there).
        if len(outputs) < 2 or getattr(block_fn, "batch", False) or not isinstance(predictions, (list, tuple)) or len(predictions) != len(outputs):
            return await original(block_fn, predictions, state)
        bare = [i for i, (p, block) in enumerate(zip(predictions, outputs)) if _is_bare_skip(p) and not getattr(block, "stateful", False)]
        if not bare:
            return await original(block_fn, predictions, state)
        kept = [i for i in range(len(outputs)) if i not in bare]
        answer = [dict(BARE_SKIP) for _ in outputs]
        if kept:
            fn = copy.copy(block_fn)
            fn.outputs = [outputs[i] for i in kept]
            # With one output, Gradio takes the prediction itself (not a list of one) as its value.
            rest = predictions[kept[0]] if len(kept) == 1 else [predictions[i] for i in kept]
            for i, value in zip(kept, await original(fn, rest, state)):
                answer[i] = value
        return answer

    blocks.postprocess_data = postprocess_data
