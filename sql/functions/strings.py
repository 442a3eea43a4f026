"""Flink's string functions as Polars expressions (docs/sql.md, "Flink built-in functions").

Positions are in characters, 1-based, as in Flink (Polars' own `str.find` counts bytes). Regular expressions must
be literals, so that a bad one is refused at planning rather than failing a running pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from sql import types
from sql.errors import UnsupportedError, error_at
from sql.functions import hashes
from sql.functions.common import (
    UTF8_HEX,
    Builder,
    arguments,
    check_regex,
    integer,
    literal_int,
    literal_string,
    null_if_any,
    refuse,
    string,
)

if TYPE_CHECKING:
    from sql.expressions import ExprCompiler


def _position(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """POSITION(sub IN s), LOCATE(sub, s [, from]), INSTR(s, sub): 1-based, 0 when absent, NULL on a NULL."""
    haystack, needle = string(c, node.this), string(c, node.args["substr"])
    start_node = node.args.get("position")
    if start_node is None:
        return null_if_any(_find(haystack, needle), haystack, needle)
    start = integer(c, start_node)
    # Flink's LOCATE looks from `start` on (a start before 1 looks from the beginning, as Java's indexOf)
    first = start.clip(1)
    found = _find(haystack.str.slice(first - 1), needle)
    shifted = pl.when(found == 0).then(0).otherwise(found + first - 1)
    return null_if_any(shifted, haystack, needle, start).cast(pl.Int32)


def _find(haystack: pl.Expr, needle: pl.Expr) -> pl.Expr:
    parts = haystack.str.splitn(needle, 2)
    found = parts.struct.field("field_1").is_not_null()
    first = parts.struct.field("field_0").str.len_chars().cast(pl.Int32) + 1
    return pl.when(needle == "").then(1).when(found).then(first).otherwise(0).cast(pl.Int32)


#: the longest string REPEAT, LPAD and RPAD build (characters); a longer result is NULL. Building it would first
#: take a list of that many copies: REPEAT(s, 2147483647) exhausted the machine's memory and the process was
#: killed, where a bad value must only give NULL.
MAX_STRING = 16 << 20


def _pad(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """LPAD/RPAD(s, n, pad): to n characters, cut when longer; NULL for n < 0 or an empty pad (Flink)."""
    value, length, pad = string(c, node.this), integer(c, node.expression), string(c, node.args["fill_pattern"])
    too_long = length > MAX_STRING
    length = pl.when(too_long).then(0).otherwise(length)  # (both branches of a `when` are computed)
    have = value.str.len_chars()
    missing = (length - have).clip(0)
    copies = (missing // pad.str.len_chars().clip(1)) + 1
    fill = pad.repeat_by(copies).list.join("").str.head(missing)
    padded = pl.concat_str([fill, value] if node.args.get("is_left") else [value, fill])
    result = (
        pl.when((length < 0) | (pad == "") | too_long)
        .then(None)
        .when(length <= have)
        .then(value.str.head(length.clip(0)))
        .otherwise(padded)
    )
    return null_if_any(result, value, length, pad)


def _repeat(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    value, times = string(c, node.this), integer(c, node.args["times"])
    too_long = times > MAX_STRING // value.str.len_chars().clip(1)  # (a product could overflow a BIGINT count)
    repeated = value.repeat_by(pl.when(too_long).then(0).otherwise(times.clip(0))).list.join("")
    return null_if_any(pl.when(too_long).then(None).otherwise(repeated), value, times)


def _replace(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    value, search = string(c, node.this), string(c, node.expression)
    replacement = string(c, node.args["replacement"])
    replaced = value.str.replace_all(search, replacement, literal=True)
    return null_if_any(pl.when(search == "").then(value).otherwise(replaced), value, search, replacement)


def _left_right(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    value, count = string(c, node.this), integer(c, node.expression)
    cut = value.str.head(count.clip(0)) if isinstance(node, exp.Left) else value.str.tail(count.clip(0))
    return null_if_any(cut, value, count)


def _initcap(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """The first character of each run of letters and digits upper-case, the rest lower-case (Flink's words)."""
    value = string(c, node.this)
    alnum = r"^[\p{L}\p{N}]$"
    starts = pl.element().shift(1).is_null() | ~pl.element().shift(1).str.contains(alnum)
    chars = value.str.split("").list.eval(
        pl.when(starts).then(pl.element().str.to_uppercase()).otherwise(pl.element().str.to_lowercase())
    )
    return pl.when(value.is_null()).then(None).otherwise(chars.list.join(""))


def _ascii(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """The code of the first character (Flink: its UTF-16 unit for characters outside the BMP), 0 for ''."""
    value = string(c, node.this)
    hexed = value.str.head(1).str.encode("hex")
    byte = [hexed.str.slice(2 * i, 2).str.to_integer(base=16, strict=False).fill_null(0) for i in range(4)]
    size = hexed.str.len_bytes() // 2
    # Polars has no shift operators: shifting left by k is multiplying by 2**k
    supplementary = (byte[0] & 0x07) * 2**18 + (byte[1] & 0x3F) * 2**12 + (byte[2] & 0x3F) * 64 + (byte[3] & 0x3F)
    point = (
        pl.when(size == 1)
        .then(byte[0])
        .when(size == 2)
        .then((byte[0] & 0x1F) * 64 + (byte[1] & 0x3F))
        .when(size == 3)
        .then((byte[0] & 0x0F) * 2**12 + (byte[1] & 0x3F) * 64 + (byte[2] & 0x3F))
        .otherwise(0xD800 + (supplementary - 0x10000) // 1024)
    )
    return pl.when(value.is_null()).then(None).when(size == 0).then(0).otherwise(point).cast(pl.Int32)


_LATIN1 = {i: chr(i) for i in range(256)}


def _chr(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """CHR(n): the character of n's low byte (Flink: n & 0xFF); '' for a negative n."""
    (arg,) = arguments(node, 1, name="CHR")
    code = integer(c, arg)
    char = (code % 256).replace_strict(_LATIN1, default=None, return_dtype=pl.String)
    return pl.when(code < 0).then(pl.lit("")).otherwise(char)


def _regexp(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    value_node, pattern_node = arguments(node, 2)
    value = string(c, value_node)
    pattern = literal_string(pattern_node, "the pattern")
    if pattern == "":  # Flink: an empty pattern matches nothing
        return pl.when(value.is_null()).then(None).otherwise(pl.lit(False))
    return value.str.contains(check_regex(pattern_node, pattern))


def _regexp_replace(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    value = string(c, node.this)
    pattern = check_regex(node.expression, literal_string(node.expression, "the pattern"))
    replacement = string(c, node.args["replacement"])
    # Flink quotes the replacement (no $1 group references): `$` is doubled to stay literal for Polars
    literal = replacement.str.replace_all("$", "$$", literal=True)
    return null_if_any(value.str.replace_all(pattern, literal), value, replacement)


def _regexp_count(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    pattern = check_regex(node.expression, literal_string(node.expression, "the pattern"))
    return string(c, node.this).str.count_matches(pattern).cast(pl.Int32)


def _regexp_instr(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    pattern = check_regex(node.expression, literal_string(node.expression, "the pattern"))
    value = string(c, node.this)
    # the shortest prefix before a match is where the first match starts (in characters)
    prefix = value.str.extract(f"(?s)^(.*?)(?:{pattern})", 1)
    found = pl.when(prefix.is_null()).then(0).otherwise(prefix.str.len_chars() + 1)
    return pl.when(value.is_null()).then(None).otherwise(found).cast(pl.Int32)


def _regexp_substr(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    pattern = check_regex(node.expression, literal_string(node.expression, "the pattern"))
    return string(c, node.this).str.extract(pattern, 0)


def _regexp_extract_all(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    args = arguments(node, 2, 3, name="REGEXP_EXTRACT_ALL")
    value = string(c, args[0])
    pattern = check_regex(args[1], literal_string(args[1], "the pattern"))
    group = literal_int(args[2], "the group") if len(args) == 3 else 1  # Flink's default group is 1
    matches = value.str.extract_all(pattern)
    return matches if group == 0 else matches.list.eval(pl.element().str.extract(f"^(?:{pattern})$", group))


def _overlay(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """OVERLAY(s PLACING r FROM start [FOR n]) as Flink computes it: s unchanged when start is outside it, and
    nothing of s after the placed text when n <= 0 or the placed span reaches past the end."""
    value, placing = string(c, node.this), string(c, node.expression)
    start = integer(c, node.args["from_"])
    length = integer(c, node.args["for_"]) if node.args.get("for_") is not None else placing.str.len_chars()
    size = value.str.len_chars()
    head = value.str.head((start - 1).clip(0))
    keep_tail = (start + length <= size) & (length > 0)
    tail = pl.when(keep_tail).then(value.str.slice((start - 1 + length).clip(0))).otherwise(pl.lit(""))
    placed = pl.when((start <= 0) | (start > size)).then(value).otherwise(pl.concat_str([head, placing, tail]))
    return null_if_any(placed, value, placing, start, length)


def _starts_ends(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    value, affix = string(c, node.this), string(c, node.expression)
    test = value.str.starts_with(affix) if isinstance(node, exp.StartsWith) else value.str.ends_with(affix)
    return null_if_any(test, value, affix)


def _translate(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    value = string(c, node.this)
    source = literal_string(node.args["from_"], "TRANSLATE's from string")
    target = literal_string(node.args["to"], "TRANSLATE's to string")
    seen: dict[str, str] = {}
    for i, ch in enumerate(source):  # the first mapping of a character wins; no counterpart: removed
        seen.setdefault(ch, target[i] if i < len(target) else "")
    if not seen:
        return value
    return value.str.replace_many(list(seen), list(seen.values()))


def _concat_ws(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    separator_node, *parts = node.expressions
    if isinstance(separator_node, exp.Null):
        return pl.lit(None, pl.String)
    separator = literal_string(separator_node, "CONCAT_WS's separator")
    return pl.concat_str([c._as_string(p) for p in parts], separator=separator, ignore_nulls=True)


def _to_base64(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    return string(c, node.this).str.encode("base64")


def _from_base64(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """Decoded text; NULL when the input is not base64 or does not decode to UTF-8 (Flink substitutes U+FFFD)."""
    raw = string(c, node.this).str.decode("base64", strict=False)
    valid = raw.bin.encode("hex").str.contains(UTF8_HEX)
    return pl.when(valid).then(pl.when(valid).then(raw).otherwise(pl.lit(b"")).cast(pl.String)).otherwise(None)


def _charset(node: exp.Expr) -> None:
    charset = literal_string(node.args.get("charset"), "the character set").upper().replace("_", "-")
    if charset not in ("UTF-8", "UTF8"):
        raise error_at(
            node.args.get("charset"), f"character set '{charset}' is not supported: UTF-8 only", UnsupportedError
        )


def _encode(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    _charset(node)
    return string(c, node.this).cast(pl.Binary)


def _decode(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """DECODE(bytes, 'UTF-8'): NULL for bytes that are not UTF-8 (Flink substitutes U+FFFD)."""
    _charset(node)
    raw, dtype = c.typed(node.this)
    if not isinstance(dtype, pl.Binary):
        raise error_at(node.this, f"DECODE needs BYTES, got {types.sql_name(dtype)}")
    valid = raw.bin.encode("hex").str.contains(UTF8_HEX)
    return pl.when(valid).then(pl.when(valid).then(raw).otherwise(pl.lit(b"")).cast(pl.String)).otherwise(None)


def _elt(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    index = integer(c, node.this)
    chain = None
    for i, option in enumerate(node.expressions, start=1):
        value = string(c, option)
        chain = pl.when(index == i).then(value) if chain is None else chain.when(index == i).then(value)
    return chain.otherwise(None) if chain is not None else pl.lit(None)


def _btrim(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    args = arguments(node, 1, 2, name="BTRIM")
    chars = literal_string(args[1], "the characters to trim") if len(args) == 2 else " "
    return string(c, args[0]).str.strip_chars(chars)


def _character_class(pattern: str) -> Builder:
    """IS_ALPHA / IS_DIGIT / IS_DECIMAL: FALSE for NULL, as Flink's implementations return."""

    def build(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
        (arg,) = arguments(node, 1)
        return string(c, arg).str.contains(pattern).fill_null(False)

    return build


def _json_quote(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    (arg,) = arguments(node, 1, name="JSON_QUOTE")
    return quote_json_string(string(c, arg))


_JSON_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def quote_json_string(value: pl.Expr, escape_slash: bool = True) -> pl.Expr:
    escapes = _JSON_ESCAPES if escape_slash else {k: v for k, v in _JSON_ESCAPES.items() if k != "/"}
    control = {chr(i): f"\\u{i:04x}" for i in range(32) if chr(i) not in escapes}
    table = {**escapes, **control}
    return pl.concat_str([pl.lit('"'), value.str.replace_many(list(table), list(table.values())), pl.lit('"')])


def _split(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """SPLIT(s, delimiter): an ARRAY<STRING>; '' splits into characters; the delimiter is literal text."""
    value = string(c, node.this)
    delimiter = literal_string(node.expression, "SPLIT's delimiter")
    parts = value.str.split("") if delimiter == "" else value.str.split(delimiter)
    return parts


# java.net.URL's parts (it knows these protocols and refuses others); groups: protocol, authority, path, query, ref
_URL = r"^(?i:(https?|ftp|file|jar)):(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$"
_URL_PARTS = ("HOST", "PATH", "QUERY", "REF", "PROTOCOL", "FILE", "AUTHORITY", "USERINFO")


def _parse_url(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """PARSE_URL(url, part [, key]): a part of the URL as java.net.URL gives it; NULL when it has none, when the
    URL does not parse, or for an unknown part; with a key, that parameter of the QUERY."""
    url = string(c, node.this)
    part = literal_string(node.args.get("part_to_extract"), "PARSE_URL's part").upper()
    key_node = node.args.get("key")
    if part not in _URL_PARTS:
        return pl.lit(None, pl.String)

    def group(i: int) -> pl.Expr:
        return url.str.extract(_URL, i)

    protocol, authority, path, query, ref = (group(i) for i in range(1, 6))
    parsed = url.str.contains(_URL)
    userinfo = authority.str.extract(r"^([^@]*)@", 1)
    host = authority.str.replace(r"^[^@]*@", "").str.replace(r":[0-9]*$", "")
    file = pl.when(query.is_null()).then(path).otherwise(pl.concat_str([path, pl.lit("?"), query]))
    value = {
        "HOST": host.fill_null(""),
        "PATH": path,
        "QUERY": query,
        "REF": ref,
        "PROTOCOL": protocol.str.to_lowercase(),
        "FILE": file,
        "AUTHORITY": authority,
        "USERINFO": userinfo,
    }[part]
    if key_node is not None:
        if part != "QUERY":
            return pl.lit(None, pl.String)
        key = literal_string(key_node, "PARSE_URL's key")
        escaped = "".join("\\" + ch if ch in "\\.+*?()|[]{}^$" else ch for ch in key)
        value = query.str.extract(f"(?:^|&){escaped}=([^&]*)", 1)
    return pl.when(parsed).then(value).otherwise(None)


def _url_mapping(i: int) -> str:
    ch = chr(i)
    if i < 128 and (ch.isalnum() or ch in ".-*_"):
        return ch
    return "+" if ch == " " else f"%{i:02X}"


#: each UTF-8 byte (as two lower-case hex digits) -> its form in application/x-www-form-urlencoded text
_URL_ENCODE = {f"{i:02x}": _url_mapping(i) for i in range(256)}
_HEX_DIGITS = "0123456789abcdefABCDEF"
#: `%XY` and `+` (as the hex of their bytes) -> the hex of the byte they stand for; then every byte as itself
_URL_DECODE = {
    **{"25" + f"{ord(a):02x}{ord(b):02x}": f"{int(a + b, 16):02x}" for a in _HEX_DIGITS for b in _HEX_DIGITS},
    "2b": "20",
    **{f"{i:02x}": f"{i:02x}" for i in range(256) if i != ord("+")},
}


def _url_encode(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """URL_ENCODE(s): as Java's URLEncoder with UTF-8. Vectorised on the hex of the bytes: every byte is two hex
    digits, and replacing the 256 digit pairs left to right keeps to byte boundaries."""
    (arg,) = arguments(node, 1, name="URL_ENCODE")
    hexed = string(c, arg).str.encode("hex")
    return hexed.str.replace_many(list(_URL_ENCODE), list(_URL_ENCODE.values()), leftmost=True)


def _url_decode(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """URL_DECODE(s): as Java's URLDecoder with UTF-8; NULL for a bad `%` escape (Flink) or bytes that are not
    UTF-8. On the hex of the bytes, the escapes are tried before the single bytes at each byte boundary."""
    (arg,) = arguments(node, 1, name="URL_DECODE")
    value = string(c, arg)
    bad_escape = value.str.contains(r"%([^0-9A-Fa-f]|[0-9A-Fa-f]([^0-9A-Fa-f]|$)|$)")
    hexed = value.str.encode("hex").str.replace_many(list(_URL_DECODE), list(_URL_DECODE.values()), leftmost=True)
    raw = hexed.str.decode("hex", strict=False)
    valid = raw.bin.encode("hex").str.contains(UTF8_HEX) & ~bad_escape
    text = pl.when(valid).then(raw).otherwise(pl.lit(b"")).cast(pl.String)
    return pl.when(valid).then(text).otherwise(None)


_NONDETERMINISTIC = (
    "a random value differs when an epoch is replayed after a failure, which would break exactly-once results; "
    "generate ids at the source or with a deterministic hash of the row"
)

BY_NODE: dict[type, Builder] = {
    exp.StrPosition: _position,
    exp.Pad: _pad,
    exp.Repeat: _repeat,
    exp.Replace: _replace,
    exp.Reverse: lambda c, n: string(c, n.this).str.reverse(),
    exp.Left: _left_right,
    exp.Right: _left_right,
    exp.Initcap: _initcap,
    exp.Ascii: _ascii,
    exp.Chr: _chr,
    exp.RegexpReplace: _regexp_replace,
    exp.RegexpCount: _regexp_count,
    exp.RegexpInstr: _regexp_instr,
    exp.RegexpSubstr: _regexp_substr,
    exp.Overlay: _overlay,
    exp.StartsWith: _starts_ends,
    exp.EndsWith: _starts_ends,
    exp.Translate: _translate,
    exp.ConcatWs: _concat_ws,
    exp.ToBase64: _to_base64,
    exp.FromBase64: _from_base64,
    exp.Elt: _elt,
    exp.RegexpSplit: _split,
    exp.RegexpExtractAll: _regexp_extract_all,
    exp.Uuid: refuse(_NONDETERMINISTIC),
    exp.ParseUrl: _parse_url,
    exp.Encode: _encode,
    exp.StrToMap: refuse(
        "not yet: its delimiters are regular expressions (Polars splits on literal text) and its MAP result "
        "comes with the MAP type"
    ),
    exp.CurrentDatabase: refuse("there is one catalog and no databases"),
    exp.Decode: _decode,
    **hashes.BY_NODE,
}

BY_NAME: dict[str, Builder] = {
    "REGEXP": _regexp,
    "REGEXP_EXTRACT_ALL": _regexp_extract_all,
    "BTRIM": _btrim,
    "IS_ALPHA": _character_class(r"^\p{L}+$"),
    "IS_DIGIT": _character_class(r"^\p{Nd}+$"),
    # what Java's Integer/Long/Double.parseDouble accept (Flink's test), hex floats aside
    "IS_DECIMAL": _character_class(r"^\s*[+-]?(NaN|Infinity|((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[dDfF]?))\s*$"),
    "JSON_QUOTE": _json_quote,
    "UUID": refuse(_NONDETERMINISTIC),
    "PRINTF": refuse("Java's Formatter patterns have no Polars equivalent; use CONCAT or a Python UDF"),
    "URL_ENCODE": _url_encode,
    "URL_DECODE": _url_decode,
    **hashes.BY_NAME,
}
