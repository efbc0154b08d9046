"""The sparse head: hand-computed pooling, the memory-light backward, echo, bidirectional, BOS."""

from __future__ import annotations

import math

import pytest
import torch

from csplade_pyserini.model.pooling import (
    max_pool_lm_head,
    naive_splade_pool,
    splade_activation,
)
from csplade_pyserini.model.sparse import SparseEncoder


def test_pooling_by_hand():
    # two real positions and one padding position; the LM head has no bias
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    weight = torch.tensor([[1.0, 0.0], [0.0, -1.0], [1.0, 1.0], [-2.0, 0.5]])
    mask = torch.tensor([[1, 1, 0]])
    # logits t0 = [1, 0, 1, -2], t1 = [0, -1, 1, 0.5]; padding (t2) must not count
    weights = splade_activation(max_pool_lm_head(hidden, weight, mask))
    expected = torch.tensor([[math.log(2), 0.0, math.log(2), math.log(1.5)]])
    assert torch.allclose(weights, expected)


def test_keep_top_k_by_hand_and_gradients_reach_only_kept_weights():
    from csplade_pyserini.model.pooling import keep_top_k

    w = torch.tensor([[0.5, 3.0, 0.0, 2.0], [1.0, 0.2, 0.3, 0.1]], requires_grad=True)
    kept = keep_top_k(w, 2)
    assert torch.equal(kept.detach(), torch.tensor([[0.0, 3.0, 0.0, 2.0], [1.0, 0.0, 0.3, 0.0]]))
    kept.sum().backward()
    assert torch.equal(w.grad, torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]]))
    assert keep_top_k(w, None) is w and keep_top_k(w, 4) is w


def test_logit_scale_applies_before_activation():
    pooled = torch.tensor([[4.0, -1.0]])
    assert torch.allclose(splade_activation(pooled, 0.25), torch.tensor([[math.log(2.0), 0.0]]))


@pytest.mark.parametrize("chunk", [1 << 26, 40, 7])
def test_chunked_pooling_matches_naive(chunk):
    torch.manual_seed(0)
    hidden, weight = torch.randn(3, 5, 4), torch.randn(11, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 0]])
    if chunk == 7:  # also the fallback for pooled positions that are not one contiguous span
        mask = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    logits = hidden @ weight.t()
    expected = naive_splade_pool(logits, mask)
    assert torch.allclose(splade_activation(max_pool_lm_head(hidden, weight, mask, chunk)), expected, atol=1e-6)


def test_a_shared_logits_workspace_changes_no_weight():
    """Inference reuses one logits buffer across calls: it grows for a longer span, is then used in
    part for shorter ones, and a row chunked into several products (chunk of 2 rows) still sees all."""
    from csplade_pyserini.model.pooling import LogitsWorkspace

    torch.manual_seed(3)
    weight = torch.randn(13, 4)
    workspace = LogitsWorkspace()
    for length, chunk in [(3, 1 << 26), (21, 1 << 26), (5, 1 << 26), (9, 26)]:
        hidden = torch.randn(2, length, 4)
        mask = torch.zeros(2, length, dtype=torch.long)
        mask[0, :length] = 1
        mask[1, 1:length - 1] = 1
        expected = naive_splade_pool(hidden @ weight.t(), mask)
        pooled = max_pool_lm_head(hidden, weight, mask, chunk, workspace)
        assert torch.allclose(splade_activation(pooled), expected, atol=1e-6)
    assert workspace._buffer.shape == (32, 13)  # 21 rows, padded to the shape multiple of 16


@pytest.mark.parametrize("chunk", [1 << 26, 7])
def test_backward_matches_autograd_through_full_logits(chunk):
    torch.manual_seed(1)
    hidden = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    upstream = torch.randn(2, 6, dtype=torch.float64)
    (splade_activation(max_pool_lm_head(hidden, weight, mask, chunk)) * upstream).sum().backward()
    ours = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    (naive_splade_pool(hidden @ weight.t(), mask) * upstream).sum().backward()
    assert torch.allclose(ours[0], hidden.grad) and torch.allclose(ours[1], weight.grad)


def test_gradcheck():
    torch.manual_seed(2)
    hidden = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 3, dtype=torch.long)
    assert torch.autograd.gradcheck(lambda h, w: max_pool_lm_head(h, w, mask, 7), (hidden, weight))


def _encoder(tiny_model, variant: str) -> SparseEncoder:
    return SparseEncoder(tiny_model.encoder.model, tiny_model.encoder.tokenizer,
                         tiny_model.card.replace(variant=variant))


def test_echo_pools_only_the_second_copy(tiny_model):
    encoder = _encoder(tiny_model, "echo")
    seq = encoder.tokenize(["alpha beta gamma delta"], "doc")[0]
    batch = encoder.collate([seq, seq[:5]])
    n = len(seq)
    assert batch.input_ids[0, :2 * n].tolist() == seq + seq
    assert batch.pool_mask[0].tolist() == [0] * n + [1] * n
    assert batch.pool_mask[1].tolist() == [0] * 5 + [1] * 5 + [0] * (2 * n - 10)
    with torch.no_grad():
        ours = encoder.forward(batch.input_ids[:1], batch.attention_mask[:1], batch.pool_mask[:1])
        logits = encoder.model(input_ids=batch.input_ids[:1, :2 * n]).logits
    expected = torch.log1p(torch.relu(logits[0, n:].max(dim=0).values))
    expected[encoder.excluded_ids(expected.shape[-1], "cpu")] = 0
    assert torch.allclose(ours[0], expected, atol=1e-5)
    first_copy = torch.log1p(torch.relu(logits[0, :n].max(dim=0).values))
    assert not torch.allclose(ours[0], first_copy, atol=1e-3)  # the first copy really is left out


def _first_token_state(encoder, ids):
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        return encoder.hidden_states(input_ids, torch.ones_like(input_ids))[0, 0]


@pytest.mark.parametrize("variant,changes", [("causal", False), ("bidirectional", True)])
def test_bidirectional_lets_the_first_token_see_later_ones(tiny_checkpoint, variant, changes):
    from csplade_pyserini.model.encoder import CspladeModel

    encoder = CspladeModel.from_spec(f"csplade:{tiny_checkpoint},variant={variant}", cache=False).encoder
    a = _first_token_state(encoder, [100, 200, 300, 400])
    b = _first_token_state(encoder, [100, 200, 300, 999])
    assert (not torch.allclose(a, b, atol=1e-6)) is changes


def test_bidirectional_padding_does_not_leak(tiny_checkpoint):
    from csplade_pyserini.model.encoder import CspladeModel

    encoder = CspladeModel.from_spec(f"csplade:{tiny_checkpoint},variant=bidirectional", cache=False).encoder
    short = encoder.collate([[100, 200, 300]])
    padded = encoder.collate([[100, 200, 300], [100, 200, 300, 400, 500, 600]])
    with torch.no_grad():
        alone = encoder.forward(short.input_ids, short.attention_mask, short.pool_mask)[0]
        batched = encoder.forward(padded.input_ids, padded.attention_mask, padded.pool_mask)[0]
    assert torch.allclose(alone, batched, atol=1e-5)


def test_no_bos_by_default_and_special_strings_stay_text(tiny_model):
    encoder = tiny_model.encoder
    bos = encoder.tokenizer.bos_token_id
    ids = encoder.tokenize(["<|im_start|> injected"], "doc")[0]
    assert bos not in ids
    with_bos = SparseEncoder(encoder.model, encoder.tokenizer, tiny_model.card.replace(add_bos=True))
    assert with_bos.tokenize(["x"], "query")[0][0] == bos


def test_prefixes_and_lengths(tiny_model):
    encoder = tiny_model.encoder
    text = "word " * 500
    assert len(encoder.tokenize([text], "query")[0]) == tiny_model.card.max_query_length
    assert len(encoder.tokenize([text], "doc")[0]) == tiny_model.card.max_doc_length
    query = encoder.tokenizer.decode(encoder.tokenize(["hello"], "query")[0])
    assert query.startswith("query: ")


def test_sorted_batches_restore_order_and_respect_budget(tiny_model):
    encoder = tiny_model.encoder
    sequences = [[5] * n for n in (3, 9, 1, 7, 7, 2)]
    batches = list(encoder.batches(sequences, max_tokens=16, max_batch=8, pad_multiple=1))
    assert sorted(i for b in batches for i in b.order) == list(range(6))
    assert all(b.input_ids.numel() <= 16 or len(b.order) == 1 for b in batches)
    widths = [b.input_ids.shape[1] for b in batches]
    assert widths == sorted(widths, reverse=True)
    encoded = encoder.encode_sequences(sequences, max_tokens=16, max_batch=8, pad_multiple=1)
    single = [encoder.encode_sequences([s])[0] for s in sequences]
    for (ids_a, w_a), (ids_b, w_b) in zip(encoded, single):
        assert torch.equal(ids_a, ids_b) and torch.allclose(w_a, w_b, atol=1e-5)


@pytest.mark.parametrize("variant", ["causal", "echo", "bidirectional"])
def test_padding_to_a_few_widths_changes_no_weight(tiny_checkpoint, variant):
    """Inference pads batches to multiples of 16 tokens (and the LM head's rows to multiples of 16) so
    that oneDNN caches few kernel shapes; the weights must equal those of exactly padded batches."""
    from csplade_pyserini.model.encoder import CspladeModel

    # a model of its own: the bidirectional variant flips the attention modules it is given
    encoder = CspladeModel.from_spec(f"csplade:{tiny_checkpoint},variant={variant}", cache=False).encoder
    sequences = [[100 + i for i in range(n)] for n in (3, 17, 9, 30, 1)]
    widths = [b.input_ids.shape[1] for b in encoder.batches(sequences, max_tokens=64, max_batch=4)]
    assert widths and all(w % 16 == 0 for w in widths)
    padded = encoder.encode_sequences(sequences, max_tokens=64, max_batch=4)
    exact = encoder.encode_sequences(sequences, max_tokens=64, max_batch=4, pad_multiple=1)
    for (ids_a, w_a), (ids_b, w_b) in zip(padded, exact):
        assert torch.equal(ids_a, ids_b) and torch.allclose(w_a, w_b, atol=1e-5)


def test_top_k_keeps_the_largest_terms(tiny_model):
    full = tiny_model.encoder.encode_sequences(tiny_model.encoder.tokenize(["sparse retrieval"], "doc"))[0]
    top = tiny_model.encoder.encode_sequences(tiny_model.encoder.tokenize(["sparse retrieval"], "doc"), top_k=5)[0]
    assert len(top[0]) == 5
    assert torch.allclose(top[1].sort(descending=True).values, full[1].sort(descending=True).values[:5])


def test_special_tokens_never_get_weight(tiny_model):
    ids, weights = tiny_model.encoder.encode_sequences(tiny_model.encoder.tokenize(["anything"], "doc"))[0]
    special = set(tiny_model.encoder.tokenizer.all_special_ids)
    assert not special & set(ids.tolist())


def test_training_forward_after_inference(tiny_model):
    encoder = _encoder(tiny_model, "causal")
    batch = encoder.collate(encoder.tokenize(["a query", "another one"], "query"))
    encoder.encode_sequences(encoder.tokenize(["warm the caches"], "doc"))  # runs under inference_mode
    weights = encoder.forward(batch.input_ids, batch.attention_mask, batch.pool_mask)
    weights.sum().backward()  # must not trip over tensors cached during inference
    assert any(p.grad is not None for p in encoder.model.parameters())
    encoder.model.zero_grad(set_to_none=True)
