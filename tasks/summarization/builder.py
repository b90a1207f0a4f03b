"""Offline default: synthetic news articles with one key event each, and highlights that copy its names.

Each article (``article``) reports one key event of ten kinds (``EVENTS``: appointment, resignation,
acquisition, match result, transfer, election, research finding, factory opening, award, court
ruling) in 150-260 words (``min_words``..``max_words``) and 4-14 short paragraphs separated by
blank lines. The key sentence (four wordings per event) comes in one of four layouts
(``LAYOUTS``): as the lead (half the rows), after a headline line, after a scene-setting sentence,
or opening the second paragraph after two sentences of background. Around it: a detail sentence with numbers, elaboration, quotes, and
distractor sentences that name other people, organisations, places, numbers and dates.

The highlight (``highlights``, 1-2 sentences, 15-40 words) restates the key event with one of three
templates, chosen by the wording of the key sentence (so the mapping is learnable, not a coin
toss), and copies the event's names verbatim: full person names, organisations, the place, and the
date as the article writes it (one of four date styles per article), plus numbers from the detail
sentence. ``entities`` lists those people, organisations, places and the date in highlight order;
each occurs verbatim in the article and in the highlight, and no distractor is one of them.

Names: first names (by gender), surnames and cities from the person and address providers of 24
Latin-script ``faker`` locales (en, fr, de, es, it, pt, nl, pl, sv, da, no, fi, cs, hu, ro, hr, tr,
id; own city lists where faker has none), capped per locale so that no locale dominates;
organisations are surnames, cities or brand words (``ORG_PREFIXES`` x ``ORG_ROOTS``, syllable
names) with shared suffixes ("Holdings", "FC", "University of ...").

Split rule (``split_pools``): every word of every name is assigned to "train" (80 %), "validation"
(5 %) or "test" (15 %) by a seeded CRC-32 of the word; a name belongs to the split of its words
(names whose words disagree are dropped), and a split's rows draw all their people, organisations
and places, distractors included, from that split's pools. No test first name, surname,
organisation word or city occurs anywhere in the training split, so the test score measures
copying unseen names through attention, not memorised names. Shared words (template words, roles,
months, suffixes, and words in three or more city names such as "San" or "nad") are in every
split and never decide one.

Schema (cnn_dailymail's plus one column): ``article``, ``highlights``, ``id`` ("test-000042",
unique across splits), ``entities`` (list of strings). The same arguments always give the same
rows (seeded ``random.Random``, CRC-32, sorted pools; no hash() and no set order).
"""

from __future__ import annotations

import importlib
import random
import re
import string
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from datasets import Dataset, DatasetDict, Features, Sequence, Value

FEATURES = Features(
    {
        "article": Value("string"),
        "highlights": Value("string"),
        "id": Value("string"),
        "entities": Sequence(Value("string")),
    }
)
SPLITS = ("train", "validation", "test")
SPLIT_PERCENT = {"train": 80, "validation": 5, "test": 15}  # share of name words per split
POOL_NAMES = ("first_names", "surnames", "org_words", "cities")
LOCALES = (
    "en_US", "en_GB", "en_IE", "fr_FR", "de_DE", "de_AT", "es_ES", "es_MX", "es_CO", "it_IT", "pt_BR", "pt_PT",
    "nl_NL", "pl_PL", "sv_SE", "da_DK", "no_NO", "fi_FI", "cs_CZ", "hu_HU", "ro_RO", "hr_HR", "tr_TR", "id_ID",
)  # fmt: skip
CAP_FIRST_NAMES = 150  # per locale and gender
CAP_SURNAMES = 250  # per locale
CAP_CITIES = 150  # per locale
MIN_LOCALE_POOL = 3  # a locale takes part in a split when each of its lists there holds this many names
GENDERS = ("male", "female")
CITY_COMMON_MIN = 3  # a word in this many city names ("San", "Nowy") is shared, not a name component
# Real cities for locales whose faker provider has no city list.
EXTRA_CITIES: dict[str, tuple[str, ...]] = {
    "en_US": (
        "Boston", "Seattle", "Denver", "Portland", "Austin", "Phoenix", "Atlanta", "Chicago", "Houston", "Dallas",
        "Detroit", "Memphis", "Nashville", "Omaha", "Tucson", "Sacramento", "Pittsburgh", "Cleveland", "Cincinnati",
        "Milwaukee", "Minneapolis", "Baltimore", "Richmond", "Raleigh", "Charlotte", "Tampa", "Orlando",
        "Albuquerque", "Tulsa", "Wichita", "Spokane", "Boise", "Reno", "Anchorage", "Honolulu", "Savannah",
        "Louisville", "Indianapolis", "Columbus", "Buffalo", "Rochester", "Syracuse", "Hartford", "Providence",
        "Madison", "Fresno", "Oakland", "Knoxville", "Chattanooga", "Lexington", "Birmingham", "Jacksonville",
    ),
    "en_GB": (
        "Manchester", "Leeds", "Sheffield", "Bristol", "Liverpool", "Newcastle", "Nottingham", "Leicester",
        "Coventry", "Bradford", "Cardiff", "Swansea", "Glasgow", "Edinburgh", "Aberdeen", "Dundee", "Belfast",
        "Brighton", "Plymouth", "Southampton", "Portsmouth", "Norwich", "Ipswich", "Exeter", "Oxford", "Cambridge",
        "York", "Durham", "Carlisle", "Preston", "Blackpool", "Bolton", "Wigan", "Sunderland", "Middlesbrough",
        "Lincoln", "Peterborough", "Gloucester", "Worcester", "Hereford", "Chester", "Salisbury", "Canterbury",
        "Inverness", "Stirling", "Derby", "Wolverhampton", "Huddersfield", "Swindon", "Luton",
    ),
    "en_IE": (
        "Dublin", "Cork", "Limerick", "Galway", "Waterford", "Kilkenny", "Sligo", "Athlone", "Drogheda", "Dundalk",
        "Wexford", "Tralee", "Ennis", "Carlow", "Navan", "Letterkenny", "Mullingar", "Killarney", "Clonmel",
        "Castlebar", "Tullamore", "Naas", "Portlaoise", "Kildare", "Bray", "Greystones", "Arklow", "Wicklow",
    ),
    "fr_FR": (
        "Lyon", "Marseille", "Toulouse", "Nantes", "Strasbourg", "Montpellier", "Bordeaux", "Lille", "Rennes",
        "Reims", "Toulon", "Grenoble", "Dijon", "Angers", "Nîmes", "Villeurbanne", "Limoges", "Tours", "Amiens",
        "Metz", "Besançon", "Perpignan", "Orléans", "Rouen", "Mulhouse", "Caen", "Nancy", "Avignon", "Poitiers",
        "Pau", "Bayonne", "Annecy", "Brest", "Lorient", "Valence", "Chambéry", "Troyes", "Calais", "Dunkerque",
        "Quimper", "Colmar", "Béziers", "Narbonne", "Cherbourg", "Vannes",
    ),
    "es_ES": (
        "Barcelona", "Valencia", "Sevilla", "Zaragoza", "Málaga", "Murcia", "Palma", "Bilbao", "Alicante",
        "Córdoba", "Valladolid", "Vigo", "Gijón", "Granada", "Vitoria", "Elche", "Oviedo", "Badajoz", "Cartagena",
        "Salamanca", "Huelva", "Logroño", "Burgos", "Santander", "Castellón", "Albacete", "León", "Cádiz", "Jaén",
        "Ourense", "Girona", "Lleida", "Tarragona", "Pamplona", "Almería", "Segovia", "Toledo", "Cáceres", "Lugo",
        "Huesca", "Teruel", "Soria", "Ávila", "Zamora", "Palencia",
    ),
    "es_MX": (
        "Guadalajara", "Monterrey", "Puebla", "Tijuana", "Zapopan", "Mérida", "Chihuahua", "Querétaro",
        "Aguascalientes", "Hermosillo", "Saltillo", "Mexicali", "Culiacán", "Acapulco", "Morelia", "Toluca",
        "Cancún", "Veracruz", "Oaxaca", "Durango", "Tampico", "Mazatlán", "Ensenada", "Irapuato", "Celaya",
        "Xalapa", "Tepic", "Colima", "Campeche", "Pachuca", "Cuernavaca", "Villahermosa", "Tlaxcala", "Zacatecas",
    ),
    "pt_BR": (
        "Curitiba", "Salvador", "Fortaleza", "Recife", "Manaus", "Belém", "Goiânia", "Campinas", "Natal", "Maceió",
        "Teresina", "Florianópolis", "Vitória", "Londrina", "Joinville", "Uberlândia", "Sorocaba", "Niterói",
        "Santos", "Aracaju", "Cuiabá", "Macapá", "Palmas", "Pelotas", "Blumenau", "Petrópolis", "Maringá",
        "Porto Alegre", "Belo Horizonte", "Campo Grande", "João Pessoa", "Juiz de Fora", "Ribeirão Preto",
    ),
    "no_NO": (
        "Oslo", "Bergen", "Trondheim", "Stavanger", "Drammen", "Fredrikstad", "Kristiansand", "Sandnes", "Tromsø",
        "Sarpsborg", "Skien", "Ålesund", "Sandefjord", "Haugesund", "Tønsberg", "Porsgrunn", "Bodø", "Arendal",
        "Hamar", "Larvik", "Halden", "Lillehammer", "Harstad", "Molde", "Gjøvik", "Kongsberg", "Narvik", "Steinkjer",
    ),
    "tr_TR": (
        "İstanbul", "Ankara", "İzmir", "Bursa", "Antalya", "Konya", "Adana", "Gaziantep", "Mersin", "Kayseri",
        "Eskişehir", "Diyarbakır", "Samsun", "Denizli", "Şanlıurfa", "Malatya", "Trabzon", "Erzurum", "Elazığ",
        "Sivas", "Manisa", "Balıkesir", "Kahramanmaraş", "Aydın", "Tekirdağ", "Muğla", "Edirne", "Çorum", "Rize",
        "Bolu", "Kütahya", "Isparta", "Zonguldak", "Giresun", "Tokat", "Yozgat", "Amasya", "Kastamonu",
    ),
}  # fmt: skip
# Brand words for organisations: compounds ("Northgate", "Ironwood") and syllable names ("Velora").
ORG_PREFIXES = (
    "Blue", "Red", "Silver", "Iron", "North", "South", "East", "West", "Star", "Oak", "Stone", "Bright", "Clear",
    "Green", "Gold", "High", "Deep", "Swift", "Sun", "Frost", "Storm", "River", "Lake", "Sea", "Sky", "Copper",
    "Amber", "Cedar", "Maple", "Pine", "Elm", "Ash", "Fox", "Hawk", "Eagle", "Lion", "Bear", "Crown", "Harbour",
)  # fmt: skip
ORG_ROOTS = (
    "stone", "bridge", "field", "gate", "wood", "line", "point", "path", "wave", "peak", "ford", "crest", "vale",
    "light", "ridge", "brook", "haven", "well", "side", "wing", "mark", "dale", "croft", "moor", "spring", "view",
    "way", "hill", "water", "bay",
)  # fmt: skip
ORG_SYLLABLES = (
    ("Vel", "Tar", "Kor", "Zen", "Lum", "Nex", "Sol", "Cal", "Ver", "Syn", "Quan", "Bel", "Dor", "Fen", "Gal",
     "Hal", "Jor", "Kal", "Mer", "Pol", "Ral", "Sen", "Tal", "Vor", "Wel", "Xen", "Zor", "Ark", "Ond", "Ulm"),
    ("a", "ia", "ix", "on", "ex", "us", "or", "is", "era", "ant", "io", "ora", "ent", "ium", "ara"),
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Shared vocabulary: every split uses these words; no name component may equal one of them.
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
    "December",
)  # fmt: skip
DATE_STYLES = ("us", "us_year", "uk", "uk_year")  # "March 14", "March 14, 2021", "14 March", "14 March 2021"
PERCENT_STYLES = (" per cent", " percent", "%")
CURRENCIES = ("$", "€", "£")
NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine")
POSITIONS = ("second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
SECTORS: dict[str, tuple[str, ...]] = {  # sector -> name suffixes
    "logistics": ("Logistics", "Freight", "Shipping"),
    "software": ("Systems", "Software", "Technologies", "Digital"),
    "energy": ("Energy", "Renewables", "Solar"),
    "food": ("Foods", "Dairy", "Brewing"),
    "pharmaceutical": ("Pharma", "Biotech", "Laboratories"),
    "engineering": ("Engineering", "Industries", "Manufacturing"),
    "retail": ("Retail", "Stores", "Markets"),
    "insurance": ("Insurance", "Assurance"),
    "banking": ("Bank", "Capital", "Finance"),
    "telecoms": ("Telecom", "Networks"),
    "chemicals": ("Chemicals", "Materials"),
    "steel": ("Steel", "Metals"),
}
GENERIC_SUFFIXES = ("Group", "Holdings", "International", "Partners")
CLUB_FORMATS = (
    "{c} FC", "{c} United", "Sporting {c}", "{c} Rovers", "{c} Athletic", "Real {c}", "AC {c}", "Dynamo {c}",
    "{c} Wanderers", "Olympique {c}",
)  # fmt: skip
INSTITUTION_FORMATS = (
    "University of {c}", "{c} Institute of Technology", "{s} Institute", "{w} Research Centre", "{c} Medical School",
)  # fmt: skip
PARTY_FORMATS = ("{w} Party", "{w} Alliance", "{w} Movement")
PRIZE_FORMATS = ("{w} Prize", "{s} Prize", "{s} Award", "{w} Medal")
ROLES = (
    "chief executive", "chief financial officer", "chief operating officer", "chair", "managing director",
    "president", "head of research", "chief technology officer",
)  # fmt: skip
REASONS = (
    "personal reasons", "health reasons", "differences with the board", "a wish to spend more time with family",
    "disagreements over strategy",
)  # fmt: skip
FACILITIES: dict[str, tuple[str, ...]] = {  # sector -> sites it opens
    "logistics": ("distribution centre", "freight terminal"),
    "software": ("data centre", "research centre"),
    "energy": ("battery plant", "solar panel plant"),
    "food": ("bottling plant", "bakery", "dairy plant"),
    "pharmaceutical": ("research centre", "vaccine plant"),
    "engineering": ("car parts factory", "assembly plant"),
    "retail": ("distribution centre", "flagship store"),
    "insurance": ("customer service centre",),
    "banking": ("technology hub", "customer service centre"),
    "telecoms": ("data centre", "network operations centre"),
    "chemicals": ("chemical plant",),
    "steel": ("steel mill", "rolling mill"),
}
OFFICES = ("the regional economy minister", "the industry minister", "the regional governor")
FINDINGS = (  # (finding, what was examined)
    ("a new species of tree frog", "specimens"),
    ("a protein linked to memory loss", "brain samples"),
    ("a faster way to recycle plastic", "plastic samples"),
    ("a gene that helps wheat survive drought", "plants"),
    ("a bacterium that breaks down oil", "soil samples"),
    ("evidence that sleep protects the heart", "volunteers"),
    ("a cheaper material for solar panels", "prototypes"),
    ("a link between air pollution and asthma in children", "children"),
    ("an early warning sign of kidney disease", "patients"),
    ("a new method for storing hydrogen", "experiments"),
    ("the fossil of an unknown marine reptile", "fossils"),
    ("a drug that slows muscle loss in older mice", "mice"),
    ("a way to detect cancer from a single blood test", "blood samples"),
    ("a mineral that could replace rare metals in batteries", "rock samples"),
)
JOURNALS = (
    "the journal Nature",
    "the journal Science",
    "The Lancet",
    "the journal Cell",
    "a leading medical journal",
)
FIELDS = (
    "literature", "architecture", "journalism", "medicine", "photography", "music", "environmental science",
    "mathematics", "children's fiction", "documentary film",
)  # fmt: skip
PRAISE = (
    "a lifetime of original work", "courage and clarity", "work that changed the field", "a remarkable debut",
    "years of careful research",
)  # fmt: skip
OFFENCES = (
    "polluting a river", "misleading customers", "unpaid overtime", "a breach of contract", "a data breach",
    "unsafe working conditions", "copying a rival's design", "delays to a housing project",
)  # fmt: skip
CLAIMANTS = (
    "a group of former employees", "local residents", "a regional water authority", "its former suppliers",
    "hundreds of customers",
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Event templates. Slots: P (key person, PS surname, he/his/him), O / O2 (organisations), C
# (place), D (date); X* / G* (distractors: X per article, G fresh per sentence); numbers by name.
# The key sentence's wording k selects the highlight template k % len(highlight).
EVENTS: dict[str, dict[str, tuple]] = {
    "appointment": {
        "key": (
            "{O} has appointed {P} as its new {role}, the {C}-based company said on {D}.",
            "{P} will take over as {role} of {O}, the company announced at its headquarters in {C} on {D}.",
            "On {D}, {O} named {P} as its {role}, ending a months-long search at the {C}-based {sector} group.",
            "The board of {O} confirmed {P} as the company's next {role} on {D}, according to a statement issued in {C}.",
        ),
        "detail": (
            "{PS}, {age}, replaces {X1}, who held the post for {years} years.",
            "The {age}-year-old succeeds {X1}, who is retiring after {years} years in the job.",
            "{PS}, who is {age}, joins from {XO}, where {he} spent {years} years.",
        ),
        "highlight": (
            ("{O} has appointed {P} as its new {role}, the company said in {C} on {D}.",),
            (
                "{P}, {age}, will become {role} of {O}.",
                "The {C}-based company announced the appointment on {D}.",
            ),
            ("{C}-based {O} names {P} as its {role} on {D}.", "{PS} is {age} and takes over next month."),
        ),
        "headline": ("{O} names {P} as new {role}", "New {role} for {O}"),
        "scene": (
            "Speculation about the leadership of {O} had been growing for weeks.",
            "Investors had been waiting for news from the boardroom for months.",
        ),
        "more": (
            "{PS} has sat on the board of {O} since {XY} and previously worked in {XC}.",
            "Shares in {O} rose {pct_small} in early trading after the announcement.",
            "{O} employs about {employees} people in {countries} countries.",
            "Analysts had expected the board to choose an internal candidate.",
            "{PS} studied economics in {XC2} before starting {his} career at {XO2}.",
        ),
        "quote": (
            '"I am honoured to lead such a talented team," {PS} said in a statement.',
            '"{PS} brings exactly the experience we need," said {X2}, who chairs the board.',
            '"This is a strong appointment," said {X3}, an analyst at {XO3}.',
        ),
    },
    "resignation": {
        "key": (
            "{P} has resigned as {role} of {O}, the company said in {C} on {D}.",
            "{O} announced on {D} that its {role}, {P}, had stepped down with immediate effect, according to a statement from {C}.",
            "After {years} years at the top of {O}, {P} quit as {role} on {D}, the {C}-based company said.",
            "On {D}, {P} unexpectedly stepped down as {role} of {O}, one of the largest {sector} companies in {C}.",
        ),
        "detail": (
            "{PS}, who joined the company {years} years ago, cited {reason}, and {X1} will lead the business until a successor is found.",
            "The company said {PS} was leaving for {reason} after {years} years, and that {X1} would take over for now.",
        ),
        "highlight": (
            ("{P} resigns as {role} of {O}, the company said in {C} on {D}.",),
            (
                "{P} steps down as {role} of {O} on {D}.",
                "{PS} had spent {years} years at the {C}-based company.",
            ),
            ("{O} says its {role} {P} has quit, in a statement from {C} on {D}.", "{PS} cited {reason}."),
        ),
        "headline": ("{P} quits as {role} of {O}", "{O} {role} steps down"),
        "scene": (
            "The departure had been rumoured for several days.",
            "Staff at {O} were told the news in an email early in the morning.",
        ),
        "more": (
            "Shares in {O} fell {pct_small} after the announcement.",
            "{PS} led the company through a difficult period, including a costly expansion into {XC}.",
            "The board said it would begin the search for a permanent successor immediately.",
            "Under {PS}, {O} grew its workforce to about {employees} people.",
        ),
        "quote": (
            '"It has been a privilege to lead this company," {PS} said.',
            '"We thank {PS} for {his} years of service," said {X2}, the chair of {O}.',
            '"Nobody saw this coming," said {X3}, an analyst at {XO3}.',
        ),
    },
    "acquisition": {
        "key": (
            "{O} has agreed to buy {O2} for {amount}, the {C}-based company said on {D}.",
            "{O2} is to be taken over by {O} in a deal worth {amount}, the two companies announced in {C} on {D}.",
            "On {D}, {O} announced a {amount} deal to acquire its smaller rival {O2}, creating one of the largest {sector} groups in {C}.",
            "In a statement issued in {C} on {D}, {O} said it would acquire {O2} for {amount}.",
        ),
        "detail": (
            "{P}, the chief executive of {O}, said the deal would be completed by the end of the year.",
            "The deal, led by {O} chief executive {P}, still needs the approval of regulators.",
            "{P}, who runs {O}, said {O2} and its {employees} staff would keep their own brand.",
        ),
        "highlight": (
            ("{O} agrees to buy {O2} for {amount}, the company said in {C} on {D}.",),
            (
                "{O} will acquire {O2} in a {amount} deal announced on {D}.",
                "{P}, the chief executive of {O}, expects the deal to close this year.",
            ),
            ("{C}-based {O} announces a {amount} takeover of its smaller rival {O2} on {D}.",),
        ),
        "headline": ("{O} to buy {O2} for {amount}", "{O} agrees deal for {O2}"),
        "scene": (
            "Rumours of a deal had pushed up shares in {O2} for several weeks.",
            "Talks between the two companies began last year.",
        ),
        "more": (
            "Shares in {O2} jumped {pct_small} on the news.",
            "{O2} was founded in {XC} in {XY}.",
            "Advisers at {XO} worked on the deal.",
            "The combined company will have annual sales of about {sales}.",
        ),
        "quote": (
            '"Together we will be stronger," {PS} said.',
            '"The price looks fair," said {X3}, an analyst at {XO3}.',
        ),
    },
    "match": {
        "key": (
            "{O} beat {O2} {score} in {C} on {D}, with {P} scoring the winning goal in the {minute} minute.",
            "A goal from {P} in the {minute} minute gave {O} a {score} win over {O2} in {C} on {D}.",
            "{O} defeated {O2} {score} on {D}, as {P} struck late in front of a home crowd in {C}.",
            "On {D}, {O} secured a {score} victory against {O2} in {C}, thanks to a late goal from {P}.",
        ),
        "detail": (
            "A crowd of {attendance} watched the match, and the win lifts {O} to {position} place in the table.",
            "{attendance} supporters saw the game, which leaves {O} in {position} place, {points} points behind leaders {XK}.",
            "The match was played in front of {attendance} fans, and {XK} remain top of the table.",
        ),
        "highlight": (
            ("{O} beat {O2} {score} in {C} on {D}.", "{P} scored the winning goal."),
            (
                "{P} scores the winner as {O} beat {O2} {score} on {D}.",
                "The match in {C} was watched by {attendance} fans.",
            ),
            ("{O} win {score} against {O2} in {C} on {D} after a late goal from {P}.",),
        ),
        "headline": ("{O} edge past {O2}", "{P} the hero for {O}"),
        "scene": (
            "Heavy rain had fallen on {C} all afternoon before kick-off.",
            "Both teams needed points after a poor run of form.",
        ),
        "more": (
            "{O2} had taken the lead through {X1} shortly before half-time.",
            "The coach of {O}, {X2}, said the team had shown great character.",
            "{O} play {XK2} away on {XD}.",
            "{O2} have now lost {losses} of their last {games} matches.",
        ),
        "quote": (
            '"It was the best goal of my career," {PS} said after the match.',
            '"We did not deserve to lose," said {X3}, the coach of {O2}.',
        ),
    },
    "transfer": {
        "key": (
            "{P} has joined {O} from {O2} for a fee of {amount}, the {C} club confirmed on {D}.",
            "{O} completed the signing of {P} from {O2} on {D}, paying a reported {amount} for the player, the club said in {C}.",
            "On {D}, {O} unveiled {P} as their new signing at a press conference in {C}, after agreeing a {amount} fee with {O2}.",
            "{O2} have sold {P} to {O} for {amount}, the two clubs said on {D}, and the player is expected in {C} next week.",
        ),
        "detail": (
            "{PS}, {age}, has signed a {contract}-year contract after scoring {goals} goals last season.",
            "The {age}-year-old agreed a {contract}-year deal and scored {goals} goals for {O2} last season.",
        ),
        "highlight": (
            ("{P} joins {O} from {O2} for {amount}, the {C} club said on {D}.",),
            (
                "{O} sign {P} from {O2} for {amount} on {D}.",
                "The {age}-year-old joins the {C} club on a {contract}-year contract.",
            ),
            (
                "{P} completes a {amount} move from {O2} to {O} on {D}.",
                "{PS} has signed a {contract}-year contract with the {C} club.",
            ),
        ),
        "headline": ("{O} sign {P}", "{P} leaves {O2}"),
        "scene": (
            "Fans of {O} had waited all summer for a new striker.",
            "The transfer window closes at the end of the month.",
        ),
        "more": (
            "{PS} began {his} career at {XK} before moving to {O2} in {XY}.",
            "{O} finished {position} in the league last season.",
            "{O2} are expected to use the money to sign {X1} from {XK2}.",
            "The fee is a club record for {O}.",
        ),
        "quote": (
            '"This is a dream move for me," {PS} said.',
            '"{PS} is exactly the player we were looking for," said {X2}, the coach of {O}.',
        ),
    },
    "election": {
        "key": (
            "{P} of the {O} won the race for mayor of {C} on {D}, taking {pct} of the vote.",
            "Voters in {C} elected {P} as their new mayor on {D}, giving the {O} candidate {pct} of the vote.",
            "{P} has been elected mayor of {C} after winning {pct} of the vote on {D}, standing for the {O}.",
            "On {D}, {P} of the {O} was declared the winner of the mayoral election in {C} with {pct} of the vote.",
        ),
        "detail": (
            "{PS} defeated {X1}, who finished second with {pct2}, and turnout was {turnout}.",
            "Turnout was {turnout}, and the runner-up, {X1}, took {pct2}.",
        ),
        "highlight": (
            ("{P} of the {O} is elected mayor of {C} on {D} with {pct} of the vote.",),
            ("{P} wins the mayoral election in {C} on {D}.", "The {O} candidate took {pct} of the vote."),
            ("Voters in {C} elect {P} as mayor on {D}.", "{PS} of the {O} won {pct} of the vote."),
        ),
        "headline": ("{P} wins mayoral race in {C}", "New mayor for {C}"),
        "scene": (
            "Polling stations across {C} stayed open late as queues formed.",
            "The campaign had been dominated by housing and transport.",
        ),
        "more": (
            "{PS} campaigned on promises to build more housing and improve public transport.",
            "The outgoing mayor, {X2}, did not stand for re-election.",
            "The {O} also won {seats} seats on the city council.",
            "{PS} will take office on {XD}.",
        ),
        "quote": (
            '"Tonight the people of {C} have chosen change," {PS} told supporters.',
            '"We will respect the result," said {X1}.',
        ),
    },
    "research": {
        "key": (
            "Researchers at {O} in {C} have discovered {finding}, according to a study published on {D}.",
            "A team led by {P} at {O} has found {finding}, the institution said in {C} on {D}.",
            "Scientists in {C} say they have identified {finding}, in work led by {P} of {O} and published on {D}.",
            "On {D}, researchers from {O} in {C} reported {finding}, a result that {P}, who led the study, called a surprise.",
        ),
        "detail": (
            "The study, led by {P}, analysed {n} {samples} collected over {years} years.",
            "{P}, who led the work, said the team examined {n} {samples} over {years} years.",
        ),
        "highlight": (
            (
                "Researchers at {O} in {C} have discovered {finding}.",
                "The study, led by {P}, was published on {D}.",
            ),
            ("A team led by {P} at {O} in {C} reports {finding} in a study published on {D}.",),
            (
                "Scientists at {O} have found {finding}, according to a study published in {C} on {D}.",
                "The team examined {n} {samples}.",
            ),
        ),
        "headline": ("Breakthrough at {O}", "{O} team makes surprising discovery"),
        "scene": (
            "The laboratory at {O} is small, but its work has attracted attention.",
            "For years, scientists have struggled to explain the problem.",
        ),
        "more": (
            "The results were published in {journal}.",
            "The work was funded by {XO} and a government grant.",
            "{X1}, a scientist at {XU} who was not involved in the study, called the findings important.",
            "The team now plans a larger study with partners in {XC}.",
        ),
        "quote": (
            '"We did not expect such a clear result," {PS} said.',
            '"This will need to be confirmed by other groups," said {X2}, who works at {XU2}.',
        ),
    },
    "opening": {
        "key": (
            "{O} opened a new {facility} in {C} on {D}, creating {jobs} jobs.",
            "A new {facility} built by {O} opened in {C} on {D}, bringing {jobs} jobs to the area.",
            "On {D}, {P} cut the ribbon at the new {facility} of {O} in {C}, which will employ {jobs} people.",
            "{O} on {D} started production at its new {facility} in {C}, where {jobs} people will work.",
        ),
        "detail": (
            "The site cost {amount}, and it was opened by {P}, {office}.",
            "{P}, {office}, said the {amount} investment was the largest in the region for a decade.",
        ),
        "highlight": (
            ("{O} opens a new {facility} in {C} on {D}, creating {jobs} jobs in the region.",),
            (
                "A {facility} built by {O} opens in {C} on {D}.",
                "The {amount} site will employ {jobs} people.",
            ),
            (
                "{P} opens the new {facility} of {O} in {C} on {D}.",
                "It will bring {jobs} jobs to the region.",
            ),
        ),
        "headline": ("{O} opens {facility} in {C}", "{jobs} new jobs in {C}"),
        "scene": (
            "For years, the site on the edge of {C} stood empty.",
            "Unemployment in {C} has been above the national average for a decade.",
        ),
        "more": (
            "Construction began in {XY} and was delayed by a shortage of materials.",
            "{O} already operates similar sites in {XC} and {XC2}.",
            "The {facility} will produce goods mainly for export.",
            "Local unions welcomed the jobs but asked for guarantees on pay.",
        ),
        "quote": (
            '"This is a great day for {C}," {PS} said.',
            '"We chose {C} because of its skilled workforce," said {X2}, the chief executive of {O}.',
        ),
    },
    "award": {
        "key": (
            "{P} has won the {O} for {field}, the organisers announced at a ceremony in {C} on {D}.",
            "The {O} for {field} was awarded to {P} at a ceremony in {C} on {D}.",
            "On {D}, {P} was named the winner of the {O} for {field} in {C}.",
            "{P} took home the {O} for {field} on {D}, beating {count} other finalists at a ceremony in {C}.",
        ),
        "detail": (
            "The prize is worth {amount}, and the jury praised {PS} for {praise}.",
            "The jury, which praised {PS} for {praise}, will present {him} with {amount}.",
        ),
        "highlight": (
            ("{P} wins the {O} for {field} at a ceremony in {C} on {D}.",),
            ("{P} is awarded the {O} for {field} in {C} on {D}.", "The prize is worth {amount}."),
            ("The {O} for {field} goes to {P}.", "The award was presented in {C} on {D}."),
        ),
        "headline": ("{P} wins {O}", "{O} goes to {P}"),
        "scene": (
            "The ceremony in {C} was attended by several hundred guests.",
            "This year's shortlist was one of the strongest in years.",
        ),
        "more": (
            "{X1} and {X2} were also on the shortlist.",
            "Previous winners include {X3}, who won in {XY}.",
            "The {O} was first awarded in {founded}.",
            "The winner was chosen from more than {entries} entries.",
        ),
        "quote": (
            '"I am completely surprised," {PS} said after receiving the prize.',
            '"{PS} stood out from a very strong field," said {X4}, who chaired the jury.',
        ),
    },
    "court": {
        "key": (
            "A court in {C} on {D} ordered {O} to pay {amount} in damages to {claimant}.",
            "{O} must pay {amount} to {claimant}, judge {P} ruled in {C} on {D}.",
            "On {D}, a judge in {C} found {O} liable for {offence} and ordered it to pay {amount}.",
            "Judge {P} of the district court in {C} ruled on {D} that {O} was responsible for {offence}, awarding {amount} in damages.",
        ),
        "detail": (
            "Judge {P} said {O} was responsible for {offence} and had ignored repeated warnings.",
            "The case, heard by judge {P}, concerned {offence}, and {O} said it would appeal.",
        ),
        "highlight": (
            ("A court in {C} orders {O} to pay {amount} in damages on {D}.",),
            (
                "{O} is ordered to pay {amount} by a court in {C} on {D}.",
                "Judge {P} found the company responsible for {offence}.",
            ),
            ("Judge {P} rules in {C} on {D} that {O} must pay {amount}.",),
        ),
        "headline": ("{O} ordered to pay {amount}", "Court rules against {O}"),
        "scene": (
            "The case had been running for more than {years} years.",
            "Dozens of people gathered outside the court building in {C}.",
        ),
        "more": (
            "Lawyers for {O} had argued that the company followed all the rules.",
            "The claimants were represented by {X1} of the law firm {XO}.",
            "A similar case against {XO2} in {XC} was settled in {XY}.",
            "{O} has {days} days to decide whether to appeal.",
        ),
        "quote": (
            '"Today justice has been done," said {X1}, a lawyer for the claimants.',
            '"We disagree with the ruling and are studying our options," a spokesperson for {O} said.',
        ),
    },
}
# Distractor sentences for any event; G* slots are fresh names per sentence.
CONTEXT = (
    '"It is an important moment for the whole region," said {G1}, an analyst at {GO}.',
    "{G1}, an economist at {GO} in {GC}, said the news reflected wider changes in the region.",
    "{GO}, which is based in {GC}, reported a {pct_small2} rise in sales last year.",
    "Local newspapers in {GC} first reported the story on {GD}.",
    "Separately, {GO} said on {GD} that it would open a new office in {GC}.",
    "The mayor of {GC}, {G1}, is expected to comment later this week.",
    "Elsewhere in the region, {GO} announced plans to hire {n_small} staff in {GC}.",
    "In {XY2}, a similar story made headlines in {GC}.",
    "Unemployment in the region stands at {pct_small3}, according to figures published on {GD}.",
    "{G1}, a commentator based in {GC}, said the news had been expected for some time.",
    "Traffic around {C} was heavy for most of the day.",
    "Officials in {GC} are due to publish new economic figures on {GD}.",
    "{G1} and {G2}, who run a small business in {GC}, said they were following the story closely.",
)
BACKGROUND = (
    "It has been a difficult year for businesses in the region, with {GO} and {GO2} both cutting jobs.",
    "Last year, {G1} of {GO} warned that costs in {GC} were rising faster than wages.",
    "The region around {GC} has changed quickly since {XY2}, when {GO} closed its largest site.",
    "In {GC}, the population has grown by {pct_small3} in the last decade.",
    "Public spending in {GC} rose to {amount3} last year, official figures show.",
    "{G1}, a historian at {GU}, says the region has seen several such moments before.",
)
CLOSING = (
    "More details are expected on {GD}.",
    "Further updates are expected in the coming weeks.",
    "A public meeting on the issue is planned for {GD} in {GC}.",
)
LAYOUTS = ("lead", "headline", "scene", "background")
LAYOUT_WEIGHTS = (0.5, 0.15, 0.2, 0.15)
ENTITY_SLOTS = ("P", "O", "O2", "C", "D")  # people, organisations, place, date
_TEXT = (MONTHS, NUMBER_WORDS, POSITIONS, SECTORS, GENERIC_SUFFIXES, CLUB_FORMATS, INSTITUTION_FORMATS,
         PARTY_FORMATS, PRIZE_FORMATS, ROLES, REASONS, FACILITIES, OFFICES, FINDINGS, JOURNALS, FIELDS, PRAISE,
         OFFENCES, CLAIMANTS, EVENTS, CONTEXT, BACKGROUND, CLOSING, ("he she his her him"))  # fmt: skip


def _strings(value) -> Iterator[str]:
    """Every string inside nested tuples / dicts (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    else:
        for item in value:
            yield from _strings(item)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


@lru_cache(maxsize=1)
def shared_words() -> frozenset[str]:
    """Casefolded words of every template and shared list: never a name component."""
    return frozenset(word.casefold() for text in _strings(_TEXT) for word in _words(text))


# ---------------------------------------------------------------------------------------------
# Name pools.
def _latin(text: str) -> bool:
    return all(ord(ch) < 0x250 for ch in text)


def _name_word(word: str) -> bool:
    return (
        3 <= len(word) <= 14 and word.isalpha() and word[0].isupper() and not word.isupper() and _latin(word)
    )


def _city_name(name: str) -> bool:
    return (
        3 <= len(name) <= 24
        and name[0].isupper()
        and _latin(name)
        and all(part.isalpha() for part in re.split(r"[ -]", name))
        and len(re.split(r"[ -]", name)) <= 3
    )


def _capped(items: Iterable[str], cap: int) -> list[str]:
    """At most `cap` distinct items, a fixed pseudo-random choice (CRC-32 order, seed-free)."""
    unique = list(dict.fromkeys(items))
    return sorted(unique, key=lambda item: (zlib.crc32(f"cap|{item}".encode()), item))[:cap]


def _provider_list(provider, *attributes: str) -> list[str]:
    """The first attribute present as a non-trivial list (OrderedDict keys, (code, name) pairs -> name)."""
    for attribute in attributes:
        value = getattr(provider, attribute, None)
        if isinstance(value, (list, tuple, dict)) and len(value) > 5:
            return [item[1] if isinstance(item, tuple) else item for item in value]
    return []


@lru_cache(maxsize=1)
def _raw_names() -> dict[str, dict[str, list[str]]]:
    """locale -> {"male", "female", "surnames_male", "surnames_female", "cities"}: filtered, capped."""
    out = {}
    for locale in LOCALES:
        person = importlib.import_module(f"faker.providers.person.{locale}").Provider
        try:
            address = importlib.import_module(f"faker.providers.address.{locale}").Provider
        except ModuleNotFoundError:
            address = None
        surnames = _provider_list(person, "last_names")
        male_surnames = _provider_list(person, "last_names_male") or surnames
        female_surnames = _provider_list(person, "last_names_female") or surnames
        if locale == "pl_PL":  # Polish: gendered -ski/-ska forms; faker lists male and unisex ones
            unisex = _provider_list(person, "unisex_last_names")
            male_surnames, female_surnames = _provider_list(person, "male_last_names") + unisex, unisex
        cities = list(EXTRA_CITIES.get(locale, ()))
        if address is not None:
            cities += _provider_list(address, "cities", "real_city_names", "municipalities")
        both = _capped(filter(_name_word, male_surnames + female_surnames), CAP_SURNAMES)
        keep = set(both)
        out[locale] = {
            "male": _capped(filter(_name_word, _provider_list(person, "first_names_male")), CAP_FIRST_NAMES),
            "female": _capped(
                filter(_name_word, _provider_list(person, "first_names_female")), CAP_FIRST_NAMES
            ),
            "surnames_male": [name for name in dict.fromkeys(male_surnames) if name in keep],
            "surnames_female": [name for name in dict.fromkeys(female_surnames) if name in keep],
            "cities": _capped(filter(_city_name, cities), CAP_CITIES),
        }
    return out


def _org_words() -> list[str]:
    compounds = [prefix + root for prefix in ORG_PREFIXES for root in ORG_ROOTS]
    syllables = [head + tail for head in ORG_SYLLABLES[0] for tail in ORG_SYLLABLES[1]]
    return list(dict.fromkeys(compounds + syllables))


@lru_cache(maxsize=1)
def _common_words() -> frozenset[str]:
    """Shared words plus words that occur in many city names or are not name-like ("nad", "San")."""
    counts = Counter()
    for names in _raw_names().values():
        for city in names["cities"]:
            counts.update(list(dict.fromkeys(word.casefold() for word in _words(city))))
    cities = {word for word, count in counts.items() if count >= CITY_COMMON_MIN}
    short_or_lower = {
        word.casefold()
        for names in _raw_names().values()
        for city in names["cities"]
        for word in _words(city)
        if len(word) <= 2 or not word[0].isupper()
    }
    return shared_words() | cities | short_or_lower


def _word_split(word: str, seed: int) -> str:
    bucket = zlib.crc32(f"attnlab-news|{seed}|{word.casefold()}".encode()) % 100
    if bucket < SPLIT_PERCENT["train"]:
        return "train"
    return "validation" if bucket < SPLIT_PERCENT["train"] + SPLIT_PERCENT["validation"] else "test"


def _name_split(name: str, seed: int, common: frozenset[str]) -> str | None:
    """The split of a name's non-shared words; None when it has none or they disagree."""
    splits = {_word_split(word, seed) for word in _words(name) if word.casefold() not in common}
    return splits.pop() if len(splits) == 1 else None


@dataclass(frozen=True)
class _Pools:
    """One split's names: per locale, first names by gender, surnames by gender, cities."""

    first: dict[str, dict[str, tuple[str, ...]]]
    surnames: dict[str, dict[str, tuple[str, ...]]]
    cities: dict[str, tuple[str, ...]]
    person_locales: tuple[str, ...]
    city_locales: tuple[str, ...]
    org_words: tuple[str, ...]


@lru_cache(maxsize=4)
def _pools(seed: int) -> dict[str, _Pools]:
    common = _common_words()
    raw = _raw_names()

    def keep(names: Iterable[str], split: str, single: bool = True) -> tuple[str, ...]:
        return tuple(
            sorted(
                name
                for name in dict.fromkeys(names)
                if (not single or name.casefold() not in common) and _name_split(name, seed, common) == split
            )
        )

    out = {}
    for split in SPLITS:
        first = {loc: {g: keep(raw[loc][g], split) for g in GENDERS} for loc in LOCALES}
        surnames = {loc: {g: keep(raw[loc][f"surnames_{g}"], split) for g in GENDERS} for loc in LOCALES}
        cities = {loc: keep(raw[loc]["cities"], split, single=False) for loc in LOCALES}
        person_locales = tuple(
            loc
            for loc in LOCALES
            if all(
                len(first[loc][g]) >= MIN_LOCALE_POOL and len(surnames[loc][g]) >= MIN_LOCALE_POOL
                for g in GENDERS
            )
        )
        city_locales = tuple(loc for loc in LOCALES if len(cities[loc]) >= MIN_LOCALE_POOL)
        out[split] = _Pools(first, surnames, cities, person_locales, city_locales, keep(_org_words(), split))
    return out


def split_pools(seed: int = 0) -> dict[str, dict[str, list[str]]]:
    """split -> {"first_names", "surnames", "org_words", "cities"} -> sorted names of that split."""
    out = {}
    for split, pools in _pools(seed).items():
        lists = (
            [name for loc in LOCALES for g in GENDERS for name in pools.first[loc][g]],
            [name for loc in LOCALES for g in GENDERS for name in pools.surnames[loc][g]],
            list(pools.org_words),
            [name for loc in LOCALES for name in pools.cities[loc]],
        )
        out[split] = {pool: sorted(set(names)) for pool, names in zip(POOL_NAMES, lists, strict=True)}
    return out


# ---------------------------------------------------------------------------------------------
# One story.
@dataclass(frozen=True)
class Story:
    article: str
    highlights: str
    entities: tuple[str, ...]
    event: str  # one of EVENTS
    layout: str  # one of LAYOUTS
    key_sentence: str  # the key sentence, verbatim in the article
    key_index: int  # its position among the article's sentences (a headline line counts as one)


class _Cast:
    """Draws distinct names from one split's pools, mostly from the story's home locale."""

    def __init__(self, rng: random.Random, pools: _Pools):
        self.rng, self.pools = rng, pools
        self.home = rng.choice(pools.person_locales)
        self.used: set[str] = set()  # membership tests only

    def _fresh(self, draw: Callable[[], str]) -> str:
        for _ in range(100):
            value = draw()
            if value not in self.used:
                self.used.add(value)
                return value
        raise RuntimeError("name pool exhausted")  # pragma: no cover - pools hold hundreds of names

    def _locale(self, options: tuple[str, ...]) -> str:
        if self.home in options and self.rng.random() < 0.5:
            return self.home
        return self.rng.choice(options)

    def person(self, gender: str | None = None) -> tuple[str, str, str]:
        """(full name, surname, gender); first name and surname from one locale."""
        gender = gender or self.rng.choice(GENDERS)
        for _ in range(100):
            locale = self._locale(self.pools.person_locales)
            first = self.rng.choice(self.pools.first[locale][gender])
            surname = self.rng.choice(self.pools.surnames[locale][gender])
            if first not in self.used and surname not in self.used and first != surname:
                self.used.update((first, surname))
                return f"{first} {surname}", surname, gender
        raise RuntimeError("name pool exhausted")  # pragma: no cover - pools hold hundreds of names

    def surname(self) -> str:
        def draw() -> str:
            locale = self._locale(self.pools.person_locales)
            return self.rng.choice(self.pools.surnames[locale][self.rng.choice(GENDERS)])

        return self._fresh(draw)

    def city(self) -> str:
        return self._fresh(lambda: self.rng.choice(self.pools.cities[self._locale(self.pools.city_locales)]))

    def word(self) -> str:
        return self._fresh(lambda: self.rng.choice(self.pools.org_words))

    def company(self, sector: str | None = None) -> str:
        sector = sector or self.rng.choice(list(SECTORS))
        suffix = self.rng.choice(SECTORS[sector] if self.rng.random() < 0.6 else GENERIC_SUFFIXES)
        kind = self.rng.random()
        if kind < 0.35:
            return self._fresh(lambda: f"{self.surname()} {suffix}")
        if kind < 0.8:
            return self._fresh(lambda: f"{self.word()} {suffix}")
        if kind < 0.9:
            return self._fresh(lambda: f"{self.surname()} & {self.surname()}")
        return self.word()

    def club(self, city: str | None = None) -> str:
        city = city or self.city()
        return self._fresh(lambda: self.rng.choice(CLUB_FORMATS).format(c=city))

    def institution(self, city: str | None = None) -> str:
        template = self.rng.choice(INSTITUTION_FORMATS)
        return self._fresh(lambda: template.format(c=city or self.city(), s=self.surname(), w=self.word()))

    def named(self, formats: tuple[str, ...]) -> str:
        template = self.rng.choice(formats)
        return self._fresh(lambda: template.format(s=self.surname(), w=self.word()))


class _Story:
    """Slots of one story: event slots set up front, every other slot drawn on first use."""

    PERSON = re.compile(r"^[XG]\d$")

    def __init__(self, rng: random.Random, pools: _Pools):
        self.rng = rng
        self.cast = _Cast(rng, pools)
        self.year = rng.randint(2012, 2024)
        self.date_style = rng.choice(DATE_STYLES)
        self.percent = rng.choice(PERCENT_STYLES)
        self.currency = rng.choice(CURRENCIES)
        self.key_month = rng.randrange(12)
        self.slots: dict[str, str] = {"D": self.date(self.key_month)}
        self.makers: dict[str, Callable[[], str]] = {
            "XO": self.cast.company,
            "GO": self.cast.company,
            "XK": self.cast.club,
            "XU": self.cast.institution,
            "GU": self.cast.institution,
            "XC": self.cast.city,
            "GC": self.cast.city,
            "XD": self.other_date,
            "GD": self.other_date,
            "XY": lambda: str(rng.randint(self.year - 15, self.year - 2)),
            "founded": lambda: str(rng.randint(1901, self.year - 20)),
            "pct_small": lambda: self.pct(0.5, 9.9),
            "n_small": lambda: str(rng.randint(20, 900)),
            "employees": lambda: self.count(800, 60_000),
            "countries": lambda: str(rng.randint(6, 40)),
            "amount": lambda: self.amount(5, 900),
            "sales": lambda: self.amount(800, 30_000),
            "seats": lambda: str(rng.randint(8, 30)),
            "days": lambda: str(rng.choice((14, 21, 28, 30))),
            "losses": lambda: rng.choice(NUMBER_WORDS[2:5]),
            "games": lambda: rng.choice(NUMBER_WORDS[5:]),
            "entries": lambda: self.count(120, 4_000),
            "years": lambda: str(rng.randint(3, 25)),
            "position": lambda: rng.choice(POSITIONS),
            "age": lambda: str(rng.randint(38, 67)),
        }

    # values -----------------------------------------------------------------------------------
    def date(self, month: int) -> str:
        day, name = self.rng.randint(1, 28), MONTHS[month]
        return {
            "us": f"{name} {day}",
            "us_year": f"{name} {day}, {self.year}",
            "uk": f"{day} {name}",
            "uk_year": f"{day} {name} {self.year}",
        }[self.date_style]

    def other_date(self) -> str:
        return self.date((self.key_month + self.rng.randint(1, 11)) % 12)

    def pct(self, low: float, high: float) -> str:
        return f"{self.rng.uniform(low, high):.1f}{self.percent}"

    def amount(self, low: float, high: float) -> str:
        """A sum between `low` and `high` millions, written "€450 million" or "$2.3 billion"."""
        value = self.rng.uniform(low, high)
        if value >= 1000:
            return f"{self.currency}{value / 1000:.1f} billion"
        return (
            f"{self.currency}{round(value)} million" if value >= 20 else f"{self.currency}{value:.1f} million"
        )

    def count(self, low: int, high: int) -> str:
        return f"{self.rng.randint(low, high):,}"

    def person(self, key: str, gender: str | None = None) -> None:
        full, surname, gender = self.cast.person(gender)
        self.slots[key], self.slots[key + "S"] = full, surname
        if key == "P":
            pronouns = ("he", "his", "him") if gender == "male" else ("she", "her", "her")
            self.slots.update(zip(("he", "his", "him"), pronouns, strict=True))

    def draw(self, key: str) -> str:
        """A new value for slot `key` (a distractor name or a number), not stored."""
        if self.PERSON.match(key):
            return self.cast.person()[0]
        base = key.rstrip("0123456789")
        if base not in self.makers:
            raise KeyError(f"no value for template slot {key!r}")
        return self.makers[base]()

    def get(self, key: str) -> str:
        """Slot `key` of this story, drawn on first use."""
        if key not in self.slots:
            if self.PERSON.match(key) or (key.endswith("S") and self.PERSON.match(key[:-1])):
                self.person(key[:2])
            else:
                self.slots[key] = self.draw(key)
        return self.slots[key]

    def fill(self, template: str) -> str:
        """`template` with its slots; G* slots are new names for this sentence only."""
        story = self

        class Slots(dict):
            def __missing__(self, key: str) -> str:
                self[key] = story.draw(key) if key.startswith("G") else story.get(key)
                return self[key]

        return template.format_map(Slots())


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 11 <= n % 100 <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _company_event(s: _Story, rng: random.Random) -> None:
    sector = rng.choice(list(SECTORS))
    s.person("P")
    s.slots.update(O=s.cast.company(sector), C=s.cast.city(), sector=sector, role=rng.choice(ROLES))
    s.slots["reason"] = rng.choice(REASONS)


def _acquisition(s: _Story, rng: random.Random) -> None:
    sector = rng.choice(list(SECTORS))
    s.person("P")
    s.slots.update(O=s.cast.company(sector), O2=s.cast.company(sector), C=s.cast.city(), sector=sector)
    s.slots["amount"] = s.amount(40, 9_000)


def _match(s: _Story, rng: random.Random) -> None:
    city = s.cast.city()
    winner = rng.randint(1, 4)
    s.person("P", "male")
    s.slots.update(
        C=city, O=s.cast.club(city), O2=s.cast.club(), score=f"{winner}-{rng.randint(0, winner - 1)}"
    )
    s.slots.update(minute=_ordinal(rng.randint(55, 90)), attendance=s.count(2_000, 75_000))
    s.slots["points"] = str(rng.randint(1, 12))


def _transfer(s: _Story, rng: random.Random) -> None:
    city = s.cast.city()
    s.person("P", "male")
    s.slots.update(C=city, O=s.cast.club(city), O2=s.cast.club(), amount=s.amount(1, 120))
    s.slots.update(
        age=str(rng.randint(19, 33)), contract=rng.choice(NUMBER_WORDS[:4]), goals=str(rng.randint(3, 30))
    )


def _election(s: _Story, rng: random.Random) -> None:
    s.person("P")
    s.slots.update(
        C=s.cast.city(), O=s.cast.named(PARTY_FORMATS), pct=s.pct(40.5, 72.0), pct2=s.pct(15.0, 39.9)
    )
    s.slots["turnout"] = s.pct(35.0, 78.0)


def _research(s: _Story, rng: random.Random) -> None:
    city = s.cast.city()
    finding, samples = rng.choice(FINDINGS)
    s.person("P")
    s.slots.update(
        C=city, O=s.cast.institution(city), finding=finding, samples=samples, journal=rng.choice(JOURNALS)
    )
    s.slots["n"] = s.count(40, 12_000)


def _opening(s: _Story, rng: random.Random) -> None:
    sector = rng.choice(list(SECTORS))
    s.person("P")
    s.slots.update(
        O=s.cast.company(sector), C=s.cast.city(), facility=rng.choice(FACILITIES[sector]), sector=sector
    )
    s.slots.update(office=rng.choice(OFFICES), jobs=s.count(60, 2_500), amount=s.amount(15, 2_500))


def _award(s: _Story, rng: random.Random) -> None:
    s.person("P")
    s.slots.update(
        C=s.cast.city(), O=s.cast.named(PRIZE_FORMATS), field=rng.choice(FIELDS), praise=rng.choice(PRAISE)
    )
    s.slots.update(amount=f"{s.currency}{rng.randint(2, 100) * 5_000:,}", count=rng.choice(NUMBER_WORDS[1:6]))


def _court(s: _Story, rng: random.Random) -> None:
    s.person("P")
    s.slots.update(
        C=s.cast.city(), O=s.cast.company(), offence=rng.choice(OFFENCES), claimant=rng.choice(CLAIMANTS)
    )
    s.slots["amount"] = s.amount(0.2, 300)


SETUP: dict[str, Callable[[_Story, random.Random], None]] = {
    "appointment": _company_event,
    "resignation": _company_event,
    "acquisition": _acquisition,
    "match": _match,
    "transfer": _transfer,
    "election": _election,
    "research": _research,
    "opening": _opening,
    "award": _award,
    "court": _court,
}
PRONOUNS = ("he", "his", "him")


def _fields(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def _tell(rng: random.Random, pools: _Pools, min_words: int, max_words: int) -> Story:
    """One article, its highlight and entities (see the module docstring)."""
    event = rng.choice(list(EVENTS))
    templates = EVENTS[event]
    s = _Story(rng, pools)
    SETUP[event](s, rng)
    wording = rng.randrange(len(templates["key"]))
    key = s.fill(templates["key"][wording])
    detail = s.fill(rng.choice(templates["detail"]))
    summary = templates["highlight"][wording % len(templates["highlight"])]

    layout = rng.choices(LAYOUTS, LAYOUT_WEIGHTS)[0]
    if layout == "lead":
        paragraphs, key_index = [[key]], 0
    elif layout == "headline":
        paragraphs, key_index = [[s.fill(rng.choice(templates["headline"]))], [key]], 1
    elif layout == "scene":
        paragraphs, key_index = [[s.fill(rng.choice(templates["scene"])), key]], 1
    else:
        paragraphs, key_index = [[s.fill(text) for text in rng.sample(BACKGROUND, 2)], [key]], 2
    if rng.random() < 0.3:
        paragraphs.append([detail])
    else:
        paragraphs[-1].append(detail)
    opening = len(paragraphs)

    body = rng.sample(templates["more"], rng.randint(2, len(templates["more"])))
    body += rng.sample(templates["quote"], rng.randint(1, len(templates["quote"])))
    context = rng.sample(CONTEXT, len(CONTEXT))
    body += context[:5]
    rng.shuffle(body)
    words = sum(len(sentence.split()) for paragraph in paragraphs for sentence in paragraph)
    target = rng.randint(min_words, max(min_words, max_words - 25))
    for template in body:
        if words >= target:
            break
        sentence = s.fill(template)
        length = len(sentence.split())
        if words + length > max_words:
            continue
        last = paragraphs[-1]
        quote = sentence.startswith('"') or last[0].startswith('"')
        if len(paragraphs) > opening and len(last) < 3 and not quote and rng.random() < 0.6:
            paragraphs[-1].append(sentence)
        else:
            paragraphs.append([sentence])
        words += length
    spare = iter(context[5:] + context[:5])
    while words < min_words:  # rare: short draws; top up with distractor sentences
        sentence = s.fill(next(spare))
        paragraphs.append([sentence])
        words += len(sentence.split())
    closing = s.fill(rng.choice(CLOSING))
    if rng.random() < 0.5 and words + len(closing.split()) <= max_words:
        paragraphs.append([closing])
    article = "\n\n".join(" ".join(paragraph) for paragraph in paragraphs)

    highlights = " ".join(s.fill(sentence) for sentence in summary)
    fields = [field for sentence in summary for field in _fields(sentence)]
    for field in fields:  # every copied value is in the article (a template bug otherwise)
        if field not in PRONOUNS and s.slots[field] not in article:
            raise AssertionError(f"{event}: highlight slot {field}={s.slots[field]!r} not in the article")
    entities = tuple(dict.fromkeys(s.slots[field] for field in fields if field in ENTITY_SLOTS))
    return Story(article, highlights, entities, event, layout, key, key_index)


def stories(
    split: str, size: int, *, seed: int = 0, min_words: int = 150, max_words: int = 260
) -> list[Story]:
    """`size` stories of `split`, from that split's name pools; the same arguments give the same stories."""
    rng = random.Random(f"attnlab-news|{seed}|{split}")
    pools = _pools(seed)[split]
    return [_tell(rng, pools, min_words, max_words) for _ in range(size)]


def build_news(
    *,
    train_size: int = 40_000,
    validation_size: int = 500,
    test_size: int = 2_000,
    seed: int = 0,
    min_words: int = 150,
    max_words: int = 260,
) -> DatasetDict:
    """Train / validation / test splits of news articles, highlights and copied entities (module docstring)."""
    sizes = {"train": train_size, "validation": validation_size, "test": test_size}
    splits = {}
    for split, size in sizes.items():
        rows = stories(split, size, seed=seed, min_words=min_words, max_words=max_words)
        columns = {
            "article": [row.article for row in rows],
            "highlights": [row.highlights for row in rows],
            "id": [f"{split}-{index:06d}" for index in range(size)],
            "entities": [list(row.entities) for row in rows],
        }
        splits[split] = Dataset.from_dict(columns, features=FEATURES)
    return DatasetDict(splits)
