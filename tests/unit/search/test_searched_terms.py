from csplade_pyserini.search import searched_terms


def test_searched_terms_are_those_pyserinis_impact_search_sends():
    idf = {"cell": 2.0, "the": 0.2, "lm_Ġ.": 0.0004, "edge": 1.25, "everywhere": 0.0}
    vector = {"cell": 30, "the": 4, "lm_Ġ.": 40, "edge": 7, "unindexed": 9, "everywhere": 3}
    # unknown terms and terms in every document (idf 0) are dropped, as Pyserini's search drops them
    assert searched_terms(vector, idf) == {"cell": 30, "the": 4, "lm_Ġ.": 40, "edge": 7}
    assert searched_terms(vector, idf, 1.25) == {"cell": 30}  # idf > min-idf, Pyserini's own test
