# The kiosk's settings (docs/firmware.md "config.json"): written at flashing, read at boot.
# The retained config topic (DESIGN.md 2) overrides service, price, lists and limits at run
# time; Store keeps its last copy on flash so an offline reboot still has the lists.
import binascii
import json
import os

DEFAULTS = {
    "service": "meal",
    "board": "sim",
    "offline": {"max_per_card_per_day": 1, "max_taps": 200},
    "seq_base": 0,
    "suppress_s": 3,
    "verdict_timeout_ms": 2500,
    "mifare": False,
    "keepalive_s": 30,
    "heartbeat_s": 60,
    "resend_ms": 30000,
    "poll_ms": 20,
    "watchdog_ms": 10000,
    "data_dir": "",
    "journal_max_bytes": 65536,
    "journal_max_pending": 256,
    "ntp_host": "pool.ntp.org",
}


class ConfigError(ValueError):
    pass


def parse_broker(url):
    """'mqtt://host[:port]' or 'mqtts://host[:port]' -> (host, port, tls)."""
    if url.startswith("mqtts://"):
        rest, port, tls = url[8:], 8883, True
    elif url.startswith("mqtt://"):
        rest, port, tls = url[7:], 1883, False
    else:
        raise ConfigError("broker must be mqtt://host[:port] or mqtts://host[:port]")
    rest = rest.rstrip("/")
    if ":" in rest:
        host, p = rest.rsplit(":", 1)
        try:
            port = int(p)
        except ValueError:
            raise ConfigError("broker port must be a number")
    else:
        host = rest
    if not host:
        raise ConfigError("broker host missing")
    return host, port, tls


def prepare(cfg):
    """Fill defaults and check what the kiosk cannot run without. Returns cfg."""
    from protocol import topics
    for name in DEFAULTS:
        if name not in cfg:
            cfg[name] = DEFAULTS[name]
    if not topics.valid_id(cfg.get("kiosk")):
        raise ConfigError("kiosk: 1-32 of A-Z a-z 0-9 - _")
    try:
        key = binascii.unhexlify(cfg.get("key", ""))
    except (ValueError, TypeError):
        key = b""
    if len(key) < 16:
        raise ConfigError("key: the device key, at least 32 hex digits")
    cfg["key_bytes"] = key
    if "broker" in cfg:
        cfg["broker_host"], cfg["broker_port"], cfg["broker_tls"] = parse_broker(cfg["broker"])
    return cfg


def load(path="config.json"):
    with open(path) as f:
        return prepare(json.load(f))


def join(d, name):
    if not d:
        return name
    return d + "/" + name if not d.endswith("/") else d + name


class Store:
    """The retained config's last copy on flash (DATA_DIR/remote_config.json), rewritten
    only when its bytes change, via a temporary file and a rename."""

    def __init__(self, data_dir=""):
        self.path = join(data_dir, "remote_config.json")
        self._crc = None

    def load_remote(self):
        from protocol import messages
        try:
            with open(self.path, "rb") as f:
                data = f.read()
            self._crc = binascii.crc32(data)
            return messages.decode("config", data)
        except (OSError, ValueError):
            return None

    def save_remote(self, payload):
        crc = binascii.crc32(payload)
        if crc == self._crc:
            return False
        tmp = self.path + ".new"
        with open(tmp, "wb") as f:
            f.write(payload)
        try:
            os.rename(tmp, self.path)
        except OSError:
            try:
                os.remove(self.path)
            except OSError:
                pass
            os.rename(tmp, self.path)
        self._crc = crc
        return True
