"""A whitespace-free, unique, reversible spelling for every vocabulary entry.

Anserini's ``--pretokenized`` splits document contents on whitespace, so a term containing a space
(SentencePiece pieces, added tokens) would silently turn into two terms. Byte-level BPE vocabularies
(GPT-2, Llama-3, SmolLM2) are already whitespace-free (``Ġthe``); other spellings are escaped with
``%XX`` per UTF-8 byte, and ``%`` itself is escaped so the mapping stays one-to-one and reversible.
Special tokens (BOS, EOS, padding, chat markers) never become terms.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import unquote


def _needs_escape(char: str) -> bool:
    return char == "%" or char.isspace() or not char.isprintable() or char in "\u200b\u2060\ufeff"


def escape_term(token: str) -> str:
    if not any(_needs_escape(c) for c in token):
        return token
    return "".join("".join(f"%{b:02X}" for b in c.encode("utf-8")) if _needs_escape(c) else c for c in token)


def unescape_term(term: str) -> str:
    return unquote(term, encoding="utf-8", errors="strict")


def special_token_ids(tokenizer) -> set[int]:
    """BOS, EOS, padding, chat markers...: ids that must never carry a weight or become a term."""
    special = set(tokenizer.all_special_ids)
    for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            special.add(token_id)
    return special


@dataclass
class TermMap:
    """Token id <-> term string, with ``None`` for ids that are excluded (special tokens, holes)."""

    terms: list[str | None]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "TermMap":
        size = len(tokenizer)
        special = special_token_ids(tokenizer)
        tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
        terms: list[str | None] = []
        for token_id, token in enumerate(tokens):
            terms.append(None if token_id in special or not token else escape_term(token))
        seen: dict[str, int] = {}
        for token_id, term in enumerate(terms):
            if term is None:
                continue
            if term in seen:  # cannot happen for a real vocabulary; guard against broken tokenizers
                raise ValueError(f"tokens {seen[term]} and {token_id} both map to the term {term!r}")
            seen[term] = token_id
        return cls(terms)

    def __len__(self) -> int:
        return len(self.terms)

    def term(self, token_id: int) -> str | None:
        return self.terms[token_id] if 0 <= token_id < len(self.terms) else None

    def excluded_ids(self) -> list[int]:
        return [i for i, t in enumerate(self.terms) if t is None]

    def term_set(self) -> set[str]:
        return {t for t in self.terms if t is not None}

    def ids_by_term(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.terms) if t is not None}

    def fingerprint(self) -> str:
        """Identifies the vocabulary (and its spelling), so indexes and query encoders can be matched."""
        digest = hashlib.sha256()
        for term in self.terms:
            digest.update(b"\x00" if term is None else term.encode("utf-8"))
            digest.update(b"\x01")
        return digest.hexdigest()[:16]
