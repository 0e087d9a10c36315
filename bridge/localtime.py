# host-only. Days and months for caps and reports are the site's local calendar (default
# Asia/Shanghai); the wire and the database keep UTC epoch seconds.
import datetime
import zoneinfo

DEFAULT_TZ = "Asia/Shanghai"
_zones = {}


def zone(name=None):
    name = name or DEFAULT_TZ
    z = _zones.get(name)
    if z is None:
        z = _zones[name] = zoneinfo.ZoneInfo(name)
    return z


def local(ts, tz=None):
    return datetime.datetime.fromtimestamp(int(ts), zone(tz))


def day_month(ts, tz=None):
    d = local(ts, tz)
    return d.strftime("%Y-%m-%d"), d.strftime("%Y-%m")


def age_on(birth_date, day):
    """Whole years from 'YYYY-MM-DD' birth date to 'YYYY-MM-DD' day."""
    by, bm, bd = (int(x) for x in birth_date.split("-"))
    y, m, d = (int(x) for x in day.split("-"))
    return y - by - ((m, d) < (bm, bd))
