#!/usr/bin/env python3
"""Generate eval/labels.jsonl: labelled questions for the Kitbash cascade.

Every question is built from the demo knowledge (config/grains/demo.jsonl and
config/cartridges/*.jsonl); no answer is typed by hand. Each label lists every
source whose fact answers the question (`grain:<fact_id>` for a layer0 grain,
`<file stem>#<id>` for a cartridge fact), or nothing when the right behaviour
is to refuse.

Run from the repository root:

    python3 eval/generate_labels.py

The output is deterministic (random.Random(14), sorted iteration). The script
exits non-zero with a message if an input file is missing or a fact text does
not have the sentence shape it expects.

Kinds:
  answerable: grain_exact (a grain's question verbatim), grain_surface (case,
              punctuation, contractions, wrappers), grain_reworded (other
              words), grain_alias (ISO codes, short names, British spellings),
              cartridge_canonical (worded like the fact), cartridge_paraphrase,
              cartridge_alias (element symbols, ISO codes, short names),
              inverse (turned round; the answer is unique in the knowledge)
  refuse:     near_neighbour (regions, defunct states, cities asked as
              countries), near_attribute (a close attribute no fact holds),
              near_turned (turned round with a value no fact has),
              near_modifier (a modifier that changes the meaning),
              unanswerable_attribute, unanswerable_fictional,
              unanswerable_missing (a real entity whose fact is missing)

What counts as an answer: the fact whose sentence states the thing asked.
A country's capital or currency grain goes with its countries#<cc>-capital or
-currency fact, and with the currencies fact (used-in, or legal-tender) that
names the country; a capital fact also says which country that city is in. A
symbol or code mentioned in passing ("Sodium (Na) ...", "(KES)") is a label,
not an answer: "Which element has the symbol Na?" expects elements#na-symbol
only. A refusal means no single fact answers the question, even where two
facts together might (the capital of a country's neighbour).

Split: an entity (country code, element symbol, city id, currency code, or an
invented/regional name) is heldout when sha1(key)[0] % 10 < 3; a question is
heldout when its entity is. In every template pool, every third template
(index % 3 == 2) is heldout-only: tune questions never use it.
"""

import hashlib
import json
import os
import random
import re
import sys
import unicodedata
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAINS_PATH = os.path.join(ROOT, "config", "grains", "demo.jsonl")
CARTRIDGE_STEMS = ["countries", "borders", "cities", "currencies", "elements"]
CARTRIDGE_PATHS = {s: os.path.join(ROOT, "config", "cartridges", s + ".jsonl") for s in CARTRIDGE_STEMS}
OUT_PATH = os.path.join(ROOT, "eval", "labels.jsonl")

SEED = 14
HELDOUT_BUCKETS = 3  # of 10

KINDS = [
    "grain_exact", "grain_surface", "grain_reworded", "grain_alias",
    "cartridge_canonical", "cartridge_paraphrase", "cartridge_alias", "inverse",
    "near_neighbour", "near_attribute", "near_turned", "near_modifier",
    "unanswerable_attribute", "unanswerable_fictional", "unanswerable_missing",
]

# Caps per kind (None = keep every candidate). Candidates are drawn round-robin
# over sub-kinds (attributes), so every attribute is represented.
CAPS = {
    "grain_exact": None, "grain_surface": None, "grain_reworded": None, "grain_alias": None,
    "cartridge_canonical": 550, "cartridge_paraphrase": 550, "cartridge_alias": 400, "inverse": 500,
    "near_neighbour": 300, "near_attribute": 300, "near_turned": 300, "near_modifier": 300,
    "unanswerable_attribute": 300, "unanswerable_fictional": 250, "unanswerable_missing": 300,
}


class Fail(Exception):
    pass


def fail(msg):
    raise Fail(msg)


# --------------------------------------------------------------------------
# Text helpers

def cap_first(s):
    return s[:1].upper() + s[1:]


def lc_first(s):
    return s[:1].lower() + s[1:]


def possessive(s):
    return s + "'" if s.endswith("s") else s + "'s"


def norm(s):
    """Accent-free, lower-case, hyphens and punctuation as spaces."""
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.replace("\u2019", "'").replace("\u02bb", "'").lower()
    s = re.sub(r"[-.,]", " ", s)
    s = re.sub(r"\s+", " ", s).strip()
    if s.startswith("the "):
        s = s[4:]
    return s


def dedupe_key(q):
    return re.sub(r"\s+", " ", q.strip()).lower()


def is_heldout(key):
    return hashlib.sha1(key.encode("utf-8")).digest()[0] % 10 < HELDOUT_BUCKETS


# --------------------------------------------------------------------------
# Loading

def load_jsonl(path):
    if not os.path.isfile(path):
        fail("input file missing: %s" % os.path.relpath(path, ROOT))
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                fail("%s:%d: not JSON: %s" % (os.path.relpath(path, ROOT), n, e))
    return rows


def shape(stem, fact, *patterns):
    """Match a fact text against one of the patterns; fail loudly otherwise."""
    for p in patterns:
        m = re.fullmatch(p, fact["text"])
        if m:
            return m
    fail("%s#%s: fact text does not match its expected shape: %r" % (stem, fact["id"], fact["text"]))


def parse_name_list(s, names, where):
    """Split 'A, B and C' into known names (names may contain ',' or 'and')."""
    memo = {}

    def go(i):
        if i in memo:
            return memo[i]
        out = []
        for n in names:
            if s.startswith(n, i):
                j = i + len(n)
                if j == len(s):
                    out.append(([n], []))
                    continue
                for sep in (", ", " and "):
                    if s.startswith(sep, j):
                        for items, seps in go(j + len(sep)):
                            out.append(([n] + items, [sep] + seps))
        memo[i] = out
        return out

    parses = []
    for items, seps in go(0):
        if all(x == ", " for x in seps[:-1]) and (not seps or seps[-1] == " and "):
            parses.append(items)
    if len(parses) != 1:
        fail("%s: cannot split the list %r into known country names (%d parses)" % (where, s, len(parses)))
    return parses[0]


class K:
    """The knowledge, parsed."""

    def __init__(self):
        self.fact_ids = set()       # "stem#id"
        self.grain_ids = set()      # "grain:<fact_id>"
        self.texts = []             # every text, for "does the knowledge mention X" checks
        self.countries = {}         # cc -> dict
        self.name_to_cc = {}        # country name as written ("the United Kingdom") -> cc
        self.elements = {}          # sym lower -> dict
        self.cities = {}            # city key "city-N" -> dict
        self.currencies = {}        # code lower -> dict
        self.grains = []            # grain rows in file order


def load_knowledge():
    k = K()
    carts = {s: load_jsonl(CARTRIDGE_PATHS[s]) for s in CARTRIDGE_STEMS}
    grains = load_jsonl(GRAINS_PATH)
    for s, facts in carts.items():
        for f in facts:
            for field in ("id", "text"):
                if not isinstance(f.get(field), str):
                    fail("%s: a fact lacks %r: %r" % (s, field, f))
            fid = "%s#%s" % (s, f["id"])
            if fid in k.fact_ids:
                fail("duplicate fact id %s" % fid)
            k.fact_ids.add(fid)
            k.texts.append(f["text"])

    # ---- countries: names from the ISO-codes facts first
    by_cc = defaultdict(dict)
    for f in carts["countries"]:
        m = re.fullmatch(r"([a-z]{2})-(capital|population|area|continent|currency|languages|calling-code|internet-domain|iso-codes)", f["id"])
        if not m:
            fail("countries#%s: unexpected fact id" % f["id"])
        by_cc[m.group(1)][m.group(2)] = f
    for cc in sorted(by_cc):
        facts = by_cc[cc]
        if "iso-codes" not in facts:
            fail("countries: %s has no iso-codes fact" % cc)
        m = shape("countries", facts["iso-codes"],
                  r"The ISO 3166-1 codes of (.+) are ([A-Z]{2}) \(alpha-2\), ([A-Z]{3}) \(alpha-3\) and (\d{3}) \(numeric\)\.")
        name = m.group(1)
        if m.group(2).lower() != cc:
            fail("countries#%s-iso-codes: alpha-2 %s does not match the id" % (cc, m.group(2)))
        k.countries[cc] = {"cc": cc, "name": name, "a2": m.group(2), "a3": m.group(3), "num": m.group(4),
                           "facts": {a: "countries#%s-%s" % (cc, a) for a in facts}}
        if name in k.name_to_cc:
            fail("two countries are named %r" % name)
        k.name_to_cc[name] = cc
    names = sorted(k.name_to_cc, key=len, reverse=True)

    def same_subject(parsed, cc, fid):
        if lc_first(parsed) != lc_first(k.countries[cc]["name"]):
            fail("%s: subject %r is not %r" % (fid, parsed, k.countries[cc]["name"]))

    for cc in sorted(by_cc):
        facts, c = by_cc[cc], k.countries[cc]
        if "capital" in facts:
            m = shape("countries", facts["capital"],
                      r"The capital city of (?P<n>.+) is (?P<c>.+)\.",
                      r"GeoNames gives (?P<c>.+) as the capital of (?P<n>.+); the status of this capital is disputed\.")
            same_subject(m.group("n"), cc, "countries#%s-capital" % cc)
            c["capital"] = m.group("c")
            c["capital_disputed"] = facts["capital"]["text"].startswith("GeoNames gives")
        if "population" in facts:
            m = shape("countries", facts["population"],
                      r"(.+) has a population of about ([\d.,]+)(?: (?:million|billion))? people\.")
            same_subject(m.group(1), cc, "countries#%s-population" % cc)
        if "area" in facts:
            m = shape("countries", facts["area"], r"(.+) has an area of ([\d.,]+) square kilometres\.")
            same_subject(m.group(1), cc, "countries#%s-area" % cc)
        if "continent" in facts:
            m = shape("countries", facts["continent"], r"(.+) is on the continent of ([A-Z][a-z]+(?: [A-Z][a-z]+)?)\.")
            same_subject(m.group(1), cc, "countries#%s-continent" % cc)
            c["continent"] = m.group(2)
        if "currency" in facts:
            m = shape("countries", facts["currency"], r"The currency of (.+) is the (.+) \(([A-Z]{3})\)\.")
            same_subject(m.group(1), cc, "countries#%s-currency" % cc)
            c["currency_name"], c["currency_code"] = m.group(2), m.group(3)
        if "languages" in facts:
            m = shape("countries", facts["languages"], r"Languages spoken in (.+) include (.+)\.")
            same_subject(m.group(1), cc, "countries#%s-languages" % cc)
        if "calling-code" in facts:
            m = shape("countries", facts["calling-code"],
                      r"The international telephone calling code of (.+) is \+(\d+(?:-\d+)?(?: and \d+-\d+)?| )\.")
            same_subject(m.group(1), cc, "countries#%s-calling-code" % cc)
            code = m.group(2).strip()
            if code:
                c["calling_code"] = code
            else:
                # The fact exists but states no code: ask neither "what is it"
                # nor treat it as missing.
                c["calling_code_blank"] = True
        if "internet-domain" in facts:
            m = shape("countries", facts["internet-domain"], r"The internet country code domain of (.+) is (\.[a-z]{2})\.")
            same_subject(m.group(1), cc, "countries#%s-internet-domain" % cc)
            c["domain"] = m.group(2)

    # ---- borders
    for f in carts["borders"]:
        m = re.fullmatch(r"([a-z]{2})-borders", f["id"])
        if not m or m.group(1) not in k.countries:
            fail("borders#%s: unexpected fact id" % f["id"])
        cc = m.group(1)
        m = shape("borders", f,
                  r"(?P<n>.+) has no land border with another country\.",
                  r"(?P<n>.+) has land borders with one country: (?P<l>.+)\.",
                  r"(?P<n>.+) has land borders with (?P<k>\d+) countries: (?P<l>.+)\.")
        same_subject(m.group("n"), cc, "borders#" + f["id"])
        gd = m.groupdict()
        neigh = parse_name_list(gd["l"], names, "borders#" + f["id"]) if gd.get("l") else []
        want = int(gd["k"]) if gd.get("k") else (1 if gd.get("l") else 0)
        if len(neigh) != want:
            fail("borders#%s: says %d neighbours, lists %d" % (f["id"], want, len(neigh)))
        k.countries[cc]["neighbours"] = [k.name_to_cc[n] for n in neigh]
        k.countries[cc]["facts"]["borders"] = "borders#" + f["id"]

    # ---- cities
    by_city = defaultdict(dict)
    for f in carts["cities"]:
        m = re.fullmatch(r"(city-\d+)-(population|country)", f["id"])
        if not m:
            fail("cities#%s: unexpected fact id" % f["id"])
        by_city[m.group(1)][m.group(2)] = f
    for key in sorted(by_city):
        facts = by_city[key]
        if set(facts) != {"population", "country"}:
            fail("cities: %s lacks a population or a country fact" % key)
        mp = shape("cities", facts["population"],
                   r"(?:The city of )?(.+) has a population of about ([\d.]+) million people\.")
        mc = shape("cities", facts["country"],
                   r"(?P<n>.+) is a city in the country of (?P<c>.+)\.",
                   r"The city of (?P<n>.+) is in (?P<c>.+)\.")
        if mc.group("c") not in k.name_to_cc:
            fail("cities#%s-country: unknown country %r" % (key, mc.group("c")))
        # a name shared by two cities is qualified in the population fact:
        # "Hyderabad in India has a population of ..."
        qualified = mp.group(1) == "%s in %s" % (mc.group("n"), mc.group("c"))
        if mp.group(1) != mc.group("n") and not qualified:
            fail("cities: %s is named %r and %r" % (key, mp.group(1), mc.group("n")))
        k.cities[key] = {"key": key, "name": mc.group("n"), "qualified": qualified, "cc": k.name_to_cc[mc.group("c")],
                         "facts": {"population": "cities#%s-population" % key,
                                   "country": "cities#%s-country" % key}}

    # ---- currencies
    by_cur = defaultdict(dict)
    for f in carts["currencies"]:
        m = re.fullmatch(r"currency-([a-z]{3})-(code|used-in|legal-tender)", f["id"])
        if not m:
            fail("currencies#%s: unexpected fact id" % f["id"])
        by_cur[m.group(1)][m.group(2)] = f
    for code in sorted(by_cur):
        facts = by_cur[code]
        if "code" not in facts or "used-in" not in facts:
            fail("currencies: %s lacks a code or a used-in fact" % code)
        m = shape("currencies", facts["code"], r"The ISO 4217 code of the (.+) is ([A-Z]{3})\.")
        if m.group(2).lower() != code:
            fail("currencies#currency-%s-code: code %s does not match the id" % (code, m.group(2)))
        cur = {"code": m.group(2), "name": m.group(1), "facts": {a: "currencies#currency-%s-%s" % (code, a) for a in facts}}
        m = shape("currencies", facts["used-in"],
                  r"The (?P<n>.+) is used in (?P<k>\d+) countries and territories\.",
                  r"The (?P<n>.+) is used in (?P<c>.+)\.")
        if m.group("n") != cur["name"]:
            fail("currencies#currency-%s-used-in: names %r, the code fact %r" % (code, m.group("n"), cur["name"]))
        if m.groupdict().get("c"):
            if m.group("c") not in k.name_to_cc:
                fail("currencies#currency-%s-used-in: unknown country %r" % (code, m.group("c")))
            cur["used_in_one"] = k.name_to_cc[m.group("c")]
            if "legal-tender" in facts:
                fail("currencies: %s is used in one country but has a legal-tender list" % code)
        else:
            if "legal-tender" not in facts:
                fail("currencies: %s is used in several countries but has no legal-tender list" % code)
            mt = shape("currencies", facts["legal-tender"], r"The (.+) is legal tender in (.+)\.")
            if mt.group(1) != cur["name"]:
                fail("currencies#currency-%s-legal-tender: names %r" % (code, mt.group(1)))
            lst = parse_name_list(mt.group(2), names, "currencies#currency-%s-legal-tender" % code)
            if len(lst) != int(m.group("k")):
                fail("currencies: %s used in %s countries, legal tender in %d" % (code, m.group("k"), len(lst)))
            cur["legal_tender"] = [k.name_to_cc[n] for n in lst]
        k.currencies[code] = cur

    # ---- elements
    by_el = defaultdict(dict)
    for f in carts["elements"]:
        m = re.fullmatch(r"([a-z]{1,3})-(symbol|atomic-number|group|classification|atomic-weight|electron-configuration|melting-point|density|discovery)", f["id"])
        if not m:
            fail("elements#%s: unexpected fact id" % f["id"])
        by_el[m.group(1)][m.group(2)] = f
    for s in sorted(by_el):
        facts = by_el[s]
        for need in ("symbol", "atomic-number", "group", "classification", "atomic-weight", "electron-configuration", "discovery"):
            if need not in facts:
                fail("elements: %s lacks its %s fact" % (s, need))
        m = shape("elements", facts["symbol"], r"The chemical symbol of ([a-z]+) is ([A-Z][a-z]{0,2})\.")
        name, sym = m.group(1), m.group(2)
        if sym.lower() != s:
            fail("elements#%s-symbol: symbol %s does not match the id" % (s, sym))
        e = {"sym": sym, "name": name, "facts": {a: "elements#%s-%s" % (s, a) for a in facts}}
        lead = re.escape(cap_first(name)) + r" \(" + re.escape(sym) + r"\)"
        low = re.escape(name) + r" \(" + re.escape(sym) + r"\)"
        m = shape("elements", facts["atomic-number"], lead + r" has atomic number (\d+): its nucleus holds (\d+) protons?\.")
        if m.group(1) != m.group(2):
            fail("elements#%s-atomic-number: two different numbers" % s)
        e["z"] = int(m.group(1))
        m = shape("elements", facts["group"],
                  lead + r" is in group (?P<g>\d+) and period (?P<p>\d) of the periodic table, in the (?P<b>[spd])-block\.",
                  lead + r" is in period (?P<p>\d) of the periodic table, in the f-block; like the other f-block elements it has no group number\.")
        e["group"] = int(m.group("g")) if m.groupdict().get("g") else None
        e["period"] = int(m.group("p"))
        shape("elements", facts["classification"], lead + r" is a chemical element classed as an? [a-z -]+; it is (?:not )?radioactive\.")
        shape("elements", facts["atomic-weight"],
              r"The standard atomic weight of " + low + r" is [\d.]+\.",
              lead + r" has no stable isotope and so no standard atomic weight; the atomic mass given for it is [\d.]+ \(mass number \d+\)\.")
        m = shape("elements", facts["electron-configuration"], r"The electron configuration of " + low + r" is (.+)\.")
        e["config"] = m.group(1)
        if "melting-point" in facts:
            shape("elements", facts["melting-point"], r"The melting point of " + low + r" is [\d.]+ K \(-?[\d.]+ °C\)\.")
        if "density" in facts:
            shape("elements", facts["density"], lead + r" (?:has a density of [\d.]+ g/cm³|is a gas with a density of [\d.]+ g/L)\.")
        m = shape("elements", facts["discovery"], lead + r" was discovered in (\d{3,4})\.", lead + r" has been known since ancient times\.")
        e["discovered"] = int(m.group(1)) if m.groups() and m.group(1) else None
        k.elements[s] = e

    # ---- grains: each must say what its cartridge twin says
    for g in grains:
        for field in ("fact_id", "question", "answer"):
            if not isinstance(g.get(field), str):
                fail("grains: a grain lacks %r: %r" % (field, g))
        fid = g["fact_id"]
        if "grain:" + fid in k.grain_ids:
            fail("grains: duplicate fact_id %s" % fid)
        k.grain_ids.add("grain:" + fid)
        k.texts.append(g["question"])
        k.texts.append(g["answer"])
        m = re.fullmatch(r"(capital|currency)-([a-z]{2})|element-([a-z]{1,3})", fid)
        if not m:
            fail("grains: unexpected fact_id %s" % fid)
        if m.group(3):
            e = k.elements.get(m.group(3))
            if not e:
                fail("grains: %s names an unknown element" % fid)
            if g["question"] != "What is the chemical symbol of %s?" % e["name"] or g["answer"] != e["sym"]:
                fail("grains: %s does not match elements#%s-symbol: %r -> %r" % (fid, m.group(3), g["question"], g["answer"]))
            e["grain"] = "grain:" + fid
            g["_entity"], g["_attr"] = ("element", m.group(3)), "symbol"
        else:
            attr, cc = m.group(1), m.group(2)
            c = k.countries.get(cc)
            if not c:
                fail("grains: %s names an unknown country" % fid)
            if g["question"] != "What is the %s of %s?" % (attr, c["name"]):
                fail("grains: %s asks %r, not about %r" % (fid, g["question"], c["name"]))
            if attr == "capital":
                if c.get("capital") != g["answer"] or c.get("capital_disputed"):
                    fail("grains: %s answers %r, countries#%s-capital says %r" % (fid, g["answer"], cc, c.get("capital")))
            else:
                want = "%s (%s)" % (c.get("currency_name"), c.get("currency_code"))
                if want != g["answer"]:
                    fail("grains: %s answers %r, countries#%s-currency says %r" % (fid, g["answer"], cc, want))
            c["grain_" + attr] = "grain:" + fid
            g["_entity"], g["_attr"] = ("country", cc), attr
        k.grains.append(g)

    # ---- link currencies to countries
    for cc, c in k.countries.items():
        code = c.get("currency_code")
        if code and code.lower() not in k.currencies:
            fail("countries#%s-currency: %s has no entry in currencies.jsonl" % (cc, code))
    k.corpus_norm = "\n".join(norm(t) for t in k.texts)
    return k


# --------------------------------------------------------------------------
# Expectations

def sort_expect(srcs):
    return sorted(set(srcs), key=lambda s: (not s.startswith("grain:"), s))


def country_currency_sources(k, cc):
    """Every fact saying which currency country cc uses."""
    c = k.countries[cc]
    out = [c["facts"]["currency"]]
    if c.get("grain_currency"):
        out.append(c["grain_currency"])
    cur = k.currencies[c["currency_code"].lower()]
    if cur.get("used_in_one") == cc:
        out.append(cur["facts"]["used-in"])
    if cc in cur.get("legal_tender", []):
        out.append(cur["facts"]["legal-tender"])
    return out


def users_of_currency(k, code):
    return sorted(cc for cc, c in k.countries.items() if (c.get("currency_code") or "").lower() == code)


# --------------------------------------------------------------------------
# Template pools. Placeholders: {x} name as written mid-sentence, {X} with a
# capital first letter, {xs}/{Xs} possessive. "@lower "/"@upper " prefixes
# change the case of the whole question. In each pool, index % 3 == 2 marks a
# heldout-only template.

P = {}

# ---- grain templates ({a} = the grain's attribute words)
P["grain_surface"] = [
    "@lower {A} of {x}",
    "What's the {a} of {x}?",
    "{Xs} {a}?",
    "{A} of {x}?",
    "Can you tell me the {a} of {x}?",
    "The {a} of {x} is what?",
    "@upper What's the {a} of {x}",
    "What is the {a} of {x}",
    "Could you tell me what the {a} of {x} is?",
    "@lower whats the {a} of {x}",
    "Please tell me the {a} of {x}.",
    "Do you know the {a} of {x}?",
    "What is the {a} of {x}, please?",
    "Quick question: what is the {a} of {x}?",
    "I'd like to know the {a} of {x}.",
    "@lower what's the {a} of {x}??",
    "Hi! What is the {a} of {x}?",
    "what is the {a} of {x} ?",
]
P["country_capital_reword"] = [
    "Which city is the capital of {x}?",
    "What is {xs} capital city?",
    "What city serves as the capital of {x}?",
    "Name the capital of {x}.",
    "What's the name of {xs} capital?",
    "Which city is {xs} capital?",
    "{X} has which city as its capital?",
    "In {x}, which city is the capital?",
    "What city is the capital of {x}?",
    "Tell me which city is the capital of {x}.",
    "What is the name of the capital city of {x}?",
    "Which city does {x} have as its capital?",
    "I'm travelling to {x}. What is its capital city?",
    "The capital city of {x} is called what?",
    "Which city is the capital city of {x}?",
]
P["country_currency_reword"] = [
    "What currency is used in {x}?",
    "Which currency does {x} use?",
    "What is the official currency of {x}?",
    "What money is used in {x}?",
    "What do they use for money in {x}?",
    "What is {xs} currency called?",
    "What currency do I need in {x}?",
    "Which currency is legal tender in {x}?",
    "What is the local currency in {x}?",
    "If I travel to {x}, what currency should I bring?",
    "What is the national currency of {x}?",
    "What kind of money does {x} use?",
    "What currency do people pay with in {x}?",
    "Which money do they spend in {x}?",
    "What is the name of {xs} currency?",
]
P["element_symbol_reword"] = [
    "What is the symbol for {x}?",
    "What is {xs} chemical symbol?",
    "Which symbol does {x} have?",
    "What is the element symbol for {x}?",
    "What's the abbreviation for {x} on the periodic table?",
    "Which chemical symbol stands for {x}?",
    "What symbol is used for {x} in chemistry?",
    "How do you write {x} as a chemical symbol?",
    "What is the periodic table symbol of {x}?",
    "Which letters represent {x} on the periodic table?",
    "How is {x} abbreviated in chemical formulas?",
    "What symbol does the periodic table give {x}?",
]
P["country_capital_alias"] = [
    "What is the capital of {x}?",
    "What's the capital of {x}?",
    "Which city is the capital of {x}?",
    "What is the capital city of {x}?",
    "Capital of {x}?",
    "What city is {xs} capital?",
]
P["country_currency_alias"] = [
    "What is the currency of {x}?",
    "What currency does {x} use?",
    "Which currency is used in {x}?",
    "What money do they use in {x}?",
    "Currency of {x}?",
    "What is {xs} official currency?",
]
P["element_symbol_alias"] = [
    "What is the chemical symbol of {x}?",
    "What is the symbol for {x}?",
    "What's {xs} chemical symbol?",
]

# ---- cartridge templates: (family, attribute) -> canonical, paraphrase
CANON = {
    ("country", "capital"): ["What is the capital of {x}?", "What is the capital city of {x}?"],
    ("country", "currency"): ["What is the currency of {x}?", "What currency does {x} have?"],
    ("country", "population"): ["What is the population of {x}?", "What population does {x} have?",
                                "How large is the population of {x}?"],
    ("country", "area"): ["What is the area of {x}?", "How many square kilometres is {x}?",
                          "What is the area of {x} in square kilometres?"],
    ("country", "continent"): ["Which continent is {x} on?", "What continent is {x} on?"],
    ("country", "languages"): ["What languages are spoken in {x}?", "Which languages are spoken in {x}?"],
    ("country", "calling-code"): ["What is the international calling code of {x}?",
                                  "What is the telephone calling code of {x}?",
                                  "What is the international telephone calling code of {x}?"],
    ("country", "internet-domain"): ["What is the internet country code domain of {x}?",
                                     "What is the internet domain of {x}?"],
    ("country", "iso-codes"): ["What are the ISO 3166-1 codes of {x}?", "What is the ISO code of {x}?",
                               "What are the ISO country codes of {x}?"],
    ("country", "borders"): ["Which countries does {x} have land borders with?", "What are the land borders of {x}?"],
    ("city", "population"): ["What is the population of {x}?", "What population does {x} have?"],
    ("city", "country"): ["Which country is {x} a city in?", "In which country is the city of {x}?"],
    ("currency", "code"): ["What is the ISO 4217 code of {x}?", "What is the ISO code of {x}?"],
    ("currency", "used-in"): ["Where is {x} used?", "In which country is {x} used?"],
    ("element", "atomic-number"): ["What is the atomic number of {x}?", "What atomic number does {x} have?"],
    ("element", "group"): ["Which group of the periodic table is {x} in?",
                           "Which period of the periodic table is {x} in?",
                           "In which group and period of the periodic table is {x}?"],
    ("element", "classification"): ["How is {x} classified?", "What kind of chemical element is {x}?"],
    ("element", "atomic-weight"): ["What is the atomic weight of {x}?", "What is the standard atomic weight of {x}?"],
    ("element", "electron-configuration"): ["What is the electron configuration of {x}?"],
    ("element", "melting-point"): ["What is the melting point of {x}?"],
    ("element", "density"): ["What is the density of {x}?"],
    ("element", "discovery"): ["When was {x} discovered?", "In what year was {x} discovered?"],
}
PARA = {
    ("country", "capital"): [t for t in P["country_capital_reword"] if t != "Which city is the capital city of {x}?"],
    ("country", "currency"): P["country_currency_reword"],
    ("country", "population"): [
        "How many people live in {x}?", "How many inhabitants does {x} have?", "How populous is {x}?",
        "Roughly how many people are there in {x}?", "What's the number of people living in {x}?",
        "How many residents does {x} have?", "How many people call {x} home?", "How many people does {x} have?",
        "What is {xs} population?"],
    ("country", "area"): [
        "How big is {x}?", "How large is {x}?", "What is the size of {x}?", "How much territory does {x} cover?",
        "What is the total area of {x}?", "How many square km does {x} cover?", "What is the surface area of {x}?",
        "How big is {x} in square kilometres?", "What is {xs} area?"],
    ("country", "continent"): [
        "Which continent is {x} in?", "On which continent is {x}?", "What continent is {x} located on?",
        "{X} is on which continent?", "Which continent does {x} belong to?", "What continent is {x} part of?"],
    ("country", "languages"): [
        "What language do people speak in {x}?", "What do people speak in {x}?", "Which languages do they speak in {x}?",
        "What are the languages of {x}?", "What language is spoken in {x}?", "Which languages are used in {x}?",
        "What languages do people in {x} speak?", "Which language do they speak in {x}?"],
    ("country", "calling-code"): [
        "What is the dialling code for {x}?", "What code do I dial to call {x}?", "What is {xs} phone code?",
        "What is the international dialing code for {x}?", "Which prefix do I use to phone {x} from abroad?",
        "What is the telephone country code of {x}?", "What's the country calling code for {x}?",
        "What number do I put before a phone number in {x} when calling from abroad?",
        "Which dialling prefix belongs to {x}?"],
    ("country", "internet-domain"): [
        "What is {xs} top-level domain?", "Which top-level domain does {x} use?",
        "What domain ending do websites in {x} use?", "What is the ccTLD of {x}?", "What is the web domain for {x}?",
        "Which internet suffix belongs to {x}?"],
    ("country", "iso-codes"): [
        "What is {xs} three-letter country code?", "What is the alpha-2 code for {x}?",
        "What is the ISO alpha-3 code of {x}?", "Which ISO country code does {x} have?",
        "What is the numeric ISO code of {x}?", "What two-letter ISO code is used for {x}?"],
    ("country", "borders"): [
        "Which countries border {x}?", "What are {xs} neighbouring countries?", "Which countries share a border with {x}?",
        "What countries are {xs} land neighbours?", "How many countries border {x}?", "Which nations does {x} border?",
        "Which countries does {x} share a land border with?", "What countries neighbour {x}?"],
    ("city", "population"): [
        "How many people live in {x}?", "How populous is {x}?", "How many inhabitants does {x} have?",
        "How big is the population of {x}?", "Roughly how many people live in the city of {x}?",
        "How many residents does {x} have?", "What's the number of people living in {x}?", "What is {xs} population?"],
    ("city", "country"): [
        "Which country is {x} in?", "In which country is {x}?", "{X} is in which country?",
        "What country is {x} located in?", "Which country does {x} belong to?", "Which nation is {x} part of?",
        "What country would I be in if I visited {x}?", "In what country can you find {x}?"],
    ("currency", "code"): [
        "What is the currency code for {x}?", "What three-letter code does {x} have?",
        "How is {x} written as an ISO code?", "What is {xs} currency code?",
        "Which three letters stand for {x} in currency exchange?", "What code do banks use for {x}?"],
    ("currency", "used-in"): [
        "Which country uses {x}?", "Which country's currency is {x}?", "Where can I pay with {x}?",
        "In what country do people pay with {x}?", "Which country has {x} as its currency?",
        "{X} is the currency of which country?", "Where is {x} legal tender?"],
    ("element", "atomic-number"): [
        "How many protons does {x} have?", "How many protons are in the nucleus of {x}?",
        "What is {xs} proton number?", "What number is {x} on the periodic table?",
        "Which atomic number belongs to {x}?", "How many protons does an atom of {x} contain?"],
    ("element", "group"): [
        "Which group is {x} in?", "In which period is {x} found?", "Which column of the periodic table is {x} in?",
        "Which row of the periodic table is {x} in?", "Which block of the periodic table does {x} belong to?",
        "Where is {x} on the periodic table?", "What group does {x} belong to?"],
    ("element", "classification"): [
        "Is {x} radioactive?", "What type of element is {x}?", "Is {x} a metal or a nonmetal?",
        "What category of element is {x}?", "Which class of elements does {x} belong to?", "Is {x} a metal?"],
    ("element", "atomic-weight"): [
        "What is the atomic mass of {x}?", "How much does an atom of {x} weigh?",
        "What is the relative atomic mass of {x}?", "What is {xs} atomic weight?", "How heavy is an atom of {x}?",
        "What is the molar mass of {x}?"],
    ("element", "electron-configuration"): [
        "How are the electrons of {x} arranged?", "What is {xs} electron configuration?",
        "What is the electronic configuration of {x}?", "Write the electron configuration for {x}.",
        "What is the electron arrangement of {x}?", "How are electrons distributed in an atom of {x}?"],
    ("element", "melting-point"): [
        "At what temperature does {x} melt?", "What temperature does {x} melt at?",
        "How hot does {x} have to get to melt?", "What is {xs} melting temperature?",
        "At how many degrees does {x} melt?", "At what temperature does solid {x} become liquid?"],
    ("element", "density"): [
        "How dense is {x}?", "What is {xs} density?", "What is the mass per unit volume of {x}?",
        "What density does {x} have?", "How much does {x} weigh per unit volume?", "How dense is the element {x}?"],
    ("element", "discovery"): [
        "When did scientists discover {x}?", "What year was {x} first discovered?", "How long has {x} been known?",
        "When was {x} first found?", "When did people first discover {x}?", "Since when has {x} been known?"],
}
for key, lst in CANON.items():
    P[("canon",) + key] = lst
for key, lst in PARA.items():
    P[("para",) + key] = lst
# aliases use canonical and paraphrase templates alike
for key in CANON:
    P[("alias",) + key] = CANON[key] + PARA[key]

P["inverse_symbol"] = [
    "Which element has the symbol {v}?", "What element does the symbol {v} stand for?",
    "{v} is the symbol of which element?", "What element is represented by the symbol {v}?",
    "Which element's chemical symbol is {v}?", "Which chemical element is written {v}?"]
P["inverse_z"] = [
    "Which element has atomic number {v}?", "What element has {v} protons?",
    "Which element is number {v} on the periodic table?", "Element number {v} is which element?",
    "Which element's atomic number is {v}?", "What element has the atomic number {v}?"]
P["inverse_group"] = [
    "Which element is in group {g} and period {p}?", "What element sits in period {p}, group {g} of the periodic table?",
    "Which element is found in group {g}, period {p}?"]
P["inverse_config"] = [
    "Which element has the electron configuration {v}?", "The electron configuration {v} belongs to which element?",
    "What element has electron configuration {v}?"]
P["inverse_discovery"] = [
    "Which element was discovered in {v}?", "What element was first discovered in {v}?",
    "Which chemical element was discovered in the year {v}?"]
P["inverse_capital"] = [
    "Which country's capital is {v}?", "{v} is the capital of which country?", "Of which country is {v} the capital?",
    "What country has {v} as its capital?", "{v} is the capital city of what country?", "Which country is {v} the capital of?"]
P["inverse_capital_location"] = P[("para", "city", "country")]
P["inverse_currency_code"] = [
    "Which currency has the ISO code {v}?", "What currency does the code {v} stand for?",
    "Which currency has the ISO 4217 code {v}?", "The currency code {v} belongs to which currency?",
    "What currency is abbreviated {v}?", "Which currency is known by the code {v}?"]
P["inverse_domain"] = [
    "Which country has the internet domain {v}?", "Which country uses the {v} domain?",
    "Websites ending in {v} belong to which country?", "Whose country code top-level domain is {v}?",
    "Which country's internet domain is {v}?", "What country is the {v} domain for?"]
P["inverse_calling"] = [
    "Which country has the calling code {v}?", "Which country's dialling code is {v}?",
    "If a phone number starts with {v}, which country is it from?", "{v} is the calling code of which country?",
    "Which country do I reach by dialling {v}?", "What country uses the telephone code {v}?"]
P["inverse_iso"] = [
    "Which country has the ISO code {v}?", "Which country does the ISO code {v} stand for?",
    "What country is {v} the ISO 3166 code of?", "Which country is identified by the ISO code {v}?",
    "Which country has the ISO country code {v}?", "The ISO country code {v} belongs to which country?"]

# refusals
P["past_country"] = {
    "capital": ["What was the capital of {x}?", "Which city was the capital of {x}?", "What was {xs} capital city?"],
    "currency": ["What was the currency of {x}?", "What currency did {x} use?", "Which money was used in {x}?"],
    "population": ["What was the population of {x}?", "How many people lived in {x}?", "How populous was {x}?"],
    "area": ["What was the area of {x}?", "How big was {x}?", "How many square kilometres did {x} cover?"],
    "borders": ["Which countries bordered {x}?", "What countries did {x} share a border with?"],
    "languages": ["What languages were spoken in {x}?", "Which languages did people speak in {x}?"],
}
P["planet"] = {
    "population": ["What is the population of {x}?", "How many people live on {x}?", "How populous is {x}?"],
    "capital": ["What is the capital of {x}?", "Which city is the capital of {x}?", "What is {xs} capital city?"],
    "area": ["What is the area of {x}?", "How many square kilometres is {x}?", "What is the area of {x} in square kilometres?"],
    "currency": ["What is the currency of {x}?", "What currency is used on {x}?", "What money do people use on {x}?"],
}
P["near_attribute"] = {
    ("country", "gdp"): ["What is the GDP of {x}?", "What is {xs} gross domestic product?", "How big is the economy of {x}?"],
    ("country", "density"): ["What is the population density of {x}?", "How many people live per square kilometre in {x}?",
                             "How densely populated is {x}?"],
    ("country", "mountain"): ["What is the highest mountain in {x}?", "What is the tallest peak in {x}?"],
    ("country", "anthem"): ["What is the national anthem of {x}?", "What is {xs} national anthem called?"],
    ("country", "timezone"): ["What time zone is {x} in?", "What is the time zone of {x}?", "Which time zone does {x} use?"],
    ("country", "currency-symbol"): ["What is the currency symbol of {x}?", "Which symbol is used for the currency of {x}?",
                                     "What sign is used for money in {x}?"],
    ("country", "largest-city"): ["What is the largest city in {x}?", "Which is the biggest city in {x}?",
                                  "What is {xs} most populous city?"],
    ("country", "religion"): ["What is the official religion of {x}?", "What is the state religion of {x}?"],
    ("country", "animal"): ["What is the national animal of {x}?", "Which animal is the national symbol of {x}?"],
    ("country", "president"): ["Who is the president of {x}?", "Who is {xs} head of state?"],
    ("country", "pm"): ["Who is the prime minister of {x}?", "Who leads the government of {x}?"],
    ("country", "life"): ["What is the life expectancy in {x}?", "How long do people live on average in {x}?"],
    ("country", "growth"): ["What is the population growth rate of {x}?", "How fast is the population of {x} growing?"],
    ("country", "emergency"): ["What is the emergency telephone number in {x}?", "Which number do I call for an ambulance in {x}?"],
    ("country", "border-length"): ["How long are {xs} land borders?", "What is the total length of the borders of {x}?"],
    ("country", "coastline"): ["How long is the coastline of {x}?", "What is the length of {xs} coastline?"],
    ("country", "capital-gains"): ["What is the capital gains tax rate in {x}?"],
    ("element", "boiling"): ["What is the boiling point of {x}?", "At what temperature does {x} boil?", "What is {xs} boiling point?"],
    ("element", "ionization"): ["What is the ionization energy of {x}?", "What is the first ionisation energy of {x}?"],
    ("element", "radius"): ["What is the atomic radius of {x}?", "How big is an atom of {x}?", "What is the covalent radius of {x}?"],
    ("element", "electronegativity"): ["What is the electronegativity of {x}?", "How electronegative is {x}?"],
    ("element", "half-life"): ["What is the half-life of {x}?", "How long is the half-life of {x}?"],
    ("element", "heat-fusion"): ["What is the heat of fusion of {x}?", "What is the specific heat of {x}?"],
    ("element", "oxidation"): ["What are the oxidation states of {x}?", "What is the most common oxidation state of {x}?"],
    ("element", "crystal"): ["What is the crystal structure of {x}?", "In what lattice does {x} crystallise?"],
    ("element", "conductivity"): ["What is the thermal conductivity of {x}?", "How well does {x} conduct electricity?"],
    ("element", "isotopes"): ["How many isotopes does {x} have?", "How many known isotopes of {x} are there?"],
    ("element", "electron-affinity"): ["What is the electron affinity of {x}?"],
    ("city", "area-code"): ["What is the area code of {x}?", "What is the telephone area code for {x}?"],
    ("city", "area"): ["What is the area of {x}?", "How many square kilometres does {x} cover?"],
    ("city", "density"): ["What is the population density of {x}?", "How densely populated is {x}?"],
    ("city", "timezone"): ["What time zone is {x} in?", "What is the time zone of {x}?"],
    ("city", "elevation"): ["What is the elevation of {x}?", "How high above sea level is {x}?"],
    ("city", "postcode"): ["What is the postal code of {x}?", "What is the zip code of {x}?"],
    ("currency", "symbol"): ["What is the symbol of {x}?", "Which sign is used for {x}?", "What is the currency symbol for {x}?"],
}
P["unanswerable_attribute"] = {
    ("country", "dish"): ["What is the national dish of {x}?", "What food is {x} famous for?"],
    ("country", "independence"): ["When did {x} become independent?", "When did {x} gain independence?"],
    ("country", "flower"): ["What is the national flower of {x}?"],
    ("country", "motto"): ["What is the motto of {x}?", "What is {xs} national motto?"],
    ("country", "driving"): ["Which side of the road do people drive on in {x}?", "Do they drive on the left in {x}?"],
    ("country", "flag"): ["What does the flag of {x} look like?", "What colours are on the flag of {x}?"],
    ("country", "exports"): ["What are the main exports of {x}?", "What does {x} export?"],
    ("country", "sport"): ["What is the national sport of {x}?", "What is the most popular sport in {x}?"],
    ("country", "literacy"): ["What is the literacy rate in {x}?"],
    ("country", "wage"): ["What is the minimum wage in {x}?", "What is the average salary in {x}?"],
    ("country", "plug"): ["What plug type is used in {x}?", "What voltage do sockets in {x} use?"],
    ("country", "drinking-age"): ["What is the drinking age in {x}?", "What is the legal voting age in {x}?"],
    ("country", "climate"): ["What is the climate like in {x}?", "What is the average temperature in {x}?"],
    ("element", "discoverer"): ["Who discovered {x}?", "Which scientist discovered {x}?", "Who first isolated {x}?"],
    ("element", "namer"): ["Who named {x}?", "Where does the name {x} come from?", "What does the name {x} mean?"],
    ("element", "uses"): ["What is {x} used for?", "What are the uses of {x}?"],
    ("element", "occurrence"): ["Where is {x} found in nature?", "Which country produces the most {x}?"],
    ("element", "price"): ["What is the price of {x}?", "How much does a kilogram of {x} cost?"],
    ("element", "colour"): ["What colour is {x}?", "What does {x} look like?"],
    ("element", "toxic"): ["Is {x} toxic?", "What are the health effects of {x}?"],
    ("element", "how-discovered"): ["How was {x} discovered?", "Where was {x} discovered?"],
    ("city", "mayor"): ["Who is the mayor of {x}?", "Who governs the city of {x}?"],
    ("city", "founded"): ["When was {x} founded?", "How old is the city of {x}?"],
    ("city", "airport"): ["What is the main airport of {x}?", "Which airport serves {x}?"],
    ("city", "landmark"): ["What is {x} famous for?", "What is the most famous landmark in {x}?"],
    ("city", "weather"): ["What is the weather like in {x}?", "When is the best time to visit {x}?"],
    ("currency", "issuer"): ["Who issues {x}?", "Which central bank prints {x}?"],
    ("currency", "introduced"): ["When was {x} introduced?", "How old is {x}?"],
    ("currency", "rate"): ["What is the exchange rate of {x} today?", "How much is {x} worth against other currencies?"],
    ("currency", "notes"): ["Whose portrait is on the banknotes of {x}?", "What coins of {x} are there?"],
    ("currency", "subunit"): ["What is the subunit of {x}?", "What is the smallest coin of {x}?"],
}
P["near_modifier"] = {
    ("country", "capital-before"): ["What was the capital of {x} before {c}?", "Which city was {xs} capital before {c}?",
                                    "Before {c}, what was the capital of {x}?"],
    ("country", "capital-year"): ["What was the capital of {x} in {y}?", "Which city was the capital of {x} in {y}?"],
    ("country", "capital-first"): ["What was the first capital of {x}?", "What was the former capital of {x}?",
                                   "What was {xs} old capital?"],
    ("country", "second-city"): ["What is the second largest city in {x}?", "What is the smallest city in {x}?",
                                 "Which city in {x} is the second biggest?"],
    ("country", "not-capital"): ["What is not the capital of {x}?", "Which city is not the capital of {x}?"],
    ("country", "capital-future"): ["What will the capital of {x} be in {fy}?"],
    ("country", "neighbour-capital"): ["What is the capital of {xs} neighbour?", "What is the capital of the country next to {x}?",
                                       "What is the capital of the neighbouring country of {x}?"],
    ("country", "province-capital"): ["What is the capital of the largest province of {x}?",
                                      "What is the capital of {xs} biggest region?"],
    ("country", "currency-before"): ["What was the currency of {x} before the {cur}?", "What did {x} use as money before the {cur}?",
                                     "Which currency did {x} have before the {cur}?"],
    ("country", "currency-year"): ["What was the currency of {x} in {y}?", "What money did people use in {x} in {y}?"],
    ("country", "population-future"): ["What will the population of {x} be in {fy}?", "How many people will live in {x} in {fy}?",
                                       "What is the projected population of {x} for {fy}?"],
    ("country", "population-past"): ["What was the population of {x} in {y}?", "How many people lived in {x} in {y}?",
                                     "What was {xs} population a century ago?"],
    ("country", "population-urban"): ["What is the urban population of {x}?", "How many people in {x} live in cities?",
                                      "What is the rural population of {x}?"],
    ("country", "borders-past"): ["Which countries bordered {x} in {y}?", "Which countries does {x} share a maritime border with?",
                                  "Which country borders {x} to the north?"],
    ("country", "area-past"): ["What was the area of {x} in {y}?", "How big was {x} in {y}?"],
    ("element", "discovered-after"): ["Which element was discovered after {x}?", "Which element was discovered just before {x}?",
                                      "Which element was discovered ten years after {x}?"],
    ("element", "compound"): ["What is the melting point of {x} oxide?", "What is the density of {x} chloride?",
                              "What is the atomic weight of {x} oxide?"],
    ("element", "condition"): ["What is the density of {x} at absolute zero?", "What is the melting point of {x} at high pressure?",
                               "What is the density of {x} at 1000 degrees Celsius?"],
    ("element", "ion"): ["What is the electron configuration of a {x} ion?", "What is the electron configuration of excited {x}?"],
    ("city", "population-past"): ["What was the population of {x} in {y}?", "How many people lived in {x} in {y}?"],
    ("city", "population-future"): ["What will the population of {x} be in {fy}?", "How many people will live in {x} in {fy}?"],
    ("city", "country-past"): ["Which country was {x} part of in {y}?", "Which country did {x} belong to in {y}?"],
}
P["missing_city_population"] = [
    "What is the population of {x}?", "How many people live in {x}?", "How populous is {x}?",
    "How many inhabitants does {x} have?", "What population does the city of {x} have?", "How big is the population of {x}?"]


def heldout_only_templates():
    """Every third template of each home pool is heldout-only. A template keeps
    that mark wherever it is reused (aliases, refusals). The refusal kinds'
    pools are small, so they are marked over the kind's whole list."""
    marked = set()

    def mark(pool):
        for i, t in enumerate(pool):
            if i % 3 == 2:
                marked.add(t)

    homes = [P["grain_surface"], P["country_capital_reword"], P["country_currency_reword"], P["element_symbol_reword"],
             P["country_capital_alias"], P["country_currency_alias"], P["element_symbol_alias"],
             P["missing_city_population"]]
    homes += [CANON[key] for key in sorted(CANON)]
    homes += [PARA[key] for key in sorted(PARA) if key not in (("country", "capital"), ("country", "currency"))]
    homes += [P[name] for name in sorted(n for n in P if isinstance(n, str)) if name.startswith("inverse_")
              and name != "inverse_capital_location"]
    for pool in homes:
        mark(pool)
    for name in ("past_country", "planet", "near_attribute", "unanswerable_attribute", "near_modifier"):
        mark([t for key in sorted(P[name]) for t in P[name][key]])
    return marked


HELDOUT_ONLY = heldout_only_templates()

# --------------------------------------------------------------------------
# Built-in lists (names only; nothing here is an answer)

# Short names that unambiguously mean one country: alias -> country name as in
# the ISO-codes facts.
SHORT_NAMES = {
    "the UK": "the United Kingdom", "Britain": "the United Kingdom", "Great Britain": "the United Kingdom",
    "the USA": "the United States", "the US": "the United States", "America": "the United States",
    "the United States of America": "the United States",
    "the UAE": "the United Arab Emirates",
    "the DRC": "the Democratic Republic of the Congo", "DR Congo": "the Democratic Republic of the Congo",
    "Congo-Kinshasa": "the Democratic Republic of the Congo",
    "Congo-Brazzaville": "the Republic of the Congo",
    "the Czech Republic": "Czechia",
    "Côte d'Ivoire": "Ivory Coast",
    "Burma": "Myanmar",
    "East Timor": "Timor Leste",
    "Swaziland": "Eswatini",
    "Cape Verde": "Cabo Verde",
    "Türkiye": "Turkey",
    "the PRC": "China",
    "the Russian Federation": "Russia",
    "Viet Nam": "Vietnam",
    "the Holy See": "the Vatican",
    "Macau": "Macao",
    "the Falklands": "the Falkland Islands",
    "KSA": "Saudi Arabia",
    "the DPRK": "North Korea",
}
ELEMENT_SPELLINGS = {"aluminium": "al", "caesium": "cs", "sulphur": "s"}

# ISO codes that read as an English word or a common abbreviation (including
# US state codes), so "the capital of CA" would not clearly mean the country.
AMBIGUOUS_CODES = set("""
AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK OR PA
RI SC SD TN TX UT VT VA WA WV WI WY DC AS GU MP PR VI
AB BC MB NB NL NS NT NU ON PE QC SK YT
AD AI AM AN AT BE BS BY CC CD CV DJ DM DO EG ER ET EU FM GG GM GO HE HR IF IQ IS IT MC MY NA NO OF PG PH PM PS SA
SH SO ST TM TO TV UN UP US VC WE YE IO IM SS KG BO NI LB MG MM ML GW MR IE QA TZ BI CI CU GN GQ MW BA KW TD CM BB
AND ARE CAN PER NOR TON COD DOM MAC PAN GIN BEN CUB FIN MAR TUN LIE BRA COM VAT GEO IND ARM GUY PRY NAM JAM
GUM GAB HUN SEN ESP MUS CHE TUR POL BEL PRT SUR ASM IRL AUT CAF ISR TLS PNG ALA BLM CIV COG DMA EST FRO FSM
GRL IOT LUX NIC SSD STP AGO ARG AUS COL ETH
""".split())
# Element symbols that read as English words in a sentence.
AMBIGUOUS_SYMBOLS = {"I", "U", "As", "In", "No", "Be", "At", "Am"}
# Cities that are not a capital in the knowledge but are a seat of government
# or a co-capital in common usage: "Which country's capital is La Paz?" is no
# clean refusal.
CAPITAL_LIKE_CITIES = {"La Paz", "Cape Town", "Abidjan", "Dar es Salaam", "The Hague", "Cotonou", "Tel Aviv",
                       "Putrajaya", "Sejong", "Bloemfontein"}

REGIONS = [
    "Texas", "California", "Florida", "Alaska", "Hawaii", "Ohio", "Bavaria", "Saxony", "Scotland", "Wales", "England",
    "Northern Ireland", "Quebec", "Ontario", "British Columbia", "Alberta", "Catalonia", "Andalusia", "the Basque Country",
    "Siberia", "Sicily", "Sardinia", "Corsica", "Tasmania", "Queensland", "New South Wales", "Tuscany", "Lombardy",
    "Brittany", "Normandy", "Provence", "Flanders", "Wallonia", "Tibet", "Kashmir", "Kerala", "Sichuan", "Guangdong",
    "Xinjiang", "Hokkaido", "Okinawa", "Crimea", "Chechnya", "Transylvania", "Zanzibar", "Patagonia", "Lapland",
    "Kurdistan", "Bali", "Sumatra", "Borneo", "Mindanao", "Yukon", "Crete", "Jutland", "Cornwall", "Yorkshire",
]
DEFUNCT = [
    "Yugoslavia", "Czechoslovakia", "the Soviet Union", "the USSR", "Prussia", "East Germany", "West Germany",
    "the Ottoman Empire", "Austria-Hungary", "the Holy Roman Empire", "Serbia and Montenegro", "the Netherlands Antilles",
    "South Vietnam", "North Yemen", "South Yemen", "the United Arab Republic", "Gran Colombia",
]
FICTIONAL_PLACES = [
    "Wakanda", "Narnia", "Atlantis", "Westeros", "Genovia", "Latveria", "Gondor", "Freedonia", "Elbonia", "Mordor",
    "Ruritania", "Sokovia", "Zubrowka", "Panem", "Agrabah", "Arendelle", "Lilliput", "Utopia", "Neverland", "Asgard",
    "Krakozhia", "Qumar", "Markovia", "Genosha", "Themyscira", "Zamunda", "Molvania", "Florin",
]
FICTIONAL_WORLDS = ["Mars", "the Moon", "Venus", "Jupiter", "Saturn", "Pluto", "Tatooine", "Vulcan", "Gallifrey",
                    "Arrakis", "Pandora", "Cybertron"]
FICTIONAL_MATERIALS = ["vibranium", "adamantium", "unobtainium", "mithril", "kryptonite", "dilithium", "naquadah",
                       "tiberium", "carbonadium", "trinium", "octiron", "byzanium", "bombastium", "orichalcum"]

COUNTRY_ATTRS = ["capital", "currency", "population", "area", "continent", "languages", "calling-code",
                 "internet-domain", "iso-codes", "borders"]
ELEMENT_ATTRS = ["atomic-number", "group", "classification", "atomic-weight", "electron-configuration",
                 "melting-point", "density", "discovery"]

# --------------------------------------------------------------------------
# Generation


class Gen:
    def __init__(self, k):
        self.k = k
        self.rng = random.Random(SEED)
        self.cands = defaultdict(list)   # kind -> list of candidate dicts

    # ---- templates
    def allowed(self, pool, heldout):
        if heldout:
            return list(pool)
        return [t for t in pool if t not in HELDOUT_ONLY]

    def pick(self, pool, heldout, n=1):
        opts = self.allowed(pool, heldout)
        if not opts:
            return []                            # every template of this pool is heldout-only
        if n == 1:
            return [self.rng.choice(opts)]
        return self.rng.sample(opts, min(n, len(opts)))

    @staticmethod
    def render(tpl, x=None, **extra):
        mode = None
        if tpl.startswith("@lower "):
            mode, tpl = "lower", tpl[7:]
        elif tpl.startswith("@upper "):
            mode, tpl = "upper", tpl[7:]
        vals = dict(extra)
        if x is not None:
            vals.update(x=x, X=cap_first(x), xs=possessive(x), Xs=cap_first(possessive(x)))
        if "a" in vals:
            vals["A"] = cap_first(vals["a"])
        if "v" in vals:
            vals["v"] = cap_first(vals["v"]) if tpl.startswith("{v}") else vals["v"]
        q = tpl.format(**vals)
        q = cap_first(q)
        if mode == "lower":
            q = q.lower()
        elif mode == "upper":
            q = q.upper()
        return q

    def add(self, kind, sub, entity, query, expect, tpl=None):
        for s in expect:
            if s not in self.k.fact_ids and s not in self.k.grain_ids:
                fail("internal: %s expects unknown source %s" % (query, s))
        self.cands[kind].append({"kind": kind, "sub": sub, "entity": entity, "heldout": is_heldout(entity),
                                 "query": query, "expect": sort_expect(expect), "tpl": tpl})

    def ask(self, kind, sub, entity, pool, expect, n=1, **vals):
        h = is_heldout(entity)
        for t in self.pick(pool, h, n):
            self.add(kind, sub, entity, self.render(t, **vals), expect, tpl=t)

    # ---- knowledge views
    def mentioned(self, name):
        """Does any fact or grain mention this name (accent-free, whole words)?"""
        n = norm(name)
        return re.search(r"(?<![a-z0-9])" + re.escape(n) + r"(?![a-z0-9])", self.k.corpus_norm) is not None

    def setup(self):
        k = self.k
        # names of every kind of entity, normalised, for collision checks
        self.country_norms = {norm(c["name"]): cc for cc, c in k.countries.items()}
        city_counts = defaultdict(int)
        for c in k.cities.values():
            city_counts[norm(c["name"])] += 1
        self.city_by_norm = defaultdict(list)
        for key in sorted(k.cities):
            self.city_by_norm[norm(k.cities[key]["name"])].append(key)
        # cities safe to ask about by name
        self.good_cities = []
        for key in sorted(k.cities):
            c = k.cities[key]
            n = norm(c["name"])
            if city_counts[n] > 1:
                continue                         # e.g. two "Suzhou in China"
            if c["qualified"]:
                continue                         # disambiguated names ("Hyderabad in India")
            if any(n == cn or re.search(r"(?<![a-z])" + re.escape(cn) + r"(?![a-z])", n) or
                   re.search(r"(?<![a-z])" + re.escape(n) + r"(?![a-z])", cn) for cn in self.country_norms):
                continue                         # Singapore, Hong Kong Island, Mexico City, Salvador ...
            if norm(c["name"]) in {norm(e["name"]) for e in k.elements.values()}:
                continue
            self.good_cities.append(key)
        # capitals: norm -> list of cc
        self.capital_by_norm = defaultdict(list)
        for cc in sorted(k.countries):
            if k.countries[cc].get("capital"):
                self.capital_by_norm[norm(k.countries[cc]["capital"])].append(cc)

    def capital_ok(self, cc):
        """A capital that is a plain, unambiguous city name."""
        c = self.k.countries[cc]
        cap = c.get("capital")
        if not cap or c.get("capital_disputed"):
            return False
        n = norm(cap)
        if len(self.capital_by_norm[n]) > 1:
            return False
        for cn in self.country_norms:
            if n == cn or re.search(r"(?<![a-z])" + re.escape(cn) + r"(?![a-z])", n) or \
                    re.search(r"(?<![a-z])" + re.escape(n) + r"(?![a-z])", cn):
                return False
        return True

    def city_country_sources(self, key):
        """Facts that say which country a city is in: its country fact, and the
        capital fact when the city is its country's capital."""
        c = self.k.cities[key]
        out = [c["facts"]["country"]]
        co = self.k.countries[c["cc"]]
        if co.get("capital") and not co.get("capital_disputed") and norm(co["capital"]) == norm(c["name"]):
            out.append(co["facts"]["capital"])
        return out

    def country_sources(self, cc, attr):
        c = self.k.countries[cc]
        if attr == "currency":
            return country_currency_sources(self.k, cc) if "currency" in c["facts"] else None
        if attr == "capital":
            if "capital" not in c["facts"]:
                return None
            return [c["facts"]["capital"]] + ([c["grain_capital"]] if c.get("grain_capital") else [])
        if attr == "calling-code" and not c.get("calling_code"):
            return None
        if attr == "population" and norm(c["name"]) in self.city_by_norm:
            return None                          # a city has the same name
        f = c["facts"].get(attr)
        return [f] if f else None

    # ---- answerable kinds
    def gen_grains(self):
        k = self.k
        for g in k.grains:
            (fam, ek), attr = g["_entity"], g["_attr"]
            if fam == "country":
                c = k.countries[ek]
                name = c["name"]
                entity = "country:" + ek
                expect = self.country_sources(ek, attr)
                reword = P["country_%s_reword" % attr]
                words = attr
            else:
                e = k.elements[ek]
                name = e["name"]
                entity = "element:" + ek
                expect = [e["grain"], e["facts"]["symbol"]]
                reword = P["element_symbol_reword"]
                words = "chemical symbol"
            sub = attr
            self.add("grain_exact", sub, entity, g["question"], expect)
            self.ask("grain_surface", sub, entity, P["grain_surface"], expect, x=name, a=words)
            self.ask("grain_reworded", sub, entity, reword, expect, x=name)

    def alias_codes(self, cc):
        """ISO codes usable as a name for cc: (sub, code)."""
        c = self.k.countries[cc]
        clash = {cur["code"] for cur in self.k.currencies.values()} | {e["sym"].upper() for e in self.k.elements.values() if len(e["sym"]) == 3}
        out = []
        if c["a3"] not in AMBIGUOUS_CODES and c["a3"] not in clash:
            out.append(("alpha-3", c["a3"]))
        if c["a2"] not in AMBIGUOUS_CODES:
            out.append(("alpha-2", c["a2"]))
        return out

    def short_names(self):
        out = []
        for alias in sorted(SHORT_NAMES):
            target = SHORT_NAMES[alias]
            if target not in self.k.name_to_cc:
                fail("built-in short name %r points to %r, which is not a country in countries.jsonl" % (alias, target))
            cc = self.k.name_to_cc[target]
            n = norm(alias)
            if n in self.country_norms or n in self.city_by_norm or n in self.capital_by_norm:
                fail("built-in short name %r is also the name of another entity" % alias)
            out.append((alias, cc))
        return out

    def gen_grain_alias(self):
        k = self.k
        for cc in sorted(k.countries):
            c = k.countries[cc]
            attrs = [a for a in ("capital", "currency") if c.get("grain_" + a)]
            if not attrs:
                continue
            entity = "country:" + cc
            self.rng.shuffle(attrs)
            for i, (sub, code) in enumerate(self.alias_codes(cc)):
                attr = attrs[i % len(attrs)]
                self.ask("grain_alias", attr + "/" + sub, entity, P["country_%s_alias" % attr],
                         self.country_sources(cc, attr), x=code)
        for alias, cc in self.short_names():
            c = k.countries[cc]
            for attr in ("capital", "currency"):
                if c.get("grain_" + attr):
                    self.ask("grain_alias", attr + "/short-name", "country:" + cc, P["country_%s_alias" % attr],
                             self.country_sources(cc, attr), x=alias)
        for spelling in sorted(ELEMENT_SPELLINGS):
            e = k.elements[ELEMENT_SPELLINGS[spelling]]
            if self.mentioned(spelling):
                fail("built-in spelling %r appears in the knowledge" % spelling)
            self.ask("grain_alias", "symbol/spelling", "element:" + ELEMENT_SPELLINGS[spelling], P["element_symbol_alias"],
                     [e["grain"], e["facts"]["symbol"]], n=2, x=spelling)

    def cartridge_items(self):
        """(family, attr, entity key, name, expect) for every fact only cartridges hold."""
        k = self.k
        items = []
        for cc in sorted(k.countries):
            c = k.countries[cc]
            for attr in COUNTRY_ATTRS:
                if attr in ("capital", "currency") and c.get("grain_" + attr):
                    continue                     # grain kinds cover these
                if attr == "capital" and c.get("capital_disputed"):
                    continue                     # the fact hedges; not a clean answer
                exp = self.country_sources(cc, attr)
                if exp:
                    items.append(("country", attr, "country:" + cc, c["name"], exp))
        for key in self.good_cities:
            c = k.cities[key]
            ent = "city:" + key[5:]
            items.append(("city", "population", ent, c["name"], [c["facts"]["population"]]))
            items.append(("city", "country", ent, c["name"], self.city_country_sources(key)))
        for code in sorted(k.currencies):
            cur = k.currencies[code]
            ent = "currency:" + code
            name = "the " + cur["name"]
            items.append(("currency", "code", ent, name, [cur["facts"]["code"]]))
            one = cur.get("used_in_one")
            if one and users_of_currency(k, code) == [one]:
                items.append(("currency", "used-in", ent, name, [cur["facts"]["used-in"], k.countries[one]["facts"]["currency"]]))
        for s in sorted(k.elements):
            e = k.elements[s]
            for attr in ELEMENT_ATTRS:
                if attr in e["facts"]:
                    items.append(("element", attr, "element:" + s, e["name"], [e["facts"][attr]]))
        return items

    def gen_cartridge(self):
        k = self.k
        items = self.cartridge_items()
        for fam, attr, ent, name, exp in items:
            sub = fam + "/" + attr
            self.ask("cartridge_canonical", sub, ent, P[("canon", fam, attr)], exp, x=name)
            self.ask("cartridge_paraphrase", sub, ent, P[("para", fam, attr)], exp, x=name)
        # aliases: element symbols in their own case; country ISO codes; short names
        for fam, attr, ent, name, exp in items:
            if fam == "element":
                sym = k.elements[ent.split(":")[1]]["sym"]
                if sym in AMBIGUOUS_SYMBOLS:
                    continue
                self.add_alias_candidate(ent, "element-symbol", fam, attr, sym, exp)
            elif fam == "country":
                cc = ent.split(":")[1]
                for sub, code in self.alias_codes(cc):
                    self.add_alias_candidate(ent, "country-" + sub, fam, attr, code, exp)
        for alias, cc in self.short_names():
            c = k.countries[cc]
            for attr in COUNTRY_ATTRS:
                if attr in ("capital", "currency") and c.get("grain_" + attr):
                    continue
                exp = self.country_sources(cc, attr)
                if exp:
                    self.add_alias_candidate("country:" + cc, "country-short-name", "country", attr, alias, exp)
        for spelling in sorted(ELEMENT_SPELLINGS):
            s = ELEMENT_SPELLINGS[spelling]
            for attr in ELEMENT_ATTRS:
                f = k.elements[s]["facts"].get(attr)
                if f:
                    self.add_alias_candidate("element:" + s, "element-spelling", "element", attr, spelling, [f])

    def add_alias_candidate(self, ent, sub, fam, attr, alias, exp):
        self.ask("cartridge_alias", sub + "/" + attr, ent, P[("alias", fam, attr)], exp, x=alias)

    def gen_inverse(self):
        k = self.k
        els = [k.elements[s] for s in sorted(k.elements)]
        for e in els:
            ent = "element:" + e["sym"].lower()
            self.ask("inverse", "symbol", ent, P["inverse_symbol"], [e["facts"]["symbol"]], v=e["sym"])
            self.ask("inverse", "atomic-number", ent, P["inverse_z"], [e["facts"]["atomic-number"]], v=str(e["z"]))
        gp = defaultdict(list)
        for e in els:
            if e["group"] is not None:
                gp[(e["group"], e["period"])].append(e)
        for (g, p), lst in sorted(gp.items()):
            if len(lst) == 1:
                e = lst[0]
                self.ask("inverse", "group-period", "element:" + e["sym"].lower(), P["inverse_group"], [e["facts"]["group"]],
                         g=str(g), p=str(p))
        cfg = defaultdict(list)
        for e in els:
            cfg[e["config"]].append(e)
        for v, lst in sorted(cfg.items()):
            if len(lst) == 1:
                e = lst[0]
                self.ask("inverse", "electron-configuration", "element:" + e["sym"].lower(), P["inverse_config"],
                         [e["facts"]["electron-configuration"]], v=v)
        yrs = defaultdict(list)
        for e in els:
            if e["discovered"] is not None:
                yrs[e["discovered"]].append(e)
        for y, lst in sorted(yrs.items()):
            if len(lst) == 1:
                e = lst[0]
                self.ask("inverse", "discovery-year", "element:" + e["sym"].lower(), P["inverse_discovery"],
                         [e["facts"]["discovery"]], v=str(y))
        # countries
        doms = defaultdict(list)
        calls = defaultdict(list)
        for cc in sorted(k.countries):
            c = k.countries[cc]
            if c.get("domain"):
                doms[c["domain"]].append(cc)
            if c.get("calling_code"):
                calls[c["calling_code"]].append(cc)
        for cc in sorted(k.countries):
            c = k.countries[cc]
            ent = "country:" + cc
            if self.capital_ok(cc):
                cap = c["capital"]
                self.ask("inverse", "capital", ent, P["inverse_capital"], [c["facts"]["capital"]], v=cap)
                # "Which country is Reykjavik in?": the capital fact, and the
                # city's own fact when cities.jsonl has it (under any accents)
                keys = self.city_by_norm.get(norm(cap), [])
                if all(k.cities[x]["cc"] == cc for x in keys) and len(keys) <= 1:
                    exp = [c["facts"]["capital"]] + ([k.cities[keys[0]]["facts"]["country"]] if keys else [])
                    ckey = keys[0] if keys else None
                    if ckey is None or ckey not in self.good_cities:
                        # cities in good_cities are asked this in the cartridge kinds
                        self.ask("inverse", "capital-location", ent, P["inverse_capital_location"], exp, x=cap)
            if c.get("domain") and len(doms[c["domain"]]) == 1:
                self.ask("inverse", "internet-domain", ent, P["inverse_domain"], [c["facts"]["internet-domain"]], v=c["domain"])
            cl = c.get("calling_code")
            if cl and len(calls[cl]) == 1 and " and " not in cl:
                self.ask("inverse", "calling-code", ent, P["inverse_calling"], [c["facts"]["calling-code"]], v="+" + cl)
            code = self.rng.choice([c["a2"], c["a3"], c["num"]])
            self.ask("inverse", "iso-code", ent, P["inverse_iso"], [c["facts"]["iso-codes"]], v=code)
        for code in sorted(k.currencies):
            cur = k.currencies[code]
            self.ask("inverse", "currency-code", "currency:" + code, P["inverse_currency_code"], [cur["facts"]["code"]],
                     v=cur["code"])

    # ---- refusals
    def usable_name(self, name):
        if self.mentioned(name):
            self.skipped.append(name)
            return False
        return True

    def gen_near_neighbour(self):
        k = self.k
        attrs = ["capital", "currency", "population", "area", "continent", "languages", "calling-code", "borders",
                 "internet-domain"]
        for name in sorted(REGIONS):
            if not self.usable_name(name):
                continue
            ent = "region:" + norm(name)
            for attr in attrs:
                pool = CANON[("country", attr)] + PARA[("country", attr)]
                self.ask("near_neighbour", "region", ent, pool, [], x=name)
        for name in sorted(DEFUNCT):
            if not self.usable_name(name):
                continue
            ent = "defunct:" + norm(name)
            for attr in sorted(P["past_country"]):
                self.ask("near_neighbour", "defunct", ent, P["past_country"][attr], [], x=name)
                if attr in ("capital", "currency", "population"):
                    self.ask("near_neighbour", "defunct", ent, CANON[("country", attr)], [], x=name)
        capitals = set(self.capital_by_norm)
        for key in self.good_cities:
            c = k.cities[key]
            if norm(c["name"]) in capitals:
                continue                          # "What is the capital of Nairobi" would be a muddle
            ent = "city:" + key[5:]
            for attr in ("capital", "currency", "borders", "iso-codes"):
                pool = CANON[("country", attr)] + PARA[("country", attr)]
                if attr == "borders":
                    pool = [t for t in pool if "How many" not in t]
                self.ask("near_neighbour", "city-as-country", ent, pool, [], x=c["name"])

    def gen_near_attribute(self):
        k = self.k
        for (fam, attr), pool in sorted(P["near_attribute"].items()):
            for name, ent in self.entities(fam):
                if fam == "country" and attr == "currency-symbol":
                    cc = ent.split(":")[1]
                    if k.countries[cc].get("currency_code") in (None, "CHF"):
                        continue                  # "CHF" is also written as the Swiss franc's sign
                if fam == "country" and attr == "largest-city" and norm(name) in self.city_by_norm:
                    continue
                if fam == "country" and attr == "border-length" and not k.countries[ent.split(":")[1]].get("neighbours"):
                    continue                      # "has no land border" answers it
                if fam == "currency" and attr == "symbol" and "CHF" in ent.upper():
                    continue
                self.add_refusal_candidate("near_attribute", fam + "/" + attr, ent, pool, name)

    def entities(self, fam):
        k = self.k
        if fam == "country":
            return [(k.countries[cc]["name"], "country:" + cc) for cc in sorted(k.countries)]
        if fam == "element":
            return [(k.elements[s]["name"], "element:" + s) for s in sorted(k.elements)]
        if fam == "city":
            return [(k.cities[key]["name"], "city:" + key[5:]) for key in self.good_cities]
        if fam == "currency":
            return [("the " + k.currencies[c]["name"], "currency:" + c) for c in sorted(k.currencies)]
        raise ValueError(fam)

    def add_refusal_candidate(self, kind, sub, ent, pool, name, **vals):
        self.ask(kind, sub, ent, pool, [], x=name, **vals)

    def gen_unanswerable_attribute(self):
        for (fam, attr), pool in sorted(P["unanswerable_attribute"].items()):
            for name, ent in self.entities(fam):
                if fam == "element" and attr in ("discoverer", "how-discovered") and \
                        self.k.elements[ent.split(":")[1]]["discovered"] is None:
                    continue                      # "known since ancient times" half-answers "who discovered gold"
                self.add_refusal_candidate("unanswerable_attribute", fam + "/" + attr, ent, pool, name)

    def gen_near_modifier(self):
        k = self.k
        years = ["1800", "1850", "1900", "1920", "1950", "1960", "1975"]
        future = ["2040", "2050", "2075", "2100"]
        for (fam, attr), pool in sorted(P["near_modifier"].items()):
            for name, ent in self.entities(fam):
                vals = {"y": self.rng.choice(years), "fy": self.rng.choice(future)}
                if fam == "country":
                    c = k.countries[ent.split(":")[1]]
                    if attr.startswith("capital") or attr in ("not-capital", "province-capital"):
                        if not self.capital_ok(c["cc"]):
                            continue
                        vals["c"] = c["capital"]
                    if attr.startswith("currency"):
                        if not c.get("currency_name"):
                            continue
                        vals["cur"] = c["currency_name"]
                    if attr == "neighbour-capital" and len(c.get("neighbours", [])) < 2:
                        continue                  # one neighbour: its capital is two facts away, not unknown
                    if attr == "second-city" and norm(name) in self.city_by_norm:
                        continue
                    if attr == "borders-past" and len(c.get("neighbours", [])) < 2:
                        continue                  # "borders X to the north" is the one neighbour, or none
                if fam == "element" and attr == "compound" and name in ("oxygen", "chlorine"):
                    continue
                if fam == "element" and attr in ("discovered-after",) and k.elements[ent.split(":")[1]]["discovered"] is None:
                    continue
                self.add_refusal_candidate("near_modifier", fam + "/" + attr, ent, pool, name, **vals)

    def gen_near_turned(self):
        k = self.k
        rng = self.rng
        syms = {e["sym"].lower() for e in k.elements.values()}
        words = {"ok", "hi", "go", "me", "my", "on", "or", "so", "to", "up", "we", "us", "oh", "ah", "ox", "ax", "ex",
                 "yo", "ye", "id", "if", "is", "it", "of", "an", "by", "do", "he", "no", "be", "at", "am", "as", "in"}
        fake = set()
        letters1 = "BDGJKLMQRTVWXZ"
        letters2 = "jqvwxz"
        while len(fake) < 40:
            s = rng.choice(letters1) + rng.choice(letters2)
            if s.lower() not in syms and s.lower() not in words:
                fake.add(s)
        for s in sorted(fake) + ["Uue", "Ubn", "Xq", "Zz"]:
            if s.lower() in syms:
                continue
            self.ask("near_turned", "symbol", "value:symbol:" + s, P["inverse_symbol"], [], v=s)
        zs = {e["z"] for e in k.elements.values()}
        for z in sorted(rng.sample(range(max(zs) + 1, 400), 40)):
            self.ask("near_turned", "atomic-number", "value:z:%d" % z, P["inverse_z"], [], v=str(z))
        for g, p in [(19, 2), (20, 3), (21, 4), (25, 5), (30, 2), (19, 8), (1, 9), (18, 9), (2, 8), (14, 10)]:
            self.ask("near_turned", "group-period", "value:gp:%d-%d" % (g, p), P["inverse_group"], [], g=str(g), p=str(p))
        yrs = {e["discovered"] for e in k.elements.values() if e["discovered"]}
        lo, hi = min(yrs), max(yrs)
        cand_years = [y for y in range(lo, hi + 1) if y not in yrs and (y - 1) not in yrs and (y + 1) not in yrs]
        for y in sorted(rng.sample(cand_years, min(30, len(cand_years)))):
            self.ask("near_turned", "discovery-year", "value:year:%d" % y, P["inverse_discovery"], [], v=str(y))
        # calling codes no fact has, with no real code a prefix of them
        bases = {c["calling_code"].split("-")[0] for c in k.countries.values() if c.get("calling_code")}
        bases |= {x.split("-")[0] for c in k.countries.values() if c.get("calling_code") for x in c["calling_code"].split(" and ")}
        fake_calls = []
        for n in range(200, 1000):
            s = str(n)
            if not any(s.startswith(b) or b.startswith(s) for b in bases):
                fake_calls.append(s)
        for s in sorted(rng.sample(fake_calls, min(40, len(fake_calls)))):
            self.ask("near_turned", "calling-code", "value:call:" + s, P["inverse_calling"], [], v="+" + s)
        doms = {c["domain"] for c in k.countries.values() if c.get("domain")}
        fake_doms = set()
        while len(fake_doms) < 30:
            d = "." + rng.choice("abcdefghijklmnopqrstuvwxyz") + rng.choice("abcdefghijklmnopqrstuvwxyz")
            if d not in doms:
                fake_doms.add(d)
        for d in sorted(fake_doms) + [".com", ".org", ".net", ".info", ".biz", ".app"]:
            self.ask("near_turned", "internet-domain", "value:domain:" + d, P["inverse_domain"], [], v=d)
        ccodes = {cur["code"] for cur in k.currencies.values()}
        a3s = {c["a3"] for c in k.countries.values()}
        fake_cur = set()
        while len(fake_cur) < 35:
            s = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(3))
            if s not in ccodes and s not in a3s and s not in AMBIGUOUS_CODES:
                fake_cur.add(s)
        for s in sorted(fake_cur):
            self.ask("near_turned", "currency-code", "value:cur:" + s, P["inverse_currency_code"], [], v=s)
        a2s = {c["a2"] for c in k.countries.values()}
        nums = {c["num"] for c in k.countries.values()}
        fake_iso = set()
        while len(fake_iso) < 35:
            kind = rng.choice(["a2", "a3", "num"])
            if kind == "a2":
                s = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(2))
                bad = s in a2s or s in AMBIGUOUS_CODES
            elif kind == "a3":
                s = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(3))
                bad = s in a3s or s in ccodes or s in AMBIGUOUS_CODES
            else:
                s = "%03d" % rng.randrange(1, 1000)
                bad = s in nums
            if not bad:
                fake_iso.add(s)
        for s in sorted(fake_iso):
            self.ask("near_turned", "iso-code", "value:iso:" + s, P["inverse_iso"], [], v=s)
        # a country, or a city that is no capital, asked as a capital
        capitals = set(self.capital_by_norm)
        cap_words = list(capitals)
        for cc in sorted(k.countries):
            n = norm(k.countries[cc]["name"])
            if any(n == c or re.search(r"(?<![a-z])" + re.escape(n) + r"(?![a-z])", c) or
                   re.search(r"(?<![a-z])" + re.escape(c) + r"(?![a-z])", n) for c in cap_words):
                continue                          # Singapore, Djibouti, Kuwait (City), Sao Tome ...
            self.ask("near_turned", "country-as-capital", "country:" + cc, P["inverse_capital"], [], v=k.countries[cc]["name"])
        for key in self.good_cities:
            n = norm(k.cities[key]["name"])
            if k.cities[key]["name"] in CAPITAL_LIKE_CITIES:
                continue
            if any(n == c or re.search(r"(?<![a-z])" + re.escape(n) + r"(?![a-z])", c) or
                   re.search(r"(?<![a-z])" + re.escape(c) + r"(?![a-z])", n) for c in cap_words):
                continue                          # a capital, or Delhi vs New Delhi
            self.ask("near_turned", "city-as-capital", "city:" + key[5:], P["inverse_capital"], [], v=k.cities[key]["name"])

    def gen_fictional(self):
        country_attrs = ["capital", "currency", "population", "area", "continent", "languages", "calling-code", "borders"]
        for name in sorted(FICTIONAL_PLACES):
            if not self.usable_name(name):
                continue
            ent = "fictional:" + norm(name)
            for attr in country_attrs:
                pool = CANON[("country", attr)] + PARA[("country", attr)]
                self.ask("unanswerable_fictional", "place", ent, pool, [], x=name)
        for name in sorted(FICTIONAL_WORLDS):
            if not self.usable_name(name):
                continue
            ent = "fictional:" + norm(name)
            for attr in sorted(P["planet"]):
                self.ask("unanswerable_fictional", "world", ent, P["planet"][attr], [], x=name)
        for name in sorted(FICTIONAL_MATERIALS):
            if not self.usable_name(name):
                continue
            ent = "fictional:" + norm(name)
            self.ask("unanswerable_fictional", "material", ent,
                     ["What is the chemical symbol of {x}?"] + P["element_symbol_reword"], [], x=name)
            for attr in ELEMENT_ATTRS:
                self.ask("unanswerable_fictional", "material", ent, CANON[("element", attr)] + PARA[("element", attr)], [], x=name)

    def gen_missing(self):
        k = self.k
        for cc in sorted(k.countries):
            c = k.countries[cc]
            for attr in COUNTRY_ATTRS:
                if attr in c["facts"]:
                    continue
                if attr == "population" and norm(c["name"]) in self.city_by_norm:
                    continue
                pool = CANON[("country", attr)] + PARA[("country", attr)]
                self.ask("unanswerable_missing", "country/" + attr, "country:" + cc, pool, [], n=3, x=c["name"])
        for s in sorted(k.elements):
            e = k.elements[s]
            for attr in ELEMENT_ATTRS:
                if attr in e["facts"]:
                    continue
                pool = CANON[("element", attr)] + PARA[("element", attr)]
                self.ask("unanswerable_missing", "element/" + attr, "element:" + s, pool, [], n=2, x=e["name"])
        # capitals that cities.jsonl lacks, asked their population
        taken = set(self.city_by_norm)
        for cc in sorted(k.countries):
            if not self.capital_ok(cc):
                continue
            cap = k.countries[cc]["capital"]
            n = norm(cap)
            if n in taken:
                continue
            # not under another spelling either ("Delhi" for "New Delhi", "Bogotá"),
            # nor one name inside the other ("San Salvador", "Salvador")
            if any(n in t or t in n for t in taken if k.cities[self.city_by_norm[t][0]]["cc"] == cc):
                continue
            if any(re.search(r"(?<![a-z])" + re.escape(t) + r"(?![a-z])", n) or
                   re.search(r"(?<![a-z])" + re.escape(n) + r"(?![a-z])", t) for t in taken):
                continue
            if n in {"male", "the valley", "valley", "west island", "washington", "victoria", "hamilton", "kingston",
                     "douglas", "stanley", "plymouth", "george town", "georgetown", "jamestown", "san jose", "san juan",
                     "saint denis"}:
                continue                          # names that also mean something or somewhere else
            self.ask("unanswerable_missing", "city/population", "country:" + cc, P["missing_city_population"], [], n=2, x=cap)

    def run(self):
        self.skipped = []
        self.setup()
        self.gen_grains()
        self.gen_grain_alias()
        self.gen_cartridge()
        self.gen_inverse()
        self.gen_near_neighbour()
        self.gen_near_attribute()
        self.gen_near_turned()
        self.gen_near_modifier()
        self.gen_unanswerable_attribute()
        self.gen_fictional()
        self.gen_missing()


# --------------------------------------------------------------------------
# Selection, checks and output

def select(gen):
    rng = gen.rng
    # 1. queries asked with two different expectations anywhere: drop them all
    seen = defaultdict(set)
    for kind in KINDS:
        for c in gen.cands[kind]:
            seen[dedupe_key(c["query"])].add(tuple(c["expect"]))
    conflicts = {q for q, exps in seen.items() if len(exps) > 1}
    # 2. dedupe (first occurrence wins, in kind order), then sample per kind
    taken = set()
    out = []
    for kind in KINDS:
        cands = []
        for c in gen.cands[kind]:
            key = dedupe_key(c["query"])
            if key in conflicts or key in taken:
                continue
            taken.add(key)
            cands.append(c)
        cap = CAPS[kind]
        if cap is None or len(cands) <= cap:
            chosen = cands
        else:
            groups = defaultdict(list)
            for c in cands:
                groups[c["sub"]].append(c)
            order = sorted(groups)
            for g in order:
                rng.shuffle(groups[g])
            chosen = []
            i = 0
            while len(chosen) < cap:
                progressed = False
                for g in order:
                    if i < len(groups[g]) and len(chosen) < cap:
                        chosen.append(groups[g][i])
                        progressed = True
                i += 1
                if not progressed:
                    break
            keep = {id(c) for c in chosen}
            chosen = [c for c in cands if id(c) in keep]   # back to generation order
        out.extend(chosen)
    return out, conflicts


def main():
    try:
        k = load_knowledge()
        gen = Gen(k)
        gen.run()
        labels, conflicts = select(gen)
    except Fail as e:
        print("generate_labels.py: error: %s" % e, file=sys.stderr)
        return 1

    # final checks
    refuse_kinds = set(KINDS[8:])
    for lab in labels:
        if not lab["heldout"] and lab["tpl"] in HELDOUT_ONLY:
            print("generate_labels.py: error: internal: a tune question uses a heldout-only template: %r" % lab["query"],
                  file=sys.stderr)
            return 1
        if (lab["kind"] in refuse_kinds) != (not lab["expect"]):
            print("generate_labels.py: error: %s has the wrong kind of expectation: %r" % (lab["kind"], lab["query"]),
                  file=sys.stderr)
            return 1

    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    with open(OUT_PATH, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("# Generated by eval/generate_labels.py from config/grains/demo.jsonl and config/cartridges/*.jsonl; "
                 "do not edit by hand: change the script and run it again. expect [] means the right answer is to refuse.\n")
        for i, lab in enumerate(labels, 1):
            row = {"id": "q%05d" % i, "split": "heldout" if lab["heldout"] else "tune", "kind": lab["kind"],
                   "query": lab["query"], "expect": lab["expect"]}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    # table
    counts = defaultdict(lambda: [0, 0])
    for lab in labels:
        counts[lab["kind"]][1 if lab["heldout"] else 0] += 1
    w = max(len(x) for x in KINDS)
    print("%-*s %7s %7s %7s %6s" % (w, "kind", "tune", "heldout", "total", "held%"))
    tt = th = 0
    for kind in KINDS:
        t, h = counts[kind]
        tt, th = tt + t, th + h
        print("%-*s %7d %7d %7d %5.0f%%" % (w, kind, t, h, t + h, 100.0 * h / max(1, t + h)))
    print("%-*s %7d %7d %7d %5.0f%%" % (w, "total", tt, th, tt + th, 100.0 * th / max(1, tt + th)))
    print("wrote %s (%d questions; %d queries dropped for conflicting expectations)"
          % (os.path.relpath(OUT_PATH, ROOT), tt + th, len(conflicts)))
    if gen.skipped:
        print("built-in names left out because the knowledge mentions them: %s" % ", ".join(sorted(set(gen.skipped))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
