"""The live-caption benches time each word against the file transcript's word that it matches."""

import pytest

from bench.common import matched_latencies


def test_a_word_is_timed_against_the_file_word_it_matches_not_the_one_at_its_index():
    file_words, ends = ["The", "old", "clock", "stopped."], [1.0, 2.0, 3.0, 4.0]
    live = ["The", "big", "old,", "clock", "stopped"]  # a word the file did not hear: every later index shifts
    first_seen = {0: 1.1, 1: 1.5, 2: 2.2, 3: 3.3, 4: 4.5}
    assert matched_latencies(file_words, ends, live, first_seen) == pytest.approx([0.1, 0.2, 0.3, 0.5])
    assert matched_latencies(file_words, ends, [], {}) == []
