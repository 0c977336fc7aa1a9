"""Upstream Simple Repository pages (PEP 503 HTML, PEP 691 JSON) into the canonical model.

Pure: bytes in, `models` out, `MalformedPage` for anything else, whatever the bytes (the
property tests feed random ones). Strict about what an installer needs, lenient about the
rest (`parse_rules` says how). Both formats go through the same per-file rules, so an HTML
upstream and a JSON upstream of one project produce equal `ProjectPage`s. The only side
effect is a log line per page and field for what was dropped from it (`DropLog`).
"""

from __future__ import annotations

from mypypi2.models import ProjectList, ProjectPage
from mypypi2.upstream import parse_html, parse_json
from mypypi2.upstream.parse_rules import media_is_json


def parse_project_page(body: bytes, content_type: str, page_url: str, project: str) -> ProjectPage:
    if media_is_json(content_type):
        return parse_json.parse_page(body, page_url, project)
    return parse_html.parse_page(body, page_url, project)


class ProjectListParser:
    """A project list fed as it arrives (decoded bytes, any chunking), parsed on `close()`.

    The list is the largest page an index has (hundreds of MB): HTML is tokenized chunk by
    chunk keeping only the anchor texts; JSON keeps only the raw bytes until `close()` and
    decodes nothing but each project's `name`."""

    def __init__(self, content_type: str) -> None:
        self._parser: parse_json.JsonListParser | parse_html.HtmlListParser = (
            parse_json.JsonListParser()
            if media_is_json(content_type)
            else parse_html.HtmlListParser()
        )

    def feed(self, chunk: bytes) -> None:
        self._parser.feed(chunk)

    def close(self) -> ProjectList:
        return self._parser.close()


def parse_project_list(body: bytes, content_type: str) -> ProjectList:
    parser = ProjectListParser(content_type)
    parser.feed(body)
    return parser.close()
