"""Kernel-log records: one logfmt line per event, and its inverse.

A record looks like

    <28>oorkiller[812]: event=kill resource=memory pid=4242 name=hog reason="MemAvailable 4.8% < 5%"

Values come from hostile places (process names, command lines, paths), so
escaping is the heart of this module: after escaping, a value holds no
control character, no raw non-UTF-8 byte and no unescaped quote, so it can
neither end the line nor close its quotes early. `parse_record` undoes the
escaping byte for byte. docs/records.md describes every event and field.
"""
import enum
import re
import unicodedata

PROGRAM = "oorkiller"
FACILITY_DAEMON = 3

# syslog severities (RFC 5424); the daemon uses warning, err and info.
LEVELS = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3,
    "warning": 4, "notice": 5, "info": 6, "debug": 7,
}
LEVEL_NAMES = {number: name for name, number in LEVELS.items()}

# The kernel refuses a /dev/kmsg write longer than this (PRINTKRB_RECORD_MAX):
# the whole record, "<PRI>" and the final newline included.
MAX_RECORD_BYTES = 976
ELLIPSIS = "…"
_ELLIPSIS_BYTES = len(ELLIPSIS.encode())

# Never cut: a reader must always be able to tell what happened and to what.
NEVER_CUT = frozenset({"event", "resource"})
# Taken by parse_record, read_records and `events --json` for metadata.
RESERVED_KEYS = frozenset({"event", "program_pid", "seq", "usec", "level", "time"})
_KEY = re.compile(r"[a-z_][a-z0-9_]*\Z", re.ASCII)

_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNESCAPES = {b"\\": b"\\", b'"': b'"', b"n": b"\n", b"t": b"\t", b"r": b"\r"}
# Format characters (bidi overrides, zero-width ...) and line/paragraph
# separators could make a value *look* like something else: escape them too.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
_PLAIN_ASCII = re.compile(rb'[\x20-\x21\x23-\x5b\x5d-\x7e]*\Z')  # printable, no " or \


class RecordError(ValueError):
    """A record was asked for with a bad key or level (a programming error)."""


# ---------------------------------------------------------------- values

def value_bytes(value):
    """The bytes a field value stands for, or None for a field to skip.

    bool -> yes/no, int -> decimal, float -> compact, enum -> its name,
    bytes as they are, str as UTF-8 (surrogateescape, so a name decoded from
    non-UTF-8 bytes gives back those bytes).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return b"yes" if value else b"no"
    if isinstance(value, enum.Enum):
        return value.name.encode()
    if isinstance(value, int):
        return str(int(value)).encode()
    if isinstance(value, float):
        return f"{value:.6g}".encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    text = value if isinstance(value, str) else str(value)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no byte decoding could give
        return text.encode("utf-8", "backslashreplace")


def _escape_char(char):
    if char in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not valid UTF-8
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(char) in _HIDDEN_CATEGORIES:
        return "".join(f"\\x{byte:02x}" for byte in char.encode())
    return char


def escape_tokens(raw):
    """Escaped pieces of `raw` (bytes): one per character or escape.

    Cutting a value only ever happens between two pieces, so a cut never
    lands inside an escape or a UTF-8 sequence.
    """
    if _PLAIN_ASCII.match(raw):
        return list(raw.decode("ascii"))
    return [_escape_char(char) for char in raw.decode("utf-8", "surrogateescape")]


def _needs_quotes(body):
    return body == "" or any(char in ' ="' or char.isspace() for char in body)


def _quoted(body):
    return f'"{body}"' if _needs_quotes(body) else body


def unescape(raw):
    """Inverse of the escaping: the escaped text of a value -> the value (str).

    Works on bytes, so `\\xNN` gives back exactly the byte NN; the result is
    decoded with surrogateescape.
    """
    data = raw.encode("utf-8", "surrogateescape")
    if b"\\" in data:
        data = re.sub(rb"\\(x[0-9a-fA-F]{2}|.)", _unescape_match, data, flags=re.S)
    return data.decode("utf-8", "surrogateescape")


def _unescape_match(match):
    code = match.group(1)
    if code.startswith(b"x") and len(code) == 3:
        return bytes([int(code[1:], 16)])
    return _UNESCAPES.get(code, match.group(0))


# ---------------------------------------------------------------- fields

class _Field:
    """One `key=value` of a record being built, cut to fit when needed."""

    def __init__(self, key, raw):
        self.key = key
        self.cuttable = key not in NEVER_CUT
        self.all_tokens = escape_tokens(raw)
        self.token_sizes = [len(token.encode()) for token in self.all_tokens]
        self.full_size = sum(self.token_sizes)
        self.tokens = self.all_tokens

    def rendered(self):
        return f"{self.key}={_quoted(''.join(self.tokens))}"

    def cut_to(self, size):
        """Keep the leading pieces that fit in `size` bytes, ellipsis included."""
        if self.full_size <= size:
            self.tokens = self.all_tokens
            return
        count, used = 0, 0
        for token_size in self.token_sizes:
            if used + token_size > size - _ELLIPSIS_BYTES:
                break
            count, used = count + 1, used + token_size
        self.tokens = self.all_tokens[:count] + [ELLIPSIS]


def _check_key(key):
    if not _KEY.match(key) or key in RESERVED_KEYS:
        raise RecordError(f"bad record key {key!r}")


def safe_key(key):
    """A bad key made usable, so a typo in a key never costs a record.

    `Cgroup-Version` -> `cgroup_version`; a reserved key gets `field_` in front.
    """
    key = re.sub(r"[^a-z0-9_]", "_", str(key).lower(), flags=re.ASCII) or "_"
    if key[0].isdigit() or key in RESERVED_KEYS:
        key = f"field_{key}"
    return key


def _build_fields(event, fields):
    built = [_Field("event", value_bytes(event) or b"")]
    for key, value in fields.items():
        _check_key(key)
        raw = value_bytes(value)
        if raw is not None:
            built.append(_Field(key, raw))
    return built


def _line_size(header, built):
    body = " ".join(field.rendered() for field in built)
    return len(header.encode()) + len(body.encode()) + 1  # + "\n"


def _fit(header, built, limit):
    """Cut the longest values first until the record fits in `limit` bytes.

    Every cuttable value longer than a cap is cut to that cap, the cap being
    the largest that lets the record fit (so shorter values stay whole).
    """
    while _line_size(header, built) > limit:
        cuttable = [field for field in built if field.cuttable]
        if cuttable and _cap_values(header, built, cuttable, limit):
            return
        if not _drop_last_field(built):
            _cut_everything(built)  # absurd event/resource: still keep the cap
            return


def _cap_values(header, built, cuttable, limit):
    def fits(cap):
        for field in cuttable:
            field.cut_to(cap)
        return _line_size(header, built) <= limit

    low, high = _ELLIPSIS_BYTES, max(field.full_size for field in cuttable)
    if not fits(low):
        return False
    while low < high:  # the line's size grows with the cap: binary search
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return fits(low)


def _drop_last_field(built):
    """Too many fields even with every value cut: drop fields from the end."""
    for index in range(len(built) - 1, -1, -1):
        if built[index].cuttable:
            del built[index]
            return True
    return False


def _cut_everything(built):
    for field in built:
        field.cut_to(_ELLIPSIS_BYTES + 64)


def format_record(event, fields, *, pid, level):
    """One /dev/kmsg record: `<PRI>oorkiller[PID]: event=EVENT k=v ...\\n` (bytes).

    `fields` maps fixed identifiers to str, bytes, int, float, bool or None
    (skipped). The result is at most MAX_RECORD_BYTES long and holds exactly
    one newline, at its end.
    """
    if level not in LEVELS:
        raise RecordError(f"bad record level {level!r}")
    header = f"<{FACILITY_DAEMON * 8 + LEVELS[level]}>{PROGRAM}[{int(pid)}]: "
    built = _build_fields(event, fields)
    _fit(header, built, MAX_RECORD_BYTES)
    body = " ".join(field.rendered() for field in built)
    return f"{header}{body}\n".encode()


def format_human(event, fields):
    """The stderr form of a record: `oorkiller: EVENT k=v ...` (no cap, no newline)."""
    built = _build_fields(event, fields)
    parts = [f"{PROGRAM}: {''.join(built[0].tokens)}"]
    parts += [field.rendered() for field in built[1:]]
    return " ".join(parts)


def format_fields(record):
    """logfmt text of a parsed record's `event` and fields (for printing)."""
    fields = {key: value for key, value in record.items() if key not in RESERVED_KEYS}
    built = [_Field("event", value_bytes(record.get("event", "")) or b"")]
    built += [_Field(key, value_bytes(value) or b"") for key, value in fields.items()]
    return " ".join(field.rendered() for field in built)


# ---------------------------------------------------------------- parsing

_HEADER = re.compile(PROGRAM + r"\[(\d+)\]: ")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)


def parse_record(text):
    """Inverse of format_record for the text part of a kmsg record.

    `text` is `oorkiller[PID]: event=... k=v ...` (str or bytes, an ending
    newline allowed). Returns `{"program_pid": int, "event": str, key: str}`,
    or None when the text is not one of our records.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "surrogateescape")
    text = text[:-1] if text.endswith("\n") else text
    header = _HEADER.match(text)
    if header is None:
        return None
    pairs = _parse_pairs(text, header.end())
    if not pairs or pairs[0][0] != "event":
        return None
    record = {"program_pid": int(header.group(1))}
    for key, value in pairs:
        if key in record or (key in RESERVED_KEYS and key != "event"):
            return None  # duplicated or reserved key: not something we wrote
        record[key] = value
    return record


def _parse_pairs(text, pos):
    pairs = []
    while pos < len(text):
        equals = text.find("=", pos)
        if equals < 0 or not _KEY.match(text[pos:equals]):
            return None
        key, pos = text[pos:equals], equals + 1
        quoted = _QUOTED.match(text, pos)
        if quoted:
            raw, pos = quoted.group(1), quoted.end()
        else:
            end = text.find(" ", pos)
            end = len(text) if end < 0 else end
            raw, pos = text[pos:end], end
            if '"' in raw:  # we always escape and quote a `"`
                return None
        pairs.append((key, unescape(raw)))
        if pos < len(text):
            if text[pos] != " ":
                return None
            pos += 1
    return pairs
