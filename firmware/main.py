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


async def main(config_path="config.json"):
    from boards import profile
    from firmware import net
    from firmware.board import Board
    from firmware.reader import CardReader
    cfg = config.load(config_path)
    board = Board(profile(cfg["board"]))
    board.watchdog(cfg["watchdog_ms"])
    spi = board.spi()
    cs, rst = board.rc522_pins()
    reader = CardReader(spi, cs, rst)
    opener = net.opener(cfg["broker_host"], cfg["broker_port"], cfg["broker_tls"], cfg.get("ca"))
    kiosk = build(cfg, board, reader, opener)
    kiosk.feedback.show("idle")
    asyncio.create_task(net.run_wifi(cfg))
    kiosk.start()
    while True:
        await clock.sleep_ms(60000)


def run(config_path="config.json"):
    asyncio.run(main(config_path))
