"""What a question asks for (a date, a number, a person…) and the spans of that kind in a sentence."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property, lru_cache

# "Which …" / "What …" with up to two words before the noun ("Which four countries", "In which Asian
# city"), but not "What kind of organisation is …", which asks for a description.
_WH = r"\b(?:which|what) (?!(?:kind|type|sort)s? of )(?:[\w-]+ ){0,2}"
_WHICH = r"\bwhich (?!(?:kind|type|sort)s? of )(?:[\w-]+ ){0,2}"
# Question words, Thai and English, to the kind of span that answers them; the first match wins, so the
# narrower patterns ("how far", "ประเทศใด") come before the broader ("how", "อะไร").
_KINDS = [
    # "How far is Bogotá from Santiago?" asks for a distance; "How far does it want to take integration?"
    # for an extent, which no number answers (on dev three such questions were refused for want of one).
    (
        "distance",
        r"\bhow far (?:is|are|was|were)\b|\bhow far\b(?=.*\b(?:from|apart|away|between|distance)\b)|"
        r"\bhow many (?:km|kilomet)|ห่าง.*(?:เท่าไร|เท่าใด|แค่ไหน)|ไกล.*(?:เท่าไร|แค่ไหน)|กี่กิโลเมตร",
    ),
    (
        "date",
        r"\bwhen\b|\b(?:what|which) (?:year|decade|period)\b|\bsince when\b|\bwhat date\b|"
        r"เมื่อใด|เมื่อไร|เมื่อไหร่|ปีใด|ปีไหน|ปีอะไร|ปี\s*ค\.ศ\.\s*ใด|ปี\s*พ\.ศ\.\s*ใด|วันที่เท่าไร|วันใด|ช่วงปีใด|ตั้งแต่ปีใด",
    ),
    # "What's the actual percentage rate of …?" asks for a number as much as "how much" does.
    (
        "number",
        r"\bhow many\b|\bhow much\b|\bhow long\b|กี่|เท่าไร|เท่าใด|จำนวนเท่า|กี่เปอร์เซ็นต์|"
        r"\bwhat(?:'s| is| was| are| were)? (?:the )?(?:[\w-]+ ){0,2}"
        r"(?:percentage|rate|number|amount|figure|total|population|share|size)s?\b",
    ),
    ("country", rf"{_WH}countr|{_WHICH}nation|ประเทศ(?:สมาชิก)?(?:ใด|ไหน|อะไร)|ชาติใด"),
    ("company", rf"{_WH}(?:company|companies|firm|airline)|{_WHICH}business|(?:บริษัท|สายการบิน)(?:ใด|ไหน|อะไร)"),
    # A city asked for by name ("เมืองอะไร", "Which city"): a country is no answer to it.
    ("city", rf"{_WH}(?:city|cities|capital|town)\b|(?:เมือง|กรุง)(?:ใด|ไหน|อะไร)"),
    (
        "person",
        rf"\bwho\b|\bwhom\b|\bwhose\b|{_WHICH}(?:president|leader|minister|secretary|founder)s?\b|ใคร|ผู้ใด|คน(?:ใด|ไหน)|บุคคลใด",
    ),
    ("place", r"\bwhere\b|ที่ไหน|ที่ใด|แห่งใด"),
    (
        "organisation",
        rf"{_WH}(?:organi[sz]ation|grouping|bloc|alliance|agreement|treaty|protocol|party)|{_WHICH}group|"
        # Thai puts the modifier between the noun and its question word: องค์กรความร่วมมือใด, พรรคการเมืองใด.
        r"(?:องค์กร|องค์การ|กลุ่ม|ความตกลง|สนธิสัญญา|พิธีสาร|พรรค)"
        r"(?:ความร่วมมือ|การเมือง|เศรษฐกิจ|ระหว่างประเทศ)?(?:ใด|ไหน|อะไร)",
    ),
    # "Why is the Protocol of Ouro Preto important?" asks what it did, which no cause word gives.
    ("significance", r"\bwhy (?:is|was|are|were)\b.*\b(?:important|significant)\b|ทำไม.*(?<!ความ)สำคัญ"),
    # "What made …" and "อะไรทำให้…" ask for a cause; "เพื่ออะไร", "เป้าหมายอะไร" and "What is the aim of …"
    # for a purpose, which the reason words' purpose words answer ("วัตถุประสงค์คือ…", "Its aim is …").
    (
        "reason",
        r"\bwhy\b|\bwhat (?:made|caused|led)\b|ทำไม|เหตุใด|เพราะอะไร|เพราะเหตุใด|สาเหตุ|อะไรทำให้|เพื่ออะไร|"
        r"(?:เป้าหมาย|วัตถุประสงค์)(?:คือ)?(?:อะไร|ใด)|\bwhat (?:is|was|are|were) (?:the |its |their )?"
        r"(?:main )?(?:aims?|goals?|purposes?|objectives?)\b|\bwhat for\b",
    ),
    ("manner", r"\bhow\b|อย่างไร|ยังไง"),
]
_KIND_PATTERNS = [(kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in _KINDS]
# Kinds a short answer can be: one span of the sentence answers the question.
SHORT_KINDS = ("date", "number", "distance", "country", "company", "person", "city", "place", "organisation")
# Kinds whose answer a sentence visibly holds or lacks: the short kinds, and a reason (a word that gives
# one: "เพราะ", "เป็นผลมาจาก", "because", "stems from", or a purpose: "วัตถุประสงค์", "aim"), which is
# quoted but never cut out as a short answer.
TYPED_KINDS = (*SHORT_KINDS, "reason")
_REASON = re.compile(
    r"เพราะ|เนื่องจาก|ทำให้|เพื่อ|จึง|สาเหตุ|ผลมาจาก|เป็นผล|ส่งผล|ในฐานะ|ทางเลือก|แทน|วัตถุประสงค์|เป้าหมาย|"
    r"\bbecause\b|\bdue to\b|\bowing to\b|\bas a result\b|\bso that\b|\bin order to\b|\blea(?:d|ds|ding) to\b|"
    r"\baims?\b|\bobjectives?\b|\bgoals?\b|"
    r"\bresult(?:s|ed)? (?:from|in)\b|\breasons?\b|\bstem(?:s|med)? from\b|\binstead\b|\balternative\b|"
    r"\btherefore\b|\bthus\b|\bhence\b|\bpurpose\b|\bas an? (?:\w+ )?(?:forum|way|means|counterweight)\b",
    re.IGNORECASE,
)
# Entity kinds (the glossary's fourth column) that answer each kind of question, in order of preference.
ENTITY_KINDS = {
    "country": ("country",),
    "company": ("company",),
    "person": ("person",),
    "city": ("city",),
    "place": ("city", "place", "country"),  # the most precise that the sentence holds
    "organisation": ("organisation",),
}
# A "who" question may be answered by a country or an organisation ("Who pushed for the FTAA?" The
# United States). Such a sentence can be quoted, but only a person is offered as a short answer: on dev,
# "Who is Peru's president?" got "Workers' Party", and of five countries or organisations offered for
# other who questions three were wrong ("ใครเป็นผู้ลงนามในปฏิญญาลิมา": the Pacific Alliance, for its
# leaders). Short-answer precision 0.897 -> 0.922, coverage 0.653 -> 0.639.
LOOSE_KINDS = {**ENTITY_KINDS, "person": ("person", "organisation", "country")}
_ROLE = re.compile(
    r"president|leader|\bhead(?:s|ed)?\b|\bled\b|secretary|minister|ceo|founder|ประธานาธิบดี|ผู้นำ|หัวหน้า|เลขาธิการ|รัฐมนตรี",
    re.I,
)


# "Where" is answered by a place the sentence puts something in or at ("in Havana", "ที่กรุงฮาวานา"), not
# by any place it names ("ALBA's founding countries were Venezuela and Cuba").
_LOCATIVE = re.compile(
    r"(?:\b(?:in|at|near|from|to|into|outside|inside|based in|headquartered in)\s+(?:the\s+)?"
    r"(?:(?:city|capital|town|country|region|province) of\s+)?"
    r"|(?:ที่|ณ|ใน|จาก|ไปยัง|ตั้งอยู่|แห่ง)\s*(?:กรุง|นคร|เมือง|ประเทศ|ภูมิภาค|จังหวัด)?\s*)$",
    re.IGNORECASE,
)


def asks_for_a_person(question: str) -> bool:
    """Whether only a person answers the question: it names a role ("president", "ผู้นำ")."""
    return bool(_ROLE.search(question))


# A question about who holds a role now ("Who is …", "ปัจจุบัน"), which a former holder does not answer.
_NOW = re.compile(r"\bwho(?: is|'s)\b|\bcurrent(?:ly)?\b|\bnow\b|\btoday\b|ปัจจุบัน|ตอนนี้|ขณะนี้", re.IGNORECASE)
_NEXT_TO = 16  # characters between a role's word and its country: "president of", "ประธานาธิบดีคนปัจจุบันของ"
_FORMER = re.compile(r"^(?:อดีต|former\b)", re.IGNORECASE)


def role_holders(question: str, entities) -> set[int] | None:
    """The glossary rows of the people who can answer a question naming a role, by their notes: one
    that names the country the question asks about ("Who is Brazil's president?" is not answered by
    Humala, "ประธานาธิบดีของเปรู"), and not a former holder when it asks who holds the role now. None
    when the question names no role (any person then answers)."""
    if not asks_for_a_person(question):
        return None
    entities = as_entities(entities)
    # The country of the role stands next to its word ("Venezuela's president", "ประธานาธิบดีของบราซิล"), not
    # elsewhere in the question ("Which Colombian president wanted … from Mexico to Chile?").
    roles = [m.span() for m in _ROLE.finditer(question)]
    countries = [
        entities[row][0]
        for a, b, row in entities.find(question)
        if entities[row][2] == "country" and any(a - _NEXT_TO <= y and x - _NEXT_TO <= b for x, y in roles)
    ]
    now = bool(_NOW.search(question))
    return {
        row
        for row, (_, _, kind) in enumerate(entities)
        if kind == "person"
        and all(any(form in entities.notes[row] for form in forms) for forms in countries)
        and not (now and _FORMER.match(entities.notes[row]))
    }


# What a "how many" question counts, by the unit a count names ("4 ประเทศ", "12 คน"); a count naming
# another unit does not answer it ("การค้า…มีมูลค่าปีละกี่ดอลลาร์" is not "2 ประเทศ"), a bare number may.
_COUNTED = [
    ("percent", r"percent|per cent|ร้อยละ|เปอร์เซ็นต์|%", r"%|เปอร์เซ็นต์|per ?cent"),
    ("people", r"\bhow many (?:\w+ )?people\b|employ|population|inhabitants|กี่คน|พนักงาน|ประชากร", r"คน|people"),
    ("countries", r"countr|nation|member|\bstates\b|ประเทศ|สมาชิก", r"ประเทศ|countr(?:y|ies)|members?|สมาชิก"),
]


def counted(question: str) -> str:
    """What a number question counts: "percent", "people", "countries", or "other" (dollars, decades…)."""
    return next((unit for unit, asked, _ in _COUNTED if re.search(asked, question, re.IGNORECASE)), "other")


def _counts(number: str, unit: str) -> bool:
    """Whether a number span answers a question counting `unit`: a bare number, or one naming that unit."""
    named = [u for u, _, written in _COUNTED if re.search(rf"(?:{written})\s*$", number, re.IGNORECASE)]
    return not named or named == [unit]


_MONTHS_TH = "มกราคม|กุมภาพันธ์|มีนาคม|เมษายน|พฤษภาคม|มิถุนายน|กรกฎาคม|สิงหาคม|กันยายน|ตุลาคม|พฤศจิกายน|ธันวาคม"
_MONTHS_EN = "January|February|March|April|May|June|July|August|September|October|November|December"
# A comma after a year is punctuation ("withdrew in 2006, while …"); before a digit, a thousands
# separator ("2,006 km").
_YEAR = r"(?<![\d,.])(?:1[5-9]\d\d|2[0-5]\d\d)(?:\s*[-–]\s*(?:1[5-9]\d\d|2[0-5]\d\d))?(?!\d|,\d)"
_DATE = re.compile(
    rf"(?:(?:วันที่\s*)?\d{{1,2}}\s*(?:{_MONTHS_TH})\s*)?(?:(?:ค|พ)\.ศ\.\s*)?{_YEAR}"
    rf"(?:\s*\((?:(?:ค|พ)\.ศ\.\s*)?{_YEAR}\))?"
    rf"|(?:\d{{1,2}}\s+(?:{_MONTHS_EN})\s+|(?:{_MONTHS_EN})\s+\d{{1,2}},\s+)?(?:(?:BE|CE)\s+)?{_YEAR}"
    rf"(?:\s*\({_YEAR}\))?"
)
_SCALE = r"(?:\s*(?:พัน|หมื่น|แสน|ล้าน|thousand|million))?"
_UNIT_DISTANCE = r"(?:กิโลเมตร|กม\.|km\b|kilomet(?:re|er)s?|miles?|ไมล์)"
_UNIT_COUNT = r"(?:ประเทศ|countries|country|members?|สมาชิก|คน|people|%|เปอร์เซ็นต์|per ?cent|percent)"
_NUMBER = rf"(?:more than |over |about |กว่า\s*|ประมาณ\s*)?(?<![\d,.])\d[\d,]*(?:\.\d+)?{_SCALE}"
_DISTANCE = re.compile(rf"{_NUMBER}\s*{_UNIT_DISTANCE}", re.IGNORECASE)
_COUNT = re.compile(rf"{_NUMBER}\s*{_UNIT_COUNT}|(?<![\d,.])\d[\d,]*(?:\.\d+)?(?![\d,.])", re.IGNORECASE)
_WORD_NUMBERS = re.compile(
    r"\b(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\b(?:\s+countries)?", re.IGNORECASE
)


def expected_kind(question: str) -> str | None:
    """The kind of span the question asks for (see SHORT_KINDS, plus "reason", "significance" and "manner"), or None.

    The question word that comes first decides ("Who led Venezuela when …" asks for a person); at the
    same place the narrower pattern wins ("how far" over "how").
    """
    found = [
        (m.start(), order, kind)
        for order, (kind, pattern) in enumerate(_KIND_PATTERNS)
        for m in [pattern.search(question)]
        if m
    ]
    return min(found)[2] if found else None


_SEVERAL = re.compile(
    r"บ้าง|\b(?:which|what)\s+(?:[\w-]+\s+){0,2}"
    r"(?:countries|nations|companies|firms|airlines|organi[sz]ations|groups|groupings|blocs|cities|people)\b",
    re.IGNORECASE,
)


def asks_for_several(question: str) -> bool:
    """Whether the question asks for a list ("ประเทศใดบ้าง", "Which countries …"): one name of several
    is then not its answer."""
    return bool(_SEVERAL.search(question))


# A question that opens with its question word, a verb next, asks for a subject ("Which country wants to
# join APEC?", "ประเทศใดต้องการเข้าร่วม…", "Who pushed for the FTAA?"); after an auxiliary ("Which
# country was …", "Who is …") it may ask for either.
_SUBJECT_EN = re.compile(
    r"\s*(?:who|(?:which|what)\s+(?:[\w'-]+\s+){0,3}?"
    r"(?:countr(?:y|ies)|nations?|compan(?:y|ies)|firms?|airlines?|business|organi[sz]ations?|groups?|groupings?"
    r"|blocs?|alliances?|agreements?|treat(?:y|ies)|protocols?|part(?:y|ies)|cit(?:y|ies)|capitals?|towns?))"
    r"\s+(?!(?:is|was|were|are|did|does|do|can|will|would|should|had)\b)\w",
    re.IGNORECASE,
)
_SUBJECT_TH = re.compile(
    r"\s*(?:ใคร|ผู้ใด|(?:ประเทศ|บริษัท|สายการบิน|องค์กร|องค์การ|กลุ่ม|ความตกลง|สนธิสัญญา|พรรค|เมือง)\S{0,12}?(?:ใด|ไหน))"
    r"(?!(?:คือ|เป็น))"
)


def asks_for_subject(question: str) -> bool:
    """Whether the name asked for is the subject of what the question says: it then stands before those
    words in the text, not after them."""
    return bool(_SUBJECT_EN.match(question) or _SUBJECT_TH.match(question))


def spans(
    text: str,
    kind: str,
    entities=(),
    asked=(),
    loose: bool = False,
    holders: set[int] | None = None,
    unit: str | None = None,
) -> list[tuple[int, int]]:
    """Non-overlapping spans of `text` that can answer a question of this kind, in text order.

    Entities are (Thai forms, English forms, entity kind) rows; a name the question itself mentions
    (`asked`, from `names_in`) is not an answer to it. `loose` takes the LOOSE_KINDS reading of a "who"
    question; `holders` (from `role_holders`) are the only people that answer it; `unit` (from
    `counted`) is what a number must count.
    """
    if kind == "date":
        found = [m.span() for m in _DATE.finditer(text)]
    elif kind == "distance":
        found = [m.span() for m in _DISTANCE.finditer(text)]
    elif kind == "number":
        # A day of the month is no count ("signed on 26 May 1969" does not say how many signed).
        dates = [m.span() for m in _DATE.finditer(text)]
        found = [
            m.span()
            for m in _COUNT.finditer(text)
            if not _is_year(m.group())
            and not any(a <= m.start() < b for a, b in dates)
            and not _FOOTNOTE.match(text, max(0, m.start() - 2))
            and (unit is None or _counts(m.group(), unit))
        ]
        found += [m.span() for m in _WORD_NUMBERS.finditer(text) if unit is None or _counts(m.group(), unit)]
    elif kind == "reason":
        # Not inside a name: "Bolivarian Alternative for the Americas" gives no reason.
        names = [(a, b) for a, b, _ in as_entities(entities).find(text)]
        found = [m.span() for m in _REASON.finditer(text) if not any(a <= m.start() < b for a, b in names)]
    elif kind in ENTITY_KINDS:
        found = []
        for wanted in (LOOSE_KINDS if loose else ENTITY_KINDS)[kind]:
            found = _entity_spans(text, wanted, entities, asked, holders if wanted == "person" else None)
            if kind == "place":
                found = [(a, b) for a, b in found if _LOCATIVE.search(text, max(0, a - 24), a)]
            if found:
                break
    else:
        return []
    return _longest(found)


# A note's number after a name ("ALBA(4)", "(UNASUR)(3)") counts nothing.
_FOOTNOTE = re.compile(r"[\w)]\(\d{1,2}\)")


def _is_year(number: str) -> bool:
    return bool(re.fullmatch(r"\s*(?:1[5-9]\d\d|2[0-5]\d\d)\s*", number))


class Entities(Sequence):
    """The glossary's names: (Thai forms, English forms, kind) rows (`corpus.glossary_rows`), found in a
    text by one regular expression over every form, longest first, so that a name inside a longer one
    is not found on its own ("Chile" in "LAN Chile", "Asunción" in "Treaty of Asunción"). A row's note
    (optional fourth item) is in `notes`."""

    def __init__(self, rows=()):
        rows = list(rows)
        self.rows = [(tuple(thai), tuple(english), kind) for thai, english, kind, *_ in rows]
        self.notes = [row[3] if len(row) > 3 else "" for row in rows]
        # The texts searched are mostly the same passages and sentences, question after question; one
        # search over some 250 forms costs about 0.3 ms.
        self.find = lru_cache(maxsize=4096)(self._find)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    @cached_property
    def _matcher(self) -> tuple[re.Pattern | None, dict[str, int]]:
        row_of: dict[str, int] = {}
        for i, (thai, english, _) in enumerate(self.rows):
            for form in (*thai, *english):
                row_of.setdefault(form.lower(), i)
        # A Latin-script name must not sit inside a longer word ("Peru" in "Peruvian" is not Peru).
        parts = [
            rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])" if form.isascii() else re.escape(form)
            for form in sorted(row_of, key=len, reverse=True)
        ]
        return (re.compile("|".join(parts), re.IGNORECASE) if parts else None), row_of

    def _find(self, text: str) -> tuple[tuple[int, int, int], ...]:
        """(start, end, row) of each name in the text, in text order (as `find`)."""
        pattern, row_of = self._matcher
        return tuple((m.start(), m.end(), row_of[m.group().lower()]) for m in pattern.finditer(text)) if pattern else ()

    def row(self, name: str) -> int | None:
        """The row a name is a form of."""
        return self._matcher[1].get(name.lower())


def as_entities(entities) -> Entities:
    return entities if isinstance(entities, Entities) else Entities(entities)


def _entity_spans(text: str, kind: str, entities, asked, rows: set[int] | None = None) -> list[tuple[int, int]]:
    entities = as_entities(entities)
    return [
        (a, b)
        for a, b, i in entities.find(text)
        if entities[i][2] == kind and (*entities[i][0], *entities[i][1]) not in asked and (rows is None or i in rows)
    ]


def names_in(text: str, entities) -> list[tuple[str, ...]]:
    """The forms of each glossary name (countries, people, companies …) that a text mentions, not
    counting one inside a longer name (see `Entities`): "Asunción" in "In which city was the Treaty of
    Asunción signed?" is not asked about, so it can answer."""
    entities, names = as_entities(entities), []
    for _, _, i in entities.find(text):
        thai, english, kind = entities[i]
        if kind != "term" and (*thai, *english) not in names:
            names.append((*thai, *english))
    return names


# The choices a question offers: three or more names in a list after "among", "ในบรรดา", "ในกลุ่ม", or an
# "of" that opens the question or follows its question word ("Among Chile, Peru, Colombia and Mexico,
# which two …", "Which of …", "ในบรรดาชิลี เปรู โคลอมเบีย และเม็กซิโก ประเทศไหน …"); not "the leaders of …".
_AMONG = re.compile(
    r"(?:\b(?:among|amongst|out of)\s+(?:the\s+)?|(?:^\s*|\b(?:which|who|what)(?:\s+\w+)?\s+)of\s+(?:the\s+)?"
    r"|ในบรรดา\s*|ในกลุ่ม\s*)$",
    re.IGNORECASE,
)
_IN_LIST = re.compile(r"\s*(?:,\s*)?(?:(?:and|or|และ|หรือ|กับ)\s*)?", re.IGNORECASE)  # between two of them


def options(text: str, entities) -> list[tuple[str, ...]]:
    """The names a question offers as its choices (see `_AMONG`), as `names_in` gives them: they may answer
    it, and a passage need not name them all."""
    entities = as_entities(entities)
    found = entities.find(text)
    runs: list[list[tuple[int, int, int]]] = []
    for a, b, row in found:
        if runs and _IN_LIST.fullmatch(text[runs[-1][-1][1] : a]):
            runs[-1].append((a, b, row))
        else:
            runs.append([(a, b, row)])
    chosen = [run for run in runs if len(run) >= 3 and _AMONG.search(text[: run[0][0]])]
    return [(*entities[row][0], *entities[row][1]) for run in chosen for _, _, row in run]


def _longest(found: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Drop spans inside longer ones (and exact repeats), keep text order."""
    kept: list[tuple[int, int]] = []
    for a, b in sorted(set(found), key=lambda s: (-(s[1] - s[0]), s[0])):
        if all(b <= x or a >= y for x, y in kept):
            kept.append((a, b))
    return sorted(kept)


_SCALES = {"พัน": 1_000, "หมื่น": 10_000, "แสน": 100_000, "ล้าน": 1_000_000, "thousand": 1_000, "million": 1_000_000}
_SCALED = re.compile(r"(\d+(?:\.\d+)?)\s*(พัน|หมื่น|แสน|ล้าน|thousand|million)?", re.IGNORECASE)


def digits(text: str) -> list[str]:
    """The numbers in a text as digit strings, scale words applied ("4 พัน" and "4,000" are both 4000)."""
    out = []
    for number, scale in _SCALED.findall(text.replace(",", "")):
        value = float(number) * _SCALES.get(scale.lower(), 1) if scale else float(number)
        out.append(str(int(value)) if value == int(value) else number)
    return out
