# Time on the wire is UTC, as 'YYYY-MM-DDTHH:MM:SSZ' (DESIGN.md 2). Written by hand from
# the civil-calendar algorithm so it does not depend on a port's epoch (some MicroPython
# ports count from 2000) or on CPython's datetime.


def _days_from_civil(y, m, d):
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z):
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return (y + (m <= 2), m, d)


def iso(epoch_s):
    """Unix seconds (UTC) -> '2026-11-23T10:56:43Z'."""
    epoch_s = int(epoch_s)
    days, rem = divmod(epoch_s, 86400)
    y, m, d = _civil_from_days(days)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, rem // 3600, rem % 3600 // 60, rem % 60)


def parse(text):
    """'2026-11-23T10:56:43Z' -> Unix seconds. Raises ValueError on any other form."""
    if not isinstance(text, str) or len(text) != 20 or text[4] != "-" or text[7] != "-" \
            or text[10] != "T" or text[13] != ":" or text[16] != ":" or text[19] != "Z":
        raise ValueError("not a UTC time 'YYYY-MM-DDTHH:MM:SSZ': %r" % (text,))
    try:
        y, mo, d = int(text[0:4]), int(text[5:7]), int(text[8:10])
        h, mi, s = int(text[11:13]), int(text[14:16]), int(text[17:19])
    except ValueError:
        raise ValueError("not a UTC time 'YYYY-MM-DDTHH:MM:SSZ': %r" % (text,))
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 60) \
            or _civil_from_days(_days_from_civil(y, mo, d)) != (y, mo, d):
        raise ValueError("not a real UTC time: %r" % (text,))
    return _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s


def day(text_or_epoch):
    """The UTC date 'YYYY-MM-DD' of a wire time or Unix seconds."""
    if isinstance(text_or_epoch, str):
        return text_or_epoch[:10]
    return iso(text_or_epoch)[:10]
