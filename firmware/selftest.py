# The on-board self-test the installer runs after flashing (bridge/installer, docs/installing.md):
#     from firmware import selftest; selftest.run()
# One line per step, in a fixed form the installer parses:
#     SELFTEST <step> ok|fail|skip <detail>
# then `SELFTEST done ok` or `SELFTEST done fail`. Steps: config, reader, wifi, broker,
# heartbeat. On the virtual board (boards/sim/serial_board.mjs: no machine, no network) the
# reader step is still real: the real driver (firmware/rc522.py) reads VersionReg from the
# MFRC522 emulator (boards/sim/rc522.py) over the emulated SPI bus; network steps skip.
# Secrets (key, Wi-Fi password) are never printed.
try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

PREFIX = "SELFTEST"


def _line(step, status, detail=""):
    detail = str(detail).replace("\n", " ").replace("\r", " ")
    print("%s %s %s %s" % (PREFIX, step, status, detail) if detail else
          "%s %s %s" % (PREFIX, step, status))


def virtual():
    """True on the virtual board (its adapter registers the virtual_board module)."""
    try:
        __import__("virtual_board")  # registered by boards/sim/serial_board.mjs
        return True
    except ImportError:
        pass
    try:
        import machine  # noqa: F401
        return False
    except ImportError:
        return True


def _pins(p):
    s = p.get("spi") or {}
    r = p.get("rc522") or {}
    return "SCK=%s MOSI=%s MISO=%s CS=%s RST=%s" % (
        s.get("sck"), s.get("mosi"), s.get("miso"), r.get("cs"), r.get("rst"))


def check_reader(cfg, sim):
    from firmware import rc522
    if sim:
        from boards.sim import rc522 as chip
        spi, cs, rst, _chip, _field = chip.wire()
        where = "emulated SPI"
    else:
        import machine
        from boards import profile
        p = profile(cfg["board"])
        s = p["spi"]
        spi = machine.SPI(s["id"], baudrate=s["baudrate"], polarity=0, phase=0,
                          sck=machine.Pin(s["sck"]), mosi=machine.Pin(s["mosi"]),
                          miso=machine.Pin(s["miso"]))
        r = p["rc522"]
        cs = machine.Pin(r["cs"], machine.Pin.OUT, value=1)
        rst = machine.Pin(r["rst"], machine.Pin.OUT, value=1)
        where = _pins(p)
    reader = rc522.Reader(spi, cs, rst, retry_polls=1)
    st = reader.begin()
    version = getattr(reader, "version", None)
    vtext = "0x%02X" % version if isinstance(version, int) else "none"
    if st == rc522.OK:
        extra = " warning=%s" % reader.warning if getattr(reader, "warning", None) else ""
        _line("reader", "ok", "version=%s %s%s" % (vtext, where, extra))
        return True
    _line("reader", "fail", "version=%s %s (%s)" % (
        vtext, getattr(reader, "error", None) or "no reader", where))
    return False


def check_wifi(cfg, timeout_ms=20000):
    import network
    import time
    wifi = cfg.get("wifi") or {}
    ssid = wifi.get("ssid")
    if not ssid:
        _line("wifi", "fail", "no Wi-Fi in config.json (flash again with --wifi-ssid)")
        return False
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if not sta.isconnected():
        try:
            sta.connect(ssid, wifi.get("password", ""))
        except OSError as e:
            _line("wifi", "fail", "connect error %r ssid=%s" % (e, ssid))
            return False
        t0 = time.ticks_ms()
        while not sta.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < timeout_ms:
            st = sta.status()
            if st in _wifi_refusals(network):
                break
            time.sleep_ms(100)
    if sta.isconnected():
        rssi = None
        try:
            rssi = sta.status("rssi")
        except Exception:  # noqa: BLE001 - not on every port
            pass
        _line("wifi", "ok", "ssid=%s ip=%s rssi=%s" % (ssid, sta.ifconfig()[0], rssi))
        return True
    st = sta.status()
    why = _wifi_refusals(network).get(st, "no connection within %d s (status %s)"
                                      % (timeout_ms // 1000, st))
    _line("wifi", "fail", "refused: %s ssid=%s" % (why, ssid))
    return False


def _wifi_refusals(network):
    out = {}
    for name, text in (("STAT_WRONG_PASSWORD", "wrong password"),
                       ("STAT_NO_AP_FOUND", "no network with this name in range"),
                       ("STAT_CONNECT_FAIL", "the access point refused the connection"),
                       ("STAT_HANDSHAKE_TIMEOUT", "handshake timeout (wrong password?)")):
        code = getattr(network, name, None)
        if code is not None:
            out[code] = text
    return out


async def _broker(cfg, t_ms):
    from firmware import clock, main, net
    from firmware.board import SimBoard
    opener = net.opener(cfg["broker_host"], cfg["broker_port"], cfg["broker_tls"],
                        cfg.get("ca"), timeout_ms=t_ms)
    logs = []
    kiosk = main.build(cfg, SimBoard(), None, opener, log=logs.append)
    mqtt = kiosk.mqtt
    task = asyncio.create_task(mqtt.run())
    try:
        if not await mqtt.wait_connected(t_ms):
            return False, _why(logs)
        _line("broker", "ok", "%s:%s tls=%s user=%s" % (
            cfg["broker_host"], cfg["broker_port"], cfg["broker_tls"], mqtt.user))
        got = []
        mqtt.on_puback = got.append
        pid = await mqtt.publish(kiosk.t_state, kiosk._state_payload("online"), True)
        for _ in range(t_ms // 50):
            if pid in got or not mqtt.is_inflight(pid):
                return True, True
            await clock.sleep_ms(50)
        return True, False
    finally:
        try:
            await mqtt.disconnect()
        except Exception:  # noqa: BLE001
            pass
        try:
            task.cancel()
        except Exception:  # noqa: BLE001
            pass


def _why(logs):
    """A short reason from the MQTT client's last log line."""
    last = logs[-1] if logs else ""
    if "code 4" in last or "code 5" in last:
        return "login refused (password or ACL: broker files not regenerated since the flash?)"
    if "code" in last and "refused" in last:
        return "refused by the broker (%s)" % last
    if "Refused" in last or "111" in last or "ECONNREFUSED" in last:
        return "nothing listens there (broker stopped, wrong port, or firewall): %s" % last
    if "Timeout" in last or "ETIMEDOUT" in last or "116" in last:
        return "no answer (host unreachable from this network, or firewall): %s" % last
    if last:
        return last
    return "no CONNACK (unreachable, firewall, or wrong CA)"


def check_network(cfg, t_ms=10000):
    """broker login then the first heartbeat (state 'online', acknowledged)."""
    if "broker_host" not in cfg:
        _line("broker", "fail", "no broker in config.json (flash again with --broker)")
        _line("heartbeat", "skip", "no broker")
        return False
    try:
        login, beat = asyncio.run(_broker(cfg, t_ms))
    except Exception as e:  # noqa: BLE001 - TLS or socket errors: report, do not crash
        _line("broker", "fail", "%s:%s %r" % (cfg["broker_host"], cfg["broker_port"], e))
        _line("heartbeat", "skip", "no broker login")
        return False
    if not login:
        _line("broker", "fail", "%s:%s within %d s: %s" % (
            cfg["broker_host"], cfg["broker_port"], t_ms // 1000, beat))
        _line("heartbeat", "skip", "no broker login")
        return False
    if beat:
        _line("heartbeat", "ok", "state online published and acknowledged")
        return True
    _line("heartbeat", "fail", "no PUBACK for the state message (ACL refuses this kiosk?)")
    return False


def run(config_path="config.json"):
    ok = True
    sim = virtual()
    cfg = None
    try:
        from firmware import config
        cfg = config.load(config_path)
        _line("config", "ok", "kiosk=%s board=%s seq_base=%s" % (
            cfg["kiosk"], cfg["board"], cfg["seq_base"]))
    except Exception as e:  # noqa: BLE001 - missing or broken config.json
        _line("config", "fail", "%s: %r" % (config_path, e))
        ok = False
    if cfg is not None:
        try:
            ok = check_reader(cfg, sim) and ok
        except Exception as e:  # noqa: BLE001
            _line("reader", "fail", "%r" % (e,))
            ok = False
        if sim:
            _line("wifi", "skip", "not available on the virtual board")
            _line("broker", "skip", "not available on the virtual board")
            _line("heartbeat", "skip", "not available on the virtual board")
        else:
            try:
                wifi_ok = check_wifi(cfg)
            except Exception as e:  # noqa: BLE001
                _line("wifi", "fail", "%r" % (e,))
                wifi_ok = False
            if wifi_ok:
                ok = check_network(cfg) and ok
            else:
                ok = False
                _line("broker", "skip", "no Wi-Fi")
                _line("heartbeat", "skip", "no Wi-Fi")
    _line("done", "ok" if ok else "fail")
    return ok
