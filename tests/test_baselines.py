"""The splade-tiny baseline's max-first pooling gives Pyserini's own document vectors, term for term."""

from itertools import islice

from csplade_pyserini.baselines import max_first_splade_encoder
from csplade_pyserini.datasets import read_corpus
from csplade_pyserini.integration.pyserini2 import safetensors_splade_loading

from conftest import shared


def test_max_first_splade_vectors_equal_pyserini_document_encoder():
    from pyserini.encode import SpladeDocumentEncoder

    model = shared() / "models" / "splade-tiny"
    # Documents of very different lengths, so that one batch has much padding (masked positions).
    docs = sorted(islice(read_corpus(shared() / "data" / "beir" / "scifact"), 40), key=lambda d: len(d.text))[::5]
    texts, titles = [d.text for d in docs], [d.title for d in docs]
    ours = max_first_splade_encoder(model).encode(texts, titles=titles, max_length=256)
    with safetensors_splade_loading():  # Pyserini 2.x loads SPLADE without safetensors, 1.6 as it is
        theirs = SpladeDocumentEncoder(str(model), device="cpu").encode(texts, titles=titles, max_length=256)
    assert len(ours) == len(docs) == 8
    assert all(len(vector) > 20 for vector in ours)
    assert ours == theirs
