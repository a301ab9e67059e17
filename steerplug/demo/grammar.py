"""Grammar of the demo corpus: deterministic generation and an exact recognizer.

Sentences (``[x]`` optional; features must agree, see ``lexicon.py``)::

    S     -> NP VP "."
    VP    -> V NP | COP [INT] ADJ
    NP_en -> DET [ADJ] N          (det/noun number; "a"/"an" by the next word's first letter)
    NP_es -> DET N [ADJ]          (det/noun/adj gender and number)

The verb (or copula) agrees in number with the subject; a Spanish predicate
adjective agrees in gender and number with the subject noun.  All words of a
sentence are from one language, and a sentence carries at least one polar word
(verb or adjective) with all polar words of one polarity: that is the sentence's
sentiment.  A document is 2-5 sentences sharing one language and one sentiment;
Spanish documents are rare (``P_SPANISH``) and negative ones a minority
(``P_NEGATIVE``), independently.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from steerplug.demo import lexicon as lx
from steerplug.demo.lexicon import END, LEXICON, Language, Sentiment, Word

P_SPANISH = 0.10
"""Probability that a corpus document is Spanish."""
P_NEGATIVE = 0.28
"""Probability that a corpus document is negative (independent of language)."""
SENTENCES_PER_DOC = (2, 5)
"""Inclusive range of sentences per corpus document."""
_P_COPULA, _P_PLURAL, _P_ADJ, _P_INT, _P_POLAR_VERB = 0.35, 0.3, 0.4, 0.25, 0.6


@dataclass(frozen=True)
class Document:
    """One corpus document: its sentences plus its language and sentiment labels."""

    sentences: tuple[str, ...]
    language: Language
    sentiment: Sentiment

    @property
    def text(self) -> str:
        """The sentences joined by single spaces."""
        return " ".join(self.sentences)


@dataclass(frozen=True)
class SentenceReport:
    """Analysis of one sentence.

    ``language`` / ``sentiment`` come from the parse when ``grammatical``; for an
    ungrammatical sentence they are lexical best guesses (set only when all known
    words agree).  ``error`` says why the parse failed.
    """

    text: str
    grammatical: bool
    language: Language | None
    sentiment: Sentiment | None
    error: str | None = None


# --------------------------------------------------------------------------- generation
def _adjective_pool(language: Language, sentiment: Sentiment) -> list[tuple[str, ...]]:
    table = lx.EN_ADJS if language == "en" else lx.ES_ADJS
    pool: list[tuple[str, ...]] = []
    for pol in (None, sentiment):
        pool += [(a,) if isinstance(a, str) else a for a in table[pol]]
    return pool


def _np_en(rng: random.Random, number: str, sentiment: Sentiment) -> list[str]:
    det = rng.choice([d for d, n in lx.EN_DETS if n in (None, number) and d != "an"])
    adj = rng.choice(_adjective_pool("en", sentiment))[0] if rng.random() < _P_ADJ else None
    noun = rng.choice(lx.EN_NOUNS)[0 if number == "sg" else 1]
    if det == "a" and lx.starts_with_vowel(adj or noun):
        det = "an"
    return [det, noun] if adj is None else [det, adj, noun]


def _np_es(rng: random.Random, number: str, sentiment: Sentiment) -> tuple[list[str], str]:
    sg, pl, gender = rng.choice(lx.ES_NOUNS)
    det = rng.choice([d for d, g, n in lx.ES_DETS if g == gender and n == number])
    words = [det, sg if number == "sg" else pl]
    if rng.random() < _P_ADJ:
        words.append(_es_adj_form(rng.choice(_adjective_pool("es", sentiment)), gender, number))
    return words, gender


def _es_adj_form(forms: tuple[str, ...], gender: str, number: str) -> str:
    return forms[(gender == "f") + 2 * (number == "pl")]


def _np(rng: random.Random, language: Language, number: str, sentiment: Sentiment) -> tuple[list[str], str]:
    return _np_es(rng, number, sentiment) if language == "es" else (_np_en(rng, number, sentiment), "")


def _candidate(rng: random.Random, language: Language, sentiment: Sentiment) -> list[str]:
    number = "pl" if rng.random() < _P_PLURAL else "sg"
    subject, gender = _np(rng, language, number, sentiment)
    if rng.random() < _P_COPULA:
        copula = dict((n, c) for c, n in (lx.EN_COPULA if language == "en" else lx.ES_COPULA))[number]
        vp = [copula] + ([lx.EN_INTENSIFIER if language == "en" else lx.ES_INTENSIFIER]
                         if rng.random() < _P_INT else [])
        adj = rng.choice(_adjective_pool(language, sentiment))
        vp.append(adj[0] if language == "en" else _es_adj_form(adj, gender, number))
    else:
        verbs = lx.EN_VERBS if language == "en" else lx.ES_VERBS
        verb = rng.choice(verbs[sentiment] if rng.random() < _P_POLAR_VERB else verbs[None])
        obj_number = "pl" if rng.random() < _P_PLURAL else "sg"
        vp = [verb[0 if number == "sg" else 1], *_np(rng, language, obj_number, sentiment)[0]]
    return [*subject, *vp, END]


def generate_sentence(rng: random.Random, language: Language, sentiment: Sentiment) -> str:
    """One grammatical sentence of ``language`` whose sentiment is ``sentiment``."""
    while True:
        words = _candidate(rng, language, sentiment)
        if any(LEXICON[w].polarity is not None for w in words):
            return " ".join(words)


def generate_document(rng: random.Random, language: Language, sentiment: Sentiment) -> Document:
    """A document of 2-5 sentences sharing ``language`` and ``sentiment``."""
    n = rng.randint(*SENTENCES_PER_DOC)
    return Document(tuple(generate_sentence(rng, language, sentiment) for _ in range(n)), language, sentiment)


def generate_corpus(n_docs: int, seed: int) -> list[Document]:
    """``n_docs`` documents drawn at the corpus base rates; identical for identical ``seed``."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        language: Language = "es" if rng.random() < P_SPANISH else "en"
        sentiment: Sentiment = "negative" if rng.random() < P_NEGATIVE else "positive"
        docs.append(generate_document(rng, language, sentiment))
    return docs


def examples(language: Language | None = None, sentiment: Sentiment | None = None, n: int = 64,
             seed: int = 0, sentences: int = 1) -> list[str]:
    """``n`` texts of ``sentences`` sentences each with the given concept values.

    A concept left ``None`` is drawn per text at its corpus base rate, so e.g.
    ``examples(language="es")`` vs ``examples(language="en")`` is a contrastive set
    for the language concept with sentiment distributed as in the corpus.
    """
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        lang: Language = language or ("es" if rng.random() < P_SPANISH else "en")
        sent: Sentiment = sentiment or ("negative" if rng.random() < P_NEGATIVE else "positive")
        texts.append(" ".join(generate_sentence(rng, lang, sent) for _ in range(sentences)))
    return texts


# --------------------------------------------------------------------------- recognition
class ParseError(ValueError):
    """Raised by the recognizer when a sentence is not derivable from the grammar."""


class _Parser:
    """Recursive-descent recognizer over one tokenized sentence of one language."""

    def __init__(self, words: list[Word], language: Language) -> None:
        self.words, self.language, self.pos = words, language, 0

    def take(self, cat: str, optional: bool = False) -> Word | None:
        word = self.words[self.pos] if self.pos < len(self.words) else None
        if word is not None and word.cat == cat:
            self.pos += 1
            return word
        if optional:
            return None
        found = word.form if word else "end of sentence"
        raise ParseError(f"expected {cat} at position {self.pos}, found {found!r}")

    def noun_phrase(self) -> tuple[Word, list[Word]]:
        """Parse NP; return the head noun and all words of the phrase."""
        det = self.take("DET")
        assert det is not None
        if self.language == "en":
            adj = self.take("ADJ", optional=True)
            noun = self.take("N")
            assert noun is not None
            nxt = (adj or noun).form
            if det.form in ("a", "an") and (det.form == "an") != lx.starts_with_vowel(nxt):
                raise ParseError(f"article {det.form!r} before {nxt!r}")
        else:
            noun = self.take("N")
            assert noun is not None
            adj = self.take("ADJ", optional=True)
            if det.gender != noun.gender:
                raise ParseError(f"gender mismatch {det.form!r} / {noun.form!r}")
        _agree(noun, det, gender=False)
        if adj is not None and self.language == "es":
            _agree(noun, adj, gender=True)
        return noun, [w for w in (det, adj, noun) if w is not None]

    def sentence(self) -> list[Word]:
        """Parse S and return its words; raises ``ParseError``."""
        subject, words = self.noun_phrase()
        copula = self.take("COP", optional=True)
        if copula is not None:
            _agree(subject, copula, gender=False)
            intensifier = self.take("INT", optional=True)
            adj = self.take("ADJ")
            assert adj is not None
            _agree(subject, adj, gender=self.language == "es", number=self.language == "es")
            words += [w for w in (copula, intensifier, adj) if w is not None]
        else:
            verb = self.take("V")
            assert verb is not None
            _agree(subject, verb, gender=False)
            words += [verb, *self.noun_phrase()[1]]
        self.take("END")
        if self.pos != len(self.words):
            raise ParseError(f"trailing words after sentence end: {self.words[self.pos].form!r}")
        return words


def _agree(noun: Word, other: Word, gender: bool, number: bool = True) -> None:
    if number and other.number is not None and other.number != noun.number:
        raise ParseError(f"number mismatch {noun.form!r} / {other.form!r}")
    if gender and other.gender is not None and other.gender != noun.gender:
        raise ParseError(f"gender mismatch {noun.form!r} / {other.form!r}")


def _unanimous(values: list[str | None]) -> str | None:
    found = {v for v in values if v is not None}
    return found.pop() if len(found) == 1 else None


def analyze_sentence(sentence: str) -> SentenceReport:
    """Parse one sentence (words separated by whitespace, ending in ``"."``)."""
    forms = sentence.split()
    known = [LEXICON[f] for f in forms if f in LEXICON]
    language = _unanimous([w.lang for w in known])
    sentiment = _unanimous([w.polarity for w in known])

    def reject(error: str) -> SentenceReport:
        return SentenceReport(sentence, False, language, sentiment, error)  # type: ignore[arg-type]

    unknown = [f for f in forms if f not in LEXICON]
    if unknown:
        return reject(f"unknown words {unknown}")
    if language is None:
        return reject("words from more than one language" if len(known) > 1 else "empty sentence")
    try:
        words = _Parser(known, language).sentence()  # type: ignore[arg-type]
    except ParseError as exc:
        return reject(str(exc))
    polarities = {w.polarity for w in words if w.polarity is not None}
    if len(polarities) != 1:
        return reject("no polar word" if not polarities else "mixed sentiment")
    return SentenceReport(sentence, True, language, polarities.pop())  # type: ignore[arg-type]


def split_sentences(text: str, include_incomplete: bool = False) -> list[str]:
    """Split ``text`` after every ``"."`` token; a trailing unfinished fragment is kept only on request."""
    sentences, current = [], []
    for token in text.split():
        current.append(token)
        if token == END:
            sentences.append(" ".join(current))
            current = []
    if current and include_incomplete:
        sentences.append(" ".join(current))
    return sentences


def analyze(text: str, include_incomplete: bool = False) -> list[SentenceReport]:
    """Analyze every complete sentence of ``text`` (e.g. a decoded generation)."""
    return [analyze_sentence(s) for s in split_sentences(text, include_incomplete)]
