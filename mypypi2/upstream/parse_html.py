"""PEP 503 HTML pages and project lists (with PEP 592, 629, 658, 714, 740, 792 attributes).

A regex tokenizer finds only what an index page can mean: anchors, `<meta name content>`,
the first `<base href>`, and what hides markup from them (comments, `<script>`, `<style>`,
quoted attribute values). It follows the HTML tokenizer's rules for where a tag ends, so
`<A HREF=x>`, unquoted values, odd attribute order and `>` inside quotes read as a browser
reads them, and every token is matched once: time is linear in the body (html.parser spent
2-3 s of GIL-bound time on 1 MB of crafted markup). It reads text in pieces, so a project
list never has to be whole in memory. A body that ends inside a tag, comment or script is
refused: it was cut short, and the files after the cut would silently be missing. So is a
single token over 1 MiB (no index writes one), whatever the chunking, which keeps the cost
of re-reading a token split across chunks bounded.
"""

from __future__ import annotations

import codecs
import html
import re
from collections.abc import Iterator

from mypypi2.errors import MalformedPage
from mypypi2.models import FileEntry, ProjectList, ProjectPage
from mypypi2.upstream.parse_rules import (
    DropLog,
    Resolver,
    build_page,
    check_api_version,
    filename_from_url,
    filter_hashes,
    provenance_url,
    without_nul,
)

_WS = r"\t\n\f\r "  # HTML whitespace; \s would also take Unicode spaces
_VALUE = rf"""(?:"[^"]*+"|'[^']*+'|[^{_WS}>"'][^{_WS}>]*+|(?=>))"""
# After a name, `=` always starts a value (a quote left open runs to the end of the body).
_ATTRS = rf"(?:[{_WS}/]++|[^{_WS}/>][^{_WS}/>=]*+(?:[{_WS}]*+=[{_WS}]*+{_VALUE}|(?![{_WS}]*=)))*+"
# One token per match, all starting with the literal "<" so that re skips text in C.
_TOKEN = re.compile(
    rf"""<(?:
        !--(?:-?>|.*?--!?>)
      | (?P<close>/?)(?P<tag>[A-Za-z][^{_WS}/>]*+)(?P<attrs>{_ATTRS})>
      | (?P<decl>(?:!(?!--)|\?|/(?![A-Za-z]))[^>]*+>)
      | (?P<open>[A-Za-z!?/]|\Z)
    )""",
    re.VERBOSE | re.DOTALL,
)
_ATTR = re.compile(
    rf"""([^{_WS}/>][^{_WS}/>=]*)(?:[{_WS}]*=[{_WS}]*("[^"]*"|'[^']*'|[^{_WS}>]*))?"""
)
# The usual shape of a project list entry's rest, `name</a>`, read in one match.
_TEXT_THEN_END_OF_ANCHOR = re.compile(rf"([^<]*+)</[aA](?=[{_WS}/>]){_ATTRS}>")
# A run of project list entries in their usual shape, `<a href="...">name</a><br />`, each
# as the tokenizer would read it (a double-quoted href, plain text, an optional `<br>`):
# the list scan takes a whole run in one match, then only the names out of it (PEP 503
# lists of several hundred thousand names are otherwise two tokens per name in Python).
_PLAIN_ENTRY = rf"""<[aA][{_WS}]++[hH][rR][eE][fF]="[^"]*+"[{_WS}]*+>([^<]*+)</[aA]>"""
_PLAIN_ENTRIES = re.compile(rf"(?:[{_WS}]*+{_PLAIN_ENTRY}(?:[{_WS}]*+<[bB][rR][{_WS}]*+/?>)?)++")
# Within a run, each match starts at an entry's `<a` (never inside an href: the run is
# entries back to back, and findall resumes after each `</a>`).
_PLAIN_NAME = re.compile(_PLAIN_ENTRY)
# Elements whose content is text, not markup (HTMLParser's CDATA_CONTENT_ELEMENTS).
_RAW_TEXT_END = {
    tag: re.compile(rf"</{tag}(?=[{_WS}/>]|\Z)", re.IGNORECASE) for tag in ("script", "style")
}
# A token (tag, comment, declaration, script or style element) waits whole for the chunk
# that ends it, and is read again each time one comes: no real page has one this long.
_MAX_TOKEN = 1 << 20


class HtmlScanner:
    """The anchors, `<meta>` names and first `<base href>` of an HTML text fed in pieces.

    Page mode keeps each anchor's raw attribute text (the filename comes from the URL);
    list mode keeps each anchor's text (the project name) and drops attributes."""

    def __init__(self, *, anchor_text: bool) -> None:
        self.anchor_attrs: list[str] = []
        self.anchor_texts: dict[str, None] = {}  # ordered and unique
        self.meta: dict[str, str] = {}
        self.base: str | None = None
        self._anchor_text = anchor_text
        self._open: list[str] | None = None  # text pieces of the anchor being read
        self._pending = ""
        self._started = False
        self._saw_markup = False

    def feed(self, text: str, *, final: bool = False) -> None:
        if not self._started and text.strip():
            self._started = True
            # Without this a JSON or plain-text body would read as a page with no files.
            if not text.lstrip().startswith("<"):
                raise MalformedPage("body is not HTML")
        buf = self._pending + text if self._pending else text
        self._pending = ""
        pos = 0
        search = _TOKEN.search
        plain = _PLAIN_ENTRIES.match if self._anchor_text else None
        while True:
            if plain is not None and self._open is None and (run := plain(buf, pos)):
                self._saw_markup = True
                for name in _PLAIN_NAME.findall(buf, pos, run.end()):
                    self._add_name(name)
                pos = run.end()
            token = search(buf, pos)
            if token is None:
                break
            start = token.start()
            if self._open is not None and start > pos:
                self._open.append(buf[pos:start])
            tag = token["tag"]
            if tag is None and token["open"] is not None:
                return self._wait(buf, start, final, "tag")
            pos = token.end()
            if pos - start > _MAX_TOKEN:
                what = "tag" if tag else "comment" if token["decl"] is None else "declaration"
                raise MalformedPage(f"an HTML {what} longer than {_MAX_TOKEN} characters")
            if tag is None:
                self._saw_markup = self._saw_markup or token["decl"] is not None
                continue
            self._saw_markup = True
            tag = tag.lower()
            if token["close"]:
                if tag == "a" and self._open is not None:
                    self._close_anchor()
            elif tag == "a":
                pos = self._start_anchor(token["attrs"], buf, pos)
            elif tag == "meta" or (tag == "base" and self.base is None):
                self._head_element(tag, _attributes(token["attrs"]))
            elif tag in _RAW_TEXT_END:
                end = _RAW_TEXT_END[tag].search(buf, pos)
                if end is None:
                    return self._wait(buf, start, final, f"<{tag}>")
                if end.end() - start > _MAX_TOKEN:
                    raise MalformedPage(f"an HTML <{tag}> longer than {_MAX_TOKEN} characters")
                pos = end.start()
        if self._open is not None and pos < len(buf):
            self._open.append(buf[pos:])
        if final:
            self._close_anchor()  # an `<a>` left open at the end still names something
            if not self._saw_markup:
                raise MalformedPage("body is not HTML")

    def _wait(self, buf: str, start: int, final: bool, what: str) -> None:
        if final:
            raise MalformedPage(f"HTML ends inside an unterminated {what}")
        if len(buf) - start > _MAX_TOKEN:
            raise MalformedPage(f"an HTML {what} longer than {_MAX_TOKEN} characters")
        self._pending = buf[start:]

    def _start_anchor(self, attrs: str, buf: str, pos: int) -> int:
        """Where reading goes on after an `<a>` start tag that ends at `pos`."""
        if self._open is not None:
            self._close_anchor()  # an `<a>` inside an `<a>` ends the first, as in browsers
        if not self._anchor_text:
            self.anchor_attrs.append(attrs)
            return pos
        plain = _TEXT_THEN_END_OF_ANCHOR.match(buf, pos)
        if plain is None:
            self._open = []
            return pos
        self._add_name(plain[1])
        return plain.end()

    def _close_anchor(self) -> None:
        if self._open is not None:
            self._add_name("".join(self._open))
            self._open = None

    def _add_name(self, text: str) -> None:
        name = (html.unescape(text) if "&" in text else text).strip()
        if name:
            self.anchor_texts.setdefault(name)

    def _head_element(self, tag: str, attrs: dict[str, str | None]) -> None:
        if tag == "base":
            self.base = attrs.get("href")
            return
        name, content = attrs.get("name"), attrs.get("content")
        if name is not None and content is not None:
            self.meta.setdefault(name.lower(), content)

    def check_version(self) -> None:
        version = self.meta.get("pypi:repository-version")
        if version is not None:
            check_api_version(version)


def _attributes(text: str) -> dict[str, str | None]:
    """Attribute names (lowercased) to unescaped values; None for a valueless attribute."""
    attrs: dict[str, str | None] = {}
    for match in _ATTR.finditer(text):
        name, value = match[1].lower(), match[2]
        if name in attrs:
            continue  # HTML keeps the first of repeated attributes
        if value is not None:
            if value[:1] in ('"', "'"):
                value = value[1:-1]
            value = html.unescape(value) if "&" in value else value
        attrs[name] = value
    return attrs


def decode_text(body: bytes) -> str:
    if not body:
        raise MalformedPage("empty body")
    try:
        # Indexes serve UTF-8 (PEP 503); a BOM is tolerated, other charsets are not.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedPage(f"body is not UTF-8: {exc}") from exc
    return without_nul(text)


def parse_page(body: bytes, page_url: str, project: str) -> ProjectPage:
    scanner = HtmlScanner(anchor_text=False)
    scanner.feed(decode_text(body), final=True)
    scanner.check_version()
    resolver = Resolver(page_url)
    if scanner.base is not None:
        # HTML: the first <base href> is the base of every link, even those before it.
        base = resolver.resolve(scanner.base)
        resolver = Resolver(base[0]) if base is not None else resolver
    drops = DropLog(f"page of {project} at {page_url}")
    files = (
        _file_from_html(attrs, resolver, drops) for attrs in _distinct(scanner.anchor_attrs, drops)
    )
    return build_page(
        project,
        (entry for entry in files if entry is not None),
        drops,
        status=scanner.meta.get("pypi:project-status"),
        status_reason=scanner.meta.get("pypi:project-status-reason"),
    )


class HtmlListParser:
    """A PEP 503 project list read chunk by chunk: only the anchor texts are kept."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._scanner = HtmlScanner(anchor_text=True)
        self._empty = True

    def feed(self, chunk: bytes) -> None:
        self._scanner.feed(self._decode(chunk, final=False))

    def close(self) -> ProjectList:
        if self._empty:
            raise MalformedPage("empty body")
        self._scanner.feed(self._decode(b"", final=True), final=True)
        self._scanner.check_version()
        names = tuple(self._scanner.anchor_texts)
        self._scanner.anchor_texts.clear()  # the caller may keep this parser: free it now
        return ProjectList(names=names)

    def _decode(self, chunk: bytes, *, final: bool) -> str:
        self._empty = self._empty and not chunk
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            raise MalformedPage(f"body is not UTF-8: {exc}") from exc
        return without_nul(text)


def _distinct(anchors: list[str], drops: DropLog) -> Iterator[dict[str, str | None]]:
    # An anchor repeated verbatim names the same file again; build_page would drop it.
    seen: set[str] = set()
    for attrs in anchors:
        if attrs in seen:
            drops.drop("the whole entry", attrs, "filename duplicate")
            continue
        seen.add(attrs)
        yield _attributes(attrs)


def _file_from_html(
    attrs: dict[str, str | None], resolver: Resolver, drops: DropLog
) -> FileEntry | None:
    href = attrs.get("href")
    if href is None:
        return None  # `<a name=...>` and the like: not a file
    resolved = resolver.resolve(href)
    if resolved is None:
        drops.drop("the whole entry", href, "not an HTTP URL")
        return None
    url, fragment = resolved
    filename = filename_from_url(url)
    # pip and uv read `#<algo>=<hex>` anywhere among `&`-separated fragment parameters.
    pairs = (param.partition("=")[::2] for param in fragment.split("&") if "=" in param)
    metadata_key = (
        "data-core-metadata" if "data-core-metadata" in attrs else "data-dist-info-metadata"
    )
    return FileEntry(
        filename=filename,
        url=url,
        hashes=filter_hashes(pairs, drops, filename, "hashes"),
        requires_python=attrs.get("data-requires-python") or None,
        # A valueless attribute (`data-yanked`) means yanked without a reason (PEP 592).
        yanked=(attrs["data-yanked"] or "") if "data-yanked" in attrs else None,
        core_metadata=_metadata(attrs.get(metadata_key), drops, filename, metadata_key),
        provenance=provenance_url(attrs.get("data-provenance") or None, resolver, drops, filename),
        gpg_sig={"true": True, "false": False}.get((attrs.get("data-gpg-sig") or "").lower()),
    )


def _metadata(value: str | None, drops: DropLog, filename: str, what: str) -> dict[str, str] | None:
    if value is None:
        return None
    value = value.strip()
    if value.lower() == "true":
        return {}
    if "=" in value:
        # The file exists even when its hash uses an algorithm we drop (PEP 658).
        return filter_hashes([value.partition("=")[::2]], drops, filename, what)
    return None
