"""Tracing: spans and their documents (checked against a brute-force search), generations of an overfit model
traced to the records it learned, nothing for unseen text, expert routing, privacy, the command line."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from flexaudit.errors import IntegrityError
from flexaudit.moe.merge import open_model
from flexaudit.moe.tokenizer import load_tokenizer
from flexaudit.trace import DEFAULT_MIN_TOKENS, open_index, trace_output, trace_texts
from flexaudit.trace.routing import route_tokens
from flexaudit.trace.spans import encode, maximal_spans

from ..conftest import invoke, one_error_line

# --- spans ------------------------------------------------------------------------------------------------

def brute_force_spans(corpus: list[list[int]], ids: list[int], min_tokens: int) -> list[tuple[int, int, int, set[int]]]:
    """Maximal spans by definition: (start, end, occurrences, documents), the slow way."""
    def occurrences(piece):
        hits = [(d, i) for d, doc in enumerate(corpus) for i in range(len(doc) - len(piece) + 1)
                if doc[i : i + len(piece)] == piece]
        return len(hits), {d for d, _ in hits}

    spans, last_end = [], 0
    for start in range(len(ids)):
        end = start
        while end < len(ids) and occurrences(ids[start : end + 1])[0]:
            end += 1
        if end - start >= min_tokens and end > last_end:
            count, docs = occurrences(ids[start:end])
            spans.append((start, end, count, docs))
            last_end = end
    return spans


def test_spans_match_a_brute_force_search(records_index, overfit_anchor, record_list):
    tokenizer = load_tokenizer(overfit_anchor)
    index = open_index(records_index)
    corpus = [encode(tokenizer, t)[0] for _, t in record_list]
    rng = random.Random(0)
    queries = [record_list[0][1] + " and then " + record_list[3][1][:60],  # two documents, one shared sentence
               "Unrelated words; " + record_list[5][1][10:70] + " with noise " + record_list[6][1][:40]]
    for _ in range(4):  # pieces of records glued together at random cut points
        queries.append(" ".join(t[rng.randrange(0, 20): rng.randrange(40, len(t))] for _, t in rng.sample(record_list, 3)))
    for query in queries:
        ids = encode(tokenizer, query)[0]
        for min_tokens in (1, 4, DEFAULT_MIN_TOKENS):
            expected = brute_force_spans(corpus, ids, min_tokens)
            found = [(m.start, m.end, m.occurrences, set(index.document_of(m.pointers).tolist()))
                     for m in maximal_spans(index, ids, min_tokens=min_tokens)]
            assert found == expected, (query, min_tokens)


def test_counts_documents_and_cap(records_index, overfit_anchor, record_list):
    tokenizer = load_tokenizer(overfit_anchor)
    shared = " Follow-up with Dr. Ingeborg Halvorsen at the Larchmere clinic in two weeks."
    [result] = trace_texts(records_index, tokenizer, [shared], reveal=True)
    [span] = result.spans
    holders = [i for i, t in record_list if shared in t]
    assert len(holders) == 2
    assert (span.occurrences, span.document_count) == (2, 2)
    assert sorted(d.id for d in span.documents) == sorted(holders)
    assert all(d.occurrences == 1 for d in span.documents)
    [capped] = trace_texts(records_index, tokenizer, [shared], max_documents=1)
    assert capped.spans[0].document_count == 2 and len(capped.spans[0].documents) == 1  # totals stay complete


def test_overfit_generations_trace_back_to_their_records(overfit_anchor, overfit_members, records_index, record_list):
    """The overfit model continues the first words of each record it trained on; the continuations are found in
    the index, in exactly the records that hold them, and most of them in the very record prompted."""
    texts = dict(record_list)
    own = 0
    for record_id in overfit_members:
        prompt = " ".join(texts[record_id].split()[:3])
        result = trace_output(overfit_anchor, records_index, prompt=prompt, max_new_tokens=40)
        assert result.text.startswith(prompt) and result.prompt_tokens > 0
        for span in result.spans:
            assert span.generated_tokens >= 1 and span.tokens >= DEFAULT_MIN_TOKENS
            holders = {i for i, t in record_list if span.text in t}
            assert {d.id for d in span.documents} == holders  # the right records, all of them
            assert span.occurrences == sum(t.count(span.text) for _, t in record_list)
        long = [s for s in result.spans if s.generated_tokens >= DEFAULT_MIN_TOKENS]
        own += any(record_id in {d.id for d in s.documents} for s in long)
    assert own >= len(overfit_members) // 2, own


def test_unseen_text_has_no_spans(overfit_anchor, records_index, fresh_sentence, pool, clinical_index):
    assert trace_output(overfit_anchor, records_index, text=fresh_sentence).spans == []
    tokenizer = load_tokenizer(overfit_anchor)
    longest = max((m.end - m.start for m in maximal_spans(open_index(records_index), encode(tokenizer, fresh_sentence)[0],
                                                            min_tokens=1)), default=0)
    assert longest < DEFAULT_MIN_TOKENS
    # the same against a larger index of real-looking records with the 512-token test vocabulary
    result = trace_output(pool, clinical_index, text=fresh_sentence)
    assert result.spans == [] and result.coverage == 0.0


def test_refuses_an_index_built_with_another_tokenizer(pool, records_index, fresh_sentence):
    with pytest.raises(IntegrityError, match="another tokenizer"):
        trace_output(pool, records_index, text=fresh_sentence)
    result = invoke("trace", pool, "--index", records_index, "--text", fresh_sentence)
    assert result.exit_code == 3 and "another tokenizer" in one_error_line(result)
    with pytest.raises(IntegrityError, match="another tokenizer"):
        trace_texts(records_index, load_tokenizer(pool), [fresh_sentence])


# --- experts ----------------------------------------------------------------------------------------------

def test_routing_attribution_per_token_and_span(pool, clinical_index, corpus_dir):
    record = json.loads((corpus_dir / "clinical.jsonl").read_text().splitlines()[0])["text"][:300]
    result = trace_output(pool, clinical_index, text=record)
    assert result.experts == ["public", "clinical", "finance"]
    shares = np.array(result.token_experts)
    assert shares.shape == (result.tokens, 3) and np.allclose(shares.sum(1), 1.0, atol=1e-5)
    [span] = result.spans  # the record is indexed: it is found whole
    assert (span.start, span.end, span.document_count) == (0, result.tokens, 1)
    weights = {e.name: e.weight for e in span.experts}
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert span.top_expert == max(weights, key=weights.get)
    assert weights == pytest.approx(dict(zip(result.experts, shares[span.start : span.end].mean(0))), abs=1e-5)
    assert all(0.0 <= e.selected <= 1.0 for e in span.experts)

    without = trace_output(pool, clinical_index, text=record, exclude=["finance"])
    assert without.experts == ["public", "clinical"]
    assert {e.name for e in without.spans[0].experts} == {"public", "clinical"}


def test_routing_follows_the_router(pool):
    """An expert the router can never choose gets no weight; top-k of the rest share all of it."""
    model, names, tokenizer_dir = open_model(pool)
    ids = encode(load_tokenizer(tokenizer_dir), "Patient reports chest pain since Tuesday.")[0]
    model.mask_experts([1])  # clinical's router logit is minus infinity
    routing = route_tokens(model, ids, names)
    assert np.allclose(routing.weight[:, 1], 0.0) and np.allclose(routing.selected[:, 1], 0.0)
    assert np.allclose(routing.selected[:, [0, 2]], 1.0)  # top-2 of the two that remain: both, in every layer
    # windows of the trained context give the same routing for the first window as a single pass
    long_ids = (ids * 40)[: model.config.max_seq_len + 5]
    assert np.allclose(route_tokens(model, long_ids, names).weight[: len(ids)], routing.weight)


# --- privacy and the command line -------------------------------------------------------------------------

def test_documents_text_only_with_reveal(records_index, overfit_anchor, record_list):
    tokenizer = load_tokenizer(overfit_anchor)
    record_id, text = record_list[2]
    middle = text[20:70]  # the query holds only the middle of the record
    [hidden] = trace_texts(records_index, tokenizer, [middle])
    assert hidden.text is None and hidden.token_chars is None
    assert hidden.spans[0].text is None and hidden.spans[0].documents[0].context_before is None
    assert text[:15] not in json.dumps(hidden.as_dict())
    [shown] = trace_texts(records_index, tokenizer, [middle], reveal=True)
    ref = shown.spans[0].documents[0]
    assert ref.id == record_id and text.startswith(ref.context_before + shown.spans[0].text)

    plain = invoke("trace", overfit_anchor, "--index", records_index, "--text", middle)
    assert plain.exit_code == 0, plain.output
    assert record_id in plain.stdout and middle[5:30] in plain.stdout  # the user's own query is shown
    assert text[:15] not in plain.stdout  # the record's text outside the query is not
    revealed = invoke("trace", "output", overfit_anchor, "--index", records_index, "--text", middle, "--reveal")
    assert revealed.exit_code == 0 and text[:15] in revealed.stdout


def test_trace_json_from_a_prompt(overfit_anchor, overfit_members, records_index, record_list):
    text = dict(record_list)[overfit_members[0]]
    prompt = " ".join(text.split()[:3])
    result = invoke("trace", overfit_anchor, "--index", records_index, "--prompt", prompt, "--max-new-tokens", "30",
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["text"].startswith(prompt) and report["experts"] == ["public"]
    assert report["min_tokens"] == DEFAULT_MIN_TOKENS and report["index"]["documents"] == len(record_list)
    assert len(report["token_experts"]) == report["tokens"] == len(report["token_chars"])
    for span in report["spans"]:
        assert span["generated_tokens"] >= 1 and span["top_expert"] == "public"
        assert report["text"][span["char_start"] : span["char_end"]] == span["text"]
        assert all(set(d) >= {"id", "hash", "occurrences"} for d in span["documents"])
    again = invoke("trace", overfit_anchor, "--index", records_index, "--prompt", prompt, "--max-new-tokens", "30",
                   "--json")
    assert again.stdout == result.stdout  # greedy decoding: the same trace every time


@pytest.mark.parametrize("args,fragment", [
    ((), "exactly one of --text"),
    (("--text", "a", "--prompt", "b"), "exactly one of --text"),
    (("--text", ""), "empty"),
    (("--text", "a", "--min-tokens", "0"), "--min-tokens must be at least 1"),
])
def test_bad_trace_arguments_exit_2(overfit_anchor, records_index, args, fragment):
    result = invoke("trace", overfit_anchor, "--index", records_index, *args)
    assert result.exit_code == 2 and fragment in one_error_line(result)


def test_missing_index_exit_2(overfit_anchor, tmp_path):
    result = invoke("trace", overfit_anchor, "--index", tmp_path / "nothing", "--text", "x")
    assert result.exit_code == 2 and "trace index not found" in one_error_line(result)
