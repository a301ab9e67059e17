"""Lexicon of the demo grammar: an English-like and a Spanish-like vocabulary.

Every surface form belongs to exactly one language and one category, so the two
vocabularies are disjoint (only the sentence end ``"."`` is shared punctuation).
Words carry the agreement features the parser checks: number (``sg``/``pl``),
grammatical gender (Spanish ``m``/``f``) and polarity (``positive``/``negative``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Language = Literal["en", "es"]
Sentiment = Literal["positive", "negative"]
Category = Literal["DET", "N", "ADJ", "V", "COP", "INT", "END"]

LANGUAGES: tuple[Language, ...] = ("en", "es")
SENTIMENTS: tuple[Sentiment, ...] = ("positive", "negative")
END = "."
VOWELS = frozenset("aeiou")


@dataclass(frozen=True)
class Word:
    """One surface form with its grammatical features (``None`` = unmarked / either)."""

    form: str
    lang: Language | None
    cat: Category
    number: str | None = None
    gender: str | None = None
    polarity: Sentiment | None = None


# --- English ---------------------------------------------------------------
EN_DETS = (("the", None), ("a", "sg"), ("an", "sg"), ("this", "sg"), ("that", "sg"), ("every", "sg"),
           ("these", "pl"), ("those", "pl"), ("some", "pl"))
EN_NOUNS = (("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("child", "children"),
            ("teacher", "teachers"), ("farmer", "farmers"), ("king", "kings"), ("queen", "queens"),
            ("girl", "girls"), ("boy", "boys"), ("friend", "friends"), ("neighbor", "neighbors"),
            ("owl", "owls"), ("elephant", "elephants"), ("eagle", "eagles"), ("uncle", "uncles"),
            ("apple", "apples"), ("book", "books"), ("garden", "gardens"), ("house", "houses"),
            ("song", "songs"), ("city", "cities"), ("river", "rivers"), ("letter", "letters"))
EN_ADJS: dict[Sentiment | None, tuple[str, ...]] = {
    None: ("small", "big", "old", "young", "tall", "quiet", "red", "green", "ancient", "orange"),
    "positive": ("happy", "kind", "brave", "clever", "gentle", "lovely", "amazing", "excellent"),
    "negative": ("sad", "cruel", "angry", "lazy", "rude", "nasty", "awful", "evil"),
}
EN_VERBS: dict[Sentiment | None, tuple[tuple[str, str], ...]] = {
    None: (("sees", "see"), ("finds", "find"), ("visits", "visit"), ("follows", "follow")),
    "positive": (("loves", "love"), ("helps", "help"), ("admires", "admire"), ("praises", "praise"),
                 ("protects", "protect"), ("welcomes", "welcome")),
    "negative": (("hates", "hate"), ("fears", "fear"), ("attacks", "attack"), ("ruins", "ruin"),
                 ("ignores", "ignore"), ("blames", "blame")),
}
EN_COPULA = (("is", "sg"), ("are", "pl"))
EN_INTENSIFIER = "very"

# --- Spanish ---------------------------------------------------------------
ES_DETS = (("el", "m", "sg"), ("la", "f", "sg"), ("los", "m", "pl"), ("las", "f", "pl"),
           ("un", "m", "sg"), ("una", "f", "sg"), ("unos", "m", "pl"), ("unas", "f", "pl"),
           ("este", "m", "sg"), ("esta", "f", "sg"), ("estos", "m", "pl"), ("estas", "f", "pl"))
ES_NOUNS = (("perro", "perros", "m"), ("gato", "gatos", "m"), ("chico", "chicos", "m"),
            ("maestro", "maestros", "m"), ("rey", "reyes", "m"), ("libro", "libros", "m"),
            ("amigo", "amigos", "m"), ("vecino", "vecinos", "m"), ("lobo", "lobos", "m"),
            ("caballo", "caballos", "m"), ("casa", "casas", "f"), ("reina", "reinas", "f"),
            ("ciudad", "ciudades", "f"), ("chica", "chicas", "f"), ("maestra", "maestras", "f"),
            ("carta", "cartas", "f"), ("amiga", "amigas", "f"), ("flor", "flores", "f"),
            ("ventana", "ventanas", "f"), ("escuela", "escuelas", "f"))
# Adjectives as (m.sg, f.sg, m.pl, f.pl); gender-invariant ones repeat their forms.
ES_ADJS: dict[Sentiment | None, tuple[tuple[str, str, str, str], ...]] = {
    None: (("alto", "alta", "altos", "altas"), ("viejo", "vieja", "viejos", "viejas"),
           ("nuevo", "nueva", "nuevos", "nuevas"), ("rojo", "roja", "rojos", "rojas"),
           ("grande", "grande", "grandes", "grandes")),
    "positive": (("bueno", "buena", "buenos", "buenas"), ("bonito", "bonita", "bonitos", "bonitas"),
                 ("generoso", "generosa", "generosos", "generosas"),
                 ("alegre", "alegre", "alegres", "alegres"), ("amable", "amable", "amables", "amables")),
    "negative": (("malo", "mala", "malos", "malas"), ("feo", "fea", "feos", "feas"),
                 ("furioso", "furiosa", "furiosos", "furiosas"),
                 ("triste", "triste", "tristes", "tristes"), ("malvado", "malvada", "malvados", "malvadas")),
}
ES_VERBS: dict[Sentiment | None, tuple[tuple[str, str], ...]] = {
    None: (("ve", "ven"), ("busca", "buscan"), ("visita", "visitan")),
    "positive": (("ama", "aman"), ("ayuda", "ayudan"), ("admira", "admiran"), ("protege", "protegen"),
                 ("alaba", "alaban")),
    "negative": (("odia", "odian"), ("teme", "temen"), ("ataca", "atacan"), ("ignora", "ignoran"),
                 ("culpa", "culpan")),
}
ES_COPULA = (("es", "sg"), ("son", "pl"))
ES_INTENSIFIER = "muy"


def _english() -> list[Word]:
    words = [Word(f, "en", "DET", number=n) for f, n in EN_DETS]
    for sg, pl in EN_NOUNS:
        words += [Word(sg, "en", "N", number="sg"), Word(pl, "en", "N", number="pl")]
    for pol, adjs in EN_ADJS.items():
        words += [Word(a, "en", "ADJ", polarity=pol) for a in adjs]
    for pol, verbs in EN_VERBS.items():
        for sg, pl in verbs:
            words += [Word(sg, "en", "V", "sg", polarity=pol), Word(pl, "en", "V", "pl", polarity=pol)]
    words += [Word(f, "en", "COP", number=n) for f, n in EN_COPULA]
    return [*words, Word(EN_INTENSIFIER, "en", "INT")]


def _spanish() -> list[Word]:
    words = [Word(f, "es", "DET", number=n, gender=g) for f, g, n in ES_DETS]
    for sg, pl, g in ES_NOUNS:
        words += [Word(sg, "es", "N", "sg", g), Word(pl, "es", "N", "pl", g)]
    for pol, adjs in ES_ADJS.items():
        for msg, fsg, mpl, fpl in adjs:
            for form, num in ((msg, "sg"), (mpl, "pl")):
                invariant = form == (fsg if num == "sg" else fpl)
                words.append(Word(form, "es", "ADJ", num, None if invariant else "m", pol))
            if fsg != msg:
                words += [Word(fsg, "es", "ADJ", "sg", "f", pol), Word(fpl, "es", "ADJ", "pl", "f", pol)]
    for pol, verbs in ES_VERBS.items():
        for sg, pl in verbs:
            words += [Word(sg, "es", "V", "sg", polarity=pol), Word(pl, "es", "V", "pl", polarity=pol)]
    words += [Word(f, "es", "COP", number=n) for f, n in ES_COPULA]
    return [*words, Word(ES_INTENSIFIER, "es", "INT")]


def _build() -> dict[str, Word]:
    table: dict[str, Word] = {}
    for word in [*_english(), *_spanish(), Word(END, None, "END")]:
        if word.form in table:
            raise ValueError(f"ambiguous surface form in demo lexicon: {word.form!r}")
        table[word.form] = word
    return table


LEXICON: dict[str, Word] = _build()
"""Every surface form of the grammar mapped to its features."""


def vocabulary(language: Language | None = None) -> list[str]:
    """Sorted surface forms of ``language`` (both languages and ``"."`` when ``None``)."""
    return sorted(w.form for w in LEXICON.values() if language is None or w.lang == language)


def starts_with_vowel(form: str) -> bool:
    """Whether an English word takes ``an`` rather than ``a`` (orthographic rule of the grammar)."""
    return form[0] in VOWELS
