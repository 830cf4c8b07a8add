"""Grammar and spelling checkers: an embedded offline one (harper-py + pyspellchecker) and a LanguageTool client.

Every checker normalises the text first (:func:`essayscore.text.normalize`, flattened to one line so paragraph
markup cannot change what is flagged) and maps the offsets of its matches back into the text the caller passed,
so a user-facing match always points at the user's own characters.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from essayscore.text import map_span, normalize_with_map

CATEGORIES = ("TYPOS", "GRAMMAR", "PUNCTUATION", "CASING", "STYLE", "CONFUSED_WORDS", "REDUNDANCY", "OTHER")
MAX_SUGGESTIONS = 5


@dataclass(frozen=True)
class GrammarMatch:
    offset: int  # character offset into the ORIGINAL text passed to check()
    length: int
    category: str  # one of CATEGORIES
    rule_id: str
    message: str
    suggestions: tuple[str, ...] = ()  # at most MAX_SUGGESTIONS

    def to_dict(self) -> dict:
        return {
            "offset": self.offset,
            "length": self.length,
            "category": self.category,
            "rule_id": self.rule_id,
            "message": self.message,
            "suggestions": list(self.suggestions),
        }


@runtime_checkable
class GrammarChecker(Protocol):
    name: str

    def check(self, text: str) -> list[GrammarMatch]: ...


def _prepare(text: str) -> tuple[str, list[int]]:
    """Normalised text on one line (same length as the normalised text: newlines become spaces) and its map."""
    norm, mapping = normalize_with_map(text)
    return norm.replace("\n", " "), mapping


def _to_original(text: str, mapping: list[int], matches: list[GrammarMatch]) -> list[GrammarMatch]:
    out = []
    for m in matches:
        off, length = map_span(text, mapping, m.offset, m.length)
        out.append(GrammarMatch(off, length, m.category, m.rule_id, m.message, m.suggestions))
    return out


# --- embedded checker -------------------------------------------------------------------------------------------

# harper's lint kinds -> LanguageTool category ids (so both checkers feed the same features)
HARPER_KIND_TO_CATEGORY = {
    "Spelling": "TYPOS",
    "Typo": "TYPOS",
    "BoundaryError": "TYPOS",
    "Grammar": "GRAMMAR",
    "Agreement": "GRAMMAR",
    "Usage": "GRAMMAR",
    "Miscellaneous": "GRAMMAR",
    "Nonstandard": "GRAMMAR",
    "Punctuation": "PUNCTUATION",
    "Formatting": "PUNCTUATION",
    "Capitalization": "CASING",
    "Style": "STYLE",
    "Readability": "STYLE",
    "Enhancement": "STYLE",
    "Regionalism": "STYLE",
    "WordChoice": "CONFUSED_WORDS",
    "Eggcorn": "CONFUSED_WORDS",
    "Malapropism": "CONFUSED_WORDS",
    "Redundancy": "REDUNDANCY",
    "Repetition": "REDUNDANCY",
}

# Rules that judge house style rather than correctness, or that would penalise British usage.
HARPER_DISABLED_RULES = ("LongSentences", "OxfordComma", "Regionalisms")

# harper-py 0.2.0 runs ~900 rules, most of them fixed-phrase corrections (idioms, brand names, closed compounds)
# that learners' essays never trigger, and they cost more than half of its time (~38 ms -> ~16 ms an essay).
# The default "essay" rule set is: every rule that fired at least once on the 1,306 shared IELTS Task 2 essays
# (harper-py 0.2.0, British, dedup off; no band labels involved), plus general grammar rules (agreement,
# pronouns, articles) that did not happen to fire there. EmbeddedChecker(rules="all") runs everything.
HARPER_ESSAY_RULES_FIRED = tuple(
    """
    AWhile AdjectiveDoubleDegree AllowTo AmInTheMorning Americas AnA AnAnother AndTheLike AppleNames AsComparedTo
    AsHow AtAllCosts AvoidAndAlso AwareOf BuiltIn ByOnesOwn Cant CapitalizePersonalPronouns CommaFixes CompoundNouns
    CondenseAllThe CorrectNumberSuffix Damages DayAndAge DespiteOf DidPast DiscourseMarkers Discuss DisjointPrefixes
    DoToDueTo DoubleCheckHyphen DoubleEdgedSword DoubleModal EachAndEveryOne EachOthersPossessive EllipsisLength
    EnMasse Everyday Everyone Excellent ExpandBecause ExpandLegitimate ExpandTimeShorthands ExtendOrExtent
    FascinatedBy FindOut GoodAt GoogleNames HaveTakeALook Hedging Holidays HowTo InAHurry InDemandInDepth InDetail
    InflectedVerbAfterTo Insurmountable InterestedIn InvestIn ItsContraction ItsPossessive LastButNotLeast
    LitotesDirectPositive Lots MassNouns Meanwhile MergeWords MissingDeterminer MissingPreposition MissingTo
    ModalBeAdjective MoreBetter MostNumber MultipleFrequencyAdverbs MultipleSequentialPronouns NominalWants
    NotBeAfterNot NounVerbConfusion Nowadays NumericRangeEnDash ObsessPreposition OnADailyBasis OneOfTheSingular
    OnesSelf OpenCompounds OrthographicConsistency OutOfDate Overall PassionateAbout PayForPrice
    PhrasalVerbAsCompoundNoun PluralWrongWordOfPhrase PointsOfView PossessiveYour PrincipleToPrincipalRoleNoun
    PronounInflectionBe PronounKnew PronounVerbAgreement QuantifierNeedsOf QuantifierNumeralConflict QuiteQuiet
    ReasonForDoing RegularIrregulars RelayOnForRely RepeatedWords SameAs SentenceCapitalization
    SimplePastToPastParticiple SingleBe SomeWithoutArticle Someone Spaces SpellCheck SplitWords TakeCareOf
    TakeControlOf ThatThan TheAnother TheHowWhy TheLastDays TheMy TheProperNounPossessive TheWhetherWeather
    TheirToThere TheirToTheyre Themself ThenThan ThereIsAgreement ThereOwn ThereToTheir ThesesThese TheyToThem
    ThisTypeOfThing ThrowRubbish TillDate ToAdverb ToLoseTooLoose ToTwoToo Tradeoff UnclosedQuotes
    UnitedOrganizations UpdatePlaceNames UseEllipsisCharacter UseToUsedTo VerbToAdjective VeryLess VeryUnique
    WayTooAdjective WellBeing Whereas WhomSubjectOfVerb WillNonLemma Without WorseOrWorst WorstCaseScenario
    WrongNegative
    """.split()
)
HARPER_ESSAY_RULES_GENERAL = tuple(
    """
    AdjectiveOfA AskNoPreposition ComplainAsNoun CompoundSubjectI DefiniteArticle DoIAdjective EverPronounRelPronoun
    ExceptOf ForNoun HavePronoun IAmAgreement Itself KnowNothingVerb MayOfPronoun NeedToNoun NoLongerPronoun
    NorModalPronoun PluralDecades PronounAre PronounContraction SubjectAndObjectPronoun SubjectPronoun
    WentAheadAndAgreement WidelyAccepted YourOutClauseAgreement YourPredicateAdjective Yourself
    """.split()
)

_WORD_SPANS = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_POSSESSIVE = re.compile(r"'s$|s'$", re.IGNORECASE)
# pyspellchecker's dictionary is built from subtitles and misses newer or rarer valid words; an unknown word that
# harper accepted is reported only when it is also rare on the web (wordfreq's Zipf scale, 0 = never seen).
_SPELL_ONLY_MAX_ZIPF = 2.0
# pyspellchecker's dictionary is American: try the American form of a British spelling before flagging it.
_BRITISH_TO_AMERICAN = (
    (re.compile(r"is(e|ed|es|ing|ation|ations|er|ers)$"), r"iz\1"),
    (re.compile(r"ys(e|ed|es|ing)$"), r"yz\1"),
    (re.compile(r"our(s|ed|ing|able|ite|ites|er|ers)?$"), r"or\1"),
    (re.compile(r"tre(s)?$"), r"ter\1"),
    (re.compile(r"ll(ed|ing|er|ers)$"), r"l\1"),
    (re.compile(r"ence$"), r"ense"),
    (re.compile(r"ogue(s)?$"), r"og\1"),
)


def _american_variants(word: str) -> list[str]:
    out = []
    for pattern, repl in _BRITISH_TO_AMERICAN:
        alt = pattern.sub(repl, word)
        if alt != word:
            out.append(alt)
    return out


class EmbeddedChecker:
    """Offline checker: harper-py (grammar, a/an, confused words, repetitions, spelling) + pyspellchecker.

    * harper lints in British English (IELTS); a spelling lint is kept only if harper's American dictionary
      rejects the word as well, so British and American spellings are both accepted.
    * pyspellchecker adds unknown words harper did not flag (e.g. ``nowdays``, ``envolved``), de-duplicated
      against harper's matches (a span flagged by both is reported once, harper's version).
    * harper's ``Linter`` is not thread-safe: calls are serialised with a lock.
    """

    name = "embedded"

    def __init__(self, rules: str = "essay") -> None:
        """``rules``: "essay" (default, the rules that matter for essays: see HARPER_ESSAY_RULES_FIRED) or "all"."""
        import harper
        from spellchecker import SpellChecker

        if rules not in ("essay", "all"):
            raise ValueError(f"rules must be 'essay' or 'all', not {rules!r}")
        self.rules = rules
        self._harper = harper
        self._lock = threading.Lock()
        self._linter = harper.Linter(harper.Dialect.BRITISH)
        cfg = self._linter.get_default_lint_config()
        if rules == "all":
            enabled = {k for k, on in cfg.items() if on}
        else:
            enabled = set(HARPER_ESSAY_RULES_FIRED) | set(HARPER_ESSAY_RULES_GENERAL)
            enabled.add("SpellCheck")  # whatever else a harper version renames, spelling stays on
        self._linter.set_lint_config({k: (k in enabled and k not in HARPER_DISABLED_RULES) for k in cfg})
        self._us = harper.Linter(harper.Dialect.AMERICAN)  # second opinion on spelling only
        self._us.set_lint_config({k: (k == "SpellCheck") for k in cfg})
        self._spell = SpellChecker(language="en", distance=1)

    # harper ---------------------------------------------------------------------------------------------------
    def _harper_matches(self, flat: str) -> list[GrammarMatch]:
        organized = self._linter.organized_lints(flat, language="plaintext")
        raw = [(rule, lint) for rule, lints in organized.items() for lint in lints]
        spelling = {lint.problem_text for rule, lint in raw if lint.lint_kind == "Spelling"}
        rejected_by_us: set[str] = set()
        if spelling:
            words = sorted(spelling)
            joined = " \n".join(words)
            rejected_by_us = {lint.problem_text for lint in self._us.lint(joined, language="plaintext")}
        out = []
        for rule, lint in raw:
            if lint.lint_kind == "Spelling" and lint.problem_text not in rejected_by_us:
                continue  # a British-only flag on a valid American spelling
            suggestions: list[str] = []
            for s in lint.suggestions:
                rep = s.replacement_text
                if rep and rep not in suggestions:
                    suggestions.append(rep)
                if len(suggestions) == MAX_SUGGESTIONS:
                    break
            out.append(
                GrammarMatch(
                    offset=lint.span.start,
                    length=lint.span.end - lint.span.start,
                    category=HARPER_KIND_TO_CATEGORY.get(lint.lint_kind, "OTHER"),
                    rule_id=f"HARPER_{rule}",
                    message=lint.message,
                    suggestions=tuple(suggestions),
                )
            )
        return out

    # pyspellchecker -------------------------------------------------------------------------------------------
    def _spelling_matches(self, flat: str, taken: list[tuple[int, int]]) -> list[GrammarMatch]:
        from wordfreq import zipf_frequency

        candidates = []
        for m in _WORD_SPANS.finditer(flat):
            word = m.group()
            if len(word) < 3 or word.isupper():  # acronyms, single letters
                continue
            if word[0].isupper():
                i = m.start() - 1
                while i >= 0 and flat[i] in " \"'(":
                    i -= 1
                if i >= 0 and flat[i] not in ".!?":
                    continue  # capitalised mid-sentence: a name
            candidates.append((m.start(), m.end(), _POSSESSIVE.sub("", word.lower())))
        unknown = self._spell.unknown([w for _, _, w in candidates])
        out = []
        for start, end, w in candidates:
            if w not in unknown or zipf_frequency(w, "en") > _SPELL_ONLY_MAX_ZIPF:
                continue
            if any(alt in self._spell for alt in _american_variants(w)):
                continue
            if any(start < e and s < end for s, e in taken):
                continue
            cands = self._spell.candidates(w) or set()
            cands.discard(w)
            ranked = sorted(cands, key=lambda c: (-self._spell.word_usage_frequency(c), c))[:MAX_SUGGESTIONS]
            out.append(
                GrammarMatch(
                    offset=start,
                    length=end - start,
                    category="TYPOS",
                    rule_id="PYSPELLCHECKER_UNKNOWN_WORD",
                    message=f"Possible spelling mistake: '{flat[start:end]}' is not in the dictionary.",
                    suggestions=tuple(ranked),
                )
            )
            taken.append((start, end))
        return out

    def check_normalized(self, flat: str) -> list[GrammarMatch]:
        """Matches with offsets into ``flat`` (already normalised text)."""
        if not flat.strip():
            return []
        with self._lock:
            matches = self._harper_matches(flat)
        taken = [(m.offset, m.offset + m.length) for m in matches]
        matches += self._spelling_matches(flat, taken)
        matches.sort(key=lambda m: (m.offset, m.length))
        return matches

    def check(self, text: str) -> list[GrammarMatch]:
        flat, mapping = _prepare(text)
        return _to_original(text, mapping, self.check_normalized(flat))


# --- LanguageTool ------------------------------------------------------------------------------------------------

# LanguageTool category ids outside CATEGORIES -> the nearest one
LT_CATEGORY_ALIASES = {
    "TYPOGRAPHY": "PUNCTUATION",
    "COMPOUNDING": "GRAMMAR",
    "NONSTANDARD_PHRASES": "CONFUSED_WORDS",
    "COLLOCATIONS": "CONFUSED_WORDS",
    "FALSE_FRIENDS": "CONFUSED_WORDS",
    "REPETITIONS": "REDUNDANCY",
    "REPETITIONS_STYLE": "STYLE",
    "PLAIN_ENGLISH": "STYLE",
    "WIKIPEDIA": "STYLE",
    "GENDER_NEUTRALITY": "STYLE",
    "AMERICAN_ENGLISH_STYLE": "STYLE",
    "BRITISH_ENGLISH": "STYLE",
    "MISC": "OTHER",
    "SEMANTICS": "OTHER",
}


class LanguageToolError(RuntimeError):
    """The LanguageTool server could not be reached or answered with something other than a check result."""


def _utf16_to_codepoints(text: str):
    """Function mapping a UTF-16 code-unit offset (what LanguageTool's Java strings count) to a str index."""
    if all(ord(c) <= 0xFFFF for c in text):
        return lambda i: i
    starts = []
    units = 0
    for ch in text:
        starts.append(units)
        units += 2 if ord(ch) > 0xFFFF else 1
    import bisect

    return lambda i: bisect.bisect_left(starts, i)


class LanguageToolChecker:
    """Client of a LanguageTool server's HTTP API (``POST {url}/v2/check``)."""

    name = "languagetool"

    def __init__(self, url: str, timeout_s: float = 10.0, language: str = "en-US") -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.language = language

    def check_normalized(self, flat: str) -> list[GrammarMatch]:
        import requests

        if not flat.strip():
            return []
        endpoint = f"{self.url}/v2/check"
        try:
            resp = requests.post(
                endpoint, data={"language": self.language, "text": flat}, timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            raise LanguageToolError(f"LanguageTool request to {endpoint} failed: {exc}") from exc
        if resp.status_code != 200:
            raise LanguageToolError(
                f"LanguageTool at {endpoint} answered HTTP {resp.status_code}: {resp.text[:200]!r}"
            )
        try:
            payload: dict[str, Any] = resp.json()
            raw_matches = payload["matches"]
        except (ValueError, KeyError, TypeError) as exc:
            raise LanguageToolError(f"LanguageTool at {endpoint} returned no 'matches' JSON: {exc}") from exc
        to_cp = _utf16_to_codepoints(flat)
        out = []
        for m in raw_matches:
            start_u, len_u = int(m["offset"]), int(m["length"])
            start, end = to_cp(start_u), to_cp(start_u + len_u)
            rule = m.get("rule") or {}
            cat = ((rule.get("category") or {}).get("id") or "OTHER").upper()
            cat = cat if cat in CATEGORIES else LT_CATEGORY_ALIASES.get(cat, "OTHER")
            reps = tuple(r.get("value", "") for r in (m.get("replacements") or [])[:MAX_SUGGESTIONS])
            out.append(
                GrammarMatch(
                    offset=start,
                    length=max(end - start, 0),
                    category=cat,
                    rule_id=str(rule.get("id", "UNKNOWN")),
                    message=str(m.get("message", "")),
                    suggestions=tuple(r for r in reps if r),
                )
            )
        out.sort(key=lambda g: (g.offset, g.length))
        return out

    def check(self, text: str) -> list[GrammarMatch]:
        flat, mapping = _prepare(text)
        return _to_original(text, mapping, self.check_normalized(flat))


_EMBEDDED: EmbeddedChecker | None = None
_EMBEDDED_LOCK = threading.Lock()


def get_checker(settings) -> GrammarChecker:
    """LanguageToolChecker when ``settings.languagetool_url`` is set, else the (shared, lazily built)
    EmbeddedChecker."""
    if getattr(settings, "languagetool_url", None):
        return LanguageToolChecker(settings.languagetool_url, timeout_s=settings.languagetool_timeout_s)
    global _EMBEDDED
    with _EMBEDDED_LOCK:
        if _EMBEDDED is None:
            _EMBEDDED = EmbeddedChecker()
        return _EMBEDDED
