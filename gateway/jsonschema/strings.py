"""String schemas: lengths, `format` and `pattern`, as the body between a JSON string's quotes."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.jsonschema.gbnf import repeat

CHAR = "char"  # base rule: one character of a JSON string, raw or escaped

_YEAR = "[0-9]{4}"
_LEAP_YEAR = '( [0-9] [0-9] ( "0" [48] | [2468] [048] | [13579] [26] ) | ( [02468] [048] | [13579] [26] ) "00" )'  # noqa: E501
_MONTH_DAY = (
    '( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )'
    ' | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" )'
    ' | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) )'
)
_DATE = f'( {_YEAR} "-" {_MONTH_DAY} | {_LEAP_YEAR} "-02-29" )'
_HOUR = '( [01] [0-9] | "2" [0-3] )'
_SIXTY = "[0-5] [0-9]"
_TIME = (
    f'{_HOUR} ":" {_SIXTY} ":" {_SIXTY} ( "." [0-9]{{1,6}} )? ( "Z" | [+-] {_HOUR} ":" {_SIXTY} )'
)
_HEX = "[0-9a-f]"
_LABEL = "[a-z0-9]{1,20}"
_OCTET = '( "25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9]? [0-9] )'
_COUNT = "[1-9] [0-9]{0,3}"


@dataclass(frozen=True, slots=True)
class Format:
    """A format's grammar and the shortest and longest strings it produces."""

    body: str
    min_length: int
    max_length: int


# The formats OpenAI's strict mode lists, plus uri. Each grammar produces only strings that
# are valid for the format (a subset: e.g. e-mail addresses use plain ASCII labels).
FORMATS = {
    "date": Format(_DATE, 10, 10),
    "time": Format(_TIME, 9, 21),
    "date-time": Format(f'{_DATE} "T" {_TIME}', 20, 32),
    "uuid": Format(
        f'{_HEX}{{8}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{12}}', 36, 36
    ),
    "email": Format(
        f'[a-zA-Z0-9_+-]{{1,32}} ( "." [a-zA-Z0-9_+-]{{1,32}} )? "@" {_LABEL}'
        f' ( "." {_LABEL} )? "." [a-z]{{2,6}}',
        5,
        32 * 2 + 1 + 1 + 20 * 2 + 1 + 1 + 6,
    ),
    "hostname": Format(f'{_LABEL} ( "." {_LABEL} ){{0,3}}', 1, 20 * 4 + 3),
    "ipv4": Format(f'{_OCTET} ( "." {_OCTET} ){{3}}', 7, 15),
    "ipv6": Format(f'{_HEX}{{1,4}} ( ":" {_HEX}{{1,4}} ){{7}}', 15, 39),
    "uri": Format(
        f'"http" "s"? "://" {_LABEL} ( "." {_LABEL} ){{0,2}} ( "/" [a-zA-Z0-9._~-]{{1,20}} ){{0,4}}',  # noqa: E501
        8,
        8 + 20 * 3 + 2 + 21 * 4,
    ),
    "duration": Format(
        f'"P" ( {_COUNT} "D" ( "T" {_COUNT} "H" )? | "T" {_COUNT} [HMS] )', 3, 1 + 5 + 1 + 1 + 5
    ),
}


def length_body(low: int, high: int | None) -> str:
    """`low` to `high` free characters."""
    return repeat(CHAR, low, high)
