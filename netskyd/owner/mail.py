"""One raw RFC 5322 message, as IMAP fetched it, made into an ``Inbound`` (docs/owner.md).

Pure: no I/O, no network, no clock. ``netskyd.owner.imap`` fetches the bytes and calls
``parse``; ``netskyd.owner.inbound.admit`` then decides what happens to the result. The
text is kept as it decoded (only line ends and no-break spaces are normalised): the
bus's rules on control characters and ``<channel>`` tags are ``admit``'s to apply, so a
hostile body is quarantined there, never silently cleaned here.

Mail is parsed before the allowlist is applied, so anyone can feed this module. The
stdlib's parsers are slow on some hostile shapes: ``email`` per MIME part and
superlinearly in the length of one ``Content-*`` header, ``html.parser`` quadratically
on unclosed tags and comments. Those are bounded first (``_screen``, ``_tame``, the
HTML size cap), so a 2 MiB message takes about 1.5 s at worst; the caller should still
run ``parse`` in a worker thread, off the event loop.
"""

from __future__ import annotations

import email
import re
import warnings
from collections.abc import Callable
from datetime import UTC
from email import policy
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning
from bs4.element import NavigableString, PageElement, Tag

from netskyd.owner.inbound import Inbound, Quarantine

_MAX_HEADER_BYTES = 8 * 1024  # one From/Subject/Date or Content-* header, folded lines joined
_MAX_MIME_HEADER_BYTES = 64 * 1024  # all Content-* headers of all parts together
_MAX_BOUNDARY_LINES = 1000  # lines starting "--": an upper bound on the MIME parts

_CONTENT_HEADER = re.compile(rb"(?im)^content-[a-z0-9-]*[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*")
_ADDRESS = re.compile(r"[^\s@<>\"\x00-\x1f\x7f]+@[^\s@<>\"\x00-\x1f\x7f]+")
_LINE_NOISE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")  # collapsed to one space in one-liners
_FORWARD = re.compile(r"(?i)\s*(?:(?:re|aw|sv)\s*:\s*)*(?:fwd?|wg|tr)\s*:")


def parse(raw: bytes, *, uidvalidity: int, uid: int, max_bytes: int) -> Inbound:
    """The ``Inbound`` for one message: ``raw`` is the RFC 5322 bytes (``BODY[]``);
    ``uidvalidity`` and ``uid`` are the mailbox's, making ``ref`` ``email:<v>:<uid>``;
    ``max_bytes`` bounds ``raw`` (checked before anything is parsed).

    ``sender`` and ``chat_id`` are the first address of ``From``, lower-cased; ``ts`` the
    ``Date`` header in epoch seconds (0.0 when missing or unparseable; no zone means UTC);
    ``subject`` the decoded ``Subject`` on one line (``(no subject)`` when empty);
    ``text`` the text/plain part, else the text/html part made text (``html_to_text``),
    with CRLF/CR made LF, U+00A0 made a space, and quoted history cut (``strip_quoted``)
    unless the subject marks a forward (``Fwd:``, ``FW:``, ``WG:``, ``TR:``: the forwarded
    mail is the point); ``attachments`` one ``"name (12.3 KB, type/subtype)"`` per
    attachment (decoded size, 1 KB = 1024 bytes), content never read.

    Raises ``Quarantine`` (and nothing else, whatever the bytes) when ``raw`` is over
    ``max_bytes``, when a header the parser would choke on is too long or the message
    has too many parts (``_screen``), when ``From`` holds no address, when there is no
    text part, no HTML part and no attachment, and when the stdlib parser fails (the
    reason names the exception type).
    """
    if len(raw) > max_bytes:
        raise Quarantine(f"message is {len(raw)} bytes; at most {max_bytes}")
    try:
        return _parse(raw, f"email:{uidvalidity}:{uid}")
    except Quarantine:
        raise
    except Exception as e:  # hostile input must not escape as anything but Quarantine
        raise Quarantine(_one_line(f"unparseable message ({type(e).__name__}: {e})")) from e


def _parse(raw: bytes, ref: str) -> Inbound:
    _screen(raw)
    msg = email.message_from_bytes(raw, policy=policy.default)
    sender = _sender(msg)
    subject = _subject(msg)
    plain = msg.get_body(preferencelist=("plain",))
    html = None if plain is not None else msg.get_body(preferencelist=("html",))
    attachments = _attachments(msg, plain or html)
    text = ""
    if plain is not None:
        text = _part_text(plain)
    elif html is not None:
        text = html_to_text(_part_text(html))
    elif not attachments:
        raise Quarantine("no text part, no HTML part and no attachment")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    if not _FORWARD.match(subject):
        text = strip_quoted(text)
    return Inbound(
        source="email",
        ref=ref,
        sender=sender,
        chat_id=sender,
        ts=_date(msg),
        subject=subject,
        text=_unsurrogate(text),
        attachments=tuple(attachments),
    )


def _screen(raw: bytes) -> None:
    """Refuse, before parsing, the shapes that make the stdlib parser crawl."""
    boundaries = raw.count(b"\n--") + raw.startswith(b"--")
    if boundaries > _MAX_BOUNDARY_LINES:
        raise Quarantine(
            f"message has {boundaries} lines starting '--' (MIME boundaries); "
            f"at most {_MAX_BOUNDARY_LINES}"
        )
    total = 0
    for m in _CONTENT_HEADER.finditer(raw):
        size = len(m.group())
        name = m.group().split(b":", 1)[0].strip().decode("ascii", "replace")
        if size > _MAX_HEADER_BYTES:
            raise Quarantine(f"a {name} header is {size} bytes; at most {_MAX_HEADER_BYTES}")
        total += size
        if total > _MAX_MIME_HEADER_BYTES:
            raise Quarantine(f"Content-* headers are over {_MAX_MIME_HEADER_BYTES} bytes in all")


def _raw_header(msg: Message, name: str) -> str | None:
    """The first ``name`` header as it came (encoded words intact, unfolded), or None;
    raises Quarantine when it is longer than the parser can be trusted with."""
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            text = re.sub(r"\r?\n(?=[ \t])", "", str(value)).replace("\r", "").replace("\n", "")
            if len(text) > _MAX_HEADER_BYTES:
                raise Quarantine(f"the {name} header is {len(text)} characters; at most "
                                 f"{_MAX_HEADER_BYTES}")  # fmt: skip
            return text
    return None


def _sender(msg: Message) -> str:
    raw = _raw_header(msg, "From")
    if raw is None:
        raise Quarantine("no From header")
    for _name, addr in getaddresses([_unsurrogate(raw)]):
        addr = addr.strip().lower()
        if _ADDRESS.fullmatch(addr):
            return addr
    raise Quarantine(_one_line(f"no address in From: {raw[:200]!r}"))


def _subject(msg: Message) -> str:
    raw = _raw_header(msg, "Subject")
    if raw is None:
        return "(no subject)"
    try:
        decoded = str(policy.default.header_factory("subject", raw))
    except Exception:  # a broken encoded word: show it as it came
        decoded = raw
    return _one_line(_unsurrogate(decoded), limit=None) or "(no subject)"


def _date(msg: Message) -> float:
    try:
        raw = _raw_header(msg, "Date")
        if not raw:
            return 0.0
        when = parsedate_to_datetime(raw)
        if when.tzinfo is None:  # RFC 5322 "-0000": the zone is unknown; take UTC
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (Quarantine, ValueError, TypeError, OverflowError, IndexError):
        return 0.0


def _part_text(part: Message) -> str:
    """The part's payload decoded: its declared charset, else UTF-8, strictly first, then
    with U+FFFD for what does not decode (an unknown charset falls through to UTF-8)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise Quarantine("the body part holds no decodable payload")
    try:
        charset = part.get_content_charset() or "us-ascii"
    except Exception:
        charset = "us-ascii"
    for codec, errors in ((charset, "strict"), ("utf-8", "strict"), (charset, "replace")):
        try:
            return payload.decode(codec, errors)
        except (LookupError, ValueError, TypeError):  # UnicodeError is a ValueError
            continue
    return payload.decode("utf-8", "replace")


def _attachments(msg: Message, body: Message | None) -> list[str]:
    """One ``"name (size, type)"`` per leaf part that is not ``body`` and is either
    marked ``attachment``, or named, or not text (inline images, signatures); a
    ``message/*`` part (a forwarded mail) counts as one attachment, not descended into."""
    out: list[str] = []
    stack: list[Message] = [msg]
    while stack:
        part = stack.pop()
        if part is body:
            continue
        ctype = part.get_content_type()
        maintype = ctype.split("/", 1)[0]
        if maintype == "multipart":
            payload = part.get_payload()
            if isinstance(payload, list):  # else a broken multipart: nothing to list
                stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
            continue
        try:
            filename = part.get_filename()
        except Exception:
            filename = None
        try:
            disposition = part.get_content_disposition()
        except Exception:
            disposition = None
        if disposition != "attachment" and not filename and maintype == "text":
            continue  # an alternative of the body (text/html beside text/plain)
        name = _one_line(_unsurrogate(filename or ""), limit=200) or "unnamed"
        out.append(f"{name} ({_size(part)}, {_one_line(_unsurrogate(ctype), limit=200)})")
    return out


def _size(part: Message) -> str:
    """The decoded size: ``"512 bytes"``, ``"12.3 KB"``, ``"4.1 MB"`` (1 KB = 1024 bytes);
    ``"size unknown"`` when the part cannot be measured (a broken nested message)."""
    try:
        if part.is_multipart():  # message/rfc822: the nested message, re-serialised
            inner = part.get_payload()
            n = sum(len(p.as_bytes()) for p in inner if isinstance(p, Message))
        else:
            payload = part.get_payload(decode=True)
            n = len(payload) if isinstance(payload, bytes) else 0
    except Exception:
        return "size unknown"
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    if n < 1024 * 1024 * 1024:
        return f"{n / 1024 / 1024:.1f} MB"
    return f"{n / 1024 / 1024 / 1024:.1f} GB"


_DROP_TAGS = frozenset({"script", "style", "head", "title", "noscript", "template"})
# Line breaks an element asks for around itself: 2 = a paragraph gap, 1 = a new line.
_BREAKS = {
    **dict.fromkeys(("p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "ul",
                     "ol", "dl", "table", "hr", "figure", "address", "fieldset"), 2),
    **dict.fromkeys(("div", "li", "tr", "dt", "dd", "section", "article", "aside",
                     "header", "footer", "main", "nav", "form", "figcaption", "caption"), 1),
}  # fmt: skip
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")  # HTML's whitespace; U+00A0 is not in it
_MARKED_SECTION = re.compile(r"<!\[[^<>]*>")  # <![CDATA[..]]>, <![endif]>: bogus comments
_LONE_LT = re.compile(r"<(?=[^<>]*(?:<|\Z))")  # a "<" whose tag never closes
_MAX_HTML_CHARS = 512 * 1024


def html_to_text(html: str) -> str:
    """Readable text from an HTML body, as a browser would lay it out in plain text.

    ``script``/``style``/``head`` (and ``title``, ``noscript``, ``template``) are
    dropped with what they hold; HTML whitespace is collapsed (not inside ``pre``); a
    ``br`` is a line break; block elements start and end a line (``p``, headings,
    lists, tables, ``blockquote``, ``pre``: with a blank line), adjacent blocks sharing
    the break; table cells are apart by a space; trailing spaces are stripped and runs
    of blank lines made one. Entities are decoded (``&nbsp;`` is U+00A0). A sig-dash
    line (``-- ``) keeps its space so ``strip_quoted`` still sees it.

    Text nodes are joined with nothing between them (not ``get_text("\\n")``), so inline
    markup (``Hello <b>you</b>!``) stays on its line. The walk is iterative: deep
    nesting cannot exhaust the stack. Raises ``Quarantine`` for HTML over 512 Ki
    characters (about 2 s of parsing), and what BeautifulSoup's ``html.parser`` raises
    on markup it rejects (``parse`` makes that a Quarantine too).
    """
    if len(html) > _MAX_HTML_CHARS:
        raise Quarantine(f"the HTML body is {len(html)} characters; at most {_MAX_HTML_CHARS}")
    with warnings.catch_warnings():  # a short body that looks like a URL is still a body
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(_tame(html), "html.parser")
    out: list[str] = []
    trailing = 0  # line breaks the output ends with
    pending = 0  # line breaks owed before the next text (those already there count)
    stack: list[tuple[PageElement, bool, bool]] = [(soup, False, False)]
    while stack:
        node, leaving, in_pre = stack.pop()
        if isinstance(node, Tag):
            name = node.name.lower()
            if leaving:
                pending = max(pending, _BREAKS.get(name, 0))
                if name in ("td", "th"):
                    out.append(" ")
            elif name == "br":
                out.append("\n")
                trailing += 1
            elif name not in _DROP_TAGS:
                pending = max(pending, _BREAKS.get(name, 0))
                inner_pre = in_pre or name == "pre"
                stack.append((node, True, in_pre))
                stack.extend((child, False, inner_pre) for child in reversed(node.contents))
        elif type(node) is NavigableString:
            chunk = str(node) if in_pre else _HTML_SPACE.sub(" ", node)
            if (pending or trailing or not out) and not in_pre:
                chunk = chunk.lstrip(" ")
            if not chunk:
                continue
            if out and pending > trailing:
                out.append("\n" * (pending - trailing))
            out.append(chunk)
            body = chunk.rstrip("\n")
            trailing = len(chunk) - len(body) + (trailing if not body else 0)
            pending = 0
    lines = []
    for line in "".join(out).split("\n"):
        kept = line.rstrip()
        lines.append("-- " if kept == "--" and line != kept else kept)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def _tame(html: str) -> str:
    """``html`` with what makes ``html.parser`` (CPython 3.11) quadratic taken out first:
    comments (an unclosed one drops the rest), marked sections, and a ``<`` whose tag is
    never closed before the next ``<`` (made ``&lt;``: text, as a browser would show it;
    an attribute value holding ``<`` is the rare casualty)."""
    kept: list[str] = []
    i = 0
    while (start := html.find("<!--", i)) >= 0:
        kept.append(html[i:start])
        end = html.find("-->", start + 4)
        if end < 0:
            break
        i = end + 3
    else:
        kept.append(html[i:])
    return _LONE_LT.sub("&lt;", _MARKED_SECTION.sub("", "".join(kept)))


# The reply headers of the common clients, tried against a line (and an attribution
# against that line joined with the next: Gmail and Apple Mail wrap long ones). An
# attribution must hold a digit (the date) so "On reflection she wrote:" is not one.
_OUTLOOK_ORIGINAL = re.compile(  # Outlook desktop (older), en/de/fr
    r"\s*-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine)\s*-{2,}\s*",
    re.IGNORECASE,
)
_OUTLOOK_RULE = re.compile(r"\s*_{10,}\s*")  # Outlook: a line of underscores, then From:
_OUTLOOK_FROM = re.compile(r"\s*\*?(?:From|Von|De)\s?:\*?\s.*")
_OUTLOOK_SENT = re.compile(r"\s*\*?(?:Sent|Gesendet|Envoyé)\s?:\*?\s.*")
_MAX_HEADER_LINE = 400


def strip_quoted(text: str) -> str:
    """``text`` without the quoted history a reply drags along; LF line ends expected.

    Rules, applied in this order, each only when what it keeps has text of the writer's
    own (a non-blank line not starting with ``>``), so a bottom-posted reply or a mail of
    nothing but quotes is never emptied:

    1. Cut at the first reply header and drop everything after it:
       ``On <date>, <name> wrote:`` (Gmail, Apple Mail, Thunderbird; may wrap onto two
       lines), ``Am <date> schrieb <name>:`` (German), ``Le <date>, <name> a écrit :``
       (French), each holding a digit (the date); Outlook's ``-----Original
       Message-----`` (and its German and French forms); Outlook's line of underscores
       followed by a ``From:``/``Von:``/``De :`` line; Outlook's ``From:`` line with
       ``Sent:``/``Gesendet:``/``Envoyé :`` within the next three lines (a ``From:``
       followed by ``Date:`` is a forward's header, Gmail's and Apple's, and is kept).
    2. Cut at the first sig-dash line, exactly ``-- `` (RFC 3676 section 4.3; Usenet).
    3. Drop a trailing run of lines starting with ``>`` (blank lines among them): quoted
       text left at the end by a reply without a recognised header. Quotes with the
       writer's answers after them (interleaved replies) stay.

    Returns ``text`` unchanged when nothing was cut, else the kept lines with trailing
    whitespace removed.
    """
    lines = text.split("\n")
    kept = lines[: _cut_at(lines, _is_reply_header)]
    kept = kept[: _cut_at(kept, lambda ls, i: ls[i] == "-- ")]
    end = len(kept)
    while end and (not kept[end - 1].strip() or kept[end - 1].lstrip().startswith(">")):
        end -= 1
    if any(line.lstrip().startswith(">") for line in kept[end:]) and _own_text(kept[:end]):
        kept = kept[:end]
    if len(kept) == len(lines):
        return text
    return "\n".join(kept).rstrip()


def _own_text(lines: list[str]) -> bool:
    return any(line.strip() and not line.lstrip().startswith(">") for line in lines)


def _cut_at(lines: list[str], is_cut: Callable[[list[str], int], bool]) -> int:
    """Index of the first line where ``is_cut(lines, i)`` holds with own text before it;
    ``len(lines)`` when there is none."""
    seen = False
    for i, line in enumerate(lines):
        if seen and is_cut(lines, i):
            return i
        seen = seen or bool(line.strip() and not line.lstrip().startswith(">"))
    return len(lines)


def _is_reply_header(lines: list[str], i: int) -> bool:
    line = lines[i]
    if len(line) > _MAX_HEADER_LINE:
        return False
    following = lines[i + 1 : i + 4]
    if _OUTLOOK_RULE.fullmatch(line):
        nonblank = [f for f in following[:2] if f.strip()]
        return bool(nonblank) and bool(_OUTLOOK_FROM.fullmatch(nonblank[0]))
    if _OUTLOOK_FROM.fullmatch(line):
        return any(_OUTLOOK_SENT.fullmatch(f) for f in following)
    if _OUTLOOK_ORIGINAL.fullmatch(line):
        return True
    if _wrote(line):
        return True
    # A header wrapped onto two lines; not when the next line is a header on its own
    # (then this line is the writer's), nor when this one ends a sentence.
    return (
        bool(following)
        and len(following[0]) <= _MAX_HEADER_LINE
        and not line.rstrip().endswith((".", "!", "?"))
        and not _wrote(following[0])
        and _wrote(f"{line} {following[0]}")
    )


def _wrote(line: str) -> bool:
    """An attribution line: en (Gmail, Apple Mail, Thunderbird, Outlook mobile), de, fr.
    String tests, not regexes with two ``.*``: those go quadratic on hostile lines."""
    s = " ".join(line.split())
    if not any(c.isdigit() for c in s):
        return False
    return (
        (s.startswith("On ") and s.endswith(" wrote:"))
        or (s.startswith("Am ") and " schrieb " in s and s.endswith(":"))
        or (s.startswith("Le ") and s.endswith((" a écrit :", " a écrit:")))
    )


def _unsurrogate(s: str) -> str:
    """``s`` with the parser's smuggled bytes (lone surrogates from undecodable 8-bit
    headers) decoded as UTF-8, U+FFFD where that fails: no surrogate may reach the bus,
    which encodes text as UTF-8."""
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _one_line(s: str, limit: int | None = 300) -> str:
    """``s`` with whitespace and control characters collapsed to single spaces, stripped,
    cut to ``limit`` characters (None: no limit)."""
    s = _LINE_NOISE.sub(" ", s).strip()
    return s if limit is None or len(s) <= limit else s[: limit - 1] + "…"
