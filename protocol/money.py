# Money's text form, defined once for screens, reports and operator input. Money itself is
# always integer fen (1 yuan = 100 fen) and never a float (DESIGN.md 2).


def yuan(fen):
    """Integer fen -> '12.50' ('-3.00' for a negative amount)."""
    sign = "-" if fen < 0 else ""
    fen = -fen if fen < 0 else fen
    return "%s%d.%02d" % (sign, fen // 100, fen % 100)


def parse_yuan(text):
    """'12.50', '12.5' or '12' -> 1250 fen. Raises ValueError for anything else (a sign,
    more than two decimals, a letter), so a typo never becomes an amount."""
    text = str(text).strip()
    if not text:
        raise ValueError("no amount given: write yuan like 12.50")
    whole, _, frac = text.partition(".")
    if not whole:
        whole = "0"
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 2 or (_ and not frac):
        raise ValueError("amount %r: write yuan like 12.50 (at most 2 decimals)" % (text,))
    return int(whole) * 100 + int((frac + "00")[:2])
