#!/usr/bin/env python3
"""Derives config/aliases.jsonl, the other names of the demo's entities,
from the demo cartridges themselves (so it needs nothing but Python 3):

- every country's ISO 3166-1 alpha-2 and alpha-3 code, from the
  `<cc>-iso-codes` facts of countries.jsonl ("KEN" -> "Kenya");
- every element's symbol, from the `<sym>-symbol` facts of elements.jsonl
  ("Na" -> "sodium");
- every currency's ISO 4217 code, from the `currency-<code>-code` facts of
  currencies.jsonl ("KES" -> "Kenyan Shilling");
- a short list of common English short names of countries (SHORT_NAMES
  below), each checked against the countries it names.

An alias that would name two things (a currency code equal to a country
code, say) is left out and printed. Kitbash matches codes only as written
(see src/aliases.rs). Run from anywhere:

    python3 config/generate/generate_aliases.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CARTRIDGES = ROOT / "config" / "cartridges"
OUT = ROOT / "config" / "aliases.jsonl"

# Common short names, alias -> the country's name as the cartridges give it
# (without a leading "the"). Only names that mean one country.
SHORT_NAMES = {
    "UK": "United Kingdom",
    "Britain": "United Kingdom",
    "Great Britain": "United Kingdom",
    "America": "United States",
    "United States of America": "United States",
    "UAE": "United Arab Emirates",
    "DRC": "Democratic Republic of the Congo",
    "DR Congo": "Democratic Republic of the Congo",
    "Czech Republic": "Czechia",
    "Cote d'Ivoire": "Ivory Coast",
    "Côte d'Ivoire": "Ivory Coast",
    "Burma": "Myanmar",
    "Swaziland": "Eswatini",
    "East Timor": "Timor Leste",
    "Timor-Leste": "Timor Leste",
    "Cape Verde": "Cabo Verde",
    "Macedonia": "North Macedonia",
    "Vatican City": "Vatican",
    "Holy See": "Vatican",
    "PRC": "China",
    "Türkiye": "Turkey",
    "Turkiye": "Turkey",
    "Congo-Kinshasa": "Democratic Republic of the Congo",
    "Congo-Brazzaville": "Republic of the Congo",
    "Republic of Korea": "South Korea",
    "DPRK": "North Korea",
    "Russian Federation": "Russia",
    "Viet Nam": "Vietnam",
}

# British spellings of element names the cartridges spell the American way.
ELEMENT_SPELLINGS = {"aluminium": "aluminum", "caesium": "cesium", "sulphur": "sulfur"}

# The class of the entity an alias names, by where the alias comes from.
CLASSES = {
    "ISO 3166-1 alpha-2": "country",
    "ISO 3166-1 alpha-3": "country",
    "common short name": "country",
    "chemical symbol": "element",
    "spelling": "element",
    "ISO 4217": "currency",
}

ISO = re.compile(
    r"^The ISO 3166-1 codes of (?P<name>.+) are (?P<a2>[A-Z]{2}) \(alpha-2\), "
    r"(?P<a3>[A-Z]{3}) \(alpha-3\) and \d{3} \(numeric\)\.$"
)
SYMBOL = re.compile(r"^The chemical symbol of (?P<name>[a-z]+) is (?P<sym>[A-Z][a-z]{0,2})\.$")
CURRENCY = re.compile(r"^The ISO 4217 code of (?P<name>.+) is (?P<code>[A-Z]{3})\.$")


def facts(name: str) -> list[dict]:
    path = CARTRIDGES / f"{name}.jsonl"
    if not path.exists():
        sys.exit(f"generate_aliases: {path} is missing; run generate_demo.py first")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            out.append(json.loads(line))
    return out


def strip_the(name: str) -> str:
    return name[4:] if name.startswith("the ") else name


def shape(fact: dict, pattern: re.Pattern) -> re.Match:
    m = pattern.match(fact["text"])
    if not m:
        sys.exit(f"generate_aliases: fact {fact['id']} does not have the expected shape: {fact['text']!r}")
    return m


def main() -> None:
    rows: list[tuple[str, str, str]] = []
    countries = set()
    for f in facts("countries"):
        if f["id"].endswith("-iso-codes"):
            m = shape(f, ISO)
            name = strip_the(m["name"])
            countries.add(name)
            rows.append((m["a2"], name, "ISO 3166-1 alpha-2"))
            rows.append((m["a3"], name, "ISO 3166-1 alpha-3"))
    elements = set()
    for f in facts("elements"):
        if f["id"].endswith("-symbol"):
            m = shape(f, SYMBOL)
            elements.add(m["name"])
            rows.append((m["sym"], m["name"], "chemical symbol"))
    for alias, name in sorted(ELEMENT_SPELLINGS.items()):
        if name not in elements:
            sys.exit(f"generate_aliases: ELEMENT_SPELLINGS maps {alias!r} to {name!r}, which no element is called")
        rows.append((alias, name, "spelling"))
    for f in facts("currencies"):
        if f["id"].endswith("-code"):
            m = shape(f, CURRENCY)
            rows.append((m["code"], strip_the(m["name"]), "ISO 4217"))
    for alias, name in sorted(SHORT_NAMES.items()):
        if name not in countries:
            sys.exit(f"generate_aliases: SHORT_NAMES maps {alias!r} to {name!r}, which no country is called")
        rows.append((alias, name, "common short name"))

    names: dict[str, set[str]] = {}
    for alias, name, _ in rows:
        names.setdefault(alias, set()).add(name)
    ambiguous = sorted(a for a, n in names.items() if len(n) > 1)
    for a in ambiguous:
        print(f"left out, names two things: {a} -> {sorted(names[a])}")
    seen = set()
    lines = [
        "# Other names of the demo's entities. Generated by config/generate/generate_aliases.py"
        " from the demo cartridges; do not edit by hand."
    ]
    for alias, name, source in sorted(rows, key=lambda r: (r[2], r[0])):
        if alias in ambiguous or alias == name or (alias, name) in seen:
            continue
        seen.add((alias, name))
        row = {"alias": alias, "name": name, "source": source}
        if source in CLASSES:
            row["class"] = CLASSES[source]
        lines.append(json.dumps(row, ensure_ascii=False))
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines) - 1} aliases to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
