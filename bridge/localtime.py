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


_days = {}  # (tz, 15-minute UTC slot) -> (day, month)


def day_month(ts, tz=None):
    """('YYYY-MM-DD', 'YYYY-MM') of ts in the zone. Cached per 15 minutes of UTC: since 1972
    every zone's offset and every change of it fall on a quarter hour, so a slot never
    spans midnight (strftime twice per swipe was 5% of a one-swipe batch)."""
    key = (tz, int(ts) // 900)
    dm = _days.get(key)
    if dm is None:
        if len(_days) > 4096:
            _days.clear()
        d = local(ts, tz)
        dm = _days[key] = (d.strftime("%Y-%m-%d"), d.strftime("%Y-%m"))
    return dm


def age_on(birth_date, day):
    """Whole years from 'YYYY-MM-DD' birth date to 'YYYY-MM-DD' day."""
    by, bm, bd = (int(x) for x in birth_date.split("-"))
    y, m, d = (int(x) for x in day.split("-"))
    return y - by - ((m, d) < (bm, bd))
