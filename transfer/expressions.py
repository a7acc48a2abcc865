"""Site expressions: the subset of Rucio's RSE expression language that rules use.

Grammar (as in Rucio, operators have equal precedence and apply left to right; group with
parentheses)::

    expr := term { ("|" | "&" | "\\") term }     union, intersection, difference
    term := "(" expr ")" | "*" | KEY "=" VALUE | NAME

``NAME`` alone is a site name; ``*`` is every site; ``KEY=VALUE`` matches a site attribute. Every site
has the attributes ``site`` (its name) and ``role`` (lead or satellite), plus those of its
``attributes`` table in ``sites.toml``. Examples: ``site=in2p3``, ``role=satellite``,
``*\\site=ncsa`` (every site but ncsa), ``(country=fr|country=us)&tier=1``.

An expression that does not parse names the position; one that matches no site is an error where a
rule is added (a rule that can never be satisfied is refused, not left STUCK).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.errors import InvalidInputError

_TOKEN = re.compile(r"\s*(?:(?P<op>[|&\\()=*])|(?P<word>[A-Za-z0-9_.:-]+))")


@dataclass(frozen=True)
class SiteAttributes:
    """What an expression sees of a site."""

    name: str
    attributes: Mapping[str, str]


def _tokens(text: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidInputError(f"site expression {text!r}: unexpected character at position {pos + 1}")
        out.append((m.group("op") or m.group("word"), m.start(m.lastindex or 0)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str, sites: Sequence[SiteAttributes]) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0
        self.sites = sites
        self.all = frozenset(s.name for s in sites)

    def _fail(self, what: str) -> InvalidInputError:
        where = self.tokens[self.i][1] + 1 if self.i < len(self.tokens) else len(self.text) + 1
        return InvalidInputError(f"site expression {self.text!r}: {what} at position {where}")

    def _peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def _take(self) -> str:
        tok = self._peek()
        if tok is None:
            raise self._fail("unexpected end")
        self.i += 1
        return tok

    def parse(self) -> frozenset[str]:
        if not self.tokens:
            raise InvalidInputError("site expression is empty")
        result = self._expr()
        if self._peek() is not None:
            raise self._fail(f"unexpected {self._peek()!r}")
        return result

    def _expr(self) -> frozenset[str]:
        left = self._term()
        while (op := self._peek()) in ("|", "&", "\\"):
            self.i += 1
            right = self._term()
            left = left | right if op == "|" else left & right if op == "&" else left - right
        return left

    def _term(self) -> frozenset[str]:
        tok = self._take()
        if tok == "(":
            inner = self._expr()
            if self._peek() != ")":
                raise self._fail("expected ')'")
            self.i += 1
            return inner
        if tok == "*":
            return self.all
        if tok in ("|", "&", "\\", ")", "="):
            self.i -= 1
            raise self._fail(f"expected a site name or KEY=VALUE, got {tok!r}")
        if self._peek() == "=":
            self.i += 1
            value = self._take()
            if value in ("|", "&", "\\", "(", ")", "=", "*"):
                self.i -= 1
                raise self._fail(f"expected a value after '{tok}=', got {value!r}")
            return frozenset(s.name for s in self.sites if s.attributes.get(tok) == value)
        return frozenset({tok}) & self.all


def evaluate(expression: str, sites: Sequence[SiteAttributes]) -> frozenset[str]:
    """The names of the sites an expression selects (possibly none)."""
    return _Parser(expression, sites).parse()


def check(expression: str) -> str:
    """Raise :class:`InvalidInputError` if ``expression`` does not parse; return it."""
    _Parser(expression, []).parse()
    return expression


def to_rucio(expression: str) -> str:
    """The same expression in Rucio's syntax: a bare site name becomes ``site=NAME`` (in Rucio a bare
    term is an RSE name); everything else is already Rucio's, since satdrp mirrors ``site``, ``role`` and
    the catalogue's attributes as RSE attributes."""
    check(expression)
    tokens = _tokens(expression)
    out: list[str] = []
    for i, (tok, _) in enumerate(tokens):
        word = tok not in ("|", "&", "\\", "(", ")", "=", "*")
        after_eq = i > 0 and tokens[i - 1][0] == "="
        before_eq = i + 1 < len(tokens) and tokens[i + 1][0] == "="
        out.append(f"site={tok}" if word and not after_eq and not before_eq else tok)
    return "".join(out)
