#!/usr/bin/env python3
"""Generates the labelled cartridge data set used by tests/cartridge.rs.

Writes, next to this script:
  countries.jsonl     capital, currency, continent, population, official
                      language(s) of the 193 UN member states plus Vatican City
  elements.jsonl      symbol, atomic number, period and group of the 118
                      chemical elements
  solar_system.jsonl  planets, moons, dwarf planets and the Sun
and ../cartridge_eval.jsonl: labelled queries (class, query, expected source
`<cartridge>#<fact id>` or null).

Everything comes from the tables below, written from well-known reference
knowledge (no network). Where a fact is disputed or changed recently (the
official language of Burkina Faso, Mali and Niger since 2023-2025, the
capital of Israel, the currency of Zimbabwe and Bulgaria, ...) the table
leaves it out (None) rather than guess. Populations are approximate (2023-2024
estimates) and written rounded to one or two significant figures, an order of
magnitude that stays checkable.

Run: python3 tests/data/cartridges/generate.py   (deterministic; seed fixed)
"""

import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
EVAL = os.path.join(HERE, "..", "cartridge_eval.jsonl")

# code, name, capital, currency, continent, population (millions), official language(s)
COUNTRIES = [
    # Africa
    ("dz", "Algeria", "Algiers", "Algerian dinar", "Africa", 45, ["Arabic", "Berber"]),
    ("ao", "Angola", "Luanda", "Angolan kwanza", "Africa", 36, ["Portuguese"]),
    ("bj", "Benin", "Porto-Novo", "West African CFA franc", "Africa", 13, ["French"]),
    ("bw", "Botswana", "Gaborone", "Botswana pula", "Africa", 2.6, ["English"]),
    ("bf", "Burkina Faso", "Ouagadougou", "West African CFA franc", "Africa", 23, None),
    ("bi", "Burundi", "Gitega", "Burundian franc", "Africa", 13, ["Kirundi", "French", "English"]),
    ("cv", "Cape Verde", "Praia", "Cape Verdean escudo", "Africa", 0.6, ["Portuguese"]),
    ("cm", "Cameroon", "Yaounde", "Central African CFA franc", "Africa", 28, ["French", "English"]),
    ("cf", "Central African Republic", "Bangui", "Central African CFA franc", "Africa", 5.5, ["French", "Sango"]),
    ("td", "Chad", "N'Djamena", "Central African CFA franc", "Africa", 18, ["French", "Arabic"]),
    ("km", "Comoros", "Moroni", "Comorian franc", "Africa", 0.85, ["Comorian", "Arabic", "French"]),
    ("cg", "Republic of the Congo", "Brazzaville", "Central African CFA franc", "Africa", 6, ["French"]),
    ("cd", "Democratic Republic of the Congo", "Kinshasa", "Congolese franc", "Africa", 100, ["French"]),
    ("ci", "Ivory Coast", "Yamoussoukro", "West African CFA franc", "Africa", 28, ["French"]),
    ("dj", "Djibouti", "Djibouti City", "Djiboutian franc", "Africa", 1.1, ["French", "Arabic"]),
    ("eg", "Egypt", "Cairo", "Egyptian pound", "Africa", 110, ["Arabic"]),
    ("gq", "Equatorial Guinea", "Malabo", "Central African CFA franc", "Africa", 1.7, ["Spanish", "French", "Portuguese"]),
    ("er", "Eritrea", "Asmara", "Eritrean nakfa", "Africa", 3.7, None),
    ("sz", "Eswatini", "Mbabane", "Swazi lilangeni", "Africa", 1.2, ["Swazi", "English"]),
    ("et", "Ethiopia", "Addis Ababa", "Ethiopian birr", "Africa", 125, None),
    ("ga", "Gabon", "Libreville", "Central African CFA franc", "Africa", 2.4, ["French"]),
    ("gm", "Gambia", "Banjul", "Gambian dalasi", "Africa", 2.7, ["English"]),
    ("gh", "Ghana", "Accra", "Ghanaian cedi", "Africa", 34, ["English"]),
    ("gn", "Guinea", "Conakry", "Guinean franc", "Africa", 14, ["French"]),
    ("gw", "Guinea-Bissau", "Bissau", "West African CFA franc", "Africa", 2.1, ["Portuguese"]),
    ("ke", "Kenya", "Nairobi", "Kenyan shilling", "Africa", 55, ["Swahili", "English"]),
    ("ls", "Lesotho", "Maseru", "Lesotho loti", "Africa", 2.3, ["Sesotho", "English"]),
    ("lr", "Liberia", "Monrovia", "Liberian dollar", "Africa", 5.3, ["English"]),
    ("ly", "Libya", "Tripoli", "Libyan dinar", "Africa", 7, ["Arabic"]),
    ("mg", "Madagascar", "Antananarivo", "Malagasy ariary", "Africa", 30, ["Malagasy", "French"]),
    ("mw", "Malawi", "Lilongwe", "Malawian kwacha", "Africa", 21, ["English"]),
    ("ml", "Mali", "Bamako", "West African CFA franc", "Africa", 22, None),
    ("mr", "Mauritania", "Nouakchott", "Mauritanian ouguiya", "Africa", 4.9, ["Arabic"]),
    ("mu", "Mauritius", "Port Louis", "Mauritian rupee", "Africa", 1.3, None),
    ("ma", "Morocco", "Rabat", "Moroccan dirham", "Africa", 37, ["Arabic", "Berber"]),
    ("mz", "Mozambique", "Maputo", "Mozambican metical", "Africa", 33, ["Portuguese"]),
    ("na", "Namibia", "Windhoek", "Namibian dollar", "Africa", 2.6, ["English"]),
    ("ne", "Niger", "Niamey", "West African CFA franc", "Africa", 26, None),
    ("ng", "Nigeria", "Abuja", "Nigerian naira", "Africa", 220, ["English"]),
    ("rw", "Rwanda", "Kigali", "Rwandan franc", "Africa", 14, ["Kinyarwanda", "English", "French", "Swahili"]),
    ("st", "Sao Tome and Principe", "Sao Tome", "Sao Tome and Principe dobra", "Africa", 0.23, ["Portuguese"]),
    ("sn", "Senegal", "Dakar", "West African CFA franc", "Africa", 18, ["French"]),
    ("sc", "Seychelles", "Victoria", "Seychellois rupee", "Africa", 0.12, ["Seychellois Creole", "English", "French"]),
    ("sl", "Sierra Leone", "Freetown", "Sierra Leonean leone", "Africa", 8.6, ["English"]),
    ("so", "Somalia", "Mogadishu", "Somali shilling", "Africa", 18, ["Somali", "Arabic"]),
    ("za", "South Africa", "Pretoria", "South African rand", "Africa", 62, None),
    ("ss", "South Sudan", "Juba", "South Sudanese pound", "Africa", 11, ["English"]),
    ("sd", "Sudan", "Khartoum", "Sudanese pound", "Africa", 48, ["Arabic", "English"]),
    ("tz", "Tanzania", "Dodoma", "Tanzanian shilling", "Africa", 65, ["Swahili", "English"]),
    ("tg", "Togo", "Lome", "West African CFA franc", "Africa", 9, ["French"]),
    ("tn", "Tunisia", "Tunis", "Tunisian dinar", "Africa", 12, ["Arabic"]),
    ("ug", "Uganda", "Kampala", "Ugandan shilling", "Africa", 48, ["English", "Swahili"]),
    ("zm", "Zambia", "Lusaka", "Zambian kwacha", "Africa", 20, ["English"]),
    ("zw", "Zimbabwe", "Harare", None, "Africa", 16, None),
    # Asia
    ("af", "Afghanistan", "Kabul", "Afghan afghani", "Asia", 41, ["Pashto", "Dari"]),
    ("am", "Armenia", "Yerevan", "Armenian dram", "Asia", 2.8, ["Armenian"]),
    ("az", "Azerbaijan", "Baku", "Azerbaijani manat", "Asia", 10, ["Azerbaijani"]),
    ("bh", "Bahrain", "Manama", "Bahraini dinar", "Asia", 1.5, ["Arabic"]),
    ("bd", "Bangladesh", "Dhaka", "Bangladeshi taka", "Asia", 170, ["Bengali"]),
    ("bt", "Bhutan", "Thimphu", "Bhutanese ngultrum", "Asia", 0.78, ["Dzongkha"]),
    ("bn", "Brunei", "Bandar Seri Begawan", "Brunei dollar", "Asia", 0.45, ["Malay"]),
    ("kh", "Cambodia", "Phnom Penh", "Cambodian riel", "Asia", 17, ["Khmer"]),
    ("cn", "China", "Beijing", "renminbi (Chinese yuan)", "Asia", 1400, ["Standard Chinese (Mandarin)"]),
    ("cy", "Cyprus", "Nicosia", "euro", "Asia", 1.3, ["Greek", "Turkish"]),
    ("ge", "Georgia", "Tbilisi", "Georgian lari", "Asia", 3.7, ["Georgian"]),
    ("in", "India", "New Delhi", "Indian rupee", "Asia", 1400, ["Hindi", "English"]),
    ("id", "Indonesia", "Jakarta", "Indonesian rupiah", "Asia", 280, ["Indonesian"]),
    ("ir", "Iran", "Tehran", "Iranian rial", "Asia", 89, ["Persian"]),
    ("iq", "Iraq", "Baghdad", "Iraqi dinar", "Asia", 45, ["Arabic", "Kurdish"]),
    ("il", "Israel", None, "Israeli new shekel", "Asia", 9.8, ["Hebrew"]),
    ("jp", "Japan", "Tokyo", "Japanese yen", "Asia", 124, ["Japanese"]),
    ("jo", "Jordan", "Amman", "Jordanian dinar", "Asia", 11, ["Arabic"]),
    ("kz", "Kazakhstan", "Astana", "Kazakhstani tenge", "Asia", 20, ["Kazakh", "Russian"]),
    ("kw", "Kuwait", "Kuwait City", "Kuwaiti dinar", "Asia", 4.3, ["Arabic"]),
    ("kg", "Kyrgyzstan", "Bishkek", "Kyrgyzstani som", "Asia", 7, ["Kyrgyz", "Russian"]),
    ("la", "Laos", "Vientiane", "Lao kip", "Asia", 7.6, ["Lao"]),
    ("lb", "Lebanon", "Beirut", "Lebanese pound", "Asia", 5.5, ["Arabic"]),
    ("my", "Malaysia", "Kuala Lumpur", "Malaysian ringgit", "Asia", 34, ["Malay"]),
    ("mv", "Maldives", "Male", "Maldivian rufiyaa", "Asia", 0.52, ["Dhivehi"]),
    ("mn", "Mongolia", "Ulaanbaatar", "Mongolian togrog", "Asia", 3.4, ["Mongolian"]),
    ("mm", "Myanmar", "Naypyidaw", "Burmese kyat", "Asia", 54, ["Burmese"]),
    ("np", "Nepal", "Kathmandu", "Nepalese rupee", "Asia", 30, ["Nepali"]),
    ("kp", "North Korea", "Pyongyang", "North Korean won", "Asia", 26, ["Korean"]),
    ("om", "Oman", "Muscat", "Omani rial", "Asia", 4.6, ["Arabic"]),
    ("pk", "Pakistan", "Islamabad", "Pakistani rupee", "Asia", 240, ["Urdu", "English"]),
    ("ph", "Philippines", "Manila", "Philippine peso", "Asia", 115, ["Filipino", "English"]),
    ("qa", "Qatar", "Doha", "Qatari riyal", "Asia", 2.7, ["Arabic"]),
    ("sa", "Saudi Arabia", "Riyadh", "Saudi riyal", "Asia", 35, ["Arabic"]),
    ("sg", "Singapore", "Singapore", "Singapore dollar", "Asia", 5.9, ["English", "Malay", "Mandarin", "Tamil"]),
    ("kr", "South Korea", "Seoul", "South Korean won", "Asia", 52, ["Korean"]),
    ("lk", "Sri Lanka", "Sri Jayawardenepura Kotte", "Sri Lankan rupee", "Asia", 22, ["Sinhala", "Tamil"]),
    ("sy", "Syria", "Damascus", "Syrian pound", "Asia", 23, ["Arabic"]),
    ("tj", "Tajikistan", "Dushanbe", "Tajikistani somoni", "Asia", 10, ["Tajik"]),
    ("th", "Thailand", "Bangkok", "Thai baht", "Asia", 70, ["Thai"]),
    ("tl", "East Timor", "Dili", "United States dollar", "Asia", 1.4, ["Tetum", "Portuguese"]),
    ("tr", "Turkey", "Ankara", "Turkish lira", "Europe and Asia", 85, ["Turkish"]),
    ("tm", "Turkmenistan", "Ashgabat", "Turkmenistan manat", "Asia", 7, ["Turkmen"]),
    ("ae", "United Arab Emirates", "Abu Dhabi", "UAE dirham", "Asia", 10, ["Arabic"]),
    ("uz", "Uzbekistan", "Tashkent", "Uzbekistani som", "Asia", 36, ["Uzbek"]),
    ("vn", "Vietnam", "Hanoi", "Vietnamese dong", "Asia", 100, ["Vietnamese"]),
    ("ye", "Yemen", "Sanaa", "Yemeni rial", "Asia", 34, ["Arabic"]),
    # Europe
    ("al", "Albania", "Tirana", "Albanian lek", "Europe", 2.8, ["Albanian"]),
    ("ad", "Andorra", "Andorra la Vella", "euro", "Europe", 0.08, ["Catalan"]),
    ("at", "Austria", "Vienna", "euro", "Europe", 9.1, ["German"]),
    ("by", "Belarus", "Minsk", "Belarusian ruble", "Europe", 9.2, ["Belarusian", "Russian"]),
    ("be", "Belgium", "Brussels", "euro", "Europe", 12, ["Dutch", "French", "German"]),
    ("ba", "Bosnia and Herzegovina", "Sarajevo", "convertible mark", "Europe", 3.2, ["Bosnian", "Croatian", "Serbian"]),
    ("bg", "Bulgaria", "Sofia", None, "Europe", 6.4, ["Bulgarian"]),
    ("hr", "Croatia", "Zagreb", "euro", "Europe", 3.9, ["Croatian"]),
    ("cz", "Czech Republic", "Prague", "Czech koruna", "Europe", 11, ["Czech"]),
    ("dk", "Denmark", "Copenhagen", "Danish krone", "Europe", 5.9, ["Danish"]),
    ("ee", "Estonia", "Tallinn", "euro", "Europe", 1.4, ["Estonian"]),
    ("fi", "Finland", "Helsinki", "euro", "Europe", 5.6, ["Finnish", "Swedish"]),
    ("fr", "France", "Paris", "euro", "Europe", 68, ["French"]),
    ("de", "Germany", "Berlin", "euro", "Europe", 84, ["German"]),
    ("gr", "Greece", "Athens", "euro", "Europe", 10, ["Greek"]),
    ("hu", "Hungary", "Budapest", "Hungarian forint", "Europe", 9.6, ["Hungarian"]),
    ("is", "Iceland", "Reykjavik", "Icelandic krona", "Europe", 0.39, ["Icelandic"]),
    ("ie", "Ireland", "Dublin", "euro", "Europe", 5.2, ["Irish", "English"]),
    ("it", "Italy", "Rome", "euro", "Europe", 59, ["Italian"]),
    ("lv", "Latvia", "Riga", "euro", "Europe", 1.9, ["Latvian"]),
    ("li", "Liechtenstein", "Vaduz", "Swiss franc", "Europe", 0.04, ["German"]),
    ("lt", "Lithuania", "Vilnius", "euro", "Europe", 2.8, ["Lithuanian"]),
    ("lu", "Luxembourg", "Luxembourg City", "euro", "Europe", 0.66, ["Luxembourgish", "French", "German"]),
    ("mt", "Malta", "Valletta", "euro", "Europe", 0.53, ["Maltese", "English"]),
    ("md", "Moldova", "Chisinau", "Moldovan leu", "Europe", 2.5, ["Romanian"]),
    ("mc", "Monaco", "Monaco", "euro", "Europe", 0.04, ["French"]),
    ("me", "Montenegro", "Podgorica", "euro", "Europe", 0.62, ["Montenegrin"]),
    ("nl", "Netherlands", "Amsterdam", "euro", "Europe", 18, ["Dutch"]),
    ("mk", "North Macedonia", "Skopje", "Macedonian denar", "Europe", 1.8, ["Macedonian", "Albanian"]),
    ("no", "Norway", "Oslo", "Norwegian krone", "Europe", 5.5, ["Norwegian", "Sami"]),
    ("pl", "Poland", "Warsaw", "Polish zloty", "Europe", 37, ["Polish"]),
    ("pt", "Portugal", "Lisbon", "euro", "Europe", 10, ["Portuguese"]),
    ("ro", "Romania", "Bucharest", "Romanian leu", "Europe", 19, ["Romanian"]),
    ("ru", "Russia", "Moscow", "Russian ruble", "Europe and Asia", 146, ["Russian"]),
    ("sm", "San Marino", "San Marino", "euro", "Europe", 0.034, ["Italian"]),
    ("rs", "Serbia", "Belgrade", "Serbian dinar", "Europe", 6.6, ["Serbian"]),
    ("sk", "Slovakia", "Bratislava", "euro", "Europe", 5.4, ["Slovak"]),
    ("si", "Slovenia", "Ljubljana", "euro", "Europe", 2.1, ["Slovene"]),
    ("es", "Spain", "Madrid", "euro", "Europe", 48, ["Spanish"]),
    ("se", "Sweden", "Stockholm", "Swedish krona", "Europe", 10.5, ["Swedish"]),
    ("ch", "Switzerland", "Bern", "Swiss franc", "Europe", 8.8, ["German", "French", "Italian", "Romansh"]),
    ("ua", "Ukraine", "Kyiv", "Ukrainian hryvnia", "Europe", 37, ["Ukrainian"]),
    ("gb", "United Kingdom", "London", "pound sterling", "Europe", 68, ["English"]),
    ("va", "Vatican City", "Vatican City", "euro", "Europe", 0.0008, ["Italian"]),
    # North America (with Central America and the Caribbean)
    ("ag", "Antigua and Barbuda", "St. John's", "East Caribbean dollar", "North America", 0.09, ["English"]),
    ("bs", "Bahamas", "Nassau", "Bahamian dollar", "North America", 0.4, ["English"]),
    ("bb", "Barbados", "Bridgetown", "Barbadian dollar", "North America", 0.28, ["English"]),
    ("bz", "Belize", "Belmopan", "Belize dollar", "North America", 0.4, ["English"]),
    ("ca", "Canada", "Ottawa", "Canadian dollar", "North America", 40, ["English", "French"]),
    ("cr", "Costa Rica", "San Jose", "Costa Rican colon", "North America", 5.2, ["Spanish"]),
    ("cu", "Cuba", "Havana", "Cuban peso", "North America", 11, ["Spanish"]),
    ("dm", "Dominica", "Roseau", "East Caribbean dollar", "North America", 0.07, ["English"]),
    ("do", "Dominican Republic", "Santo Domingo", "Dominican peso", "North America", 11, ["Spanish"]),
    ("sv", "El Salvador", "San Salvador", "United States dollar", "North America", 6.3, ["Spanish"]),
    ("gd", "Grenada", "St. George's", "East Caribbean dollar", "North America", 0.12, ["English"]),
    ("gt", "Guatemala", "Guatemala City", "Guatemalan quetzal", "North America", 18, ["Spanish"]),
    ("ht", "Haiti", "Port-au-Prince", "Haitian gourde", "North America", 12, ["Haitian Creole", "French"]),
    ("hn", "Honduras", "Tegucigalpa", "Honduran lempira", "North America", 10, ["Spanish"]),
    ("jm", "Jamaica", "Kingston", "Jamaican dollar", "North America", 2.8, ["English"]),
    ("mx", "Mexico", "Mexico City", "Mexican peso", "North America", 130, ["Spanish"]),
    ("ni", "Nicaragua", "Managua", "Nicaraguan cordoba", "North America", 6.9, ["Spanish"]),
    ("pa", "Panama", "Panama City", "Panamanian balboa", "North America", 4.4, ["Spanish"]),
    ("kn", "Saint Kitts and Nevis", "Basseterre", "East Caribbean dollar", "North America", 0.05, ["English"]),
    ("lc", "Saint Lucia", "Castries", "East Caribbean dollar", "North America", 0.18, ["English"]),
    ("vc", "Saint Vincent and the Grenadines", "Kingstown", "East Caribbean dollar", "North America", 0.1, ["English"]),
    ("tt", "Trinidad and Tobago", "Port of Spain", "Trinidad and Tobago dollar", "North America", 1.5, ["English"]),
    ("us", "United States", "Washington, D.C.", "United States dollar", "North America", 335, None),
    # South America
    ("ar", "Argentina", "Buenos Aires", "Argentine peso", "South America", 46, ["Spanish"]),
    ("bo", "Bolivia", "Sucre", "Bolivian boliviano", "South America", 12, ["Spanish", "Quechua", "Aymara"]),
    ("br", "Brazil", "Brasilia", "Brazilian real", "South America", 200, ["Portuguese"]),
    ("cl", "Chile", "Santiago", "Chilean peso", "South America", 20, ["Spanish"]),
    ("co", "Colombia", "Bogota", "Colombian peso", "South America", 52, ["Spanish"]),
    ("ec", "Ecuador", "Quito", "United States dollar", "South America", 18, ["Spanish"]),
    ("gy", "Guyana", "Georgetown", "Guyanese dollar", "South America", 0.8, ["English"]),
    ("py", "Paraguay", "Asuncion", "Paraguayan guarani", "South America", 6.9, ["Spanish", "Guarani"]),
    ("pe", "Peru", "Lima", "Peruvian sol", "South America", 34, ["Spanish", "Quechua", "Aymara"]),
    ("sr", "Suriname", "Paramaribo", "Surinamese dollar", "South America", 0.62, ["Dutch"]),
    ("uy", "Uruguay", "Montevideo", "Uruguayan peso", "South America", 3.4, ["Spanish"]),
    ("ve", "Venezuela", "Caracas", "Venezuelan bolivar", "South America", 28, ["Spanish"]),
    # Oceania
    ("au", "Australia", "Canberra", "Australian dollar", "Oceania", 27, ["English"]),
    ("fj", "Fiji", "Suva", "Fijian dollar", "Oceania", 0.93, ["English", "Fijian", "Fiji Hindi"]),
    ("ki", "Kiribati", "South Tarawa", "Australian dollar", "Oceania", 0.13, ["English", "Gilbertese"]),
    ("mh", "Marshall Islands", "Majuro", "United States dollar", "Oceania", 0.04, ["Marshallese", "English"]),
    ("fm", "Micronesia", "Palikir", "United States dollar", "Oceania", 0.11, ["English"]),
    ("nr", "Nauru", None, "Australian dollar", "Oceania", 0.012, ["Nauruan", "English"]),
    ("nz", "New Zealand", "Wellington", "New Zealand dollar", "Oceania", 5.2, ["English", "Maori", "New Zealand Sign Language"]),
    ("pw", "Palau", "Ngerulmud", "United States dollar", "Oceania", 0.018, ["Palauan", "English"]),
    ("pg", "Papua New Guinea", "Port Moresby", "Papua New Guinean kina", "Oceania", 10, ["English", "Tok Pisin", "Hiri Motu"]),
    ("to", "Tonga", "Nuku'alofa", "Tongan pa'anga", "Oceania", 0.1, ["Tongan", "English"]),
    ("tv", "Tuvalu", "Funafuti", "Australian dollar", "Oceania", 0.011, ["Tuvaluan", "English"]),
    ("vu", "Vanuatu", "Port Vila", "Vanuatu vatu", "Oceania", 0.33, ["Bislama", "English", "French"]),
    ("ws", "Samoa", "Apia", "Samoan tala", "Oceania", 0.22, ["Samoan", "English"]),
    ("sb", "Solomon Islands", "Honiara", "Solomon Islands dollar", "Oceania", 0.72, ["English"]),
]

# Names read with "the" inside a sentence.
WITH_THE = {
    "Central African Republic", "Republic of the Congo", "Democratic Republic of the Congo",
    "Gambia", "Comoros", "Seychelles", "Maldives", "Philippines", "United Arab Emirates",
    "Czech Republic", "Netherlands", "United Kingdom", "Bahamas", "Dominican Republic",
    "United States", "Marshall Islands",
}

# Capitals that one sentence "The capital of X is Y." would state wrongly.
CAPITAL_TEXT = {
    "bj": "The official capital of Benin is Porto-Novo; the seat of government is Cotonou.",
    "ci": "The official capital of Ivory Coast (Cote d'Ivoire) is Yamoussoukro; Abidjan is its economic centre.",
    "sz": "The administrative capital of Eswatini is Mbabane; Lobamba is the legislative capital.",
    "za": "The executive capital of South Africa is Pretoria; Cape Town is the legislative capital and Bloemfontein the judicial capital.",
    "bo": "The constitutional capital of Bolivia is Sucre; the seat of government is La Paz.",
    "nl": "The capital of the Netherlands is Amsterdam; the seat of government is The Hague.",
    "lk": "The capital of Sri Lanka is Sri Jayawardenepura Kotte; Colombo is the commercial capital.",
    "my": "The capital of Malaysia is Kuala Lumpur; Putrajaya is the administrative centre.",
    "ye": "The constitutional capital of Yemen is Sanaa.",
    "us": "The capital of the United States of America (USA) is Washington, D.C.",
    "gb": "The capital of the United Kingdom (UK) is London.",
}

OTHER_TEXT = {
    ("za", "language"): "South Africa has twelve official languages, among them Zulu, Xhosa, Afrikaans and English.",
    ("cn", "currency"): "The currency of China is the renminbi, whose unit is the yuan.",
    ("pa", "currency"): "The currency of Panama is the Panamanian balboa, used alongside the United States dollar.",
    ("ba", "currency"): "The currency of Bosnia and Herzegovina is the convertible mark.",
    ("jp", "language"): "The official language of Japan is Japanese (de facto; no law names one).",
    ("au", "language"): "The official language of Australia is English (de facto; no law names one).",
    ("mx", "language"): "The official language of Mexico is Spanish (de facto; Mexico also recognises 68 indigenous languages).",
}


def display(name):
    return ("the " + name) if name in WITH_THE else name


def cap(s):
    return s[0].upper() + s[1:]


def join_and(items):
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def population_text(millions):
    people = millions * 1_000_000
    if people >= 1_000_000_000:
        return "about %.1f billion" % (people / 1e9)
    if people >= 1_000_000:
        m = millions
        if m >= 100:
            return "about %d million" % int(round(m, -1))
        if m >= 10:
            return "about %d million" % int(round(m))
        return "about %.1f million" % m
    if people >= 1000:
        return "about %d thousand" % int(round(people / 1000))
    return "about %d" % int(round(people))


def country_facts():
    out = []
    for code, name, capital, currency, continent, pop, langs in COUNTRIES:
        the = display(name)
        if capital is not None:
            text = CAPITAL_TEXT.get(code, "The capital of %s is %s." % (the, capital))
            out.append((code + "-capital", text))
        if currency is not None:
            text = OTHER_TEXT.get((code, "currency"), "The currency of %s is the %s." % (the, currency))
            out.append((code + "-currency", text))
        if " and " in continent:
            text = "%s is a transcontinental country, spanning two continents: %s." % (cap(the), continent)
        else:
            text = "%s is located on the continent of %s." % (cap(the), continent)
        out.append((code + "-continent", text))
        out.append((code + "-population", "The population of %s is %s." % (the, population_text(pop))))
        if (code, "language") in OTHER_TEXT:
            out.append((code + "-language", OTHER_TEXT[(code, "language")]))
        elif langs is not None:
            if len(langs) == 1:
                text = "The official language of %s is %s." % (the, langs[0])
            else:
                text = "The official languages of %s are %s." % (the, join_and(langs))
            out.append((code + "-language", text))
    return out


ELEMENTS = """H Hydrogen|He Helium|Li Lithium|Be Beryllium|B Boron|C Carbon|N Nitrogen|O Oxygen|F Fluorine|Ne Neon|
Na Sodium|Mg Magnesium|Al Aluminium|Si Silicon|P Phosphorus|S Sulfur|Cl Chlorine|Ar Argon|K Potassium|Ca Calcium|
Sc Scandium|Ti Titanium|V Vanadium|Cr Chromium|Mn Manganese|Fe Iron|Co Cobalt|Ni Nickel|Cu Copper|Zn Zinc|
Ga Gallium|Ge Germanium|As Arsenic|Se Selenium|Br Bromine|Kr Krypton|Rb Rubidium|Sr Strontium|Y Yttrium|Zr Zirconium|
Nb Niobium|Mo Molybdenum|Tc Technetium|Ru Ruthenium|Rh Rhodium|Pd Palladium|Ag Silver|Cd Cadmium|In Indium|Sn Tin|
Sb Antimony|Te Tellurium|I Iodine|Xe Xenon|Cs Caesium|Ba Barium|La Lanthanum|Ce Cerium|Pr Praseodymium|Nd Neodymium|
Pm Promethium|Sm Samarium|Eu Europium|Gd Gadolinium|Tb Terbium|Dy Dysprosium|Ho Holmium|Er Erbium|Tm Thulium|Yb Ytterbium|
Lu Lutetium|Hf Hafnium|Ta Tantalum|W Tungsten|Re Rhenium|Os Osmium|Ir Iridium|Pt Platinum|Au Gold|Hg Mercury|
Tl Thallium|Pb Lead|Bi Bismuth|Po Polonium|At Astatine|Rn Radon|Fr Francium|Ra Radium|Ac Actinium|Th Thorium|
Pa Protactinium|U Uranium|Np Neptunium|Pu Plutonium|Am Americium|Cm Curium|Bk Berkelium|Cf Californium|Es Einsteinium|Fm Fermium|
Md Mendelevium|No Nobelium|Lr Lawrencium|Rf Rutherfordium|Db Dubnium|Sg Seaborgium|Bh Bohrium|Hs Hassium|Mt Meitnerium|Ds Darmstadtium|
Rg Roentgenium|Cn Copernicium|Nh Nihonium|Fl Flerovium|Mc Moscovium|Lv Livermorium|Ts Tennessine|Og Oganesson"""

ELEMENT_LIST = [tuple(e.strip().split(" ", 1)) for e in ELEMENTS.replace("\n", "").split("|")]
assert len(ELEMENT_LIST) == 118, len(ELEMENT_LIST)


def period_of(z):
    for p, last in enumerate([2, 10, 18, 36, 54, 86, 118], start=1):
        if z <= last:
            return p
    raise ValueError(z)


def group_of(z):
    """Group 1-18, or 'lanthanide'/'actinide' for the f-block series."""
    if z == 1:
        return 1
    if z == 2:
        return 18
    p = period_of(z)
    start = {2: 3, 3: 11, 4: 19, 5: 37, 6: 55, 7: 87}[p]
    pos = z - start + 1
    if p in (2, 3):
        return pos if pos <= 2 else pos + 10
    if p in (4, 5):
        return pos
    if pos <= 2:
        return pos
    if 57 <= z <= 71:
        return "lanthanide"
    if 89 <= z <= 103:
        return "actinide"
    return z - (68 if p == 6 else 100)


FAMILY = {
    1: ("alkali metals", {"Li", "Na", "K", "Rb", "Cs", "Fr"}),
    2: ("alkaline earth metals", {"Be", "Mg", "Ca", "Sr", "Ba", "Ra"}),
    17: ("halogens", {"F", "Cl", "Br", "I", "At"}),
    18: ("noble gases", {"He", "Ne", "Ar", "Kr", "Xe", "Rn"}),
}


def element_facts():
    out = []
    for z, (sym, name) in enumerate(ELEMENT_LIST, start=1):
        key = name.lower()
        out.append((key + "-symbol", "%s is the chemical symbol of the element %s." % (sym, name)))
        out.append((key + "-number", "%s is the chemical element with atomic number %d." % (name, z)))
        out.append((key + "-period", "%s is in period %d of the periodic table." % (name, period_of(z))))
        g = group_of(z)
        if g == "lanthanide":
            text = "%s is a lanthanide, one of the rare-earth elements of the lanthanide series." % name
        elif g == "actinide":
            text = "%s is an actinide, one of the elements of the actinide series." % name
        else:
            text = "%s is in group %d of the periodic table" % (name, g)
            fam = FAMILY.get(g)
            if fam and sym in fam[1]:
                text += ", one of the %s" % fam[0]
            text += "."
        out.append((key + "-group", text))
    assert group_of(26) == 8 and group_of(79) == 11 and group_of(86) == 18
    assert group_of(118) == 18 and group_of(72) == 4 and group_of(13) == 13
    return out


SOLAR = [
    ("mercury-order", "Mercury is the closest planet to the Sun, the first planet from the Sun."),
    ("mercury-size", "Mercury is the smallest planet in the Solar System."),
    ("mercury-moons", "Mercury has no moons."),
    ("mercury-year", "Mercury orbits the Sun once every 88 Earth days."),
    ("mercury-type", "Mercury is a rocky terrestrial planet."),
    ("venus-order", "Venus is the second planet from the Sun."),
    ("venus-hottest", "Venus is the hottest planet in the Solar System, with a surface temperature of about 465 degrees Celsius."),
    ("venus-moons", "Venus has no moons."),
    ("venus-rotation", "Venus rotates backwards (retrograde rotation) and its day is longer than its year."),
    ("venus-year", "Venus orbits the Sun once every 225 Earth days."),
    ("venus-atmosphere", "The atmosphere of Venus is mostly carbon dioxide, with clouds of sulfuric acid."),
    ("earth-order", "Earth is the third planet from the Sun."),
    ("earth-moon", "Earth has one natural satellite, the Moon."),
    ("earth-year", "Earth orbits the Sun once every 365.25 days."),
    ("earth-life", "Earth is the only planet known to support life."),
    ("earth-water", "About 71 percent of Earth's surface is covered by water."),
    ("mars-order", "Mars is the fourth planet from the Sun."),
    ("mars-moons", "Mars has two small moons, Phobos and Deimos."),
    ("mars-red", "Mars is called the Red Planet because iron oxide (rust) colours its surface."),
    ("mars-olympus", "Olympus Mons on Mars is the tallest volcano in the Solar System."),
    ("mars-year", "A year on Mars lasts about 687 Earth days."),
    ("mars-day", "A day on Mars, called a sol, lasts about 24 hours and 37 minutes."),
    ("jupiter-order", "Jupiter is the fifth planet from the Sun."),
    ("jupiter-size", "Jupiter is the largest planet in the Solar System."),
    ("jupiter-type", "Jupiter is a gas giant made mostly of hydrogen and helium."),
    ("jupiter-largest-moon", "Ganymede, a moon of Jupiter, is the largest moon in the Solar System."),
    ("jupiter-red-spot", "The Great Red Spot on Jupiter is a giant storm larger than Earth."),
    ("jupiter-year", "Jupiter takes about 12 Earth years to orbit the Sun."),
    ("jupiter-day", "A day on Jupiter lasts about 10 hours, the shortest day of any planet."),
    ("saturn-order", "Saturn is the sixth planet from the Sun."),
    ("saturn-rings", "Saturn is famous for its bright rings, made mostly of ice with some rock."),
    ("saturn-largest-moon", "Titan is the largest moon of Saturn."),
    ("saturn-type", "Saturn is a gas giant, the second-largest planet in the Solar System."),
    ("saturn-year", "Saturn takes about 29 Earth years to orbit the Sun."),
    ("saturn-density", "Saturn's average density is lower than that of water."),
    ("uranus-order", "Uranus is the seventh planet from the Sun."),
    ("uranus-type", "Uranus is an ice giant."),
    ("uranus-tilt", "Uranus rotates on its side, with an axial tilt of about 98 degrees."),
    ("uranus-largest-moon", "Titania is the largest moon of Uranus."),
    ("uranus-discovery", "Uranus was discovered by William Herschel in 1781."),
    ("uranus-year", "Uranus takes about 84 Earth years to orbit the Sun."),
    ("neptune-order", "Neptune is the eighth and farthest planet from the Sun."),
    ("neptune-type", "Neptune is an ice giant."),
    ("neptune-largest-moon", "Triton is the largest moon of Neptune."),
    ("neptune-discovery", "Neptune was discovered in 1846 by Johann Galle, from predictions by Urbain Le Verrier."),
    ("neptune-year", "Neptune takes about 165 Earth years to orbit the Sun."),
    ("neptune-winds", "Neptune has the strongest winds of any planet in the Solar System."),
    ("moon-distance", "The Moon is about 384,400 kilometres from Earth on average."),
    ("moon-landing", "Apollo 11 landed the first humans on the Moon in 1969."),
    ("io-orbit", "Io is a moon of Jupiter."),
    ("io-volcanoes", "Io is the most volcanically active body in the Solar System."),
    ("europa-orbit", "Europa is a moon of Jupiter."),
    ("europa-ocean", "Europa has an ocean of liquid water beneath its icy crust."),
    ("ganymede-orbit", "Ganymede is a moon of Jupiter."),
    ("callisto-orbit", "Callisto is a moon of Jupiter."),
    ("galilean-moons", "The four Galilean moons of Jupiter (Io, Europa, Ganymede and Callisto) were discovered by Galileo Galilei in 1610."),
    ("titan-orbit", "Titan is a moon of Saturn."),
    ("titan-atmosphere", "Titan is the only moon with a thick atmosphere, made mostly of nitrogen."),
    ("enceladus-orbit", "Enceladus is a moon of Saturn."),
    ("enceladus-geysers", "Enceladus sprays jets of water ice from its south pole."),
    ("mimas-orbit", "Mimas is a moon of Saturn."),
    ("rhea-orbit", "Rhea is a moon of Saturn."),
    ("iapetus-orbit", "Iapetus is a moon of Saturn."),
    ("dione-orbit", "Dione is a moon of Saturn."),
    ("tethys-orbit", "Tethys is a moon of Saturn."),
    ("miranda-orbit", "Miranda is a moon of Uranus."),
    ("ariel-orbit", "Ariel is a moon of Uranus."),
    ("umbriel-orbit", "Umbriel is a moon of Uranus."),
    ("titania-orbit", "Titania is a moon of Uranus."),
    ("oberon-orbit", "Oberon is a moon of Uranus."),
    ("triton-orbit", "Triton is a moon of Neptune and orbits it in the retrograde direction."),
    ("nereid-orbit", "Nereid is a moon of Neptune."),
    ("proteus-orbit", "Proteus is a moon of Neptune."),
    ("phobos-orbit", "Phobos is the larger of the two moons of Mars."),
    ("deimos-orbit", "Deimos is the smaller of the two moons of Mars."),
    ("charon-orbit", "Charon is the largest moon of Pluto."),
    ("pluto-dwarf", "Pluto is a dwarf planet in the Kuiper belt."),
    ("pluto-reclassified", "Pluto was reclassified from planet to dwarf planet in 2006."),
    ("pluto-discovery", "Pluto was discovered by Clyde Tombaugh in 1930."),
    ("ceres-dwarf", "Ceres is a dwarf planet and the largest object in the asteroid belt."),
    ("eris-dwarf", "Eris is a dwarf planet whose moon is Dysnomia."),
    ("haumea-dwarf", "Haumea is an elongated dwarf planet with two known moons."),
    ("makemake-dwarf", "Makemake is a dwarf planet in the Kuiper belt."),
    ("sun-type", "The Sun is a G-type main-sequence star (a yellow dwarf)."),
    ("sun-light-time", "Sunlight takes about 8 minutes and 20 seconds to reach Earth."),
    ("sun-mass", "The Sun contains about 99.8 percent of the mass of the Solar System."),
    ("sun-age", "The Sun is about 4.6 billion years old."),
    ("sun-temperature", "The temperature of the Sun's visible surface is about 5,500 degrees Celsius."),
    ("asteroid-belt", "The asteroid belt lies between the orbits of Mars and Jupiter."),
    ("kuiper-belt", "The Kuiper belt lies beyond the orbit of Neptune."),
    ("astronomical-unit", "An astronomical unit is the average distance between Earth and the Sun, about 150 million kilometres."),
    ("halley", "Halley's Comet returns to the inner Solar System about every 76 years."),
    ("voyager", "Voyager 1 is the most distant human-made object from Earth."),
]


# ---------------------------------------------------------------- queries

def country_queries(rng):
    """(class, query, expected id) for a sample of countries and attributes."""
    exact = {
        "capital": ["What is the capital of {n}?"],
        "currency": ["What is the currency of {n}?"],
        "continent": ["Which continent is {n} on?"],
        "population": ["What is the population of {n}?"],
        "language": ["What is the official language of {n}?"],
    }
    para = {
        "capital": ["Which city is the capital of {n}?", "{n} capital city", "Tell me the capital of {n}.",
                    "capital of {n}?", "Name the capital city of {n}."],
        "currency": ["Which currency does {n} use?", "{n} currency", "What currency is used in {n}?",
                     "What money do they use in {n}?"],
        "continent": ["Where is {n} located?", "On what continent can you find {n}?", "{n} continent"],
        "population": ["How many people live in {n}?", "{n} population", "How populous is {n}?"],
        "language": ["What language do people speak in {n}?", "Which languages are official in {n}?",
                     "official languages of {n}"],
    }
    have = {}
    for code, name, capital, currency, continent, pop, langs in COUNTRIES:
        fields = {"capital": capital, "currency": currency, "continent": continent,
                  "population": pop, "language": langs or OTHER_TEXT.get((code, "language"))}
        have[code] = (name, {k for k, v in fields.items() if v is not None})
    out = []
    codes = sorted(have)
    # Ambiguous names (Congo, Guinea, Sudan ...) are kept: the full name is asked.
    for cls, templates, count in (("exact", exact, 75), ("paraphrase", para, 75)):
        for _ in range(count):
            code = rng.choice(codes)
            name, fields = have[code]
            attr = rng.choice(sorted(fields))
            q = rng.choice(templates[attr]).format(n=name)
            out.append((cls, q, "countries#%s-%s" % (code, attr)))
    return out


def element_queries(rng):
    exact = {
        "symbol": ["What is the chemical symbol of {n}?"],
        "number": ["What is the atomic number of {n}?"],
        "period": ["Which period of the periodic table is {n} in?"],
        "group": ["Which group of the periodic table is {n} in?"],
    }
    para = {
        "symbol": ["What is the symbol for {n}?", "{n} symbol", "Which element has the symbol {s}?",
                   "What does the chemical symbol {s} stand for?"],
        "number": ["Which element has atomic number {z}?", "{n} atomic number",
                   "How many protons does {n} have?", "Which element is number {z} on the periodic table?"],
        "period": ["{n} period", "In which row of the periodic table is {n}?"],
        "group": ["{n} group number", "Which column of the periodic table is {n} in?"],
    }
    out = []
    for cls, templates, count in (("exact", exact, 40), ("paraphrase", para, 40)):
        for _ in range(count):
            z = rng.randrange(1, 119)
            sym, name = ELEMENT_LIST[z - 1]
            attr = rng.choice(sorted(templates))
            g = group_of(z)
            if attr == "group" and isinstance(g, str):
                attr = "symbol"
            q = rng.choice(templates[attr]).format(n=name, s=sym, z=z)
            out.append((cls, q, "elements#%s-%s" % (name.lower(), attr)))
    return out


SOLAR_QUERIES = [
    ("exact", "Which planet is closest to the Sun?", "mercury-order"),
    ("exact", "What is the smallest planet in the Solar System?", "mercury-size"),
    ("exact", "What is the largest planet in the Solar System?", "jupiter-size"),
    ("exact", "What is the hottest planet in the Solar System?", "venus-hottest"),
    ("exact", "What is the largest moon of Saturn?", "saturn-largest-moon"),
    ("exact", "What is the largest moon of Neptune?", "neptune-largest-moon"),
    ("exact", "What is the largest moon of Uranus?", "uranus-largest-moon"),
    ("exact", "What is the largest moon of Pluto?", "charon-orbit"),
    ("exact", "Which planet is called the Red Planet?", "mars-red"),
    ("exact", "What is the tallest volcano in the Solar System?", "mars-olympus"),
    ("exact", "Who discovered Uranus?", "uranus-discovery"),
    ("exact", "Who discovered Pluto?", "pluto-discovery"),
    ("exact", "When was Pluto reclassified as a dwarf planet?", "pluto-reclassified"),
    ("exact", "What is the largest object in the asteroid belt?", "ceres-dwarf"),
    ("exact", "Where does the asteroid belt lie?", "asteroid-belt"),
    ("exact", "How long does sunlight take to reach Earth?", "sun-light-time"),
    ("exact", "How old is the Sun?", "sun-age"),
    ("exact", "Which moon is the most volcanically active body in the Solar System?", "io-volcanoes"),
    ("exact", "Which planet has the strongest winds?", "neptune-winds"),
    ("exact", "What are the two moons of Mars?", "mars-moons"),
    ("paraphrase", "Which planet does Titan orbit?", "titan-orbit"),
    ("paraphrase", "Io orbits which planet?", "io-orbit"),
    ("paraphrase", "Is Oberon a moon of Uranus?", "oberon-orbit"),
    ("paraphrase", "Biggest planet?", "jupiter-size"),
    ("paraphrase", "How many moons does Mars have?", "mars-moons"),
    ("paraphrase", "Does Venus have any moons?", "venus-moons"),
    ("paraphrase", "How long is a year on Mars?", "mars-year"),
    ("paraphrase", "How long is a day on Jupiter?", "jupiter-day"),
    ("paraphrase", "What is the Great Red Spot?", "jupiter-red-spot"),
    ("paraphrase", "What are Saturn's rings made of?", "saturn-rings"),
    ("paraphrase", "Which moon has a thick nitrogen atmosphere?", "titan-atmosphere"),
    ("paraphrase", "Which moon of Jupiter has an ocean under its ice?", "europa-ocean"),
    ("paraphrase", "Who discovered the Galilean moons?", "galilean-moons"),
    ("paraphrase", "How far away is the Moon from Earth?", "moon-distance"),
    ("paraphrase", "When did humans first land on the Moon?", "moon-landing"),
    ("paraphrase", "What kind of star is the Sun?", "sun-type"),
    ("paraphrase", "How often does Halley's Comet come back?", "halley"),
    ("paraphrase", "What is an astronomical unit?", "astronomical-unit"),
    ("paraphrase", "Which planet spins on its side?", "uranus-tilt"),
    ("paraphrase", "What is the atmosphere of Venus made of?", "venus-atmosphere"),
]

FICTIONAL_COUNTRIES = ["Wakanda", "Genovia", "Elbonia", "Zamunda", "Latveria", "Freedonia", "Sokovia",
                       "Ruritania", "Narnia", "Atlantis", "Westeros", "Gondor", "Panem", "Florin", "Grand Fenwick",
                       "Markovia", "Kazakhstania", "Borduria", "Syldavia", "Qumar"]
FICTIONAL_ELEMENTS = ["vibranium", "adamantium", "unobtainium", "kryptonite", "mithril", "naquadah",
                      "dilithium", "octiron", "trinium", "orichalcum"]
FICTIONAL_BODIES = ["Vulcan", "Tatooine", "Arrakis", "Krypton", "Gallifrey", "Cybertron", "Nibiru", "Endor",
                    "Solaris", "Caprica"]

UNANSWERABLE_ATTRIBUTE = [
    "What is the national anthem of France?", "Who is the president of Brazil?",
    "Who is the prime minister of Canada?", "What is the calling code of Germany?",
    "What is the GDP of India?", "What is the highest mountain in Nepal?",
    "What is the national dish of Italy?", "What is the time zone of Japan?",
    "What is the largest city of Australia?", "What is the national animal of Scotland?",
    "What is the internet domain of Tuvalu?", "Who founded Singapore?",
    "What is the life expectancy in Chad?", "What is the national flower of Peru?",
    "Which side of the road do they drive on in Kenya?", "What is the melting point of iron?",
    "What is the boiling point of mercury?", "Who discovered oxygen?", "What is the density of gold?",
    "What is the atomic mass of uranium?", "Is neon radioactive?", "What is the price of platinum?",
    "Who discovered helium?", "What is the half-life of carbon-14?", "What colour is sulfur?",
    "What is the surface temperature of Mars?", "What is the mass of Jupiter?",
    "What is the diameter of Saturn?", "How far is Neptune from the Sun in kilometres?",
    "Who discovered Titan?", "What is the escape velocity of the Moon?",
    "Which spacecraft visited Pluto?", "How many moons does Jupiter have?",
    "What is the capital of Texas?", "What currency did France use before the euro?",
    "What is the population of Tokyo?", "What is the official language of Quebec?",
    "What is the atomic number of water?", "What is the chemical symbol for salt?",
    "Which continent is the Amazon rainforest on?",
]

UNRELATED = [
    "How do I bake sourdough bread?", "What is the meaning of life?", "How do I reset my router password?",
    "Who won the 1998 football World Cup?", "What is a monad in Haskell?", "Best pizza recipe",
    "How tall is the Eiffel Tower?", "Who wrote Hamlet?", "What time is it?", "How do vaccines work?",
    "What's the weather like tomorrow?", "Recommend a good science fiction movie",
    "How do I learn to play guitar?", "Why is the sky blue?", "How many legs does a spider have?",
    "What is the square root of 144?", "Who painted the Mona Lisa?", "How do I tie a tie?",
    "Explain quantum entanglement simply", "What is the best programming language for beginners?",
    "How long should I boil an egg?", "Who invented the telephone?", "What does HTTP 404 mean?",
    "How do I file my taxes?", "Tell me a joke", "What is photosynthesis?",
    "How fast can a cheetah run?", "Convert 10 miles to kilometres", "Who is the author of Don Quixote?",
    "What are the symptoms of the flu?", "How do I change a flat tyre?", "What is inflation?",
    "Translate good morning into Spanish", "hello", "asdf qwerty zxcv", "?",
    "What is the difference between TCP and UDP?", "How many bones are in the human body?",
    "What year did the Berlin Wall fall?", "How do I make cold brew coffee?",
]


def unanswerable_queries(rng):
    out = []
    templates = ["What is the capital of {n}?", "What is the currency of {n}?",
                 "What is the official language of {n}?", "What is the population of {n}?",
                 "Which continent is {n} on?"]
    for n in FICTIONAL_COUNTRIES:
        out.append(("unanswerable_entity", rng.choice(templates).format(n=n), None))
    etemplates = ["What is the atomic number of {n}?", "What is the chemical symbol of {n}?",
                  "Which group of the periodic table is {n} in?"]
    for n in FICTIONAL_ELEMENTS:
        out.append(("unanswerable_entity", rng.choice(etemplates).format(n=n), None))
    btemplates = ["What is the largest moon of {n}?", "How long is a year on {n}?",
                  "Which planet from the Sun is {n}?", "Who discovered {n}?"]
    for n in FICTIONAL_BODIES:
        out.append(("unanswerable_entity", rng.choice(btemplates).format(n=n), None))
    out += [("unanswerable_attribute", q, None) for q in UNANSWERABLE_ATTRIBUTE]
    out += [("unrelated", q, None) for q in UNRELATED]
    return out


def write_jsonl(path, rows, header=None):
    with open(path, "w", encoding="utf-8") as f:
        if header:
            f.write(header)
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main():
    source = "kitbash test data (tests/data/cartridges/generate.py)"
    carts = {
        "countries": country_facts(),
        "elements": element_facts(),
        "solar_system": SOLAR,
    }
    total = 0
    for cart, facts in carts.items():
        ids = [i for i, _ in facts]
        assert len(ids) == len(set(ids)), cart
        write_jsonl(os.path.join(HERE, cart + ".jsonl"),
                    [{"id": i, "text": t, "source": source} for i, t in facts])
        total += len(facts)
        print("%s: %d facts" % (cart, len(facts)))
    print("total: %d facts" % total)

    rng = random.Random(20260821)
    queries = country_queries(rng) + element_queries(rng)
    queries += [(c, q, "solar_system#" + e) for c, q, e in SOLAR_QUERIES]
    queries += unanswerable_queries(rng)
    known = {"%s#%s" % (c, i) for c, facts in carts.items() for i, _ in facts}
    seen = set()
    rows = []
    for cls, q, expected in queries:
        if q in seen:
            continue
        seen.add(q)
        assert expected is None or expected in known, expected
        rows.append({"class": cls, "query": q, "expected": expected})
    write_jsonl(EVAL, rows)
    by = {}
    for r in rows:
        by[r["class"]] = by.get(r["class"], 0) + 1
    print("queries: %d %s" % (len(rows), by))


if __name__ == "__main__":
    main()
