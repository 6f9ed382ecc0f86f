import pytest

from assistant import extraction


@pytest.mark.parametrize(
    "question, kind",
    [
        ("ALBA ก่อตั้งขึ้นเมื่อใด", "date"),
        ("When was MERCOSUR founded?", "date"),
        ("How far is Bogotá from Santiago?", "distance"),
        ("โบโกตาอยู่ห่างจากซานติอาโกเท่าไร", "distance"),
        ("MERCOSUR มีประเทศผู้ก่อตั้งกี่ประเทศ", "number"),
        ("What's the actual percentage rate of MERCOSUR's common external tariff?", "number"),
        ("What is the population of Peru?", "number"),
        ("Which country lies between Colombia and Peru?", "country"),
        ("Which four countries make up the Andean Community today?", "country"),
        ("Which South American countries founded UNASUR?", "country"),
        ("Which airline has its South American hub in Lima?", "company"),
        ("Who leads Venezuela when ALBA was founded?", "person"),  # the first question word decides
        ("Where was ALBA founded?", "place"),
        ("How far is Bogotá from Santiago?", "distance"),
        ("Roughly how far apart are the two capitals?", "distance"),
        ("How far does the Andean Community want to take its integration?", "manner"),  # an extent
        ("เมืองหลวงของโคลอมเบียคือเมืองอะไร", "city"),
        ("In which city was the Treaty of Asunción signed?", "city"),
        ("In which Asian city did Colombia open an office?", "city"),
        ("What kind of organisation is UNASUR?", None),  # a description, not a name
        ("What do Peruvian business people think about foreign banks?", None),
        ("Which two economic groupings did South America form in the 1990s?", "organisation"),
        ("In which period did the groupings take shape?", "date"),
        ("พันธมิตรแปซิฟิกมีประเทศสมาชิกอะไรบ้าง", "country"),
        ("อะไรทำให้การรวมกลุ่มมีทิศทางที่แตกต่างไปจากเดิม", "reason"),
        ("ทั้ง 3 ประเทศหวังจะเชื่อมโยงสินค้าเพื่ออะไร", "reason"),
        ("สายการบินไหนใช้กรุงลิมาเป็นศูนย์กลางในอเมริกาใต้", "company"),
        # Thai puts a modifier between the noun and its question word; "การเมืองใด" is not "เมืองใด".
        ("เวเนซุเอลาสนับสนุนการจัดตั้งองค์กรความร่วมมือใด", "organisation"),
        ("ประธานาธิบดีเปรูใกล้ชิดกับพรรคการเมืองใด", "organisation"),
        # A purpose is asked for, which purpose words answer ("วัตถุประสงค์คือ…", "Its aim is …").
        ("กลุ่มเศรษฐกิจทั้งสองมีเป้าหมายอะไร", "reason"),
        ("พันธมิตรแปซิฟิกตั้งขึ้นมาเพื่อเป้าหมายอะไร", "reason"),
        ("What is the main aim of ALBA?", "reason"),
        ("Why did Brazil support UNASUR?", "reason"),
        ("ALBA คืออะไร", None),
        ("Whose idea was it in the first place?", "person"),
        ("Which Colombian president wanted to link the power grids from Mexico to Chile?", "person"),
        ("ผู้นำเปรูคนไหนที่บอกว่าจะสนับสนุนการรวมกลุ่มกับทุกประเทศ", "person"),  # "คนไหน": which person
        ("What did President Santos want to connect?", None),  # a role named, a thing asked for
        # Asks what it did, not for a cause; "ให้ความสำคัญ" (gives priority to) is no such question.
        ("Why is the Protocol of Ouro Preto important for MERCOSUR?", "significance"),
        ("ทำไมพิธีสารโอรูเปรตูจึงสำคัญ", "significance"),
        ("ทำไมแนวคิดของอลัน การ์เซียจึงให้ความสำคัญกับการค้ากับเอเชีย", "reason"),
    ],
)
def test_expected_kind(question, kind):
    assert extraction.expected_kind(question) == kind


def _texts(text, kind, entities=(), question="", loose=False):
    asked = extraction.names_in(question, entities)
    return [text[a:b] for a, b in extraction.spans(text, kind, entities, asked, loose)]


def test_dates_keep_both_calendars_together():
    text = "ก่อตั้งเมื่อวันที่ 14 ธันวาคม ค.ศ. 2004 (พ.ศ. 2547) ที่กรุงฮาวานา"
    assert _texts(text, "date") == ["วันที่ 14 ธันวาคม ค.ศ. 2004 (พ.ศ. 2547)"]
    assert _texts("signed on 26 May 1969 and renamed in 1996", "date") == ["26 May 1969", "1996"]
    # A comma after a year is punctuation; between digits, a thousands separator.
    assert _texts("joined in 1973 and withdrew in 2006, while Chile", "date") == ["1973", "2006"]
    assert _texts("a road of 2,006 km", "date") == []


def test_numbers_are_not_years_and_distances_need_a_unit():
    assert _texts("In 1991 the 4 countries signed", "number") == ["4 countries"]
    # A note's number after a name counts nothing: "How many members does ALBA have?" was answered "4".
    assert _texts("called ALBA(4), together with Cuba", "number") == []
    assert _texts("Nations (UNASUR)(3) and 12 members", "number") == ["12 members"]
    assert _texts("อยู่ห่างกว่า 4 พันกิโลเมตร ในปี 2011", "distance") == ["กว่า 4 พันกิโลเมตร"]
    assert _texts("In 2011 there were 4 members", "distance") == []


def test_names_come_from_the_glossary_and_the_question_own_names_are_not_answers(built_index):
    entities = built_index.entities
    text = "The United States pushed for the FTAA, which Venezuela opposed."
    assert _texts(text, "country", entities) == ["United States", "Venezuela"]
    assert _texts(text, "country", entities, "Did Venezuela oppose it?") == ["United States"]
    # A name inside a longer name the question mentions can answer it.
    signed = "founded by the Treaty of Asunción, signed on 26 March 1991 in Asunción, Paraguay"
    assert _texts(signed, "place", entities, "In which city was the Treaty of Asunción signed?") == ["Asunción"]
    assert _texts("LAN Chile has its hub in Lima", "country", entities) == []
    # "Where" takes a place something is in or at, not any place named.
    assert _texts("ALBA's founding countries were Venezuela and Cuba.", "place", entities) == []
    assert _texts("It was founded in 2004 in Havana by Venezuela", "place", entities) == ["Havana"]
    assert _texts("ก่อตั้งเมื่อ ค.ศ. 2004 ที่กรุงฮาวานา โดยเวเนซุเอลา", "place", entities) == ["กรุงฮาวานา"]
    assert _texts("ประเทศผู้ก่อตั้งคือเวเนซุเอลาและคิวบา", "place", entities) == []
    # A "who" question asks for a person; a country answers it only in the loose reading.
    question = "Who pushed for the FTAA?"
    assert _texts(text, "person", entities, question) == []
    assert _texts(text, "person", entities, question, loose=True) == ["United States", "Venezuela"]
    assert _texts(text, "person", entities, loose=True) == ["FTAA"]  # organisations before countries


@pytest.mark.parametrize(
    "question, subject, several",
    [
        ("Which country wants to join APEC?", True, False),
        ("Which Peruvian company owns the largest cement company in Chile?", True, False),
        ("Who pushed for the FTAA?", True, False),
        ("ประเทศใดต้องการเข้าร่วมเป็นสมาชิกเอเปค", True, False),
        ("Who is Peru's president?", False, False),  # after an auxiliary: either
        ("Which country was Alan Garcia president of?", False, False),
        ("บราซิลหันไปสนับสนุนการรวมตัวของกลุ่มใดแทน", False, False),
        ("Which four countries make up the Andean Community today?", True, True),
        ("แล้วต่อมามีประเทศไหนเข้าร่วมบ้าง", False, True),
    ],
)
def test_what_a_name_question_asks_for(question, subject, several):
    assert extraction.asks_for_subject(question) == subject
    assert extraction.asks_for_several(question) == several


@pytest.mark.parametrize(
    "question, offered",
    [
        ("Among Chile, Peru, Colombia and Mexico, which two have no FTA?", ["ชิลี", "เปรู", "โคลอมเบีย", "เม็กซิโก"]),
        ("ในบรรดาชิลี เปรู โคลอมเบีย และเม็กซิโก ประเทศไหนอยากเข้าเอเปค", ["ชิลี", "เปรู", "โคลอมเบีย", "เม็กซิโก"]),
        ("Of Chile, Peru and Mexico, which is not in APEC?", ["ชิลี", "เปรู", "เม็กซิโก"]),
        # The names the question is about, not choices: no "among", or fewer than three.
        ("What did the meetings between Chile, Peru, Colombia and Mexico lead to?", []),
        ("Of Chile and Peru, which fought a war?", []),
        ("What did the leaders of Chile, Peru, Colombia and Mexico sign?", []),
        ("Which one of Chile, Peru and Mexico is not in APEC?", ["ชิลี", "เปรู", "เม็กซิโก"]),
    ],
)
def test_the_choices_a_question_offers(built_index, question, offered):
    assert [forms[0] for forms in extraction.options(question, built_index.entities)] == offered


def test_a_reason_is_a_word_that_gives_one(built_index):
    assert _texts("ความสัมพันธ์ซึ่งเป็นผลมาจากสงครามแปซิฟิก", "reason") == ["เป็นผล"]
    assert _texts("ซึ่งส่งผลกระทบให้นักการเมืองชาวเปรูบางคนคัดค้าน", "reason") == ["ส่งผล"]
    assert _texts("วัตถุประสงค์ของ MERCOSUR คือการสร้างตลาดร่วม", "reason") == ["วัตถุประสงค์"]
    assert _texts("Its aim is deep integration", "reason") == ["aim"]
    assert _texts("relations, which stem from the War of the Pacific", "reason") == ["stem from"]
    # Not a word inside a name.
    renamed = "It was originally named the Bolivarian Alternative for the Americas"
    assert _texts(renamed, "reason", built_index.entities) == []
    assert _texts("พันธมิตรโบลิวาร์เพื่อประชาชนแห่งอเมริกาของเรา", "reason", built_index.entities) == []
    assert _texts("Venezuela joined in 1973 and withdrew in 2006, while Chile withdrew in 1976.", "reason") == []


@pytest.mark.parametrize(
    "question, unit, answers",
    [
        ("How many countries founded MERCOSUR?", "countries", ["4 ประเทศ", "7"]),
        ("How many people does ISA employ?", "people", ["12 คน", "7"]),
        ("การค้าระหว่างชิลีกับเปรูมีมูลค่าปีละกี่ดอลลาร์", "other", ["7"]),  # no count of countries is a sum
        ("How long would the power line be?", "other", ["7"]),
        # "business people" is who the question is about; the count is of countries.
        (
            "How many other countries would Peruvian business people see Peru up against?",
            "countries",
            ["4 ประเทศ", "7"],
        ),
    ],
)
def test_a_count_counts_what_the_question_does(question, unit, answers):
    assert extraction.counted(question) == unit
    text = "อีก 4 ประเทศ กับ 12 คน และ 7"
    assert [text[a:b] for a, b in extraction.spans(text, "number", unit=unit)] == answers


def test_entities_find_the_longest_name_as_a_whole_word():
    entities = extraction.Entities(
        [
            (("ชิลี",), ("Chile",), "country"),
            (("สายการบินแห่งชาติของชิลี",), ("LAN Chile",), "company"),
            (("เปรู",), ("Peru",), "country"),
        ]
    )
    text = "LAN Chile flies to Peruvian towns in peru"
    assert entities.find(text) == ((0, 9, 1), (37, 41, 2))
    assert [row for *_, row in entities.find("สายการบินแห่งชาติของชิลีบินไปเปรู")] == [1, 2]
    assert entities.row("lan chile") == 1 and entities.row("Bolivia") is None
    assert extraction.names_in(text, entities) == [("สายการบินแห่งชาติของชิลี", "LAN Chile"), ("เปรู", "Peru")]


def test_names_are_whole_words():
    peru = extraction.Entities([(("เปรู",), ("Peru",), "country")])
    assert peru.find("Peru and the Peruvian company") == ((0, 4, 0),)
    assert peru.find("ชิลีและเปรู") == ((7, 11, 0),)


def test_digits_apply_scale_words():
    assert extraction.digits("กว่า 4 พันกิโลเมตร") == ["4000"]
    assert extraction.digits("4,000 km and 1.5 million") == ["4000", "1500000"]


def test_a_role_is_held_by_the_people_the_glossary_gives_it():
    """A person answers a question naming a role only where the glossary's note gives them that role in
    the country asked about, and not as a former holder when the question asks who holds it now."""
    entities = extraction.Entities(
        [
            (("เปรู",), ("Peru",), "country", "ประเทศ"),
            (("บราซิล",), ("Brazil",), "country", "ประเทศ"),
            (("อลัน การ์เซีย",), ("Alan García",), "person", "อดีตประธานาธิบดีของเปรู"),
            (("อูมาลา",), ("Humala",), "person", "ประธานาธิบดีของเปรูในเวลาที่เอกสารเขียน"),
        ]
    )
    assert extraction.role_holders("Who founded ALBA?", entities) is None  # no role: anyone may answer
    assert extraction.role_holders("Who is Peru's current president?", entities) == {3}
    assert extraction.role_holders("Who was Peru's president in 2008?", entities) == {2, 3}
    assert extraction.role_holders("ใครเป็นประธานาธิบดีของบราซิลในปัจจุบัน", entities) == set()
    assert extraction.role_holders("ใครเป็นประธานาธิบดีคนปัจจุบันของเปรู", entities) == {3}
    # The role's country stands next to its word; Brazil here is what the president did something about.
    assert extraction.role_holders("Which Peruvian president wanted closer ties with Brazil?", entities) == {2, 3}
    assert extraction.role_holders("Who currently heads the secretariat?", entities) == {3}
    text = "Peru's former president (Alan García) and President Humala"
    assert extraction.spans(text, "person", entities, holders={3}) == [(text.index("Humala"), len(text))]
    assert extraction.Entities([(("เปรู",), ("Peru",), "country")]).notes == [""]  # the note is optional
