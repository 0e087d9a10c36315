# The board entry point on the sim board profile: config.json -> profile -> the real RC522
# driver on the emulator -> kiosk, with no broker reachable (as on the virtual board).
import json
import os

from devtest import is_micropython
from firmware import clock, main
from test_fw_broker import in_task_test, stop_tasks

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio


def _dir():
    if is_micropython():
        d = "/fwmain"
    else:
        import tempfile
        d = os.path.join(tempfile.gettempdir(), "fwmain-%d" % os.getpid())
    try:
        os.mkdir(d)
    except OSError:
        pass
    for f in ("journal.bin", "journal.bin.new", "remote_config.json", "config.json"):
        try:
            os.remove(d + "/" + f)
        except OSError:
            pass
    return d


@in_task_test
async def test_main_on_the_sim_board_serves_taps_offline():
    from boards.sim import cards
    d = _dir()
    with open(d + "/config.json", "w") as f:
        json.dump({"kiosk": "V1", "key": "ab" * 32, "board": "sim", "data_dir": d,
                   "broker": "mqtt://127.0.0.1:1", "service": "lunch"}, f)
    task = asyncio.create_task(main.main(d + "/config.json"))
    for _ in range(100):
        if main.kiosk is not None and main.field is not None:
            break
        await clock.sleep_ms(10)
    k = main.kiosk
    k.log = lambda text: None
    k.mqtt.log = lambda text: None
    main.field.add(cards.MifareClassic1K(b"\xed\x0b\xa9\x96"))
    for _ in range(100):
        if k.board.events and k.board.events[-1]["kind"] == "offline":
            break
        await clock.sleep_ms(10)
    ev = k.board.events[-1]
    assert ev["kind"] == "offline" and ev["uid"] == "ED0BA996" and ev["seq"] == 1
    assert k.journal.pending() == [1]
    assert not k.mqtt.connected
    k.stop()
    await stop_tasks([task])
    main.kiosk = None
    main.field = None
