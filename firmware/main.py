# The board's entry point. On a board, /main.py is two lines (docs/firmware.md):
#     from firmware import main
#     main.run()
# run() owns asyncio.run (the WebAssembly port under test has none; tests build the kiosk
# with build() and their own streams instead).
from firmware import clock, config
from firmware.journal import Journal
from firmware.kiosk import Kiosk
from firmware.mqtt import MQTTClient

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio


def build(cfg, board, reader, open_stream, log=print):
    """A Kiosk from a prepared config (firmware.config.prepare), a board, a reader and an
    open_stream for MQTT. Nothing runs until kiosk.start() on a running loop."""
    from protocol import signing
    d = cfg.get("data_dir", "")
    journal = Journal(config.join(d, "journal.bin"), max_bytes=cfg["journal_max_bytes"],
                      max_pending=cfg["journal_max_pending"], seq_base=cfg["seq_base"])
    if journal.dropped:
        log("journal: dropped a torn tail of %d bytes" % journal.dropped)
    user = cfg.get("mqtt_user", cfg["kiosk"])
    password = cfg.get("mqtt_password") or signing.broker_password(cfg["key_bytes"])
    mqtt = MQTTClient(cfg["kiosk"], open_stream, keepalive=cfg["keepalive_s"], user=user,
                      password=password, log=log)
    return Kiosk(cfg, board, reader, journal, mqtt, config.Store(d), log=log)


kiosk = None  # the running Kiosk, for a REPL session or a test harness
field = None  # on the sim board: the emulated RF field (field.add(boards.sim.cards...))


def _print_event(event):
    print("kiosk:", event["kind"], event.get("reason") or "", " / ".join(event["lines"]))


def _hardware(cfg, prof):
    """(board, spi, cs, rst) for the profile: real pins, or the sim board's emulated parts."""
    global field
    if cfg["board"] == "sim":
        # The virtual board (boards/sim/serial_board.mjs): no machine, no network. The real
        # driver talks to the MFRC522 emulator; feedback is printed; MQTT stays offline.
        import time
        from boards.sim import rc522 as chip
        from firmware.board import SimBoard
        board = SimBoard(prof, keep=8)
        board.on_event = _print_event
        spi, cs, rst, _chip, field = chip.wire(baudrate=prof["spi"]["baudrate"])
        clock.set_now(time.time(), "host")
        return board, spi, cs, rst
    from firmware.board import Board
    hw = Board(prof)
    hw.watchdog(cfg["watchdog_ms"])
    cs, rst = hw.rc522_pins()
    return hw, hw.spi(), cs, rst


async def main(config_path="config.json"):
    global kiosk
    from boards import profile
    from firmware import net
    from firmware.reader import CardReader
    cfg = config.load(config_path)
    board, spi, cs, rst = _hardware(cfg, profile(cfg["board"]))
    reader = CardReader(spi, cs, rst)
    opener = net.opener(cfg.get("broker_host", "127.0.0.1"), cfg.get("broker_port", 1883),
                        cfg.get("broker_tls", False), cfg.get("ca"))
    kiosk = build(cfg, board, reader, opener)
    kiosk.feedback.show("idle")
    if cfg["board"] != "sim":
        asyncio.create_task(net.run_wifi(cfg))
    kiosk.start()
    while True:
        await clock.sleep_ms(60000)


def run(config_path="config.json"):
    asyncio.run(main(config_path))
